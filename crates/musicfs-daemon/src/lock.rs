//! The cache lock (3.9): one daemon per cache directory. `flock` on `<cache_dir>/musicfs.lock`, holding the
//! owner's PID. The kernel drops the lock when the process dies, so a crash never leaves a stale lock.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("already running (PID {pid}) on cache directory {dir}")]
    AlreadyRunning { pid: String, dir: PathBuf },
    #[error("cannot use lock file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Held for the daemon's lifetime; dropping it releases the lock.
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
    path: PathBuf,
}

impl CacheLock {
    pub fn acquire(cache_dir: &Path) -> Result<CacheLock, LockError> {
        let path = cache_dir.join("musicfs.lock");
        let io = |source| LockError::Io { path: path.clone(), source };
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        // SAFETY: flock on a valid, owned file descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim().to_owned();
                return Err(LockError::AlreadyRunning {
                    pid: if pid.is_empty() { "unknown".into() } else { pid },
                    dir: cache_dir.to_owned(),
                });
            }
            return Err(io(err));
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(CacheLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves L1: 3.9
    #[test]
    fn a_second_holder_is_refused_with_the_first_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = CacheLock::acquire(dir.path()).unwrap();
        let err = CacheLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("already running (PID {})", std::process::id())), "{err}");
        drop(first);
        CacheLock::acquire(dir.path()).unwrap();
    }
}
