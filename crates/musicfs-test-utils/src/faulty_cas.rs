//! `FaultyCasStore`: the real chunk store with injectable disk faults — ENOSPC on put, EIO on read, bit rot
//! (a byte of the chunk file flipped on disk just before the real read, so detection runs for real), and
//! writes that hang (a cache disk far slower than the origin) until released.
//!
//! `FaultyDisk`: the disk *under* a real chunk store (`ChunkStore::open_on`), so the store's own 2.8 and 6.6
//! decisions run: a filesystem of a given size, part of it held by "other files", whose writes and reads fail
//! with a chosen errno.

use bytes::Bytes;
use musicfs_cas::{CacheDisk, ChunkBackend, ChunkHash, ChunkStore, DiskPressure, RealDisk, StoreError};
use musicfs_core::sync_util::lock_or_recover;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

pub struct FaultyCasStore {
    pub inner: Arc<ChunkStore>,
    pub inject_enospc: AtomicBool,
    pub inject_eio_on_read: AtomicBool,
    pub inject_corruption: AtomicBool,
    faults: AtomicUsize,
    /// While true, `put_batch` hangs until it is set false again ([`FaultyCasStore::stall_writes`]).
    writes_stalled: Mutex<bool>,
    writes_resumed: Condvar,
    /// `put_batch` calls that found writes stalled.
    pub stalled_puts: AtomicUsize,
}

impl FaultyCasStore {
    pub fn new(inner: Arc<ChunkStore>) -> Arc<FaultyCasStore> {
        Arc::new(FaultyCasStore {
            inner,
            inject_enospc: AtomicBool::new(false),
            inject_eio_on_read: AtomicBool::new(false),
            inject_corruption: AtomicBool::new(false),
            faults: AtomicUsize::new(0),
            writes_stalled: Mutex::new(false),
            writes_resumed: Condvar::new(),
            stalled_puts: AtomicUsize::new(0),
        })
    }

    /// Makes chunk writes hang (true) or go on (false): a cache disk that cannot keep up with the origin.
    pub fn stall_writes(&self, stalled: bool) {
        *lock_or_recover(&self.writes_stalled) = stalled;
        self.writes_resumed.notify_all();
    }

    pub fn faults_injected(&self) -> usize {
        self.faults.load(Ordering::SeqCst)
    }

    fn io_fault(&self, errno: i32) -> StoreError {
        self.faults.fetch_add(1, Ordering::SeqCst);
        StoreError::Io { path: self.inner.root().to_owned(), source: std::io::Error::from_raw_os_error(errno) }
    }
}

impl ChunkBackend for FaultyCasStore {
    fn get(&self, hash: &ChunkHash) -> Result<Option<Bytes>, StoreError> {
        if self.inject_eio_on_read.load(Ordering::SeqCst) {
            return Err(self.io_fault(libc::EIO));
        }
        if self.inject_corruption.load(Ordering::SeqCst) && self.inner.contains(hash) {
            let path = self.inner.chunk_path(hash);
            if let Ok(mut bytes) = std::fs::read(&path)
                && let Some(b) = bytes.first_mut()
            {
                *b ^= 0xff;
                if std::fs::write(&path, &bytes).is_ok() {
                    self.faults.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        self.inner.get(hash)
    }

    fn put_batch(&self, chunks: &[(ChunkHash, Bytes)]) -> Result<(), StoreError> {
        let mut stalled = lock_or_recover(&self.writes_stalled);
        if *stalled {
            self.stalled_puts.fetch_add(1, Ordering::SeqCst);
        }
        while *stalled {
            stalled = self.writes_resumed.wait(stalled).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        drop(stalled);
        if self.inject_enospc.load(Ordering::SeqCst) {
            return Err(self.io_fault(libc::ENOSPC));
        }
        self.inner.put_batch(chunks)
    }

    fn contains(&self, hash: &ChunkHash) -> bool {
        self.inner.contains(hash)
    }

    fn flush_access_times(&self) -> Result<usize, StoreError> {
        self.inner.flush_access_times()
    }

    fn disk_pressure(&self) -> DiskPressure {
        self.inner.disk_pressure()
    }

    fn recheck_disk(&self) {
        self.inner.recheck_disk()
    }
}

/// A cache filesystem of `total` bytes for a real [`ChunkStore`]: the files are real, the fullness and the
/// faults are told. In use: `others` (bytes of other files) plus every file under the store's directory.
pub struct FaultyDisk {
    total: u64,
    /// Bytes held by other files on this filesystem.
    pub others: AtomicU64,
    /// When non-zero, every write fails with this errno (ENOSPC: after half the bytes landed, as on a real full
    /// disk).
    pub write_errno: AtomicI32,
    /// When non-zero, every read fails with this errno.
    pub read_errno: AtomicI32,
    /// Writes and reads that reached the disk (failed ones included).
    pub writes: AtomicUsize,
    pub reads: AtomicUsize,
    faults: AtomicUsize,
}

impl FaultyDisk {
    pub fn new(total: u64) -> Arc<FaultyDisk> {
        Arc::new(FaultyDisk {
            total,
            others: AtomicU64::new(0),
            write_errno: AtomicI32::new(0),
            read_errno: AtomicI32::new(0),
            writes: AtomicUsize::new(0),
            reads: AtomicUsize::new(0),
            faults: AtomicUsize::new(0),
        })
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn faults_injected(&self) -> usize {
        self.faults.load(Ordering::SeqCst)
    }

    /// Bytes in use: other files plus the files under `dir` (the store's directory).
    pub fn used(&self, dir: &Path) -> u64 {
        self.others.load(Ordering::SeqCst) + bytes_under(dir)
    }

    /// Sets the other files' size so that `share` of the disk is in use now.
    pub fn fill_to(&self, dir: &Path, share: f64) {
        let target = (self.total as f64 * share) as u64;
        self.others.store(target.saturating_sub(bytes_under(dir)), Ordering::SeqCst);
    }

    /// Makes the disk fail: writes and reads return `errno` (0 heals it).
    pub fn fail_with(&self, write_errno: i32, read_errno: i32) {
        self.write_errno.store(write_errno, Ordering::SeqCst);
        self.read_errno.store(read_errno, Ordering::SeqCst);
    }
}

/// Bytes of all files under `dir`, recursively.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_under(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

impl CacheDisk for FaultyDisk {
    fn space(&self, dir: &Path) -> Option<(u64, u64)> {
        Some((self.total.saturating_sub(self.used(dir)), self.total))
    }

    fn write_durable(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        match self.write_errno.load(Ordering::SeqCst) {
            0 => RealDisk.write_durable(path, data),
            errno => {
                self.faults.fetch_add(1, Ordering::SeqCst);
                if errno == libc::ENOSPC {
                    std::fs::write(path, &data[..data.len() / 2])?;
                }
                Err(std::io::Error::from_raw_os_error(errno))
            }
        }
    }

    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        match self.read_errno.load(Ordering::SeqCst) {
            0 => RealDisk.read(path),
            errno => {
                self.faults.fetch_add(1, Ordering::SeqCst);
                Err(std::io::Error::from_raw_os_error(errno))
            }
        }
    }
}
