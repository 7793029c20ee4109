//! Start-up check of the cache directory (6.7): before anything opens it, every directory the daemon writes
//! into and every file it keeps there must be usable by this process's user. Otherwise it stops with one
//! explicit line naming the path, the user and the fix. The alternative is a lock, database or chunk error
//! from deep inside. Once running, a disk that turns unwritable puts the chunk store in passthrough instead
//! (6.6). And the cache is private to that user ([`make_private`]): it holds the whole library's metadata and
//! cached audio.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The directories the daemon writes into, relative to the cache directory; chunk fan-out directories are
/// found by listing.
const WRITTEN_DIRS: [&str; 4] = ["", "tmp", "chunks", "chunks/v1"];

/// A path in the cache directory this process's user cannot use. Its message is one line naming the path,
/// the user and the fix.
#[derive(Debug, thiserror::Error)]
#[error("6.7 cache directory not usable: {} for uid {uid} gid {gid}: {source}; {}", path.display(), fix(source))]
pub struct CacheDirError {
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub source: std::io::Error,
}

/// Checks `cache_dir` (which exists) for this process's effective user.
pub fn check_cache_dir(cache_dir: &Path) -> Result<(), CacheDirError> {
    let mut dirs: Vec<PathBuf> = WRITTEN_DIRS.iter().map(|d| cache_dir.join(d)).filter(|d| d.exists()).collect();
    if let Ok(fanout) = std::fs::read_dir(cache_dir.join("chunks/v1")) {
        dirs.extend(fanout.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()));
    }
    // Every file at the top: the lock, the metadata database and its journal, the chunk index.
    let files: Vec<PathBuf> = std::fs::read_dir(cache_dir)
        .map_err(|e| explain(cache_dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    let wanted = libc::R_OK | libc::W_OK;
    for (path, mode) in dirs.iter().map(|d| (d, wanted | libc::X_OK)).chain(files.iter().map(|f| (f, wanted))) {
        usable(path, mode).map_err(|e| explain(path, e))?;
    }
    Ok(())
}

/// Makes the cache private to the daemon's user: the directory 0700 and the files at its top (the lock, the
/// library database and its journal, the chunk index) 0600. Chunk files deeper down need no change: nobody
/// else can reach them through a 0700 directory, and new ones are made under the daemon's umask 077. Returns
/// the paths whose mode it tightened (a cache made by an older version), for one log line.
pub fn make_private(cache_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut tightened = Vec::new();
    let mut tighten = |path: &Path, mode: u32| -> std::io::Result<()> {
        let meta = std::fs::symlink_metadata(path)?;
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            tightened.push(path.to_owned());
        }
        Ok(())
    };
    tighten(cache_dir, 0o700)?;
    for entry in std::fs::read_dir(cache_dir)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            tighten(&entry.path(), 0o600)?;
        }
    }
    Ok(tightened)
}

/// `faccessat` with the effective user, as the daemon's own opens will be checked.
fn usable(path: &Path, mode: i32) -> std::io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: the path is NUL-terminated and outlives the call.
    if unsafe { libc::faccessat(libc::AT_FDCWD, c_path.as_ptr(), mode, libc::AT_EACCESS) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn explain(path: &Path, source: std::io::Error) -> CacheDirError {
    // SAFETY: geteuid/getegid cannot fail and have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    CacheDirError { path: path.to_owned(), uid, gid, source }
}

fn fix(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EROFS) => "the filesystem is mounted read-only; remount it read-write or choose another cache_dir",
        _ => "give this user read and write access (e.g. chown -R it), or choose another cache_dir",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn an_open_cache_is_made_private_once_and_a_private_one_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(cache.join("chunks/v1")).unwrap();
        std::fs::write(cache.join("meta.db"), b"").unwrap();
        std::fs::write(cache.join("lock"), b"").unwrap();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(cache.join("meta.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(cache.join("lock"), std::fs::Permissions::from_mode(0o600)).unwrap();

        let tightened = make_private(&cache).unwrap();
        assert_eq!(tightened, vec![cache.clone(), cache.join("meta.db")]);
        assert_eq!(mode(&cache), 0o700);
        assert_eq!(mode(&cache.join("meta.db")), 0o600);
        assert_eq!(mode(&cache.join("lock")), 0o600);
        assert!(make_private(&cache).unwrap().is_empty(), "a private cache was changed again");
    }
}
