//! The privileged half of the privilege split (issue 16). Under systemd, `ExecStartPre=+musicfs
//! mount-helper` runs as root, outside the unit's sandbox and in the host's mount namespace: it opens
//! `/dev/fuse`, mounts the connection at the mount point (visible to every user), and puts the descriptor in
//! the unit's file descriptor store under [`handover::MOUNTED_FD_NAME`]. The daemon then runs as an unprivileged user in
//! a sandbox with no `/dev/fuse`, no capability and no mount syscalls: it takes the descriptor from
//! `LISTEN_FDS`, answers the kernel's INIT, and stores it again as [`handover::FD_NAME`], the connection
//! a restart resumes (2.11). This is libfuse's own model (`/dev/fd/N` mount points, `mount.fuse3 -o
//! drop_privileges`).
//!
//! The kernel caps the mount's readahead at what it offered in INIT, 128 KiB, until root raises it after
//! INIT: `ExecStartPost=+musicfs after-start` does that once the daemon is ready ([`after_start`]).
//!
//! On a restart the store still holds the live connection, and the helper leaves mount and store alone
//! (systemd does not show `ExecStartPre=` the stored descriptors, so it asks `systemctl show` how many there
//! are). A FUSE mount with nothing holding its connection is a dead one (2.7): it is cleared and mounted anew.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{handover, mounts};

/// How long the helper waits for systemd to take its descriptor (`BARRIER=1`).
const BARRIER_TIMEOUT: Duration = Duration::from_secs(5);

/// Whose mount it is: the unit's `User=`, which the kernel lets through without `allow_other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// A user name from the password database, or `UID` / `UID:GID` numbers.
    pub fn parse(spec: &str) -> Result<Owner, HelperError> {
        let unknown = || HelperError::UnknownUser(spec.to_owned());
        if let Some((uid, gid)) = spec.split_once(':') {
            return Ok(Owner { uid: uid.parse().map_err(|_| unknown())?, gid: gid.parse().map_err(|_| unknown())? });
        }
        if let Ok(uid) = spec.parse::<u32>() {
            return Ok(Owner { uid, gid: uid });
        }
        let name = CString::new(spec).map_err(|_| unknown())?;
        // SAFETY: getpwnam_r with a valid name, a zeroed passwd and a buffer of the length passed.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let mut buffer = vec![0 as libc::c_char; 16 * 1024];
        let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut entry, buffer.as_mut_ptr(), buffer.len(), &mut found) };
        if rc != 0 || found.is_null() {
            return Err(unknown());
        }
        Ok(Owner { uid: entry.pw_uid, gid: entry.pw_gid })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("no user `{0}` (give a name from the password database, a UID or UID:GID)")]
    UnknownUser(String),
    #[error("creating the mount point {path}: {source}")]
    MountPoint { path: PathBuf, source: std::io::Error },
    #[error("entering PID 1's mount namespace: {0} (the helper runs as root: ExecStartPre=+…)")]
    Namespace(std::io::Error),
    #[error("opening /dev/fuse: {0} (the helper runs as root: ExecStartPre=+…)")]
    Device(std::io::Error),
    #[error("mounting {path}: {source}")]
    Mount { path: PathBuf, source: std::io::Error },
    #[error(
        "no service manager to hand the connection to: run it as `ExecStartPre=+musicfs mount-helper` of a unit with NotifyAccess=exec and FileDescriptorStoreMax=2 ({0})"
    )]
    Store(std::io::Error),
}

/// What the helper did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A restart: the store holds the live connection; mount and store left alone.
    KeptAlive,
    /// Mounted and stored; `cleared` says whether a dead mount was cleared first (2.7).
    Mounted { cleared: bool },
}

/// Moves this process into PID 1's mount namespace when it is in another one. systemd gives every process
/// of a unit with namespacing options (ProtectSystem=, PrivateTmp=, …) a mount namespace of its own, `+`
/// steps included (`+` only lifts the restrictions inside it), and a mount made or removed there never
/// reaches the host: a helper that mounted there saw its mount vanish, and its connection end, when it
/// exited. Enters the host's, as nsenter does. Returns whether it moved. Call it before any thread starts.
pub fn enter_host_mount_namespace() -> std::io::Result<bool> {
    let own = std::fs::read_link("/proc/self/ns/mnt")?;
    match std::fs::read_link("/proc/1/ns/mnt") {
        Ok(host) if host == own => return Ok(false),
        Ok(_) => {}
        // PID 1 is not ours to look at (another user namespace, hidepid): no service manager of ours runs
        // there either, so this process is where the mount belongs.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Ok(false),
        Err(e) => return Err(e),
    }
    let host = std::fs::File::open("/proc/1/ns/mnt")?;
    // SAFETY: setns on a namespace descriptor we opened; the process is single-threaded here.
    if unsafe { libc::setns(host.as_raw_fd(), libc::CLONE_NEWNS) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(true)
}

/// Mounts the library for `unit` unless its store still holds a live connection (a restart).
pub fn run(mount_point: &Path, allow_other: bool, owner: Owner, unit: &str) -> Result<Outcome, HelperError> {
    if enter_host_mount_namespace().map_err(HelperError::Namespace)? {
        tracing::debug!("entered PID 1's mount namespace, where the mount is visible to everyone");
    }
    let fuse_mounted = mounts::mounted_fstype(mount_point).is_some_and(|t| t.starts_with("fuse"));
    if fuse_mounted && stored_descriptors(unit).is_some_and(|n| n > 0) {
        tracing::info!(mount_point = %mount_point.display(), unit,
            "2.11 the service manager holds the live FUSE connection: mount left alone, the daemon resumes it");
        return Ok(Outcome::KeptAlive);
    }
    // Nowhere to hand the connection: say so before mounting, so that no dead mount is left behind.
    if std::env::var_os("NOTIFY_SOCKET").is_none_or(|s| s.is_empty()) {
        return Err(HelperError::Store(std::io::Error::other("NOTIFY_SOCKET is not set")));
    }
    let cleared = fuse_mounted && mounts::clear_stale_fuse_mount(mount_point);
    std::fs::create_dir_all(mount_point)
        .map_err(|source| HelperError::MountPoint { path: mount_point.to_owned(), source })?;
    let fd = mount(mount_point, allow_other, owner)?;
    if let Some(timeout) = handover::kernel_request_timeout() {
        tracing::warn!(
            ?timeout,
            "fs.fuse.default_request_timeout is set: a restart longer than it aborts the connection (2.11)"
        );
    }
    if let Err(e) = store(fd.as_fd()) {
        // The connection ends with this process: take its mount down rather than leave it dead.
        mounts::lazy_unmount(mount_point);
        return Err(e);
    }
    tracing::info!(mount_point = %mount_point.display(), uid = owner.uid, allow_other, cleared,
        "mounted for the unprivileged daemon; the connection waits in the service manager's store");
    Ok(Outcome::Mounted { cleared })
}

/// `ExecStartPost=+`: the daemon is ready, so INIT is done; raise the mount's readahead to the daemon's
/// (`mounts::READAHEAD_KIB`), which the unprivileged daemon cannot write in sysfs. The device comes from the
/// mount table. Returns the device when there is a FUSE mount at `mount_point`.
pub fn after_start(mount_point: &Path) -> Option<(u32, u32)> {
    if let Err(e) = enter_host_mount_namespace() {
        tracing::debug!(error = %e, "staying in this mount namespace");
    }
    let fuse = mounts::mounted_fstype(mount_point).is_some_and(|t| t.starts_with("fuse"));
    let (major, minor) = mounts::mounted_device(mount_point).filter(|_| fuse)?;
    mounts::raise_readahead_of(major, minor, mounts::READAHEAD_KIB);
    Some((major, minor))
}

/// Opens `/dev/fuse` and mounts it at `mount_point` with the options the daemon mounts with itself
/// (`musicfs_fuse::adapter::mount_config`): read-only, nodev, nosuid, noexec, noatime, default_permissions.
pub fn mount(mount_point: &Path, allow_other: bool, owner: Owner) -> Result<OwnedFd, HelperError> {
    let device = c"/dev/fuse";
    // SAFETY: open with a valid NUL-terminated path; the result is checked before use.
    let raw = unsafe { libc::open(device.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(HelperError::Device(std::io::Error::last_os_error()));
    }
    // SAFETY: `raw` was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let failed = |source| HelperError::Mount { path: mount_point.to_owned(), source };
    let target = CString::new(mount_point.as_os_str().as_encoded_bytes())
        .map_err(|e| failed(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let data = mount_data(fd.as_raw_fd(), owner, allow_other);
    let data = CString::new(data).map_err(|e| failed(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_NOATIME;
    // SAFETY: mount(2) with valid NUL-terminated strings; the kernel copies them.
    let rc = unsafe {
        libc::mount(c"musicfs".as_ptr(), target.as_ptr(), c"fuse.musicfs".as_ptr(), flags, data.as_ptr().cast())
    };
    if rc != 0 {
        return Err(failed(std::io::Error::last_os_error()));
    }
    Ok(fd)
}

/// The FUSE mount options: the device descriptor, the root's mode, the owner, and who may enter.
fn mount_data(fd: i32, owner: Owner, allow_other: bool) -> String {
    let others = if allow_other { ",allow_other" } else { "" };
    format!("fd={fd},rootmode=40000,user_id={},group_id={},default_permissions{others}", owner.uid, owner.gid)
}

/// How many descriptors `unit`'s store holds (`NFileDescriptorStore`), when systemctl can tell.
fn stored_descriptors(unit: &str) -> Option<u32> {
    let out = std::process::Command::new("systemctl")
        .args(["show", "--property=NFileDescriptorStore", "--value", unit])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Puts the mounted connection in the store and waits until the service manager has it: the helper exits
/// right after, and systemd must not see its message only once the process is gone.
fn store(fd: std::os::fd::BorrowedFd<'_>) -> Result<(), HelperError> {
    use sd_notify::NotifyState;
    sd_notify::notify_with_fds(&[NotifyState::FdStore, NotifyState::FdName(handover::MOUNTED_FD_NAME)], &[fd])
        .map_err(HelperError::Store)?;
    crate::systemd::barrier(BARRIER_TIMEOUT).map_err(HelperError::Store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_names_or_numbers() {
        assert_eq!(Owner::parse("root").unwrap(), Owner { uid: 0, gid: 0 });
        assert_eq!(Owner::parse("1000").unwrap(), Owner { uid: 1000, gid: 1000 });
        assert_eq!(Owner::parse("1000:100").unwrap(), Owner { uid: 1000, gid: 100 });
        assert!(matches!(Owner::parse("no-such-user-here"), Err(HelperError::UnknownUser(_))));
        assert!(matches!(Owner::parse("1000:x"), Err(HelperError::UnknownUser(_))));
    }

    #[test]
    fn the_mount_options_name_the_descriptor_the_owner_and_who_may_enter() {
        let owner = Owner { uid: 998, gid: 997 };
        assert_eq!(mount_data(5, owner, false), "fd=5,rootmode=40000,user_id=998,group_id=997,default_permissions");
        assert!(mount_data(5, owner, true).ends_with(",default_permissions,allow_other"));
    }
}
