//! Mount-table helpers: is something mounted at a path, and clearing a stale FUSE mount left by a killed
//! daemon (2.7) so the next start can mount again instead of failing with "Transport endpoint is not connected".

use musicfs_core::mountinfo::{self, MountEntry};
use std::path::Path;

/// Kernel readahead for the mount: FUSE starts at 128 KiB; sequential playback and copies want larger reads.
pub const READAHEAD_KIB: u32 = 1024;

/// The last mount at `path` (the last one wins, as in the kernel).
fn mount_at(path: &Path) -> Option<MountEntry> {
    let target = path.to_string_lossy();
    mountinfo::mounts().into_iter().rev().find(|entry| entry.mount_point == target)
}

/// The filesystem type mounted at `path`, if any (the last mount wins, as in the kernel).
pub fn mounted_fstype(path: &Path) -> Option<String> {
    mount_at(path).map(|entry| entry.fstype)
}

/// The device (major, minor) of the filesystem mounted at `path`, read from the mount table: unlike stat(2)
/// it never asks the filesystem, which for a FUSE mount whose daemon has not started yet would block.
pub fn mounted_device(path: &Path) -> Option<(u32, u32)> {
    let entry = mount_at(path)?;
    let (major, minor) = entry.device.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// If a FUSE mount sits at `path` (from an earlier daemon that died), detach it lazily.
/// Returns true when one was cleared.
pub fn clear_stale_fuse_mount(path: &Path) -> bool {
    let Some(fstype) = mounted_fstype(path) else { return false };
    if !fstype.starts_with("fuse") {
        return false;
    }
    let dead = matches!(std::fs::metadata(path), Err(e) if e.raw_os_error() == Some(libc::ENOTCONN));
    tracing::warn!(mount_point = %path.display(), fstype, dead, "2.7 found a FUSE mount left at the mount point; unmounting it lazily");
    lazy_unmount(path);
    mounted_fstype(path).is_none_or(|t| !t.starts_with("fuse"))
}

/// Unmounts `path` as fuser does for a mount it made: umount(2), or fusermount3 for a user's own mount.
/// Fails (EBUSY) while files in it are open; the caller then detaches it lazily. EPERM when this process may
/// not unmount it at all.
pub fn unmount(path: &Path) -> std::io::Result<()> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: umount2 with a valid NUL-terminated path.
    if unsafe { libc::umount2(c_path.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() != Some(libc::EPERM) {
        return Err(error);
    }
    // Not root: fusermount3 may unmount the user's own mount. When it cannot either (a mount someone else
    // made, or a sandbox without setuid), the answer stays EPERM.
    let status =
        std::process::Command::new("fusermount3").arg("-u").arg(path).stderr(std::process::Stdio::null()).status();
    if status.is_ok_and(|s| s.success()) { Ok(()) } else { Err(error) }
}

/// Detaches a mount now; busy users keep their references until they let go.
pub fn lazy_unmount(path: &Path) {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return };
    // SAFETY: umount2 with a valid NUL-terminated path.
    let rc = unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        // Not root: fusermount3 is setuid and may unmount the user's own FUSE mounts.
        let _ = std::process::Command::new("fusermount3").arg("-u").arg("-z").arg(path).status();
    }
}

/// Sets the kernel's readahead for the filesystem at `path` (its backing device info in sysfs). FUSE mounts
/// start at 128 KiB, which caps every read request at 128 KiB; root may raise it. Failure only costs speed.
pub fn raise_readahead(path: &Path, kib: u32) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else { return };
    let dev = meta.dev();
    raise_readahead_of(libc::major(dev), libc::minor(dev), kib);
}

/// Sets the readahead of the filesystem with device `major:minor`.
pub fn raise_readahead_of(major: u32, minor: u32, kib: u32) {
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    match std::fs::write(&knob, kib.to_string()) {
        Ok(()) => tracing::debug!(knob, kib, "raised readahead"),
        Err(e) => tracing::debug!(knob, error = %e, "could not raise readahead (needs root); reads stay at 128 KiB"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_mounted_and_a_temp_dir_is_not() {
        assert!(mounted_fstype(Path::new("/")).is_some());
        assert!(mounted_device(Path::new("/")).is_some());
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(mounted_fstype(dir.path()), None);
        assert!(!clear_stale_fuse_mount(dir.path()));
    }
}
