//! The index directory, read with `pread` instead of `mmap` (6.5).
//!
//! tantivy's `MmapDirectory` maps segment files; when a mapped file is truncated, or the disk answers a page
//! fault with EIO, the kernel sends SIGBUS and the whole daemon dies with its mount — a search index failure
//! becoming a filesystem failure. This wrapper keeps `MmapDirectory` for everything else (writes, atomic
//! `meta.json`, the writer lock) but serves reads from an open file descriptor: a short or failed read is an
//! `io::Error` that reaches the caller as a [`SearchError`](crate::SearchError). A music library's index is
//! small, so the copies cost little.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tantivy::HasLen;
use tantivy::directory::error::{DeleteError, LockError, OpenDirectoryError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    Directory, DirectoryLock, FileHandle, Lock, MmapDirectory, OwnedBytes, WatchCallback, WatchHandle, WritePtr,
};

#[derive(Clone, Debug)]
pub(crate) struct PreadDirectory {
    root: PathBuf,
    inner: MmapDirectory,
}

impl PreadDirectory {
    pub(crate) fn open(root: &Path) -> Result<PreadDirectory, OpenDirectoryError> {
        Ok(PreadDirectory { root: root.to_owned(), inner: MmapDirectory::open(root)? })
    }
}

/// An open segment file. Its length is taken at open: segment files are written once and never change, so
/// a later truncation shows up as a failed read, never as a mapping that faults.
#[derive(Debug)]
struct PreadFile {
    file: File,
    len: usize,
}

impl HasLen for PreadFile {
    fn len(&self) -> usize {
        self.len
    }
}

impl FileHandle for PreadFile {
    fn read_bytes(&self, range: Range<usize>) -> io::Result<OwnedBytes> {
        if range.start > range.end || range.end > self.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("read of {range:?} outside a file of {} bytes", self.len),
            ));
        }
        let mut buffer = vec![0; range.end - range.start];
        self.file.read_exact_at(&mut buffer, range.start as u64)?;
        Ok(OwnedBytes::new(buffer))
    }
}

impl Directory for PreadDirectory {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        let opened = File::open(self.root.join(path)).and_then(|file| {
            let len = usize::try_from(file.metadata()?.len()).map_err(io::Error::other)?;
            Ok(PreadFile { file, len })
        });
        match opened {
            Ok(file) => Ok(Arc::new(file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(OpenReadError::FileDoesNotExist(path.to_owned())),
            Err(e) => Err(OpenReadError::wrap_io_error(e, path.to_owned())),
        }
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        self.inner.delete(path)
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        self.inner.exists(path)
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        self.inner.open_write(path)
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        self.inner.atomic_read(path)
    }

    fn atomic_write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.inner.atomic_write(path, data)
    }

    fn sync_directory(&self) -> io::Result<()> {
        self.inner.sync_directory()
    }

    fn acquire_lock(&self, lock: &Lock) -> Result<DirectoryLock, LockError> {
        self.inner.acquire_lock(lock)
    }

    fn watch(&self, callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        self.inner.watch(callback)
    }
}
