//! The read path: bytes of a track from its chunks, fetching only missing chunks from the origin.
//!
//! A track with a manifest ([`ManifestCache`]) is served chunk by chunk: memory → chunk store
//! (hash-verified) → origin range ([`OriginReads`]; verified against the manifest hash, then queued for the
//! store on the [`WriteQueue`]). A track without one is ingested when a player reads it ([`Ingests`],
//! [`Reader::plays`]); reads near the ingest front wait for it, reads further ahead and random reads go
//! straight to the origin ([`NEAR_FRONT`]).
//!
//! Imports run one way: the reader uses ingests, origin reads, the write queue and the manifests; none of
//! them knows the reader.

use crate::chunker::ChunkParams;
use crate::error::{ReadError, StoreError};
use crate::failure_log::FailureLog;
use crate::hash::ChunkHash;
use crate::ingest::{Ingests, Progress};
use crate::manifest::{ChunkRef, Manifest, ManifestCache, ManifestStore};
use crate::memory::MemoryCache;
use crate::origin_read::{FileRef, OriginReads};
use crate::pieces::Pieces;
use crate::stats::ReaderStats;
use crate::store::ChunkBackend;
use crate::write_queue::WriteQueue;
use bytes::Bytes;
use musicfs_core::sync_util::lock_or_recover;
use musicfs_origins::OriginError;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::OnceCell;

/// Reads that start within this distance of what the ingest has fetched, and within [`FOLLOWS_ON`] of where
/// the track's last read ended, wait for it: they are a sequential reader at its front. Other reads, a seek or
/// a random read, fetch their own range from the origin at once rather than queue behind a block of up to
/// 8 MiB on its way; the ingest still caches those bytes when it reaches them.
const NEAR_FRONT: u64 = 2 << 20;
/// How far from where the track's last read ended a read may start and still follow on from it: the
/// kernel's read-ahead has several 1 MiB requests out at once, and two threads may take them out of order.
const FOLLOWS_ON: u64 = 8 << 20;
/// How far ahead of a sequential reader of a cached track its chunks are loaded (read and verified) into
/// memory, so the next request finds them there: the disk read and the hash check of the next chunk overlap
/// the reader's use of this one. At most a quarter of the memory cache, so loaded chunks stay until used.
const READ_AHEAD: u64 = 2 << 20;
/// Tracks whose last read end is remembered to tell sequential readers from random ones.
const READ_ENDS_KEPT: usize = 1024;
/// Reads in a row, each starting where the one before ended, that make a reader of an uncached track a player
/// and start its ingest when its first read was not at the start ([`Reader::plays`]).
const PLAYING_RUN: u32 = 2;

/// Where the last read of a track ended, and how many reads before it in a row started where the one before
/// them ended.
#[derive(Clone, Copy, Debug)]
struct LastRead {
    end: u64,
    run: u32,
}

pub struct Reader {
    store: Arc<dyn ChunkBackend>,
    memory: Arc<MemoryCache>,
    manifests: Arc<ManifestCache>,
    origin: Arc<OriginReads>,
    writes: Arc<WriteQueue>,
    ingests: Arc<Ingests>,
    /// Chunks being loaded now, so concurrent readers of one chunk load it once.
    loading: Mutex<HashMap<ChunkHash, Arc<OnceCell<Bytes>>>>,
    /// Where the last read of each track ended: a read starting there is sequential ([`READ_AHEAD`]); one
    /// starting near there follows on ([`FOLLOWS_ON`]).
    read_ends: Mutex<HashMap<i64, LastRead>>,
    pub stats: Arc<ReaderStats>,
}

impl Reader {
    /// Must be called inside a tokio runtime: it starts the task that writes chunks to the store.
    /// `origin_timeout` bounds each origin call.
    pub fn new(
        store: Arc<dyn ChunkBackend>,
        manifests: Arc<dyn ManifestStore>,
        params: ChunkParams,
        memory_budget: u64,
        origin_timeout: Duration,
    ) -> Arc<Reader> {
        let stats = Arc::new(ReaderStats::default());
        let memory = Arc::new(MemoryCache::new(memory_budget));
        let manifests = Arc::new(ManifestCache::new(manifests));
        let origin = Arc::new(OriginReads::new(origin_timeout, stats.clone()));
        let writes = Arc::new(WriteQueue::start(store.clone()));
        let ingests = Arc::new(Ingests::new(
            origin.clone(),
            memory.clone(),
            writes.clone(),
            manifests.clone(),
            store.clone(),
            params,
            stats.clone(),
        ));
        Arc::new(Reader {
            store,
            memory,
            manifests,
            origin,
            writes,
            ingests,
            loading: Mutex::new(HashMap::new()),
            read_ends: Mutex::new(HashMap::new()),
            stats,
        })
    }

    pub fn store(&self) -> &Arc<dyn ChunkBackend> {
        &self.store
    }

    /// Origin read failures, summarised (4.2.3).
    pub fn failures(&self) -> &FailureLog {
        &self.origin.failures
    }

    /// Up to `len` bytes of the track at `offset` (short only at end of file), in one buffer.
    pub async fn read(self: &Arc<Self>, file: &FileRef, offset: u64, len: u32) -> Result<Bytes, ReadError> {
        Ok(self.read_pieces(file, offset, len).await?.into_bytes())
    }

    /// [`Reader::read`] in the buffers that hold the bytes (a slice of each chunk the range spans), unjoined.
    pub async fn read_pieces(self: &Arc<Self>, file: &FileRef, offset: u64, len: u32) -> Result<Pieces, ReadError> {
        let size = file.fingerprint.size;
        if offset >= size || len == 0 {
            return Ok(Pieces::default());
        }
        let end = (offset + len as u64).min(size);
        let last = self.note_read(file.track_id, offset, end);
        let last_end = last.map(|l| l.end);
        let manifest = match self.manifests.current(file.track_id, &file.fingerprint).await {
            Ok(manifest) => manifest,
            // No manifest means no chunk list, not no data: the track is re-ingested or read from the origin.
            Err(e) => {
                tracing::warn!(track = file.track_id, error = %e, "manifest unavailable; reading without it");
                None
            }
        };
        if let Some(manifest) = manifest {
            if last_end == Some(offset) {
                self.load_ahead(file, &manifest, end);
            }
            match self.read_chunks(file, &manifest.chunks, offset, end).await {
                Err(ReadError::Changed) => {
                    tracing::warn!(track = file.track_id, path = %file.rel_path.display(), "origin copy changed; re-ingesting");
                    self.manifests.forget(file.track_id).await;
                }
                other => return other,
            }
        }
        if !Self::plays(last, offset) && !file.origin.random_reads_ingest() && !self.ingests.is_running(file.track_id) {
            return Ok(self.passthrough(file, offset, end).await?.into());
        }
        // A first read of the track counts as following on: it is where a player starts.
        let follows_on = last_end.is_none_or(|last| last.abs_diff(offset) < FOLLOWS_ON);
        self.read_while_ingesting(file, offset, end, follows_on).await
    }

    /// Whether a read of an uncached track comes from a player, which is worth an ingest (the whole track,
    /// cached from its start): a first read at the start, or the last of [`PLAYING_RUN`] reads in a row each
    /// starting where the one before ended (a player that began mid-track). Random reads fetch only their
    /// own ranges, unless the origin says a random read is worth an ingest
    /// ([`random_reads_ingest`](musicfs_origins::Origin::random_reads_ingest)): an ingest would read the whole
    /// track and slow every one of them down while it runs.
    fn plays(last: Option<LastRead>, offset: u64) -> bool {
        match last {
            None => offset < NEAR_FRONT,
            Some(last) => last.end == offset && last.run + 1 >= PLAYING_RUN,
        }
    }

    /// Remembers where this read of the track ends; returns the last read's.
    fn note_read(&self, track: i64, offset: u64, end: u64) -> Option<LastRead> {
        // Single inserts: a poisoned map is still consistent (2.9).
        let mut ends = lock_or_recover(&self.read_ends);
        if ends.len() >= READ_ENDS_KEPT && !ends.contains_key(&track) {
            ends.clear();
        }
        let last = ends.get(&track).copied();
        let run = match last {
            Some(last) if last.end == offset => last.run.saturating_add(1),
            _ => 0,
        };
        ends.insert(track, LastRead { end, run });
        last
    }

    /// Loads the chunks in [`READ_AHEAD`] after `end` into memory in the background, those not there yet.
    fn load_ahead(self: &Arc<Self>, file: &FileRef, manifest: &Manifest, end: u64) {
        let Some(first) = Manifest::chunk_at(&manifest.chunks, end) else { return };
        let ahead = READ_AHEAD.min(self.memory.budget() / 4);
        for c in manifest.chunks[first..].iter().take_while(|c| c.offset < end + ahead) {
            if self.memory.contains(&c.hash) || self.loading().contains_key(&c.hash) {
                continue;
            }
            let (reader, file, c) = (self.clone(), file.clone(), *c);
            tokio::spawn(async move {
                if let Err(e) = reader.chunk_bytes(&file, &c).await {
                    tracing::debug!(track = file.track_id, chunk = %c.hash, error = %e, "read-ahead failed");
                }
            });
        }
    }

    /// Whether every chunk of the track is in the store (a fully cached, offline-playable track).
    pub async fn is_cached(&self, file: &FileRef) -> Result<bool, ReadError> {
        Ok(match self.manifests.current(file.track_id, &file.fingerprint).await? {
            Some(m) => m.chunks.iter().all(|c| self.store.contains(&c.hash)),
            None => false,
        })
    }

    /// `follows_on`: the read starts near where the track's last read ended (see [`FOLLOWS_ON`]).
    async fn read_while_ingesting(
        &self,
        file: &FileRef,
        offset: u64,
        end: u64,
        follows_on: bool,
    ) -> Result<Pieces, ReadError> {
        let mut progress = self.ingests.start_or_join(file);
        // A reader following on from the start, or any reader where the origin wants the whole track, lets
        // the ingest go on past its leash.
        if follows_on || file.origin.random_reads_ingest() {
            progress.borrow().reach.note(end);
        }
        loop {
            let now = progress.borrow_and_update().clone();
            if now.covered >= end {
                return self.read_chunks(file, &now.chunks, offset, end).await;
            }
            let fetched = now.covered + now.uncut.len() as u64;
            if fetched >= end {
                return self.read_uncut(file, &now, offset, end).await;
            }
            let at_front = follows_on && offset < fetched + NEAR_FRONT;
            if now.finished || !at_front || progress.changed().await.is_err() {
                return Ok(self.passthrough(file, offset, end).await?.into());
            }
        }
    }

    /// A range the ingest has read from the origin but not cut yet, in part or whole: its start may still lie
    /// in the chunks already cut.
    async fn read_uncut(&self, file: &FileRef, now: &Progress, offset: u64, end: u64) -> Result<Pieces, ReadError> {
        now.served.fetch_max(end, Ordering::Relaxed);
        let tail = now.uncut.slice((offset.max(now.covered) - now.covered) as usize, (end - now.covered) as usize);
        if offset >= now.covered {
            return Ok(tail);
        }
        let mut pieces = self.read_chunks(file, &now.chunks, offset, now.covered).await?;
        pieces.append(tail);
        Ok(pieces)
    }

    /// Reads the range straight from the origin, without chunks.
    async fn passthrough(&self, file: &FileRef, offset: u64, end: u64) -> Result<Bytes, ReadError> {
        self.stats.passthrough_reads.fetch_add(1, Ordering::Relaxed);
        Ok(self.origin.read(file, offset, (end - offset) as usize).await?.0)
    }

    async fn read_chunks(
        &self,
        file: &FileRef,
        chunks: &[ChunkRef],
        offset: u64,
        end: u64,
    ) -> Result<Pieces, ReadError> {
        let first = Manifest::chunk_at(chunks, offset).ok_or(ReadError::Changed)?;
        let mut pieces = Pieces::default();
        for c in &chunks[first..] {
            if c.offset >= end {
                break;
            }
            let data = self.chunk_bytes(file, c).await?;
            let from = offset.max(c.offset) - c.offset;
            let to = end.min(c.end()) - c.offset;
            pieces.push(data.slice(from as usize..to as usize));
        }
        if (pieces.len() as u64) < end - offset {
            return Err(ReadError::Changed);
        }
        Ok(pieces)
    }

    /// One chunk's bytes, as long as the manifest says (see [`Reader::any_chunk_bytes`]). The hash fixes the
    /// bytes, the manifest only claims their length: a damaged one must not slice past them.
    async fn chunk_bytes(&self, file: &FileRef, c: &ChunkRef) -> Result<Bytes, ReadError> {
        let data = self.any_chunk_bytes(file, c).await?;
        if data.len() != c.len as usize {
            return Err(ReadError::Changed);
        }
        Ok(data)
    }

    /// One chunk's bytes: from memory, else loaded once however many readers want it ([`Reader::load_chunk`]).
    async fn any_chunk_bytes(&self, file: &FileRef, c: &ChunkRef) -> Result<Bytes, ReadError> {
        if let Some(data) = self.memory.get(&c.hash) {
            self.stats.chunk_hits.fetch_add(1, Ordering::Relaxed);
            // A chunk the store lost (evicted, or never written while the disk was full) is written back
            // when it is used again, so caching resumes for music that is still being played (2.8).
            if !self.store.contains(&c.hash) {
                self.offer_to_store(c.hash, &data);
            }
            return Ok(data);
        }
        let cell = self.loading().entry(c.hash).or_default().clone();
        let result = cell.get_or_try_init(|| self.load_chunk(file, c)).await.cloned();
        // In memory before it leaves the loading map, so no reader in between loads it a second time.
        if let Ok(data) = &result {
            self.memory.insert(c.hash, data.clone());
        }
        {
            let mut loading = self.loading();
            if loading.get(&c.hash).is_some_and(|current| Arc::ptr_eq(current, &cell)) {
                loading.remove(&c.hash);
            }
        }
        result
    }

    fn loading(&self) -> MutexGuard<'_, HashMap<ChunkHash, Arc<OnceCell<Bytes>>>> {
        // Single inserts and removes: a poisoned map is still consistent (2.9).
        lock_or_recover(&self.loading)
    }

    /// A chunk from the store (hash-verified), else from the origin by range, verified against its hash and
    /// queued for the store.
    async fn load_chunk(&self, file: &FileRef, c: &ChunkRef) -> Result<Bytes, ReadError> {
        let (store, hash) = (self.store.clone(), c.hash);
        match tokio::task::spawn_blocking(move || store.get(&hash)).await? {
            Ok(Some(data)) => {
                self.stats.chunk_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(data);
            }
            Ok(None) => {}
            // A failing cache disk must not fail the read: the origin still has the bytes (6.6).
            Err(e) => tracing::warn!(chunk = %hash, error = %e, "chunk store read failed; reading from origin"),
        }
        self.stats.chunk_misses.fetch_add(1, Ordering::Relaxed);
        let (data, _) = self.origin.read(file, c.offset, c.len as usize).await?;
        if data.len() != c.len as usize || ChunkHash::of(&data) != c.hash {
            return Err(ReadError::Changed);
        }
        self.offer_to_store(c.hash, &data);
        Ok(data)
    }

    /// Queues a chunk a read used for the store, without waiting: a full queue costs caching (the chunk is
    /// offered again when next used), never the reader's time.
    fn offer_to_store(&self, hash: ChunkHash, data: &Bytes) {
        if !self.writes.offer(hash, data.clone()) {
            self.stats.writes_deferred.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The health monitor saw `origin` answer again: its reads stop failing fast now (N2, N4).
    pub fn origin_is_back(&self, origin: &str) {
        self.origin.origin_is_back(origin)
    }

    /// The tracks of `origin` served from its backup since it went away, for re-validation (4.2.6).
    pub fn take_backup_served(&self, origin: &str) -> Vec<i64> {
        self.origin.take_backup_served(origin)
    }

    /// Whether tracks of `origin` served from its backup can be re-validated now (4.2.6).
    pub fn awaits_revalidation(&self, origin: &str) -> bool {
        self.origin.awaits_revalidation(origin)
    }

    /// The origins whose backup answered first and that have not answered again since (N2).
    pub fn slow_origins(&self) -> Vec<String> {
        self.origin.slow_origins()
    }

    /// How many tracks are waiting for re-validation after being served from a backup (4.2.6).
    pub fn backup_served_count(&self) -> usize {
        self.origin.backup_served_count()
    }

    /// Re-validates a track served from a backup origin against its own origin (4.2.6): the manifest made
    /// from the backup's copy is dropped and the track ingested again from the origin. Returns whether the
    /// origin's copy has the same chunks as the one served (None: nothing was cached from the backup).
    pub async fn revalidate(&self, file: &FileRef) -> Result<Option<bool>, ReadError> {
        // An ingest still running may be the one the backup feeds: joining it would "re-validate" the
        // backup's copy against itself. Let it finish and save its manifest first.
        self.ingests.finish(file.track_id).await;
        let served = self.manifests.load(file.track_id).await?;
        self.manifests.forget(file.track_id).await;
        let own = FileRef { backup: None, ..file.clone() };
        let mut progress = self.ingests.start_or_join_whole(&own);
        let _ = progress.wait_for(|p| p.finished).await;
        let now = self.manifests.current(own.track_id, &own.fingerprint).await?.ok_or(ReadError::Origin(
            OriginError::Unavailable("the origin could not be read to re-validate the track".into()),
        ))?;
        Ok(served.filter(|m| m.from_backup).map(|m| m.chunks == now.chunks))
    }

    /// Waits (bounded) for running ingests to finish and queued chunk writes to land, then writes back
    /// access times. Used at shutdown, so a track that was read to the end is cached with its manifest.
    pub async fn flush(&self, ingest_wait: Duration) -> Result<(), StoreError> {
        let running = self.ingests.wait_all(ingest_wait).await;
        if running > 0 {
            tracing::warn!(running, "ingests still running at shutdown; their tracks stay partly cached");
        }
        self.writes.barrier().await;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.flush_access_times().map(|_| ()))
            .await
            .map_err(|e| StoreError::Index(e.to_string()))?
    }
}
