//! Layer 2: the real `musicfs` binary on a real FUSE mount, over generated libraries of real tagged audio.
//! Tests start, signal, kill and restart the daemon; each owns its scratch directory and mount point, so
//! they run in parallel. Every test that proves a failure mode names it (`/// Proves L2: <ids>`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

use std::path::Path;

mod control;
mod crash_recovery;
mod filesystem;
mod lifecycle;
mod privilege;
mod restart;
mod search;

/// `musicfs ARGS --cache-dir CACHE` with the binary under test: (success, stdout, stderr).
fn musicfs(args: &[&str], cache: &Path) -> (bool, String, String) {
    musicfs_test_utils::daemon::run_cli(Path::new(env!("CARGO_BIN_EXE_musicfs")), args, cache)
}
