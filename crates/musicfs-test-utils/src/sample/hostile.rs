//! The hostile cases of a sample library: tags and names that a tag-built
//! filesystem must survive without escaping its tree, crashing or hiding files.
//!
//! Each case is one file under `hostile/` (see [`HOSTILE_CASES`] for the list and
//! [`cases`] for the tags of each).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::id3_raw;
use super::{Format, SampleTags, SampleTrack};

/// Directory, relative to the library root, that holds every hostile file.
pub const HOSTILE_DIR: &str = "hostile";

/// The names of all hostile cases, in the order [`generate`](super::generate) writes them.
pub const HOSTILE_CASES: [&str; 16] = [
    "dotdot-artist",
    "dot-artist",
    "dotdot-album",
    "slash-title",
    "nul-title",
    "control-chars",
    "long-title",
    "long-artist",
    "invalid-utf8-title",
    "invalid-utf8-filename",
    "duplicate-a",
    "duplicate-b",
    "no-tags",
    "empty-tags",
    "garbage",
    "zero-track",
];

/// The file name of the `invalid-utf8-filename` case (not UTF-8: `0xff 0xfe`).
pub const INVALID_UTF8_FILE_NAME: &[u8] = b"bad-\xff\xfe-name.flac";

/// Size of the `garbage` file, in bytes.
const GARBAGE_LEN: usize = 8192;

/// How the bytes of a hostile file are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Content {
    /// The format's template with `tags` written by lofty.
    Tagged,
    /// The format's template as ffmpeg made it, no tags.
    Untagged,
    /// The MP3 template behind the hand-built ID3v2.4 tag of [`id3_raw`].
    RawId3,
    /// Pseudo-random bytes from a fixed seed: not audio at all.
    Garbage,
}

/// One file to write: an ordinary track or a hostile case.
pub(super) struct PlannedFile {
    pub(super) track: SampleTrack,
    pub(super) content: Content,
}

/// Tags of a hostile file: those of a plain track (artist `Hostile Artist`, album
/// `Hostile Album`, year 2001, track `number`, title `Hostile {case}`), changed by `edit`.
fn tags(case: &str, number: u32, edit: impl FnOnce(&mut SampleTags)) -> SampleTags {
    let mut tags = SampleTags {
        artist: Some("Hostile Artist".to_owned()),
        album: Some("Hostile Album".to_owned()),
        year: Some(2001),
        track: Some(number),
        title: Some(format!("Hostile {case}")),
    };
    edit(&mut tags);
    tags
}

fn no_tags() -> SampleTags {
    SampleTags { artist: None, album: None, year: None, track: None, title: None }
}

/// The file of hostile case `case`: `hostile/{case}.{ext}`, or the non-UTF-8 name.
fn planned(case: &'static str, format: Format, content: Content, tags: SampleTags) -> PlannedFile {
    let file_name: PathBuf = if case == "invalid-utf8-filename" {
        OsStr::from_bytes(INVALID_UTF8_FILE_NAME).into()
    } else {
        format!("{case}.{}", format.extension()).into()
    };
    PlannedFile {
        track: SampleTrack { rel_path: Path::new(HOSTILE_DIR).join(file_name), format, tags, hostile: Some(case) },
        content,
    }
}

/// Every hostile case, in [`HOSTILE_CASES`] order, with its format, the tags
/// meant and how to make its bytes.
pub(super) fn cases() -> Vec<PlannedFile> {
    use Content::{Garbage, RawId3, Tagged, Untagged};
    use Format::{Flac, M4a, Mp3, OggVorbis, Opus, Wav};

    let duplicate = SampleTags {
        artist: Some("Duplicate Artist".to_owned()),
        album: Some("Duplicate Album".to_owned()),
        year: Some(1999),
        track: Some(7),
        title: Some("Same Title".to_owned()),
    };
    let invalid_utf8 = SampleTags {
        artist: Some(id3_raw::ARTIST.to_owned()),
        title: Some(String::from_utf8_lossy(id3_raw::INVALID_TITLE).into_owned()),
        ..no_tags()
    };
    let set = |field: &mut Option<String>, value: &str| *field = Some(value.to_owned());

    vec![
        planned("dotdot-artist", Mp3, Tagged, tags("dotdot-artist", 1, |t| set(&mut t.artist, "../../etc"))),
        planned("dot-artist", Flac, Tagged, tags("dot-artist", 2, |t| set(&mut t.artist, "."))),
        planned("dotdot-album", M4a, Tagged, tags("dotdot-album", 3, |t| set(&mut t.album, ".."))),
        planned("slash-title", OggVorbis, Tagged, tags("slash-title", 4, |t| set(&mut t.title, "AC/DC/../x"))),
        // NUL in a Vorbis comment (ID3v2.4 would read it as a value separator).
        planned("nul-title", Flac, Tagged, tags("nul-title", 5, |t| set(&mut t.title, "before\0after"))),
        planned(
            "control-chars",
            Opus,
            Tagged,
            tags("control-chars", 6, |t| {
                set(&mut t.title, "bell\x07 new\nline tab\there esc\x1b[31m");
            }),
        ),
        // 1000 chars, 1500 bytes.
        planned("long-title", M4a, Tagged, tags("long-title", 7, |t| set(&mut t.title, &"äx".repeat(500)))),
        // 10 000 chars, 15 000 bytes.
        planned("long-artist", Wav, Tagged, tags("long-artist", 8, |t| set(&mut t.artist, &"Ön".repeat(5000)))),
        planned("invalid-utf8-title", Mp3, RawId3, invalid_utf8),
        planned("invalid-utf8-filename", Flac, Untagged, no_tags()),
        planned("duplicate-a", Flac, Tagged, duplicate.clone()),
        planned("duplicate-b", OggVorbis, Tagged, duplicate),
        planned("no-tags", Wav, Untagged, no_tags()),
        // ID3v2, since lofty's Vorbis comment writer drops empty values.
        planned(
            "empty-tags",
            Mp3,
            Tagged,
            tags("empty-tags", 14, |t| {
                set(&mut t.artist, "");
                set(&mut t.album, "   ");
                set(&mut t.title, " \t ");
            }),
        ),
        planned("garbage", Mp3, Garbage, no_tags()),
        planned(
            "zero-track",
            Flac,
            Tagged,
            tags("zero-track", 16, |t| {
                t.track = Some(0);
                t.year = Some(0);
            }),
        ),
    ]
}

/// The `garbage` file's bytes: splitmix64 output from a fixed seed, so runs agree.
pub(super) fn garbage_bytes() -> Vec<u8> {
    let mut state: u64 = 0x6d75_7369_6366_7321; // "musicfs!"
    let mut out = Vec::with_capacity(GARBAGE_LEN);
    while out.len() < GARBAGE_LEN {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(GARBAGE_LEN);
    out
}
