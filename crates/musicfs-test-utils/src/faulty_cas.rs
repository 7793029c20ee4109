//! `FaultyCasStore`: the real chunk store with injectable disk faults — ENOSPC on put, EIO on read, and bit
//! rot (a byte of the chunk file flipped on disk just before the real read, so detection runs for real).

use bytes::Bytes;
use musicfs_cas::{ChunkBackend, ChunkHash, ChunkStore, StoreError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

pub struct FaultyCasStore {
    pub inner: Arc<ChunkStore>,
    pub inject_enospc: AtomicBool,
    pub inject_eio_on_read: AtomicBool,
    pub inject_corruption: AtomicBool,
    faults: AtomicUsize,
}

impl FaultyCasStore {
    pub fn new(inner: Arc<ChunkStore>) -> Arc<FaultyCasStore> {
        Arc::new(FaultyCasStore {
            inner,
            inject_enospc: AtomicBool::new(false),
            inject_eio_on_read: AtomicBool::new(false),
            inject_corruption: AtomicBool::new(false),
            faults: AtomicUsize::new(0),
        })
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
            if let Ok(mut bytes) = std::fs::read(&path) {
                if let Some(b) = bytes.first_mut() {
                    *b ^= 0xff;
                    if std::fs::write(&path, &bytes).is_ok() {
                        self.faults.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }
        self.inner.get(hash)
    }

    fn put_batch(&self, chunks: &[(ChunkHash, Bytes)]) -> Result<(), StoreError> {
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
}
