//! `MemoryOrigin`: an in-memory origin, the test double beside the [`Origin`](crate::Origin) trait.
//! It counts reads so tests can prove what was fetched, and can act like a remote origin: each read takes a
//! round trip ([`MemoryOrigin::set_latency`]) and an ingest may keep several in flight
//! ([`MemoryOrigin::set_reads_in_flight`]); it records how many were in flight at most.

use crate::{Origin, OriginEntry, OriginError, ReadSeek};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

#[derive(Default)]
pub struct MemoryOrigin {
    /// None: "memory".
    id: Option<String>,
    files: Mutex<BTreeMap<PathBuf, (Bytes, i64)>>,
    reads: AtomicU64,
    bytes_read: AtomicU64,
    /// Reads that started at or past the end of their file.
    reads_past_end: AtomicU64,
    /// What [`Origin::reads_in_flight`] answers; 0 means the trait's default.
    in_flight_wanted: AtomicUsize,
    /// How long each read takes, in microseconds.
    latency_us: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// What [`Origin::random_reads_ingest`] answers.
    random_reads_ingest: std::sync::atomic::AtomicBool,
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

    /// Every read takes this long, like a round trip to a server.
    pub fn set_latency(&self, latency: Duration) {
        self.latency_us.store(latency.as_micros() as u64, Ordering::SeqCst);
    }

    /// Asks ingests to keep `n` reads of a file in flight, as a remote origin does.
    pub fn set_reads_in_flight(&self, n: usize) {
        self.in_flight_wanted.store(n, Ordering::SeqCst);
    }

    /// Asks for an ingest on a random read of an uncached track, as an object store does.
    pub fn set_random_reads_ingest(&self, yes: bool) {
        self.random_reads_ingest.store(yes, Ordering::SeqCst);
    }

    /// `read_range` calls running now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// The most `read_range` calls that were running at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Bytes returned by `read_range` so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::SeqCst)
    }

    /// Number of reads that asked for bytes at or past the end of their file.
    pub fn reads_past_end(&self) -> u64 {
        self.reads_past_end.load(Ordering::SeqCst)
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

    fn reads_in_flight(&self) -> usize {
        match self.in_flight_wanted.load(Ordering::SeqCst) {
            0 => 1,
            n => n,
        }
    }

    fn random_reads_ingest(&self) -> bool {
        self.random_reads_ingest.load(Ordering::SeqCst)
    }

    async fn read_range(&self, rel: &Path, offset: u64, len: usize) -> Result<Bytes, OriginError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let running = Running(&self.in_flight);
        let latency = self.latency_us.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_micros(latency)).await;
        }
        drop(running);
        let (data, _) = self.get(rel)?;
        let start = (offset as usize).min(data.len());
        let end = start.saturating_add(len).min(data.len());
        self.reads.fetch_add(1, Ordering::SeqCst);
        if len > 0 && offset >= data.len() as u64 {
            self.reads_past_end.fetch_add(1, Ordering::SeqCst);
        }
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

/// Counts a read as running until it answers or is dropped: a read its caller gave up on (a timeout) runs no
/// more.
struct Running<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
