//! `MemoryOrigin`: an in-memory origin, the test double beside the [`Origin`](crate::Origin) trait.
//! It counts reads so tests can prove what was fetched.

use crate::{Origin, OriginEntry, OriginError, ReadSeek};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct MemoryOrigin {
    /// None: "memory".
    id: Option<String>,
    files: Mutex<BTreeMap<PathBuf, (Bytes, i64)>>,
    reads: AtomicU64,
    bytes_read: AtomicU64,
}

impl MemoryOrigin {
    pub fn new() -> Self {
        Self::default()
    }

    /// One with its own id, for tests with several origins.
    pub fn named(id: &str) -> Self {
        MemoryOrigin { id: Some(id.to_owned()), ..Self::default() }
    }

    pub fn insert(&self, rel: impl Into<PathBuf>, data: impl Into<Bytes>, mtime_ns: i64) {
        if let Ok(mut files) = self.files.lock() {
            files.insert(rel.into(), (data.into(), mtime_ns));
        }
    }

    pub fn remove(&self, rel: &Path) {
        if let Ok(mut files) = self.files.lock() {
            files.remove(rel);
        }
    }

    /// Number of `read_range` calls so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    /// Bytes returned by `read_range` so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::SeqCst)
    }

    fn get(&self, rel: &Path) -> Result<(Bytes, i64), OriginError> {
        let files = self.files.lock().map_err(|_| OriginError::Unavailable("poisoned".into()))?;
        files.get(rel).cloned().ok_or_else(|| OriginError::NotFound(rel.to_owned()))
    }
}

#[async_trait]
impl Origin for MemoryOrigin {
    fn id(&self) -> &str {
        self.id.as_deref().unwrap_or("memory")
    }

    async fn list(&self) -> Result<Vec<OriginEntry>, OriginError> {
        let files = self.files.lock().map_err(|_| OriginError::Unavailable("poisoned".into()))?;
        Ok(files
            .iter()
            .map(|(rel, (data, mtime))| OriginEntry {
                rel_path: rel.clone(),
                size: data.len() as u64,
                mtime_ns: *mtime,
                version: crate::stamp(&[data]),
            })
            .collect())
    }

    async fn stat(&self, rel: &Path) -> Result<OriginEntry, OriginError> {
        let (data, mtime_ns) = self.get(rel)?;
        // Like an ETag: a content hash.
        Ok(OriginEntry { rel_path: rel.to_owned(), size: data.len() as u64, mtime_ns, version: crate::stamp(&[&data]) })
    }

    async fn read_range(&self, rel: &Path, offset: u64, len: usize) -> Result<Bytes, OriginError> {
        let (data, _) = self.get(rel)?;
        let start = (offset as usize).min(data.len());
        let end = start.saturating_add(len).min(data.len());
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.bytes_read.fetch_add((end - start) as u64, Ordering::SeqCst);
        Ok(data.slice(start..end))
    }

    fn open_blocking(&self, rel: &Path) -> Result<Box<dyn ReadSeek>, OriginError> {
        let (data, _) = self.get(rel)?;
        Ok(Box::new(std::io::Cursor::new(data.to_vec())))
    }

    async fn health_check(&self) -> Result<(), OriginError> {
        Ok(())
    }
}
