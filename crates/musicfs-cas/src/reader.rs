//! The read path: bytes of a track from its chunks, fetching only missing chunks from the origin.
//!
//! A track with a manifest is served chunk by chunk: memory → chunk store (hash-verified) → origin range
//! (verified against the manifest hash, then stored). A track without one is ingested on first read
//! ([`crate::ingest`]); reads near the ingest front wait for it, reads far ahead go straight to the origin.
//! Above the 95 % watermark (2.8) an ingest caches nothing ahead of its readers: only the chunks a reader uses
//! are written.

use crate::chunker::ChunkParams;
use crate::disk::DiskPressure;
use crate::hash::ChunkHash;
use crate::manifest::{ChunkRef, Fingerprint, Manifest, ManifestStore};
use crate::memory::MemoryCache;
use crate::store::{ChunkBackend, StoreError};
use bytes::{Bytes, BytesMut};
use musicfs_origins::{OriginError, SharedOrigin};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OnceCell, mpsc, oneshot};

/// Everything the reader needs to know about one track.
#[derive(Clone)]
pub struct FileRef {
    pub track_id: i64,
    pub origin: SharedOrigin,
    /// A copy of `origin` (same layout) read from when `origin` does not answer (4.2.6).
    pub backup: Option<SharedOrigin>,
    pub rel_path: PathBuf,
    pub fingerprint: Fingerprint,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Origin(#[from] OriginError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the origin's copy changed under a cached track")]
    Changed,
    #[error("internal error: {0}")]
    Internal(String),
}

/// Reads far beyond the ingest front go straight to the origin instead of waiting.
const AHEAD_WINDOW: u64 = 32 << 20;
const MANIFEST_CACHE_LIMIT: usize = 4096;

#[derive(Debug, Default)]
pub struct ReaderStats {
    /// Chunk lookups answered from memory or the chunk store.
    pub chunk_hits: AtomicU64,
    /// Chunks fetched from the origin (ingest or refetch).
    pub chunk_misses: AtomicU64,
    /// Reads served straight from the origin, bypassing chunks.
    pub passthrough_reads: AtomicU64,
    /// Bytes read from origins.
    pub origin_bytes: AtomicU64,
    /// Origin reads answered by a backup origin because the track's own origin did not (4.2.6).
    pub backup_reads: AtomicU64,
    /// Chunks an ingest cut but did not cache because the cache disk was above 95 % (2.8): no prefetch then,
    /// only chunks a reader uses are cached.
    pub ahead_not_cached: AtomicU64,
}

pub(crate) enum Persist {
    Chunk(ChunkHash, Bytes),
    Barrier(oneshot::Sender<()>),
}

pub struct Reader {
    pub(crate) store: Arc<dyn ChunkBackend>,
    pub(crate) memory: MemoryCache,
    pub(crate) manifests: Arc<dyn ManifestStore>,
    manifest_cache: Mutex<HashMap<i64, Arc<Manifest>>>,
    pub(crate) ingests: Mutex<HashMap<i64, tokio::sync::watch::Receiver<crate::ingest::Progress>>>,
    loading: Mutex<HashMap<ChunkHash, Arc<OnceCell<Bytes>>>>,
    pub(crate) params: ChunkParams,
    pub(crate) origin_timeout: Duration,
    persist_tx: mpsc::Sender<Persist>,
    /// Origins whose reads fail fast until the instant given (see `open_breaker`).
    breakers: Mutex<HashMap<String, std::time::Instant>>,
    /// Origin read failures, summarised (4.2.3).
    pub failures: crate::failure_log::FailureLog,
    /// Ingests have stopped caching ahead (2.8, 95 %); logged once per episode.
    ahead_paused: AtomicBool,
    /// Tracks served (some bytes) from a backup origin, by the id of their own origin, until that origin
    /// returns and they are re-validated (4.2.6).
    backup_served: Mutex<HashMap<i64, String>>,
    pub stats: ReaderStats,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // All maps here are updated in single steps under their lock; a poisoned one is still consistent (2.9).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Reader {
    /// Must be called inside a tokio runtime: it starts the task that writes chunks to the store.
    pub fn new(
        store: Arc<dyn ChunkBackend>,
        manifests: Arc<dyn ManifestStore>,
        params: ChunkParams,
        memory_budget: u64,
        origin_timeout: Duration,
    ) -> Arc<Reader> {
        let (persist_tx, persist_rx) = mpsc::channel(64);
        tokio::spawn(persist_loop(store.clone(), persist_rx));
        Arc::new(Reader {
            store,
            memory: MemoryCache::new(memory_budget),
            manifests,
            manifest_cache: Mutex::new(HashMap::new()),
            ingests: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
            params,
            origin_timeout,
            persist_tx,
            breakers: Mutex::new(HashMap::new()),
            failures: Default::default(),
            ahead_paused: AtomicBool::new(false),
            backup_served: Mutex::new(HashMap::new()),
            stats: ReaderStats::default(),
        })
    }

    pub fn store(&self) -> &Arc<dyn ChunkBackend> {
        &self.store
    }

    /// Up to `len` bytes of the track at `offset` (short only at end of file).
    pub async fn read(self: &Arc<Self>, file: &FileRef, offset: u64, len: u32) -> Result<Bytes, ReadError> {
        let size = file.fingerprint.size;
        if offset >= size || len == 0 {
            return Ok(Bytes::new());
        }
        let end = (offset + len as u64).min(size);
        let manifest = match self.manifest(file).await {
            Ok(manifest) => manifest,
            // No manifest means no chunk list, not no data: the track is re-ingested or read from the origin.
            Err(e) => {
                tracing::warn!(track = file.track_id, error = %e, "manifest unavailable; reading without it");
                None
            }
        };
        if let Some(manifest) = manifest {
            match self.read_chunks(file, &manifest.chunks, offset, end).await {
                Err(ReadError::Changed) => {
                    tracing::warn!(track = file.track_id, path = %file.rel_path.display(), "origin copy changed; re-ingesting");
                    self.invalidate(file.track_id).await;
                }
                other => return other,
            }
        }
        self.read_while_ingesting(file, offset, end).await
    }

    /// Whether every chunk of the track is in the store (a fully cached, offline-playable track).
    pub async fn is_cached(&self, file: &FileRef) -> Result<bool, ReadError> {
        Ok(match self.manifest(file).await? {
            Some(m) => m.chunks.iter().all(|c| self.store.contains(&c.hash)),
            None => false,
        })
    }

    async fn read_while_ingesting(self: &Arc<Self>, file: &FileRef, offset: u64, end: u64) -> Result<Bytes, ReadError> {
        let mut progress = crate::ingest::start_or_join(self, file);
        loop {
            let now = progress.borrow_and_update().clone();
            if now.covered >= end {
                return self.read_chunks(file, &now.chunks, offset, end).await;
            }
            if now.finished || offset >= now.covered + AHEAD_WINDOW {
                return self.passthrough(file, offset, end).await;
            }
            if progress.changed().await.is_err() {
                return self.passthrough(file, offset, end).await;
            }
        }
    }

    async fn passthrough(&self, file: &FileRef, offset: u64, end: u64) -> Result<Bytes, ReadError> {
        self.stats.passthrough_reads.fetch_add(1, Ordering::Relaxed);
        let data = self.origin_read(file, offset, (end - offset) as usize).await?;
        Ok(data)
    }

    pub(crate) async fn origin_read(&self, file: &FileRef, offset: u64, len: usize) -> Result<Bytes, ReadError> {
        self.origin_read_noting_backup(file, offset, len).await.map(|(data, _)| data)
    }

    /// Reads from the track's origin or, when that fails for any reason but a missing file, from its backup
    /// (4.2.6). Says whether the backup answered. With a backup, the origin gets half the time, so the
    /// backup still has the rest: a hung origin then costs each read half a timeout until its breaker opens,
    /// after which reads go to the backup at once.
    pub(crate) async fn origin_read_noting_backup(
        &self,
        file: &FileRef,
        offset: u64,
        len: usize,
    ) -> Result<(Bytes, bool), ReadError> {
        let bound = if file.backup.is_some() { self.origin_timeout / 2 } else { self.origin_timeout };
        let result = self.bounded_origin_read(&file.origin, &file.rel_path, offset, len, bound).await;
        match &result {
            Ok(_) => self.failures.answered(file.origin.id()),
            // A file gone from its origin is the sync's business, not an origin outage.
            Err(ReadError::Origin(OriginError::NotFound(_))) => {}
            Err(e) => self.failures.failed(file.origin.id(), e),
        }
        let (Err(failure), Some(backup)) = (&result, &file.backup) else {
            return result.map(|data| (data, false));
        };
        if matches!(failure, ReadError::Origin(OriginError::NotFound(_))) {
            return result.map(|data| (data, false));
        }
        let data = self.bounded_origin_read(backup, &file.rel_path, offset, len, bound).await.map_err(|e| {
            tracing::debug!(track = file.track_id, backup = backup.id(), error = %e, "4.2.6 backup origin failed too");
            e
        })?;
        self.stats.backup_reads.fetch_add(1, Ordering::Relaxed);
        let first = lock(&self.backup_served).insert(file.track_id, file.origin.id().to_owned()).is_none();
        if first {
            tracing::warn!(track = file.track_id, path = %file.rel_path.display(), origin = file.origin.id(),
                backup = backup.id(), origin_error = %failure,
                "4.2.6 served from the backup origin; flagged for re-validation when the origin returns");
        }
        Ok((data, true))
    }

    async fn bounded_origin_read(
        &self,
        origin: &SharedOrigin,
        rel: &std::path::Path,
        offset: u64,
        len: usize,
        bound: Duration,
    ) -> Result<Bytes, ReadError> {
        let id = origin.id();
        if let Some(left) = self.breaker_open_for(id) {
            return Err(OriginError::Unavailable(format!(
                "origin `{id}` did not answer within {bound:?}; reads fail fast for another {left:?}"
            ))
            .into());
        }
        let data = match tokio::time::timeout(bound, origin.read_range(rel, offset, len)).await {
            Ok(Ok(data)) => data,
            // A remote origin bounds its own requests (S3 and SFTP by the reader's own origin timeout) and then
            // reports the timeout a moment before ours would fire: it is the same hang, and must open the
            // breaker just the same.
            Ok(Err(e @ OriginError::Timeout(_))) => {
                self.open_breaker(id);
                return Err(e.into());
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                self.open_breaker(id);
                return Err(OriginError::Timeout(bound).into());
            }
        };
        self.stats.origin_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(data)
    }

    /// The health monitor saw `origin` answer again after it was down: its reads stop failing fast now, not
    /// at the end of the breaker's window, so a healed origin is read from as soon as it is ready (N2, N4).
    pub fn origin_is_back(&self, origin: &str) {
        if lock(&self.breakers).remove(origin).is_some() {
            tracing::info!(origin, "3.8 origin answers again; its reads no longer fail fast");
        }
    }

    /// The tracks of `origin` served from its backup since it went away, handed over (and forgotten here)
    /// for the caller to re-validate now that it is back (4.2.6).
    pub fn take_backup_served(&self, origin: &str) -> Vec<i64> {
        let mut served = lock(&self.backup_served);
        let ids: Vec<i64> = served.iter().filter(|(_, o)| o.as_str() == origin).map(|(id, _)| *id).collect();
        for id in &ids {
            served.remove(id);
        }
        ids
    }

    /// How many tracks are waiting for re-validation after being served from a backup (4.2.6).
    pub fn backup_served_count(&self) -> usize {
        lock(&self.backup_served).len()
    }

    /// Re-validates a track served from a backup origin against its own origin (4.2.6): the manifest made
    /// from the backup's copy is dropped and the track ingested again from the origin. Returns whether the
    /// origin's copy has the same chunks as the one served (None: nothing was cached from the backup).
    pub async fn revalidate(self: &Arc<Self>, file: &FileRef) -> Result<Option<bool>, ReadError> {
        let served = self.load_manifest(file.track_id).await?;
        self.invalidate(file.track_id).await;
        let own = FileRef { backup: None, ..file.clone() };
        let mut progress = crate::ingest::start_or_join(self, &own);
        let _ = progress.wait_for(|p| p.finished).await;
        let now = self.manifest(&own).await?.ok_or(ReadError::Origin(OriginError::Unavailable(
            "the origin could not be read to re-validate the track".into(),
        )))?;
        Ok(served.filter(|m| m.from_backup).map(|m| m.chunks == now.chunks))
    }

    async fn read_chunks(
        &self,
        file: &FileRef,
        chunks: &[ChunkRef],
        offset: u64,
        end: u64,
    ) -> Result<Bytes, ReadError> {
        let first = Manifest::chunk_at(chunks, offset).ok_or(ReadError::Changed)?;
        let c = chunks[first];
        if end <= c.end() {
            // The common case: the whole read inside one chunk, no copy.
            let data = self.chunk_bytes(file, &c).await?;
            return Ok(data.slice((offset - c.offset) as usize..(end - c.offset) as usize));
        }
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for c in &chunks[first..] {
            if c.offset >= end {
                break;
            }
            let data = self.chunk_bytes(file, c).await?;
            let from = offset.max(c.offset) - c.offset;
            let to = end.min(c.end()) - c.offset;
            out.extend_from_slice(&data[from as usize..to as usize]);
        }
        if (out.len() as u64) < end - offset {
            return Err(ReadError::Changed);
        }
        Ok(out.freeze())
    }

    async fn chunk_bytes(&self, file: &FileRef, c: &ChunkRef) -> Result<Bytes, ReadError> {
        if let Some(data) = self.memory.get(&c.hash) {
            self.stats.chunk_hits.fetch_add(1, Ordering::Relaxed);
            // A chunk the store lost (evicted, or never written while the disk was full) is written back
            // when it is used again, so caching resumes for music that is still being played (2.8).
            if !self.store.contains(&c.hash) {
                self.persist(c.hash, data.clone()).await;
            }
            return Ok(data);
        }
        let cell = lock(&self.loading).entry(c.hash).or_default().clone();
        let result = cell.get_or_try_init(|| self.load_chunk(file, c)).await.cloned();
        {
            let mut loading = lock(&self.loading);
            if loading.get(&c.hash).is_some_and(|current| Arc::ptr_eq(current, &cell)) {
                loading.remove(&c.hash);
            }
        }
        let data = result?;
        self.memory.insert(c.hash, data.clone());
        Ok(data)
    }

    async fn load_chunk(&self, file: &FileRef, c: &ChunkRef) -> Result<Bytes, ReadError> {
        let store = self.store.clone();
        let hash = c.hash;
        let stored = tokio::task::spawn_blocking(move || store.get(&hash))
            .await
            .map_err(|e| ReadError::Internal(e.to_string()))?;
        match stored {
            Ok(Some(data)) => {
                self.stats.chunk_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(data);
            }
            Ok(None) => {}
            // A failing cache disk must not fail the read: the origin still has the bytes (6.6).
            Err(e) => tracing::warn!(chunk = %hash, error = %e, "chunk store read failed; reading from origin"),
        }
        self.stats.chunk_misses.fetch_add(1, Ordering::Relaxed);
        let data = self.origin_read(file, c.offset, c.len as usize).await?;
        if data.len() != c.len as usize || ChunkHash::of(&data) != c.hash {
            return Err(ReadError::Changed);
        }
        self.persist(c.hash, data.clone()).await;
        Ok(data)
    }

    /// Queues a verified chunk for the store. Never fails the read: a full or broken cache only costs caching.
    /// After an origin read times out, further reads from that origin fail at once for one timeout's length
    /// instead of each waiting a full timeout: with many readers (and the kernel retrying page reads) a hung
    /// origin would otherwise stack their waits (5.1, 3.8). The first read after the window tries again.
    fn open_breaker(&self, origin: &str) {
        let until = std::time::Instant::now() + self.origin_timeout;
        let mut open = lock(&self.breakers);
        if open.insert(origin.to_owned(), until).is_none() {
            tracing::warn!(origin, timeout = ?self.origin_timeout, "3.8 origin read timed out; failing its reads fast for one timeout");
        }
    }

    fn breaker_open_for(&self, origin: &str) -> Option<Duration> {
        let mut open = lock(&self.breakers);
        let until = *open.get(origin)?;
        let now = std::time::Instant::now();
        if now >= until {
            open.remove(origin);
            return None;
        }
        Some(until - now)
    }

    /// Whether an ingest may cache chunks ahead of its readers at this disk level: not at or above the 95 %
    /// watermark (2.8), where prefetching stops and only the chunks readers use are cached.
    pub(crate) fn may_cache_ahead(&self, pressure: DiskPressure) -> bool {
        let ahead = pressure < DiskPressure::StopPrefetch;
        if self.ahead_paused.swap(!ahead, Ordering::Relaxed) == ahead {
            if ahead {
                tracing::info!("2.8 cache disk under 95% again: ingests cache ahead of their readers again");
            } else {
                tracing::warn!(
                    ?pressure,
                    "2.8 cache disk above 95%: prefetch stopped, only chunks readers use are cached"
                );
            }
        }
        ahead
    }

    pub(crate) async fn persist(&self, hash: ChunkHash, data: Bytes) {
        if self.persist_tx.send(Persist::Chunk(hash, data)).await.is_err() {
            tracing::warn!("chunk writer has stopped; chunk not cached");
        }
    }

    /// Waits until every chunk queued so far has been handled by the writer.
    pub(crate) async fn persist_barrier(&self) {
        let (tx, rx) = oneshot::channel();
        if self.persist_tx.send(Persist::Barrier(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    async fn manifest(&self, file: &FileRef) -> Result<Option<Arc<Manifest>>, ReadError> {
        fail::fail_point!("cas::reader::manifest_fetch", |_| Err(ReadError::Internal(
            "failpoint cas::reader::manifest_fetch".into()
        )));
        if let Some(m) = lock(&self.manifest_cache).get(&file.track_id).cloned()
            && m.fingerprint.matches(&file.fingerprint)
        {
            return Ok(Some(m));
        }
        let id = file.track_id;
        match self.load_manifest(id).await? {
            Some(m) if m.fingerprint.matches(&file.fingerprint) && m.covered() == file.fingerprint.size => {
                let m = Arc::new(m);
                self.remember_manifest(id, m.clone());
                Ok(Some(m))
            }
            _ => Ok(None),
        }
    }

    /// The stored manifest of a track, read on a blocking thread.
    async fn load_manifest(&self, track_id: i64) -> Result<Option<Manifest>, ReadError> {
        let manifests = self.manifests.clone();
        tokio::task::spawn_blocking(move || manifests.load(track_id))
            .await
            .map_err(|e| ReadError::Internal(e.to_string()))?
            .map_err(ReadError::Internal)
    }

    pub(crate) fn remember_manifest(&self, track_id: i64, manifest: Arc<Manifest>) {
        let mut cache = lock(&self.manifest_cache);
        if cache.len() >= MANIFEST_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(track_id, manifest);
    }

    pub(crate) async fn invalidate(&self, track_id: i64) {
        lock(&self.manifest_cache).remove(&track_id);
        let manifests = self.manifests.clone();
        let _ = tokio::task::spawn_blocking(move || manifests.remove(track_id)).await;
    }

    /// Waits (bounded) for running ingests to finish and queued chunk writes to land, then writes back
    /// access times. Used at shutdown, so a track that was read to the end is cached with its manifest.
    pub async fn flush(&self, ingest_wait: Duration) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + ingest_wait;
        loop {
            let running: Vec<_> = lock(&self.ingests).values().cloned().collect();
            if running.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    running = running.len(),
                    "ingests still running at shutdown; their tracks stay partly cached"
                );
                break;
            }
            for mut rx in running {
                let _ = tokio::time::timeout_at(deadline, rx.wait_for(|p| p.finished)).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.persist_barrier().await;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.flush_access_times().map(|_| ()))
            .await
            .map_err(|e| StoreError::Index(e.to_string()))?
    }
}

/// Writes queued chunks in batches (one index transaction per batch). While idle, it has the store check a
/// full or failed disk again every [`crate::disk::DISK_RECHECK`], so caching (and the status) recovers when
/// the disk does, even if nothing is read meanwhile (2.8, 6.6).
async fn persist_loop(store: Arc<dyn ChunkBackend>, mut rx: mpsc::Receiver<Persist>) {
    let mut batch = Vec::new();
    let mut barriers = Vec::new();
    loop {
        let first = match tokio::time::timeout(crate::disk::DISK_RECHECK, rx.recv()).await {
            Ok(Some(first)) => first,
            Ok(None) => break,
            Err(_idle) => {
                let store = store.clone();
                let _ = tokio::task::spawn_blocking(move || store.recheck_disk()).await;
                continue;
            }
        };
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Persist::Chunk(hash, data) => batch.push((hash, data)),
                Persist::Barrier(tx) => barriers.push(tx),
            }
            if batch.len() < 16 {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let chunks = std::mem::take(&mut batch);
            let store = store.clone();
            let count = chunks.len();
            match tokio::task::spawn_blocking(move || store.put_batch(&chunks)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, count, "could not cache chunks; reads continue from the origin")
                }
                Err(e) => tracing::error!(error = %e, "chunk writer task failed"),
            }
        }
        for tx in barriers.drain(..) {
            let _ = tx.send(());
        }
    }
}
