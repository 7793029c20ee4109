//! `FsError`: every way a filesystem operation can fail, and its errno — decided here and nowhere else.

use musicfs_cas::ReadError;
use musicfs_origins::OriginError;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("read-only filesystem")]
    ReadOnly,
    /// Music files take no ioctls; programs probe with one (is it a terminal?) and expect this answer.
    #[error("inappropriate ioctl")]
    NoIoctl,
    #[error("shutting down")]
    ShuttingDown,
    #[error("read timed out after {0:?}")]
    TimedOut(std::time::Duration),
    #[error(transparent)]
    Read(#[from] ReadError),
}

impl FsError {
    /// The errno the kernel passes to the caller.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::ReadOnly => libc::EROFS,
            FsError::NoIoctl => libc::ENOTTY,
            // A read that cannot be served is an I/O error to the player, whatever the cause behind it:
            // origin down, origin hung, cache disk broken, origin copy changed.
            FsError::TimedOut(_) => libc::EIO,
            FsError::ShuttingDown => libc::EIO,
            FsError::Read(ReadError::Origin(OriginError::NotFound(_))) => libc::EIO,
            FsError::Read(_) => libc::EIO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_are_what_callers_expect() {
        assert_eq!(FsError::NotFound.errno(), libc::ENOENT);
        assert_eq!(FsError::ReadOnly.errno(), libc::EROFS);
        assert_eq!(FsError::NoIoctl.errno(), libc::ENOTTY);
        assert_eq!(FsError::TimedOut(std::time::Duration::from_secs(1)).errno(), libc::EIO);
        assert_eq!(FsError::Read(ReadError::Changed).errno(), libc::EIO);
    }
}
