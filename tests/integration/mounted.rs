//! The real `musicfs` binary on remote origins, for the origin tests: start it on a config naming the
//! origins, ask it through its CLI, wait (bounded) for a state or for its chunk cache to settle, and check that
//! it served on without a remount.

use musicfs_test_utils::daemon::{Daemon, DaemonArgs, Scratch, is_fuse_mounted, run_cli};
use std::path::Path;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_musicfs");

/// Writes a config with these `[[origins]]` sections and `extra` TOML, and starts the daemon on it.
pub fn start(scratch: &Scratch, origins: &str, extra: &str) -> Daemon {
    let config = scratch.dir.path().join("musicfs.toml");
    let text = format!(
        "mount_point = {:?}\ncache_dir = {:?}\n\n{origins}{extra}\n",
        scratch.mnt().display().to_string(),
        scratch.cache().display().to_string()
    );
    std::fs::write(&config, text).unwrap();
    let args = DaemonArgs {
        config: Some(config),
        cache_dir: Some(scratch.cache()),
        mount_point: scratch.mnt(),
        ..Default::default()
    };
    Daemon::start(Path::new(BIN), &args).expect("start musicfs")
}

/// Runs `musicfs ARGS --cache-dir CACHE`: (success, stdout, stderr).
pub fn musicfs(args: &[&str], scratch: &Scratch) -> (bool, String, String) {
    run_cli(Path::new(BIN), args, &scratch.cache())
}

pub fn status(scratch: &Scratch) -> serde_json::Value {
    let (ok, out, err) = musicfs(&["status", "--json"], scratch);
    assert!(ok, "musicfs status failed: {err}");
    serde_json::from_str(&out).unwrap()
}

/// Waits (bounded) until `musicfs status` says `state`; returns how long that took.
pub fn wait_for_state(scratch: &Scratch, daemon: &Daemon, state: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let now = status(scratch);
        if now["state"] == state {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "state is {} after {within:?}, not {state}:\n{}", now, daemon.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the chunks fetched by earlier reads are on disk: chunk writes run behind the reads.
pub fn wait_for_cache_to_settle(scratch: &Scratch) {
    let started = Instant::now();
    let mut last = (u64::MAX, Instant::now());
    loop {
        let now = status(scratch);
        let written = now["chunks_written"].as_u64().unwrap();
        if written != last.0 {
            last = (written, Instant::now());
        } else if written > 0 && now["reads_in_flight"] == 0 && last.1.elapsed() > Duration::from_secs(1) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the cache never settled: {now}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The same daemon still serves the same mount: its pid is `pid`, it mounted once, and the mount is there.
pub fn assert_served_without_remount(daemon: &Daemon, scratch: &Scratch, pid: Option<u32>) {
    let log = daemon.log();
    assert_eq!(log.matches("mounted and serving").count(), 1, "the daemon remounted:\n{log}");
    assert_eq!(daemon.pid(), pid);
    assert!(is_fuse_mounted(&scratch.mnt()));
}
