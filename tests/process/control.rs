//! The control socket with the real binary: `musicfs status` (human and JSON), `musicfs metrics`
//! (Prometheus text) and `musicfs shutdown`, which returns once the daemon has stopped (systemd's ExecStop).

use crate::musicfs;
use musicfs_test_utils::daemon::{Daemon, Scratch, is_fuse_mounted};
use musicfs_test_utils::sample::{self, SampleOptions};
use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_musicfs");

/// Proves L2: 3.7
#[test]
fn status_metrics_and_shutdown_over_the_control_socket() {
    let scratch = Scratch::new().unwrap();
    let tracks = sample::generate(&scratch.lib(), &SampleOptions { tracks: 4, hostile: false, seconds: 0.5 }).unwrap();
    let mut daemon = Daemon::start(Path::new(BIN), &scratch.args()).unwrap();
    std::fs::read(scratch.mnt().join(tracks[0].expected_tag_path().unwrap())).unwrap();

    let socket = musicfs_daemon::control::socket_path(&scratch.cache());
    assert!(socket.starts_with(musicfs_daemon::control::runtime_dir()), "{}", socket.display());
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600,
        "only the owner may control the daemon"
    );

    // Chunks are written behind the read that fetched them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let (ok, json, err) = musicfs(&["status", "--json"], &scratch.cache());
        assert!(ok, "{err}");
        let status: serde_json::Value = serde_json::from_str(&json).unwrap();
        if status["cache_bytes"].as_u64().unwrap() > 0 || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status["tracks"], 4);
    assert_eq!(status["state"], "ready");
    assert_eq!(status["pid"].as_u64(), daemon.pid().map(u64::from));
    assert!(status["cache_bytes"].as_u64().unwrap() > 0);
    assert!(status["open_fds"].as_u64().unwrap() > 0 && status["rss_bytes"].as_u64().unwrap() > 0);

    let (ok, human, _) = musicfs(&["status"], &scratch.cache());
    assert!(ok && human.contains("state:      ready") && human.contains("origin:     local  up"), "{human}");
    assert!(human.contains("library watcher alive (0 restarts)") && !human.contains("DEAD"), "{human}");

    let (ok, metrics, _) = musicfs(&["metrics"], &scratch.cache());
    assert!(ok);
    for needle in [
        "musicfs_fuse_ops_total{op=\"read\"}",
        "musicfs_origin_up{origin=\"local\"} 1",
        "musicfs_read_duration_seconds_count",
        "musicfs_open_fds",
        "musicfs_tree_heap_bytes",
        "musicfs_search_up",
        "musicfs_cache_hit_ratio",
        "musicfs_events_lost_total{consumer=\"kernel cache invalidator\"} 0",
        "musicfs_task_restarts_total{task=\"health monitor\"} 0",
        "musicfs_task_up{task=\"library watcher\"} 1",
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

/// `musicfs sync` picks up changes at once, `musicfs events` shows them, and the kernel forgets what it
/// had cached from the old tree right away (the attribute and name cache would otherwise keep a removed file
/// and a changed file's old size for the adapter's 10 s TTL).
/// Proves L2: 3.3
#[test]
fn sync_and_events_show_a_change_at_once_and_the_kernel_forgets_the_old_tree() {
    let scratch = Scratch::new().unwrap();
    let tracks = sample::generate(&scratch.lib(), &SampleOptions { tracks: 4, hostile: false, seconds: 0.5 }).unwrap();
    let daemon = Daemon::start(Path::new(BIN), &scratch.args()).unwrap();
    let mut watcher = Command::new(BIN)
        .args(["events", "--cache-dir"])
        .arg(scratch.cache())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = watcher.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let hello = lines.recv_timeout(Duration::from_secs(10)).expect("musicfs events says it is subscribed");
    assert!(hello.contains("subscribed"), "{hello}");

    let gone = scratch.mnt().join(tracks[0].expected_tag_path().unwrap());
    let changed = scratch.mnt().join(tracks[1].expected_tag_path().unwrap());
    // Into the kernel's caches: names, attributes, pages.
    std::fs::read(&gone).unwrap();
    let before = std::fs::read(&changed).unwrap();
    std::fs::remove_file(scratch.lib().join(&tracks[0].rel_path)).unwrap();
    let mut longer = before.clone();
    longer.extend_from_slice(&[7u8; 4096]);
    std::fs::write(scratch.lib().join(&tracks[1].rel_path), &longer).unwrap();

    let (ok, out, err) = musicfs(&["sync"], &scratch.cache());
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((report["removed"].as_u64(), report["changed"].as_u64()), (Some(1), Some(1)), "{out}");
    // At once, not after a TTL.
    let stale = std::fs::metadata(&gone).map(|m| m.len());
    assert_eq!(stale.map_err(|e| e.raw_os_error()), Err(Some(libc::ENOENT)), "the removed file is gone at once");
    assert_eq!(std::fs::metadata(&changed).unwrap().len(), longer.len() as u64, "the new size shows at once");
    assert_eq!(std::fs::read(&changed).unwrap(), longer, "and the new content");

    let event = loop {
        let line = lines.recv_timeout(Duration::from_secs(10)).expect("a library_changed event");
        if line.contains("library_changed") {
            break serde_json::from_str::<serde_json::Value>(&line).unwrap();
        }
    };
    assert_eq!(
        (event["removed"].as_u64(), event["changed"].as_u64(), event["tracks"].as_u64()),
        (Some(1), Some(1), Some(3))
    );
    let (_, json, _) = musicfs(&["status", "--json"], &scratch.cache());
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    let events = &status["events"];
    assert!(events["kernel_invalidations"].as_u64().unwrap() >= 2, "{events}");
    assert!(events["consumers"].as_array().unwrap().iter().all(|c| c["lost"] == 0), "{events}");

    let _ = watcher.kill();
    let _ = watcher.wait();
    let status = daemon.stop().unwrap();
    assert!(status.success() && !is_fuse_mounted(&scratch.mnt()));
}

/// The control socket answers only the daemon's own user (and root): the check is on the connection's peer
/// credentials, so it holds even when the socket file and its directory are opened up to everyone.
#[test]
fn another_user_is_refused_by_the_control_socket_even_when_its_mode_lets_them_in() {
    use std::io::{Read, Write};
    const NOBODY: u32 = 65534;
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test switches users, so it runs as root (as CI does)");
    let scratch = Scratch::new().unwrap();
    sample::generate(&scratch.lib(), &SampleOptions { tracks: 1, hostile: false, seconds: 0.5 }).unwrap();
    let daemon = Daemon::start(Path::new(BIN), &scratch.args()).unwrap();
    let socket = musicfs_daemon::control::socket_path(&scratch.cache());
    let dir = socket.parent().unwrap().to_owned();
    let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    /// Puts the runtime directory's mode back, whatever happens.
    struct Restore(std::path::PathBuf, u32);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(self.1));
        }
    }
    let _restore = Restore(dir.clone(), dir_mode);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();

    let ask = |who: &str| -> String {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket)
            .unwrap_or_else(|e| panic!("{who} could not connect to {}: {e}", socket.display()));
        stream.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    // SAFETY: plain syscalls switching this test process's effective ids (nextest runs it alone in its
    // process); the saved ids stay root's, so it switches back below. Group first.
    unsafe {
        assert_eq!(libc::setresgid(u32::MAX, NOBODY, u32::MAX), 0);
        assert_eq!(libc::setresuid(u32::MAX, NOBODY, u32::MAX), 0);
    }
    let as_nobody = ask("nobody");
    // SAFETY: as above.
    unsafe {
        libc::setresuid(u32::MAX, 0, u32::MAX);
        libc::setresgid(u32::MAX, 0, u32::MAX);
    }
    assert!(as_nobody.contains("permission denied: uid 65534"), "nobody got: {as_nobody}");
    assert!(!as_nobody.contains("\"tracks\""), "nobody got the status: {as_nobody}");
    let as_root = ask("root");
    assert!(as_root.contains("\"tracks\":1"), "root got: {as_root}");
    assert!(daemon.log().contains("control connection refused"), "{}", daemon.log());
    daemon.stop_cleanly();
}
