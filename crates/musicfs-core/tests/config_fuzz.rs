//! Hostile config files (issue 13's "config parsing" fuzz target, run on stable as proptest cases;
//! `cargo xtask fuzz` runs many more): a valid config cut, spliced and salted with the worst values (NUL,
//! quotes, table headers out of place, sizes past 16 EiB, negative and huge durations, `..` in ids and paths,
//! 10 000-character strings) never panics the parser. Every error is one line that starts with the file's
//! name, and every config that parses also validates.

use musicfs_core::config::Config;
use musicfs_core::units::ByteSize;
use proptest::prelude::*;
use std::path::Path;

const FILE: &str = "/etc/musicfs.toml";

const BASE: &str = r#"mount_point = "/mnt/music"
cache_dir = "/var/cache/musicfs"

[[origins]]
id = "nas"
type = "local"
priority = 1
path = "/srv/music"

[[origins]]
id = "cloud"
type = "s3"
endpoint = "https://s3.example.com"
bucket = "music"
prefix = "library/flac"
access_key = "AKIAEXAMPLE"
secret_key_file = "/etc/musicfs/s3-secret"
backup_for = "nas"

[[origins]]
id = "nas-sftp"
type = "sftp"
host = "nas.example.com"
user = "music"
private_key_file = "/etc/musicfs/id_ed25519"
known_hosts_file = "/etc/musicfs/known_hosts"
path = "/srv/music"

[cache]
max_size = "2GiB"
chunk_avg = "512KiB"

[fuse]
read_timeout = "10s"
"#;

fn hostile_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\0".to_owned()),
        Just("\"".to_owned()),
        Just("'''".to_owned()),
        Just("\n[[origins]]\n".to_owned()),
        Just("\n[cache]\n".to_owned()),
        Just("= =".to_owned()),
        Just("\"99999999999999999999999TiB\"".to_owned()),
        Just("\"1e308GiB\"".to_owned()),
        Just("\"-1s\"".to_owned()),
        Just("1e400".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("-9223372036854775808".to_owned()),
        Just("\"../..\"".to_owned()),
        Just("\"\"".to_owned()),
        Just("nan".to_owned()),
        Just("inf".to_owned()),
        Just("\u{feff}".to_owned()),
        Just("backup_for = \"cloud\"".to_owned()),
        (1usize..10_000).prop_map(|n| format!("\"{}\"", "x".repeat(n))),
        any::<String>(),
    ]
}

/// A valid config with a few edits: a range replaced by a hostile piece, a line duplicated, a cut.
fn hostile_config() -> impl Strategy<Value = String> {
    let edit = (any::<prop::sample::Index>(), 0usize..40, hostile_piece(), 0u8..3);
    proptest::collection::vec(edit, 0..4).prop_map(|edits| {
        let mut text = BASE.to_owned();
        for (at, len, piece, kind) in edits {
            let start = at.index(text.len() + 1);
            let start = (0..=start).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            let end = (start + len).min(text.len());
            let end = (end..=text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
            match kind {
                0 => text.replace_range(start..end, &piece),
                1 => {
                    let line = text[start..].lines().next().unwrap_or("").to_owned();
                    text.insert_str(start, &format!("{line}\n"));
                }
                _ => text.truncate(start),
            }
        }
        text
    })
}

fn check(text: &str) {
    match Config::parse(text, Path::new(FILE)) {
        Ok(config) => {
            assert!(config.validate().is_ok(), "a config that parses validates: {text}");
            assert!(!config.origins.is_empty());
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with(&format!("config error: {FILE}")), "{message}");
            assert_eq!(message.lines().count(), 1, "one line: {message}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_hostile_config_is_one_clear_error_or_a_valid_config(text in hostile_config()) {
        check(&text);
    }

    #[test]
    fn any_text_at_all_is_one_clear_error_or_a_valid_config(text in any::<String>()) {
        check(&text);
    }

    #[test]
    fn a_size_is_exact_or_refused(number in any::<f64>(), unit in prop::sample::select(vec!["", "B", "KiB", "MiB", "GiB", "TiB", "kb", "GB"])) {
        if let Ok(ByteSize(n)) = ByteSize::parse(&format!("{number}{unit}")) {
            prop_assert!(n < u64::MAX, "{number}{unit} was clamped to 16 EiB instead of refused");
        }
    }
}

#[test]
fn the_base_config_is_valid() {
    // Otherwise every mutation above is only ever an error, and the "parses, then validates" side goes
    // untested.
    assert!(Config::parse(BASE, Path::new(FILE)).is_ok());
}

#[test]
fn a_config_file_that_is_not_utf8_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("musicfs.toml");
    std::fs::write(&path, b"mount_point = \"/mnt/\xff\xfe\"\n").unwrap();
    let message = Config::load(&path).unwrap_err().to_string();
    assert!(message.contains("musicfs.toml"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
}
