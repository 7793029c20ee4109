//! Keeping the FUSE connection across a restart (2.11): after mounting, the daemon hands a copy of its
//! `/dev/fuse` descriptor to systemd's file descriptor store (`FDSTORE=1`, `FDNAME=fuse`). When it dies —
//! `kill -9`, a crash, the watchdog, or a planned restart — the kernel keeps the connection and the mount
//! because that copy is still open; readers block instead of failing. The next daemon gets the descriptor
//! back in `LISTEN_FDS`, serves it without a new INIT, and asks the kernel to resend every request the dead
//! one had read and not answered (FUSE_NOTIFY_RESEND). Every MusicFS request is read-only and idempotent,
//! inode numbers come from the database, and file handles carry no state, so a resent request means the same
//! to the new daemon as it did to the old one.
//!
//! Without a stored descriptor (first start, no systemd) or when it cannot be resumed (the connection is
//! dead, the mount is gone, the kernel lacks FUSE_NOTIFY_RESEND), the daemon drops it and mounts anew as
//! before, clearing a stale mount (2.7), and says why in one log line.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

/// The name of the FUSE connection's descriptor in the store.
pub const FD_NAME: &str = "fuse";

/// The name under which the mount helper stores a freshly mounted connection, still waiting for its INIT
/// (issue 16, `mount_helper.rs`).
pub const MOUNTED_FD_NAME: &str = "fuse-mounted";

/// The first kernel with FUSE_NOTIFY_RESEND (protocol 7.40).
const RESEND_SINCE: (u32, u32) = (6, 9);

/// A FUSE connection systemd passed in `LISTEN_FDS`.
pub enum Passed {
    /// One an earlier daemon stored after INIT ([`FD_NAME`]): resumed without INIT.
    Kept(OwnedFd),
    /// One the mount helper mounted ([`MOUNTED_FD_NAME`]): its INIT is still to answer.
    Mounted(OwnedFd),
}

/// The connections systemd passed in `LISTEN_FDS`: the kept one ([`FD_NAME`]) and the one the mount helper
/// mounted, each if present. Other passed descriptors are left alone. Reads the environment only, so it is
/// safe once threads run.
pub fn passed_connections() -> (Option<OwnedFd>, Option<OwnedFd>) {
    let passed = match sd_notify::listen_fds_with_names() {
        Ok(passed) => passed,
        Err(e) => {
            tracing::warn!(error = %e, "2.11 cannot read the descriptors systemd passed; mounting anew");
            return (None, None);
        }
    };
    let (mut kept, mut mounted) = (None, None);
    for (fd, name) in passed {
        let slot = match name.as_str() {
            FD_NAME => &mut kept,
            MOUNTED_FD_NAME => &mut mounted,
            _ => continue,
        };
        if slot.is_none() {
            // SAFETY: systemd passed this descriptor to this process (LISTEN_PID matched); nothing else owns it.
            *slot = Some(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    (kept, mounted)
}

/// Why a passed connection cannot be resumed, or Ok when it can: alive, still mounted at the mount point,
/// and a kernel that can resend what the dead daemon had read.
pub fn resumable(fd: BorrowedFd<'_>, mount_point: &Path) -> Result<(), String> {
    if !is_fuse_device(fd) {
        return Err("the descriptor passed as `fuse` is not /dev/fuse".into());
    }
    if connection_dead(fd) {
        return Err("the stored connection is dead (aborted, or unmounted meanwhile)".into());
    }
    match crate::mounts::mounted_fstype(mount_point) {
        Some(t) if t.starts_with("fuse") => {}
        other => return Err(format!("no FUSE mount at the mount point (found {other:?})")),
    }
    match kernel_release() {
        Some(v) if v >= RESEND_SINCE => Ok(()),
        v => Err(format!("this kernel ({v:?}) cannot resend the requests the old daemon had read (needs 6.9)")),
    }
}

/// The FUSE device: character device 10:229.
fn is_fuse_device(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: fstat into a zeroed stat buffer on a valid descriptor.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } != 0 {
        return false;
    }
    stat.st_mode & libc::S_IFMT == libc::S_IFCHR && libc::major(stat.st_rdev) == 10 && libc::minor(stat.st_rdev) == 229
}

/// poll(2) says POLLERR on a `/dev/fuse` descriptor whose connection has ended.
fn connection_dead(fd: BorrowedFd<'_>) -> bool {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, zero timeout.
    let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
    rc < 0 || pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
}

/// The running kernel's (major, minor), from uname(2): a sandbox with `ProcSubset=pid` has no /proc/sys.
fn kernel_release() -> Option<(u32, u32)> {
    // SAFETY: uname fills a zeroed utsname; `release` is NUL-terminated on success.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut name) } != 0 {
        return None;
    }
    // SAFETY: the kernel wrote a NUL-terminated string into `release`.
    let release = unsafe { std::ffi::CStr::from_ptr(name.release.as_ptr()) }.to_string_lossy();
    let mut parts = release.split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Whether this process can store descriptors with a service manager: NOTIFY_SOCKET is set, and systemd
/// (254 and later, which says how many it keeps in `$FDSTORE`) keeps at least one. An older systemd does
/// not say; a unit without `FileDescriptorStoreMax=` then drops the descriptor and a restart remounts.
pub fn store_available() -> bool {
    let notify = std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty());
    notify && std::env::var("FDSTORE").ok().and_then(|n| n.parse::<u32>().ok()) != Some(0)
}

/// Puts a copy of the connection's descriptor in the store, replacing any earlier one. Returns whether it
/// was stored; without a service manager there is nothing to store it in.
pub fn store(fd: BorrowedFd<'_>) -> bool {
    if !store_available() {
        return false;
    }
    forget();
    use sd_notify::NotifyState;
    match sd_notify::notify_with_fds(&[NotifyState::FdStore, NotifyState::FdName(FD_NAME)], &[fd.as_fd()]) {
        Ok(()) => {
            tracing::info!("2.11 FUSE connection stored with the service manager: a restart resumes it");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "2.11 could not store the FUSE connection; a restart will remount");
            false
        }
    }
}

/// Takes the connection out of the store (the service manager closes its copy).
pub fn forget() {
    remove_from_store(FD_NAME);
}

/// Takes the helper's freshly mounted connection out of the store, once this daemon holds it.
pub fn forget_mounted() {
    remove_from_store(MOUNTED_FD_NAME);
}

fn remove_from_store(name: &str) {
    if store_available() {
        use sd_notify::NotifyState;
        if let Err(e) = sd_notify::notify(&[NotifyState::FdStoreRemove, NotifyState::FdName(name)]) {
            tracing::debug!(error = %e, name, "FDSTOREREMOVE failed");
        }
    }
}

/// The kernel's FUSE request timeout (`fs.fuse.default_request_timeout`, Linux 6.14), when one is set: a
/// request unanswered that long aborts the whole connection, so a restart must stay well below it.
pub fn kernel_request_timeout() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/sys/fs/fuse/default_request_timeout").ok()?;
    let secs: u64 = text.trim().parse().ok()?;
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// The types of the jobs systemd has queued or running for `unit` ("restart", "stop", "start", …), read
/// from `systemctl list-jobs`; empty when there are none or systemctl cannot tell.
pub fn unit_jobs(unit: &str) -> Vec<String> {
    let listed = std::process::Command::new("systemctl")
        .args(["list-jobs", "--no-legend", "--no-pager", "--full"])
        .stderr(std::process::Stdio::null())
        .output();
    match listed {
        Ok(out) => jobs_of(&String::from_utf8_lossy(&out.stdout), unit),
        Err(_) => Vec::new(),
    }
}

/// One property of the unit as `systemctl show` gives it (`ActiveState`: `active`, `failed`, …), if systemd
/// answers.
pub fn unit_property(unit: &str, name: &str) -> Option<String> {
    let out = std::process::Command::new("systemctl")
        .args(["show", &format!("--property={name}"), "--value", unit])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !state.is_empty()).then_some(state)
}

/// `systemctl list-jobs --no-legend` rows are `ID UNIT TYPE STATE`.
fn jobs_of(listing: &str, unit: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|row| {
            let mut fields = row.split_whitespace();
            let (_id, name, kind) = (fields.next()?, fields.next()?, fields.next()?);
            (name == unit).then(|| kind.to_owned())
        })
        .collect()
}

/// What the unit's `ExecStopPost=` does with the mount (2.11): keep it when systemd is about to start the
/// daemon again — a restart job (`systemctl restart`), a daemon that left for a restart
/// ([`crate::RESTART_EXIT_CODE`]), or one that failed (`$SERVICE_RESULT` other than `success`; a crash,
/// kill -9 or the watchdog, which `Restart=on-failure` restarts) — and unmount it otherwise: after
/// `systemctl stop` (whatever the daemon's end) and after a clean exit, no mount is left. Should the
/// restarts stop (the start limit), systemd closes the stored connection: readers get ENOTCONN, never a
/// hang, and the next start clears the dead mount (2.7).
pub fn keep_mount_after_stop(jobs: &[String], service_result: Option<&str>, exit_status: Option<&str>) -> bool {
    if jobs.iter().any(|job| job == "stop") {
        return false;
    }
    if jobs.iter().any(|job| job.contains("restart")) {
        return true;
    }
    if exit_status == Some(&crate::RESTART_EXIT_CODE.to_string()) {
        return true;
    }
    service_result.is_some_and(|result| result != "success")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_stays_only_when_systemd_starts_the_daemon_again() {
        let jobs = |kinds: &[&str]| kinds.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>();
        // systemctl restart, and `musicfs shutdown --restart`:
        assert!(keep_mount_after_stop(&jobs(&["restart"]), Some("success"), Some("0")));
        assert!(keep_mount_after_stop(&jobs(&[]), Some("exit-code"), Some("75")));
        // kill -9, a crash, the watchdog: Restart=on-failure brings it back.
        assert!(keep_mount_after_stop(&jobs(&[]), Some("signal"), Some("KILL")));
        assert!(keep_mount_after_stop(&jobs(&[]), Some("watchdog"), Some("ABRT")));
        // systemctl stop, even of a daemon that had to be killed; a clean exit.
        assert!(!keep_mount_after_stop(&jobs(&["stop"]), Some("success"), Some("0")));
        assert!(!keep_mount_after_stop(&jobs(&["stop"]), Some("timeout"), Some("KILL")));
        assert!(!keep_mount_after_stop(&jobs(&[]), Some("success"), Some("0")));
        assert!(!keep_mount_after_stop(&jobs(&[]), None, None));
    }

    #[test]
    fn jobs_are_read_from_the_listing_for_the_named_unit_only() {
        let listing = "1234 musicfs.service restart running\n1235 other.service stop waiting\n";
        assert_eq!(jobs_of(listing, "musicfs.service"), ["restart"]);
        assert_eq!(jobs_of(listing, "other.service"), ["stop"]);
        assert!(jobs_of("", "musicfs.service").is_empty());
    }

    #[test]
    fn the_running_kernel_release_is_read() {
        let (major, _) = kernel_release().unwrap();
        assert!(major >= 3);
    }

    #[test]
    fn a_descriptor_that_is_not_a_live_fuse_connection_is_not_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        let why = resumable(file.as_fd(), dir.path()).unwrap_err();
        assert!(why.contains("not /dev/fuse"), "{why}");
        // A fresh /dev/fuse descriptor has no connection behind it: dead.
        let fuse = std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse").unwrap();
        let why = resumable(fuse.as_fd(), dir.path()).unwrap_err();
        assert!(why.contains("dead"), "{why}");
    }
}
