//! Hostile names from remote origins (issue 13's "S3 listing keys" and "SFTP names" fuzz targets, run on
//! stable as proptest cases; `cargo xtask fuzz` runs many more): whatever a bucket's keys or a server's
//! directory entries hold (`..`, `.`, empty segments, leading `/`, NUL, bytes that are not UTF-8, 10 000-byte
//! names), a name MusicFS accepts is a relative path that stays under the origin's root, and the mapping
//! between keys and paths goes both ways without changing a byte.

use musicfs_origins::is_safe_relative;
use musicfs_origins::s3::{key_to_rel, rel_to_key};
use musicfs_origins::sftp::{is_one_name, remote_path};
use proptest::prelude::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("..".to_owned()),
        Just(".".to_owned()),
        Just(String::new()),
        Just("\0".to_owned()),
        Just(" ".to_owned()),
        Just("%2e%2e".to_owned()),
        Just("\\..\\".to_owned()),
        "[a-zA-Z0-9 ._-]{1,12}",
        any::<String>(),
        (1usize..10_000).prop_map(|n| "y".repeat(n)),
    ]
}

/// An object key: hostile segments joined by `/`, sometimes with a leading or trailing `/`.
fn key() -> impl Strategy<Value = String> {
    (proptest::collection::vec(segment(), 1..6), any::<bool>(), any::<bool>()).prop_map(|(segs, lead, trail)| {
        let mut key = segs.join("/");
        if lead {
            key.insert(0, '/');
        }
        if trail {
            key.push('/');
        }
        key
    })
}

fn prefix() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![Just("library/flac".to_owned()), Just("music".to_owned()), "[a-z]{1,6}"])
}

/// Any bytes a server could send as a name, including `/` and bytes that are not UTF-8.
fn raw_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"..".to_vec()),
        Just(b".".to_vec()),
        Just(Vec::new()),
        Just(b"a/b".to_vec()),
        Just(b"/etc".to_vec()),
        Just(b"\xff\xfe.flac".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::collection::vec(prop::sample::select(vec![b'.', b'/', b'a', 0u8, 0xff]), 0..8),
    ]
}

/// No `..`, no root, nothing but plain names after `root`.
fn stays_under(path: &Path, root: &Path) -> bool {
    path.starts_with(root)
        && path.components().skip(root.components().count()).all(|c| matches!(c, Component::Normal(_)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn an_accepted_key_is_a_safe_path_that_maps_back_to_the_same_key(prefix in prefix(), key in key(), under in any::<bool>()) {
        // A listing returns keys under its prefix; half the keys get it, the rest test refusal.
        let key = match &prefix {
            Some(p) if under => format!("{p}/{key}"),
            _ => key,
        };
        if let Some(rel) = key_to_rel(prefix.as_deref(), &key) {
            prop_assert!(is_safe_relative(&rel), "{key:?} -> {rel:?}");
            let root = Path::new("/srv/music");
            prop_assert!(stays_under(&root.join(&rel), root), "{key:?} -> {rel:?}");
            let back = rel_to_key(prefix.as_deref(), &rel);
            prop_assert_eq!(back.as_ref().map(|k| k.as_ref().to_owned()), Some(key.clone()), "{:?}", rel);
        }
    }

    #[test]
    fn a_path_given_a_key_maps_back_to_the_same_path(prefix in prefix(), segs in proptest::collection::vec(segment(), 1..5)) {
        let rel = PathBuf::from(segs.join("/"));
        if let Some(key) = rel_to_key(prefix.as_deref(), &rel) {
            prop_assert!(is_safe_relative(&rel), "{rel:?} is unsafe but got a key");
            prop_assert_eq!(key_to_rel(prefix.as_deref(), key.as_ref()), Some(rel));
        }
    }

    #[test]
    fn a_remote_path_stays_under_the_root(names in proptest::collection::vec(raw_name(), 0..5)) {
        let rel = PathBuf::from(OsStr::from_bytes(&names.join(&b'/')));
        let root = Path::new("/srv/music");
        if let Some(remote) = remote_path(root, &rel) {
            prop_assert!(stays_under(&remote, root), "{rel:?} -> {remote:?}");
            prop_assert!(remote != root, "the root itself is not a track");
        }
    }

    #[test]
    fn a_listed_name_accepted_is_one_plain_component(name in raw_name()) {
        let name_path = Path::new(OsStr::from_bytes(&name));
        if is_one_name(name_path) {
            prop_assert!(!name.is_empty() && !name.contains(&b'/') && name != b"." && name != b"..", "{name:?}");
            let dir = Path::new("Artist/Album");
            let joined = dir.join(name_path);
            prop_assert_eq!(joined.parent(), Some(dir));
        } else {
            // Refused only for a reason.
            let one_normal = matches!(name_path.components().collect::<Vec<_>>().as_slice(), [Component::Normal(_)]);
            prop_assert!(!one_normal || name.contains(&b'/'), "{name:?} refused");
        }
    }
}
