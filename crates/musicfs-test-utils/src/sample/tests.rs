//! Tests of the sample library generator: tags read back with lofty, hostile
//! files on disk as promised, audio plays in mpv, output is deterministic.

use super::*;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::process::Command;

use lofty::file::{FileType, TaggedFileExt};

fn generate_into_tempdir(opts: &SampleOptions) -> (tempfile::TempDir, Vec<SampleTrack>) {
    let dir = tempfile::tempdir().unwrap();
    let tracks = generate(dir.path(), opts).unwrap();
    (dir, tracks)
}

fn lofty_file_type(format: Format) -> FileType {
    match format {
        Format::Flac => FileType::Flac,
        Format::Mp3 => FileType::Mpeg,
        Format::OggVorbis => FileType::Vorbis,
        Format::Opus => FileType::Opus,
        Format::M4a => FileType::Mp4,
        Format::Wav => FileType::Wav,
    }
}

/// The tags lofty reads from `path` (primary tag only), and the file type it detects.
fn read_back(path: &Path) -> (FileType, SampleTags) {
    let file = lofty::read_from_path(path).unwrap_or_else(|e| panic!("lofty cannot read {}: {e}", path.display()));
    let tags = match file.primary_tag() {
        None => SampleTags { artist: None, album: None, year: None, track: None, title: None },
        Some(tag) => SampleTags {
            artist: tag.artist().map(Cow::into_owned),
            album: tag.album().map(Cow::into_owned),
            year: tag.date().map(|d| u32::from(d.year)),
            track: tag.track(),
            title: tag.title().map(Cow::into_owned),
        },
    };
    (file.file_type(), tags)
}

/// Every regular file under `root`, by raw relative path, with its bytes.
fn snapshot(root: &Path) -> BTreeMap<OsString, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<OsString, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().as_os_str().to_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn hostile<'a>(tracks: &'a [SampleTrack], case: &str) -> &'a SampleTrack {
    tracks.iter().find(|t| t.hostile == Some(case)).unwrap_or_else(|| panic!("no hostile case {case}"))
}

#[test]
fn ordinary_tags_read_back_with_lofty() {
    let opts = SampleOptions { tracks: 24, hostile: false, ..SampleOptions::default() };
    let (dir, tracks) = generate_into_tempdir(&opts);
    assert_eq!(tracks.len(), 24);
    for (i, track) in tracks.iter().enumerate() {
        assert_eq!(track.hostile, None);
        assert_eq!(track.format, Format::ALL[i % 6]);
        let (file_type, tags) = read_back(&dir.path().join(&track.rel_path));
        assert_eq!(file_type, lofty_file_type(track.format), "{}", track.rel_path.display());
        assert_eq!(tags, track.tags, "{}", track.rel_path.display());
    }
    assert!(!dir.path().join(HOSTILE_DIR).exists());
}

#[test]
fn ordinary_scheme_is_as_documented() {
    let track = ordinary_track(5);
    assert_eq!(track.rel_path, Path::new("incoming/set-2/000005.wav"));
    assert_eq!(track.expected_tag_path().unwrap(), Path::new("Artist 00/Album 01 (1971)/02 - Title 005.wav"));
    let file_names: BTreeSet<_> = (0..1000).map(|i| ordinary_track(i).rel_path).collect();
    let tag_paths: BTreeSet<_> = (0..1000).filter_map(|i| ordinary_track(i).expected_tag_path()).collect();
    assert_eq!(file_names.len(), 1000);
    assert_eq!(tag_paths.len(), 1000);
    for i in 0..1000 {
        let name = ordinary_track(i).rel_path.to_string_lossy().into_owned();
        assert!(!name.contains("Artist") && !name.contains("Album") && !name.contains("Title"));
    }
}

#[test]
fn every_hostile_case_is_on_disk_and_tagged_as_said() {
    let (dir, tracks) = generate_into_tempdir(&SampleOptions::default());
    assert_eq!(tracks.len(), 12 + HOSTILE_CASES.len());
    let cases: Vec<_> = tracks.iter().filter_map(|t| t.hostile).collect();
    assert_eq!(cases, HOSTILE_CASES);

    for case in hostile::cases() {
        let track = hostile(&tracks, case.track.hostile.unwrap());
        let path = dir.path().join(&track.rel_path);
        let meta = std::fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(meta.is_file() && meta.len() > 0, "{}", path.display());
        if matches!(case.content, Content::Tagged | Content::Untagged) {
            let (file_type, tags) = read_back(&path);
            assert_eq!(file_type, lofty_file_type(track.format), "{}", path.display());
            assert_eq!(tags, track.tags, "{}", path.display());
        }
    }

    let long_title = hostile(&tracks, "long-title").tags.title.clone().unwrap();
    assert_eq!(long_title.chars().count(), 1000);
    assert!(long_title.len() > 1000);
    let long_artist = hostile(&tracks, "long-artist").tags.artist.clone().unwrap();
    assert_eq!(long_artist.chars().count(), 10_000);
    assert!(hostile(&tracks, "nul-title").tags.title.as_deref().unwrap().contains('\0'));

    let a = hostile(&tracks, "duplicate-a");
    let b = hostile(&tracks, "duplicate-b");
    assert_eq!(a.tags, b.tags);
    assert_ne!(a.format, b.format);
    let bytes_a = std::fs::read(dir.path().join(&a.rel_path)).unwrap();
    let bytes_b = std::fs::read(dir.path().join(&b.rel_path)).unwrap();
    assert_ne!(bytes_a, bytes_b);

    let garbage = std::fs::read(dir.path().join(&hostile(&tracks, "garbage").rel_path)).unwrap();
    assert_eq!(garbage, hostile::garbage_bytes());
    assert!(!garbage.starts_with(b"ID3"));
}

#[test]
fn invalid_utf8_mp3_holds_the_invalid_bytes() {
    let (dir, tracks) = generate_into_tempdir(&SampleOptions { tracks: 0, ..SampleOptions::default() });
    let track = hostile(&tracks, "invalid-utf8-title");
    assert_eq!(track.format, Format::Mp3);
    let bytes = std::fs::read(dir.path().join(&track.rel_path)).unwrap();
    assert_eq!(&bytes[..4], b"ID3\x04");
    let invalid = b"\xff\xfe\xc3\x28";
    let at = bytes.windows(invalid.len()).position(|w| w == invalid).expect("invalid bytes missing");
    let tit2 = bytes.windows(4).position(|w| w == b"TIT2").expect("TIT2 frame missing");
    assert!(tit2 < at);
    assert_eq!(bytes[tit2 + 10], 3, "TIT2 must declare UTF-8");
    assert!(std::str::from_utf8(&bytes[tit2 + 11..=at + 3]).is_err());
    let tag_len = id3_raw::invalid_utf8_title_tag().unwrap().len();
    // Audio follows the tag directly: an MPEG frame sync.
    assert_eq!(bytes[tag_len], 0xff);
    assert_eq!(bytes[tag_len + 1] & 0xe0, 0xe0);
}

#[test]
fn invalid_utf8_filename_is_not_utf8() {
    let (dir, tracks) = generate_into_tempdir(&SampleOptions { tracks: 0, ..SampleOptions::default() });
    let track = hostile(&tracks, "invalid-utf8-filename");
    assert!(track.rel_path.to_str().is_none());
    assert_eq!(track.rel_path.file_name().unwrap().as_bytes(), INVALID_UTF8_FILE_NAME);
    assert!(dir.path().join(&track.rel_path).is_file());
    let listed: Vec<_> = std::fs::read_dir(dir.path().join(HOSTILE_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_str().is_none())
        .collect();
    assert_eq!(listed.len(), 1);
}

#[test]
fn every_format_plays_in_mpv() {
    let opts = SampleOptions { tracks: 6, hostile: true, seconds: 0.5 };
    let (dir, tracks) = generate_into_tempdir(&opts);
    let mut to_play: Vec<&SampleTrack> = tracks.iter().take(6).collect();
    to_play.extend(["invalid-utf8-title", "long-artist", "nul-title"].map(|c| hostile(&tracks, c)));
    for track in to_play {
        let path = dir.path().join(&track.rel_path);
        let output = match Command::new("mpv")
            .args(["--no-config", "--no-video", "--ao=null", "--ao-null-untimed"])
            .arg(&path)
            .output()
        {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("mpv not found on PATH: install Debian package mpv (needed to check audio plays)")
            }
            Err(e) => panic!("cannot run mpv: {e}"),
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("(End of file)"),
            "mpv did not play {} ({:?}) to the end: {}\n{stdout}\n{}",
            path.display(),
            track.format,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn generation_is_deterministic() {
    let opts = SampleOptions { tracks: 18, ..SampleOptions::default() };
    let (dir_a, tracks_a) = generate_into_tempdir(&opts);
    let (dir_b, tracks_b) = generate_into_tempdir(&opts);
    let json_a = serde_json::to_string(&tracks_a).unwrap();
    let json_b = serde_json::to_string(&tracks_b).unwrap();
    assert_eq!(json_a, json_b);
    let snap_a = snapshot(dir_a.path());
    let snap_b = snapshot(dir_b.path());
    assert_eq!(snap_a.len(), 18 + HOSTILE_CASES.len());
    assert_eq!(snap_a.keys().collect::<Vec<_>>(), snap_b.keys().collect::<Vec<_>>());
    for (name, bytes) in &snap_a {
        assert!(snap_b[name] == *bytes, "{} differs between runs", name.to_string_lossy());
    }
}

#[test]
fn manifest_serializes_to_json() {
    let tracks: Vec<SampleTrack> =
        (0..3).map(ordinary_track).chain(hostile::cases().into_iter().map(|c| c.track)).collect();
    let json: serde_json::Value = serde_json::to_value(&tracks).unwrap();
    assert_eq!(json[0]["rel_path"], "incoming/set-0/000000.flac");
    assert_eq!(json[0]["format"], "Flac");
    assert_eq!(json[0]["tags"]["year"], 1970);
    assert_eq!(json[0]["hostile"], serde_json::Value::Null);
    let bad = json.as_array().unwrap().iter().find(|t| t["hostile"] == "invalid-utf8-filename").unwrap();
    assert_eq!(bad["rel_path"], "hostile/bad-\u{fffd}\u{fffd}-name.flac");
}

#[test]
fn rejects_bad_length() {
    for seconds in [0.0, -1.0, f32::NAN, 1e9] {
        let dir = tempfile::tempdir().unwrap();
        let err = generate(dir.path(), &SampleOptions { seconds, ..SampleOptions::default() });
        assert!(err.is_err(), "{seconds} accepted");
    }
}

#[test]
fn missing_ffmpeg_is_a_clear_error() {
    let err = match Templates::build_with("musicfs-no-such-ffmpeg".as_ref(), 1.0) {
        Ok(_) => panic!("a missing ffmpeg was accepted"),
        Err(e) => e,
    };
    assert_eq!(err.to_string(), template::FFMPEG_MISSING);
}
