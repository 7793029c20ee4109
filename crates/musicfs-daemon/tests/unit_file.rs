//! The shipped systemd unit (dist/musicfs.service) says what the failure modes need: notify readiness, a
//! watchdog, a real ExecStop, an ExecStopPost that unmounts unless systemd starts the daemon again, the fd
//! store that keeps the mount across restarts, resource limits — and the privilege split (issue 16): root
//! mounts in `ExecStartPre=+`, the daemon runs as its own user in a sandbox that holds nothing to mount with.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

use std::collections::HashMap;
use std::path::Path;

fn unit() -> HashMap<String, Vec<String>> {
    unit_named("musicfs.service")
}

fn unit_named(name: &str) -> HashMap<String, Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut keys: HashMap<String, Vec<String>> = HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') || line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line}"));
        keys.entry(key.to_owned()).or_default().push(value.to_owned());
    }
    keys
}

fn one<'a>(unit: &'a HashMap<String, Vec<String>>, key: &str) -> &'a str {
    match unit.get(key).map(Vec::as_slice) {
        Some([value]) => value,
        other => panic!("{key}: expected exactly one value, got {other:?}"),
    }
}

/// A crash loop ends unmounted: past the start limit no ExecStopPost= is left to unmount (each failed attempt
/// kept the mount for the next), so OnFailure= starts a unit that does, with the same mount point.
/// Proves L1: 2.11
#[test]
fn a_unit_that_fails_for_good_is_unmounted_by_its_on_failure_unit() {
    let u = unit();
    assert_eq!(one(&u, "OnFailure"), "musicfs-unmount.service");
    let cleanup = unit_named("musicfs-unmount.service");
    assert_eq!(one(&cleanup, "Type"), "oneshot");
    assert_eq!(
        one(&cleanup, "ExecStart"),
        "/usr/local/bin/musicfs after-stop --on-failure --unit musicfs.service ${MUSICFS_MOUNT_POINT}",
        "not `+`: the unit runs as root already, in the host's mount namespace"
    );
    let mount_point = |u: &HashMap<String, Vec<String>>| {
        u["Environment"].iter().find(|e| e.starts_with("MUSICFS_MOUNT_POINT=")).cloned()
    };
    assert_eq!(mount_point(&cleanup), mount_point(&u), "both units name the same mount point");
    assert!(mount_point(&u).is_some());
}

/// Proves L1: 3.7, 2.10, 3.1, 2.7, 2.11
#[test]
fn the_unit_stops_through_the_daemon_and_never_leaves_a_dead_mount() {
    let u = unit();
    assert_eq!(one(&u, "Type"), "notify");
    // exec: the mount helper (ExecStartPre) hands the connection over with FDSTORE=1.
    assert_eq!(one(&u, "NotifyAccess"), "exec");
    assert!(one(&u, "WatchdogSec").trim_end_matches('s').parse::<u32>().is_ok_and(|s| s > 0));
    assert!(one(&u, "ExecStart").contains("musicfs mount --config ${MUSICFS_CONFIG}"));
    let stop = one(&u, "ExecStop");
    assert!(stop.contains("musicfs shutdown --config ${MUSICFS_CONFIG}") && stop.contains("--unit %n"), "{stop}");
    // Unmounts whenever the unit really stops, keeps the mount when systemd starts it again (2.11).
    let post = one(&u, "ExecStopPost");
    assert!(post.starts_with("+-") && post.contains("musicfs after-stop --unit %n ${MUSICFS_MOUNT_POINT}"), "{post}");
    // 2.11: the FUSE connection outlives the daemon in the fd store; a hand-over's exit 75 restarts it. Two
    // entries: the helper's fresh connection and the daemon's kept one overlap for a moment.
    assert!(one(&u, "FileDescriptorStoreMax").parse::<u32>().is_ok_and(|n| n >= 2));
    assert!(one(&u, "RestartForceExitStatus").split_whitespace().any(|c| c == "75"));
    assert_eq!(musicfs_daemon::RESTART_EXIT_CODE, 75);
    assert_eq!(one(&u, "Restart"), "on-failure");
    assert!(u.contains_key("RestartSec") && u.contains_key("TimeoutStopSec"));
    assert_eq!(one(&u, "ExecReload"), "/bin/kill -HUP $MAINPID");

    // The unit's environment and the example config agree on the mount point.
    let env: Vec<&String> = u["Environment"].iter().collect();
    assert!(env.iter().any(|e| *e == "MUSICFS_MOUNT_POINT=/mnt/music"), "{env:?}");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/musicfs.toml");
    let config = musicfs_core::Config::load(&example).unwrap();
    assert_eq!(config.mount_point, Path::new("/mnt/music"));
    assert!(config.fuse.allow_other, "a system mount serves other users");
}

/// Proves L1: 5.8
#[test]
fn the_unit_bounds_resources() {
    let u = unit();
    for key in ["LimitNOFILE", "MemoryHigh", "MemoryMax", "TasksMax", "OOMScoreAdjust"] {
        assert!(u.contains_key(key), "{key} is set");
    }
    assert!(one(&u, "LimitNOFILE").parse::<u64>().is_ok_and(|n| n >= 4096));
}

/// Issue 16: the daemon holds no privilege. Root mounts before it starts, raises the readahead after, and
/// unmounts after it stops, each in a `+` step (outside the sandbox, in the host's mount namespace); the
/// daemon runs as `musicfs` in a sandbox with no capability, no devices and no mount syscalls.
#[test]
fn root_mounts_and_unmounts_and_the_daemon_runs_sandboxed_without_privilege() {
    let u = unit();
    assert_eq!(one(&u, "User"), "musicfs");
    let pre = one(&u, "ExecStartPre");
    assert!(
        pre.starts_with('+')
            && pre.contains("musicfs mount-helper --config ${MUSICFS_CONFIG} --unit %n --owner musicfs"),
        "{pre}"
    );
    assert!(one(&u, "ExecStartPost").starts_with("+-"), "the readahead needs root, and never fails the start");
    assert!(!one(&u, "ExecStart").starts_with('+') && !one(&u, "ExecStop").starts_with('+'));
    assert_eq!(one(&u, "CapabilityBoundingSet"), "", "no capability at all");
    assert_eq!(one(&u, "NoNewPrivileges"), "yes");
    assert!(!u.contains_key("DeviceAllow"), "no /dev/fuse: the connection is passed in");
    let filters = u["SystemCallFilter"].join(" ");
    assert!(!filters.contains("@mount") && filters.contains("~@privileged"), "{filters}");
    for (key, value) in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "read-only"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("PrivateMounts", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectProc", "invisible"),
        ("ProcSubset", "pid"),
        ("UMask", "0077"),
    ] {
        assert_eq!(one(&u, key), value, "{key}");
    }
    // The cache, the control socket's directory and the user itself come with the unit.
    assert_eq!(one(&u, "CacheDirectory"), "musicfs");
    assert_eq!(one(&u, "RuntimeDirectory"), "musicfs");
    assert_eq!((one(&u, "CacheDirectoryMode"), one(&u, "RuntimeDirectoryMode")), ("0700", "0700"));
    let sysusers = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/musicfs.sysusers");
    let sysusers = std::fs::read_to_string(sysusers).unwrap();
    assert!(sysusers.lines().any(|l| l.starts_with("u musicfs ")), "{sysusers}");
}
