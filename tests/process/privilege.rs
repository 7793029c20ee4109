//! The privilege split (issue 16): `musicfs mount-helper` mounts as root and hands the connection over
//! through the service manager's fd store ([`FdStore`] stands in for systemd's); the daemon runs as `nobody`
//! with no capability at all, answers INIT on that connection, serves it, survives kill -9 by resuming it
//! (2.11), and at a stop leaves the unmount to the service manager (`musicfs after-stop`, ExecStopPost=).

use musicfs_test_utils::daemon::{Daemon, Scratch, abort_connection_after, is_fuse_mounted};
use musicfs_test_utils::fdstore::FdStore;
use musicfs_test_utils::files::pseudo_random_bytes;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_musicfs");
const NOBODY: u32 = 65534;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The line of /proc/PID/status that starts with `key`.
fn status_line(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find(|l| l.starts_with(key)).unwrap_or_default().to_owned()
}

/// The super options of the mount at `path` (the last field of its mountinfo line).
fn mount_options(path: &Path) -> String {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let target = format!(" {} ", path.display());
    mountinfo.lines().rev().find(|l| l.contains(&target)).unwrap_or_default().to_owned()
}

#[test]
fn an_unprivileged_daemon_serves_the_helpers_mount_resumes_it_after_kill_9_and_leaves_the_unmount_to_root() {
    let scratch = Scratch::new().unwrap();
    let tracks: Vec<Vec<u8>> = (0..2).map(|i| pseudo_random_bytes(1 << 20, 300 + i)).collect();
    for (i, bytes) in tracks.iter().enumerate() {
        std::fs::write(scratch.lib().join(format!("t{i}.wav")), bytes).unwrap();
    }
    // What the unit's CacheDirectory= and RuntimeDirectory= give the service user.
    let runtime = scratch.dir.path().join("run");
    std::fs::create_dir_all(&runtime).unwrap();
    for dir in [scratch.cache(), runtime.clone()] {
        std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    chmod(scratch.dir.path(), 0o755);
    let keeper = FdStore::new(scratch.dir.path()).unwrap();
    chmod(&scratch.dir.path().join("notify.sock"), 0o777);
    let env = vec![keeper.env(), ("RUNTIME_DIRECTORY".into(), runtime.display().to_string())];

    // ExecStartPre=+: root mounts and stores the connection, INIT still unanswered.
    let helper = Command::new(BIN)
        .args(["mount-helper", "--unit", "musicfs-test.service", "--owner", "65534:65534", "--allow-other"])
        .arg("--origin")
        .arg(scratch.lib())
        .arg("--cache-dir")
        .arg(scratch.cache())
        .arg(scratch.mnt())
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    // Nothing serves the connection until the daemon starts: should the test fail, nothing may hang on it.
    let finished = abort_connection_after(&scratch.mnt(), Duration::from_secs(45));
    assert!(helper.status.success(), "mount-helper: {helper:?}");
    assert!(String::from_utf8_lossy(&helper.stdout).contains("Mounted"), "{helper:?}");
    let mounted = keeper.wait_for_fd("fuse-mounted", Duration::from_secs(5)).unwrap();
    assert!(is_fuse_mounted(&scratch.mnt()), "the helper mounted");
    let options = mount_options(&scratch.mnt());
    assert!(options.contains("user_id=65534") && options.contains("allow_other"), "{options}");

    let args = |fds| {
        let mut args = scratch.args();
        args.extra.push("--allow-other".into());
        args.env = env.clone();
        args.listen_fds = fds;
        args.run_as = Some(NOBODY);
        args
    };
    let first = Daemon::start(Path::new(BIN), &args(vec![("fuse-mounted".into(), mounted)])).unwrap();
    assert!(first.log().contains("serving the connection the mount helper mounted"), "{}", first.log());
    let pid = first.pid().unwrap();
    assert!(status_line(pid, "Uid:").split_whitespace().skip(1).all(|id| id == "65534"), "runs as nobody");
    for key in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(status_line(pid, key).split_whitespace().nth(1), Some("0000000000000000"), "{key}");
    }
    let album = scratch.mnt().join("Unknown Artist/Unknown Album");
    for (i, bytes) in tracks.iter().enumerate() {
        assert_eq!(std::fs::read(album.join(format!("t{i}.wav"))).unwrap(), *bytes, "t{i} through the mount");
    }
    // The daemon answered INIT and stored the connection as the one a restart resumes.
    let kept = keeper.wait_for_fd("fuse", Duration::from_secs(5)).unwrap();
    let names: Vec<String> = keeper.stored().into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["fuse"], "the helper's entry is replaced: {:?}", keeper.messages());

    // kill -9: the next unprivileged daemon resumes the kept connection.
    first.kill9().unwrap();
    assert!(is_fuse_mounted(&scratch.mnt()), "the stored connection keeps the mount");
    let second = Daemon::start(Path::new(BIN), &args(vec![("fuse".into(), kept)])).unwrap();
    assert!(second.log().contains("2.11 resumed the FUSE connection"), "{}", second.log());
    assert_eq!(std::fs::read(album.join("t1.wav")).unwrap(), tracks[1], "served after the resume");

    // A stop: the daemon cannot unmount and says so; root's ExecStopPost= does it.
    second.signal(libc::SIGTERM);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !second.log().contains("2.3 stopped cleanly") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = second.log();
    assert!(second.wait_keeping_mount(Duration::from_secs(10)).unwrap().success(), "{log}");
    assert!(log.contains("this process may not unmount"), "{log}");
    assert!(is_fuse_mounted(&scratch.mnt()), "left for the service manager");
    let after_stop = Command::new(BIN)
        .args(["after-stop", "--unit", "musicfs-test.service"])
        .arg(scratch.mnt())
        .env_remove("SERVICE_RESULT")
        .output()
        .unwrap();
    assert!(after_stop.status.success(), "{after_stop:?}");
    assert!(!is_fuse_mounted(&scratch.mnt()), "after-stop unmounted: {after_stop:?}");
    finished.store(true, Ordering::SeqCst);
}

/// The mount helper with nowhere to hand the connection (not under systemd, or a notify socket nobody
/// reads) says why and leaves no mount behind: a dead mount at the mount point would fail every access.
#[test]
fn the_mount_helper_without_a_service_manager_says_why_and_leaves_no_mount() {
    let scratch = Scratch::new().unwrap();
    let helper = |notify: Option<&Path>| {
        let mut cmd = Command::new(BIN);
        cmd.args(["mount-helper", "--unit", "musicfs-test.service", "--owner", "65534"])
            .arg("--origin")
            .arg(scratch.lib())
            .arg("--cache-dir")
            .arg(scratch.cache())
            .arg(scratch.mnt())
            .env_remove("NOTIFY_SOCKET");
        if let Some(socket) = notify {
            cmd.env("NOTIFY_SOCKET", socket);
        }
        cmd.output().unwrap()
    };
    let missing = helper(None);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NOTIFY_SOCKET is not set"), "{missing:?}");
    assert!(!is_fuse_mounted(&scratch.mnt()), "nothing mounted without a store");
    let unread = helper(Some(&scratch.dir.path().join("nobody-listens.sock")));
    assert!(!unread.status.success());
    assert!(String::from_utf8_lossy(&unread.stderr).contains("no service manager"), "{unread:?}");
    assert!(!is_fuse_mounted(&scratch.mnt()), "the mount that could not be handed over was taken down");
}
