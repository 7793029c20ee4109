//! 6.7 at start: a cache directory this user may not write is refused with one explicit line, before the lock,
//! the database or the chunk store meet it. The test runs the check as `nobody` by switching the effective
//! user of its own process; it relies on nextest running each test in a process of its own, as the rlimit
//! tests do.

use musicfs_daemon::preflight::check_cache_dir;
use std::os::unix::fs::PermissionsExt;

const NOBODY: u32 = 65534;

/// Runs as `nobody` (effective ids) until dropped; the saved set-user-ID stays root, so it can switch back.
struct AsNobody;

impl AsNobody {
    fn new() -> AsNobody {
        // SAFETY: plain syscalls; -1 (u32::MAX) leaves an id unchanged. Group first: after the user, it may
        // not be changed any more.
        unsafe {
            assert_eq!(libc::setresgid(u32::MAX, NOBODY, u32::MAX), 0, "setresgid");
            assert_eq!(libc::setresuid(u32::MAX, NOBODY, u32::MAX), 0, "setresuid");
        }
        AsNobody
    }
}

impl Drop for AsNobody {
    fn drop(&mut self) {
        // SAFETY: as above; the saved ids are root's.
        unsafe {
            libc::setresuid(u32::MAX, 0, u32::MAX);
            libc::setresgid(u32::MAX, 0, u32::MAX);
        }
    }
}

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Proves L1: 6.7
#[test]
fn a_cache_directory_this_user_cannot_write_is_refused_with_one_explicit_line() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test switches users, so it runs as root (as CI does)");
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(cache.join("chunks/v1/ab")).unwrap();
    std::fs::create_dir_all(cache.join("tmp")).unwrap();
    std::fs::write(cache.join("meta.db"), b"").unwrap();
    // Everything handed to nobody, as a packager would do for a `User=musicfs` service...
    for p in ["", "chunks", "chunks/v1", "chunks/v1/ab", "tmp", "meta.db"] {
        std::os::unix::fs::chown(cache.join(p), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    {
        let _nobody = AsNobody::new();
        assert!(check_cache_dir(&cache).is_ok(), "a cache owned by its user passes");
    }

    // ...except what a later root-run tool left behind: one chunk fan-out directory, then the database.
    for (victim, kind) in [("chunks/v1/ab", "a chunk directory"), ("meta.db", "the database")] {
        std::os::unix::fs::chown(cache.join(victim), Some(0), Some(0)).unwrap();
        let err = {
            let _nobody = AsNobody::new();
            check_cache_dir(&cache).expect_err(kind).to_string()
        };
        for needle in ["6.7", &cache.join(victim).display().to_string(), "uid 65534", "Permission denied", "chown"] {
            assert!(err.contains(needle), "{kind}: {needle:?} missing from: {err}");
        }
        assert_eq!(err.lines().count(), 1, "{err}");
        std::os::unix::fs::chown(cache.join(victim), Some(NOBODY), Some(NOBODY)).unwrap();
    }

    // A cache directory nobody may not even enter.
    chmod(&cache, 0o700);
    std::os::unix::fs::chown(&cache, Some(0), Some(0)).unwrap();
    let _nobody = AsNobody::new();
    let err = check_cache_dir(&cache).unwrap_err().to_string();
    assert!(err.contains(&cache.display().to_string()) && err.contains("Permission denied"), "{err}");
}
