//! The real daemon crashed at exact lines by failpoints (needs a `--features failpoints` build), then
//! started again: a crash mid chunk write leaves no partial chunk (5.7), a crash mid scan resumes (2.5).

#![cfg(feature = "failpoints")]

use musicfs_test_utils::daemon::{Daemon, Scratch, is_fuse_mounted};
use musicfs_test_utils::files::{chunk_files, pseudo_random_bytes};
use std::path::Path;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_musicfs");

/// Proves L2: 5.7
#[test]
fn a_crash_in_the_middle_of_a_chunk_write_leaves_no_partial_chunk() {
    let scratch = Scratch::new().unwrap();
    let data = pseudo_random_bytes(3 << 20, 5);
    std::fs::write(scratch.lib().join("big.wav"), &data).unwrap();
    let mut args = scratch.args();
    args.env.push(("FAILPOINTS".into(), "cas::put::after_write_before_rename=exit(86)".into()));
    let mut daemon = Daemon::start(Path::new(BIN), &args).unwrap();
    let path = scratch.mnt().join("Unknown Artist/Unknown Album/big.wav");
    // The first chunk write kills the daemon. The reader may already have its bytes (chunks are served from
    // memory before they are written) or get an error from the dead mount; it must not hang.
    let reader = std::thread::spawn(move || std::fs::read(path));
    let status = daemon.wait(Duration::from_secs(20)).unwrap();
    assert_eq!(status.code(), Some(86), "died at the failpoint:\n{}", daemon.log());
    if let Ok(bytes) = reader.join().unwrap() {
        assert!(bytes == data, "whatever was served before the crash is correct");
    }
    let tmp = std::fs::read_dir(scratch.cache().join("chunks/v1/tmp")).unwrap().count();
    assert!(tmp >= 1, "the crash left a finished temp file behind");
    assert!(chunk_files(&scratch.cache()).unwrap().is_empty(), "but no chunk file is visible");
    drop(daemon);

    let daemon = Daemon::start(Path::new(BIN), &scratch.args()).unwrap();
    assert!(daemon.log().contains("5.7 removed unfinished chunk writes"), "{}", daemon.log());
    let got = std::fs::read(scratch.mnt().join("Unknown Artist/Unknown Album/big.wav")).unwrap();
    assert!(got == data, "byte-identical after the restart");
    assert!(daemon.stop().unwrap().success());
    assert!(!is_fuse_mounted(&scratch.mnt()));
}

/// Proves L2: 2.5
#[test]
fn a_first_scan_killed_between_batches_resumes_at_the_next_start() {
    let scratch = Scratch::new().unwrap();
    let total = 1100;
    for i in 0..total {
        std::fs::write(scratch.lib().join(format!("{i:05}.flac")), [i as u8; 32]).unwrap();
    }
    let mut args = scratch.args();
    args.env.push(("FAILPOINTS".into(), "meta::sync::after_batch=exit(86)".into()));
    let error = match Daemon::start(Path::new(BIN), &args) {
        Ok(_) => panic!("the scan should have been killed before mounting"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("86"), "{error}");

    let daemon = Daemon::start(Path::new(BIN), &scratch.args()).unwrap();
    let log = daemon.log();
    assert!(log.contains("2.5 resuming an interrupted scan"), "{log}");
    assert!(log.contains(&format!("read tags tracks={}", total - 500)), "only the unread rest was scanned: {log}");
    let listed = std::fs::read_dir(scratch.mnt().join("Unknown Artist/Unknown Album")).unwrap().count();
    assert_eq!(listed, total);
    assert!(daemon.stop().unwrap().success());
}
