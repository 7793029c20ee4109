//! Generator of real, playable, tagged sample music libraries.
//!
//! [`generate`] writes a directory tree of short sine-tone files in six formats
//! ([`Format::ALL`]) whose tags follow a fixed, documented scheme, plus (by
//! default) one file per hostile case ([`HOSTILE_CASES`]). It returns a
//! [`SampleTrack`] per file so tests can predict the tree MusicFS should build
//! from the tags, and `cargo xtask sample-library` writes the same list as a
//! JSON manifest.
//!
//! Audio comes from Debian's `ffmpeg`, run once per format per call to make an
//! untagged template; every file is that template with tags written in memory
//! by lofty and written by a few threads: 100 000 tracks take about ten
//! seconds on two cores (dev profile).

mod hostile;
mod id3_raw;
mod template;

use std::collections::BTreeSet;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use lofty::config::WriteOptions;
use lofty::id3::v2::Id3v2Tag;
use lofty::mp4::Ilst;
use lofty::ogg::tag::VorbisComments;
use lofty::tag::items::Timestamp;
use lofty::tag::{Accessor, TagExt, TagType};

use hostile::{Content, PlannedFile};
pub use hostile::{HOSTILE_CASES, HOSTILE_DIR, INVALID_UTF8_FILE_NAME};
use template::Templates;
pub use template::{SAMPLE_RATE, TONE_HZ};

/// Directory, relative to the library root, that holds the ordinary tracks.
pub const ORDINARY_DIR: &str = "incoming";

/// How many subdirectories of [`ORDINARY_DIR`] the ordinary tracks are spread over.
pub const ORDINARY_SUBDIRS: usize = 3;

/// An audio container/codec the generator writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Format {
    /// FLAC, Vorbis comments.
    Flac,
    /// MPEG-1/2 Layer III (libmp3lame), ID3v2.4.
    Mp3,
    /// Ogg Vorbis (libvorbis), Vorbis comments.
    OggVorbis,
    /// Ogg Opus (libopus), Vorbis comments.
    Opus,
    /// AAC in MP4 (ffmpeg's `aac`), MP4 `ilst` atoms.
    M4a,
    /// RIFF WAVE, 16-bit PCM, ID3v2.4 in an `ID3 ` chunk.
    Wav,
}

impl Format {
    /// Every format, in the order ordinary tracks cycle through them.
    pub const ALL: [Format; 6] = [Format::Flac, Format::Mp3, Format::OggVorbis, Format::Opus, Format::M4a, Format::Wav];

    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Flac => "flac",
            Format::Mp3 => "mp3",
            Format::OggVorbis => "ogg",
            Format::Opus => "opus",
            Format::M4a => "m4a",
            Format::Wav => "wav",
        }
    }

    /// The lofty tag type the generator writes into files of this format.
    pub fn tag_type(self) -> TagType {
        match self {
            Format::Flac | Format::OggVorbis | Format::Opus => TagType::VorbisComments,
            Format::Mp3 | Format::Wav => TagType::Id3v2,
            Format::M4a => TagType::Mp4Ilst,
        }
    }
}

/// The tags written into one generated file, as the generator meant them (None = tag absent).
///
/// For `invalid-utf8-title` the title in the file is not UTF-8; `title` holds its
/// lossy decoding (`U+FFFD` for each invalid sequence).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SampleTags {
    pub artist: Option<String>,
    pub album: Option<String>,
    pub year: Option<u32>,
    pub track: Option<u32>,
    pub title: Option<String>,
}

/// One file that [`generate`] wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SampleTrack {
    /// Relative to the library root. In JSON this is a string; a name that is not
    /// UTF-8 (`invalid-utf8-filename`) is written lossily, with `U+FFFD`.
    #[serde(serialize_with = "serialize_path_lossy")]
    pub rel_path: PathBuf,
    pub format: Format,
    pub tags: SampleTags,
    /// Which hostile case this file exercises, or None for an ordinary well-tagged track.
    pub hostile: Option<&'static str>,
}

impl SampleTrack {
    /// For an ordinary track, where MusicFS should show it:
    /// `Artist/Album (Year)/NN - Title.ext`, `NN` being the track number padded to two digits.
    /// None for hostile files, whose place depends on MusicFS's sanitising rules.
    pub fn expected_tag_path(&self) -> Option<PathBuf> {
        if self.hostile.is_some() {
            return None;
        }
        let t = &self.tags;
        let album_dir = format!("{} ({})", t.album.as_deref()?, t.year?);
        let file = format!("{:02} - {}.{}", t.track?, t.title.as_deref()?, self.format.extension());
        Some(Path::new(t.artist.as_deref()?).join(album_dir).join(file))
    }
}

fn serialize_path_lossy<S: serde::Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct SampleOptions {
    /// Number of ordinary, well-tagged tracks.
    pub tracks: usize,
    /// Also write one file per hostile case ([`HOSTILE_CASES`]).
    pub hostile: bool,
    /// Length of every tone, in seconds (more than 0, at most 3600).
    pub seconds: f32,
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self { tracks: 12, hostile: true, seconds: 1.0 }
    }
}

/// The `i`-th ordinary track (see [`generate`] for the scheme).
pub fn ordinary_track(i: usize) -> SampleTrack {
    let format = Format::ALL[i % Format::ALL.len()];
    let album = i / 4;
    SampleTrack {
        rel_path: Path::new(ORDINARY_DIR)
            .join(format!("set-{}", i % ORDINARY_SUBDIRS))
            .join(format!("{i:06}.{}", format.extension())),
        format,
        tags: SampleTags {
            artist: Some(format!("Artist {:02}", i / 8)),
            album: Some(format!("Album {album:02}")),
            year: Some(1970 + (album % 50) as u32),
            track: Some((i % 4 + 1) as u32),
            title: Some(format!("Title {i:03}")),
        },
        hostile: None,
    }
}

/// Writes the library into `dir` (created if missing) and returns what it wrote. Deterministic: same options, same files and tags.
///
/// # Ordinary tracks
///
/// Track `i` (from 0 to `opts.tracks - 1`, see [`ordinary_track`]) is:
///
/// | what | value |
/// | --- | --- |
/// | format | `Format::ALL[i % 6]` (flac, mp3, ogg, opus, m4a, wav) |
/// | artist | `format!("Artist {:02}", i / 8)` |
/// | album | `format!("Album {:02}", i / 4)`: album numbers are global, so album names never repeat across artists |
/// | year | `1970 + (i / 4) % 50` |
/// | track | `i % 4 + 1` |
/// | title | `format!("Title {:03}", i)` |
/// | file | `incoming/set-{i % 3}/{i:06}.{ext}`: the name says nothing of the tags |
///
/// So every album has 4 tracks (the last one maybe fewer), every artist 2 albums,
/// and track 5 is `Artist 00/Album 01 (1971)/02 - Title 005.wav` in the tag tree
/// ([`SampleTrack::expected_tag_path`]). Formats are mixed inside albums.
///
/// # Hostile files
///
/// With `opts.hostile`, one file per [`HOSTILE_CASES`] entry under `hostile/`,
/// named `{case}.{ext}` (except `invalid-utf8-filename`, see
/// [`INVALID_UTF8_FILE_NAME`]), after the ordinary tracks in the returned list.
///
/// # Audio
///
/// A mono 440 Hz sine of `opts.seconds` at 16 kHz, encoded once per format by
/// `ffmpeg` (which must be on `PATH`); files of the same format differ only in tags.
/// Files already at the generated paths are overwritten; other files in `dir` are left alone.
pub fn generate(dir: &Path, opts: &SampleOptions) -> Result<Vec<SampleTrack>> {
    if !(opts.seconds > 0.0 && opts.seconds <= 3600.0) {
        bail!("sample length must be more than 0 and at most 3600 seconds, got {}", opts.seconds);
    }
    let templates = Templates::build(opts.seconds)?;

    let mut jobs: Vec<PlannedFile> =
        (0..opts.tracks).map(|i| PlannedFile { track: ordinary_track(i), content: Content::Tagged }).collect();
    if opts.hostile {
        jobs.extend(hostile::cases());
    }

    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let parents: BTreeSet<&Path> = jobs.iter().filter_map(|j| j.track.rel_path.parent()).collect();
    for parent in parents {
        let path = dir.join(parent);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    }

    write_parallel(dir, &jobs, &templates)?;
    Ok(jobs.into_iter().map(|j| j.track).collect())
}

/// Writes every job's file, spread over the machine's cores (at most 8 threads).
fn write_parallel(dir: &Path, jobs: &[PlannedFile], templates: &Templates) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    let chunk = jobs.len().div_ceil(threads).max(64);
    std::thread::scope(|scope| {
        let workers: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().try_for_each(|j| write_one(dir, j, templates))))
            .collect();
        // Join every worker before reporting, so no panic is left for the scope to re-raise.
        let results: Vec<Result<()>> = workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(anyhow!("a sample writer thread panicked"))))
            .collect();
        results.into_iter().collect()
    })
}

fn write_one(dir: &Path, job: &PlannedFile, templates: &Templates) -> Result<()> {
    let track = &job.track;
    let template = templates.get(track.format);
    let bytes = match job.content {
        Content::Tagged => tagged_bytes(template, track)?,
        Content::Untagged => template.to_vec(),
        Content::RawId3 => {
            let mut bytes = id3_raw::invalid_utf8_title_tag()?;
            bytes.extend_from_slice(template);
            bytes
        }
        Content::Garbage => hostile::garbage_bytes(),
    };
    let path = dir.join(&track.rel_path);
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// The template with `track.tags` written into it by lofty, in memory.
///
/// Uses the concrete tag type of each format rather than lofty's generic `Tag`:
/// converting a generic `Tag` to ID3v2 goes through a `HashMap`, so the frame
/// order (and the file bytes) would change from run to run.
fn tagged_bytes(template: &[u8], track: &SampleTrack) -> Result<Vec<u8>> {
    match track.format {
        Format::Flac | Format::OggVorbis | Format::Opus => {
            save_tag(&fill_tag(VorbisComments::new(), &track.tags)?, template, track)
        }
        Format::Mp3 | Format::Wav => save_tag(&fill_tag(Id3v2Tag::new(), &track.tags)?, template, track),
        Format::M4a => save_tag(&fill_tag(Ilst::new(), &track.tags)?, template, track),
    }
}

/// Sets every present field of `tags` on `tag`, in a fixed order.
fn fill_tag<T: Accessor>(mut tag: T, tags: &SampleTags) -> Result<T> {
    if let Some(artist) = &tags.artist {
        tag.set_artist(artist.clone());
    }
    if let Some(album) = &tags.album {
        tag.set_album(album.clone());
    }
    if let Some(year) = tags.year {
        let year = u16::try_from(year).with_context(|| format!("year {year} does not fit a tag"))?;
        tag.set_date(Timestamp { year, ..Timestamp::default() });
    }
    if let Some(track_no) = tags.track {
        tag.set_track(track_no);
    }
    if let Some(title) = &tags.title {
        tag.set_title(title.clone());
    }
    Ok(tag)
}

/// A copy of `template` with `tag` saved into it.
fn save_tag<T: TagExt>(tag: &T, template: &[u8], track: &SampleTrack) -> Result<Vec<u8>> {
    let mut file = Cursor::new(template.to_vec());
    if !tag.is_empty() {
        tag.save_to(&mut file, WriteOptions::default())
            .with_context(|| format!("writing {:?} tags for {}", track.format, track.rel_path.display()))?;
    }
    Ok(file.into_inner())
}

#[cfg(test)]
mod tests;
