//! Property tests of the name rules (issue 13's "tags → path components" target, run on stable as
//! proptest cases: `PROPTEST_CASES=100000 cargo nextest run -p musicfs-meta` for a long run, or
//! `cargo xtask fuzz`): whatever the tags (NUL, `/`, `..`, control characters, 10 000-character
//! strings, any year or track number) and whatever the origin's file name (bytes that are not UTF-8), every
//! virtual path has three components, each non-empty, not `.` or `..`, free of `/` and NUL and at most 255
//! bytes, and no two tracks get the same path.

use musicfs_meta::names::{MAX_NAME_BYTES, assign_unique, placement};
use musicfs_meta::tags::TrackTags;
use proptest::prelude::*;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// Hostile text: the worst characters often, long runs sometimes.
fn hostile_text() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("..".to_owned()),
        Just(".".to_owned()),
        Just("/".to_owned()),
        Just("\0".to_owned()),
        Just(" ".to_owned()),
        Just("\u{7f}\u{1b}\n\t".to_owned()),
        Just("é".to_owned()),
        Just("🎵".to_owned()),
        "[a-z]{1,8}",
        any::<String>(),
        // Long runs of a multi-byte character: the cut must land on a character boundary.
        (1usize..3000).prop_map(|n| "ü".repeat(n)),
        (1usize..10_000).prop_map(|n| "x".repeat(n)),
    ];
    proptest::collection::vec(pieces, 0..6).prop_map(|parts| parts.concat())
}

fn tags() -> impl Strategy<Value = TrackTags> {
    (
        proptest::option::of(hostile_text()),
        proptest::option::of(hostile_text()),
        proptest::option::of(hostile_text()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(|(artist, album, title, year, track)| TrackTags { artist, album, title, year, track })
}

/// An origin-relative path: a directory and a file name of arbitrary bytes (no `/` or NUL inside, as a
/// listing never has), an audio or odd extension.
fn rel_path() -> impl Strategy<Value = PathBuf> {
    let byte = any::<u8>().prop_map(|b| if b == b'/' || b == 0 { b'_' } else { b });
    let name = proptest::collection::vec(byte, 0..300);
    let ext = prop_oneof![Just(".flac"), Just(".MP3"), Just(".ogg"), Just(""), Just(".w@v!"), Just(".")];
    (name, ext).prop_map(|(mut name, ext)| {
        name.extend_from_slice(ext.as_bytes());
        if name.is_empty() {
            name.push(b'x');
        }
        PathBuf::from("dir").join(OsString::from_vec(name))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_path_is_three_safe_components_and_all_are_unique(tracks in proptest::collection::vec((rel_path(), tags()), 1..40)) {
        let placements: Vec<_> = tracks.iter().map(|(rel, t)| placement(rel, t)).collect();
        let paths = assign_unique(&placements);
        let mut seen = std::collections::HashSet::new();
        for path in &paths {
            prop_assert!(seen.insert(path.clone()), "two tracks got {path:?}");
            let parts: Vec<&str> = path.split('/').collect();
            prop_assert_eq!(parts.len(), 3, "{:?}", path);
            for part in parts {
                prop_assert!(!part.is_empty() && part != "." && part != "..", "component {:?} in {:?}", part, path);
                prop_assert!(!part.contains('\0'), "NUL in {:?}", path);
                prop_assert!(part.len() <= MAX_NAME_BYTES, "{} bytes: {:?}", part.len(), part);
            }
        }
    }
}
