//! Ingest: the first read of a track streams it from the origin in large sequential blocks, cuts it into
//! chunks, hands each chunk to readers at once (memory) and to the store (through the [`WriteQueue`]), and
//! finally saves the manifest. One ingest per track at a time ([`Ingests`]); readers follow its progress
//! through a watch channel.
//!
//! Caching the whole track while a reader is still at its start is prefetch: at or above the 95 % watermark
//! (2.8) the ingest stops it and only hands its chunks to readers; the chunks they use are cached by the read
//! path (`Reader::chunk_bytes`), and the rest are fetched by range if they are ever read.

use crate::chunker::ChunkParams;
use crate::disk::DiskPressure;
use crate::error::ReadError;
use crate::hash::ChunkHash;
use crate::manifest::{ChunkRef, Manifest, ManifestCache};
use crate::memory::MemoryCache;
use crate::origin_read::{FileRef, OriginReads, Source};
use crate::stats::ReaderStats;
use crate::store::ChunkBackend;
use crate::write_queue::WriteQueue;
use bytes::{Bytes, BytesMut};
use musicfs_core::sync_util::lock_or_recover;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// Origin read size while ingesting.
const BLOCK: usize = 8 << 20;

#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// Chunks cut so far, in order from offset 0.
    pub chunks: Arc<Vec<ChunkRef>>,
    /// Bytes covered by `chunks`.
    pub covered: u64,
    /// No more progress will come (done or failed).
    pub finished: bool,
}

/// The running ingests, and what they need: the origin, the chunk memory, the write queue, the manifests.
pub struct Ingests {
    running: Mutex<HashMap<i64, watch::Receiver<Progress>>>,
    origin: Arc<OriginReads>,
    memory: Arc<MemoryCache>,
    writes: Arc<WriteQueue>,
    manifests: Arc<ManifestCache>,
    /// Asked how full the cache disk is (2.8).
    store: Arc<dyn ChunkBackend>,
    params: ChunkParams,
    /// Ingests have stopped caching ahead (2.8, 95 %); logged once per episode.
    ahead_paused: AtomicBool,
    stats: Arc<ReaderStats>,
}

impl Ingests {
    pub(crate) fn new(
        origin: Arc<OriginReads>,
        memory: Arc<MemoryCache>,
        writes: Arc<WriteQueue>,
        manifests: Arc<ManifestCache>,
        store: Arc<dyn ChunkBackend>,
        params: ChunkParams,
        stats: Arc<ReaderStats>,
    ) -> Ingests {
        Ingests {
            running: Mutex::new(HashMap::new()),
            origin,
            memory,
            writes,
            manifests,
            store,
            params,
            ahead_paused: AtomicBool::new(false),
            stats,
        }
    }

    fn running(&self) -> MutexGuard<'_, HashMap<i64, watch::Receiver<Progress>>> {
        // Single inserts and removes: a poisoned map is still consistent (2.9).
        lock_or_recover(&self.running)
    }

    /// Returns a receiver for the track's ingest, starting one if none runs.
    pub fn start_or_join(self: &Arc<Self>, file: &FileRef) -> watch::Receiver<Progress> {
        let mut running = self.running();
        if let Some(rx) = running.get(&file.track_id) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(Progress::default());
        running.insert(file.track_id, rx.clone());
        let (ingests, file) = (self.clone(), file.clone());
        tokio::spawn(async move {
            let track = file.track_id;
            match ingests.ingest(&file, &tx).await {
                Ok(manifest) => match ingests.manifests.save(track, Arc::new(manifest)).await {
                    Ok(()) => tracing::debug!(track, path = %file.rel_path.display(), "ingested"),
                    Err(e) => tracing::warn!(track, error = %e, "could not save manifest"),
                },
                // Origin failures are in the reader's summary (4.2.3); one line per track would be log spam.
                Err(e @ ReadError::Origin(_)) => {
                    tracing::debug!(track, path = %file.rel_path.display(), error = %e, "ingest failed; reads go to the origin")
                }
                Err(e) => {
                    tracing::warn!(track, path = %file.rel_path.display(), error = %e, "ingest failed; reads go to the origin")
                }
            }
            tx.send_modify(|p| p.finished = true);
            ingests.running().remove(&track);
        });
        rx
    }

    /// Waits for the track's running ingest, if one runs, to finish.
    pub async fn finish(&self, track_id: i64) {
        let running = self.running().get(&track_id).cloned();
        if let Some(mut rx) = running {
            let _ = rx.wait_for(|p| p.finished).await;
        }
    }

    /// Waits until no ingest runs, or until `wait` has passed; says how many still run then.
    pub async fn wait_all(&self, wait: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let running: Vec<_> = self.running().values().cloned().collect();
            if running.is_empty() || tokio::time::Instant::now() >= deadline {
                return running.len();
            }
            for mut rx in running {
                let _ = tokio::time::timeout_at(deadline, rx.wait_for(|p| p.finished)).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn ingest(&self, file: &FileRef, tx: &watch::Sender<Progress>) -> Result<Manifest, ReadError> {
        let size = file.fingerprint.size;
        let mut pending = BytesMut::new();
        let mut read_pos = 0u64;
        let mut chunks: Vec<ChunkRef> = Vec::new();
        let mut covered = 0u64;
        let mut from_backup = false;
        loop {
            let (block, source) = self.origin.read(file, read_pos, BLOCK).await?;
            from_backup |= source == Source::Backup;
            read_pos += block.len() as u64;
            let eof = block.len() < BLOCK || read_pos >= size;
            pending.extend_from_slice(&block);
            drop(block);
            let buf = pending.split().freeze();
            let (params, store) = (self.params, self.store.clone());
            let (buf, cut, pressure) = tokio::task::spawn_blocking(move || {
                let lengths = params.cut(&buf, eof);
                let mut at = 0;
                let cut: Vec<(usize, ChunkHash)> = lengths
                    .into_iter()
                    .map(|len| {
                        let hash = ChunkHash::of(&buf[at..at + len]);
                        at += len;
                        (len, hash)
                    })
                    .collect();
                (buf, cut, store.disk_pressure())
            })
            .await?;
            let cache_ahead = self.may_cache_ahead(pressure);
            let mut at = 0;
            for (len, hash) in cut {
                let data: Bytes = buf.slice(at..at + len);
                at += len;
                self.memory.insert(hash, data.clone());
                if cache_ahead {
                    self.writes.write(hash, data).await;
                } else {
                    self.stats.ahead_not_cached.fetch_add(1, Ordering::Relaxed);
                }
                chunks.push(ChunkRef { offset: covered, len: len as u32, hash });
                covered += len as u64;
            }
            pending.extend_from_slice(&buf[at..]);
            tx.send_replace(Progress { chunks: Arc::new(chunks.clone()), covered, finished: false });
            if eof {
                break;
            }
        }
        if covered != size {
            return Err(ReadError::Changed);
        }
        // The origin's copy must still be the one the library knows. A backup's copy has its own mtime and
        // stamp, so only its size is checked (above); the manifest is flagged for re-validation (4.2.6).
        if !from_backup && !self.origin.fingerprint(file).await?.matches(&file.fingerprint) {
            return Err(ReadError::Changed);
        }
        self.writes.barrier().await;
        Ok(Manifest { fingerprint: file.fingerprint, chunks, from_backup })
    }

    /// Whether an ingest may cache chunks ahead of its readers at this disk level: not at or above the 95 %
    /// watermark (2.8), where prefetching stops and only the chunks readers use are cached.
    fn may_cache_ahead(&self, pressure: DiskPressure) -> bool {
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
}
