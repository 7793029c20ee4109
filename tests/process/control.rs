//! The control socket with the real binary: `musicfs status` (human and JSON), `musicfs metrics`
//! (Prometheus text) and `musicfs shutdown`, which returns once the daemon has stopped (systemd's ExecStop).

use musicfs_test_utils::daemon::{Daemon, Scratch, is_fuse_mounted};
use musicfs_test_utils::sample::{self, SampleOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_musicfs");

fn musicfs(args: &[&str], cache: &Path) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).arg("--cache-dir").arg(cache).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Proves L2: 3.7
#[test]
fn status_metrics_and_shutdown_over_the_control_socket() {
    let scratch = Scratch::new().unwrap();
    let tracks = sample::generate(&scratch.lib(), &SampleOptions { tracks: 4, hostile: false, seconds: 0.5 }).unwrap();
    let mut daemon = Daemon::start(Path::new(BIN), &scratch.args()).unwrap();
    std::fs::read(scratch.mnt().join(tracks[0].expected_tag_path().unwrap())).unwrap();

    let socket = scratch.cache().join("control.sock");
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600,
        "only the owner may control the daemon"
    );

    let (ok, json, err) = musicfs(&["status", "--json"], &scratch.cache());
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(status["tracks"], 4);
    assert_eq!(status["state"], "ready");
    assert_eq!(status["pid"].as_u64(), daemon.pid().map(u64::from));
    assert!(status["cache_bytes"].as_u64().unwrap() > 0);
    assert!(status["open_fds"].as_u64().unwrap() > 0 && status["rss_bytes"].as_u64().unwrap() > 0);

    let (ok, human, _) = musicfs(&["status"], &scratch.cache());
    assert!(ok && human.contains("state:      ready") && human.contains("origin:     local  up"), "{human}");

    let (ok, metrics, _) = musicfs(&["metrics"], &scratch.cache());
    assert!(ok);
    for needle in [
        "musicfs_fuse_ops_total{op=\"read\"}",
        "musicfs_origin_up{origin=\"local\"} 1",
        "musicfs_read_duration_seconds_count",
        "musicfs_open_fds",
        "musicfs_cache_hit_ratio",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }

    let asked = Instant::now();
    let (ok, out, err) = musicfs(&["shutdown", "--drain-timeout", "2s"], &scratch.cache());
    assert!(ok, "{err}");
    assert!(out.contains("stopped"), "{out}");
    let status = daemon.wait(Duration::from_secs(5)).unwrap();
    assert!(status.success(), "a requested shutdown exits 0");
    eprintln!("musicfs shutdown returned after {:?}", asked.elapsed());
    assert!(!is_fuse_mounted(&scratch.mnt()) && !socket.exists(), "mount and socket are gone");
    let (ok, _, err) = musicfs(&["status"], &scratch.cache());
    assert!(!ok && err.contains("no running daemon"), "{err}");
}
