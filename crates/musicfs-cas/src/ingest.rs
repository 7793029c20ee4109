//! Ingest: the first read of a track streams it from the origin in large sequential blocks, cuts it into
//! chunks, hands each chunk to readers at once (memory) and to the store (in the background), and finally
//! saves the manifest. One ingest per track at a time; readers follow its progress through a watch channel.
//!
//! Caching the whole track while a reader is still at its start is prefetch: at or above the 95 % watermark
//! (2.8) the ingest stops it and only hands its chunks to readers; the chunks they use are cached by the read
//! path (`Reader::chunk_bytes`), and the rest are fetched by range if they are ever read.

use crate::hash::ChunkHash;
use crate::manifest::{ChunkRef, Fingerprint, Manifest};
use crate::reader::{FileRef, ReadError, Reader};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
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

/// Returns a receiver for the track's ingest, starting one if none runs.
pub(crate) fn start_or_join(reader: &Arc<Reader>, file: &FileRef) -> watch::Receiver<Progress> {
    let mut ingests = reader.ingests.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(rx) = ingests.get(&file.track_id) {
        return rx.clone();
    }
    let (tx, rx) = watch::channel(Progress::default());
    ingests.insert(file.track_id, rx.clone());
    let reader = reader.clone();
    let file = file.clone();
    tokio::spawn(async move {
        let track = file.track_id;
        match ingest(&reader, &file, &tx).await {
            Ok(manifest) => {
                let manifest = Arc::new(manifest);
                let store = reader.manifests.clone();
                let saved = manifest.clone();
                match tokio::task::spawn_blocking(move || store.save(track, &saved)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(track, error = %e, "could not save manifest"),
                    Err(e) => tracing::warn!(track, error = %e, "manifest save task failed"),
                }
                reader.remember_manifest(track, manifest);
                tracing::debug!(track, path = %file.rel_path.display(), "ingested");
            }
            // Origin failures are in the reader's summary (4.2.3); one line per track would be log spam.
            Err(e @ crate::ReadError::Origin(_)) => {
                tracing::debug!(track, path = %file.rel_path.display(), error = %e, "ingest failed; reads go to the origin")
            }
            Err(e) => {
                tracing::warn!(track, path = %file.rel_path.display(), error = %e, "ingest failed; reads go to the origin")
            }
        }
        tx.send_modify(|p| p.finished = true);
        reader.ingests.lock().unwrap_or_else(|p| p.into_inner()).remove(&track);
    });
    rx
}

async fn ingest(reader: &Arc<Reader>, file: &FileRef, tx: &watch::Sender<Progress>) -> Result<Manifest, ReadError> {
    let size = file.fingerprint.size;
    let mut pending = BytesMut::new();
    let mut read_pos = 0u64;
    let mut chunks: Vec<ChunkRef> = Vec::new();
    let mut covered = 0u64;
    let mut from_backup = false;
    loop {
        let (block, from_backup_now) = reader.origin_read_noting_backup(file, read_pos, BLOCK).await?;
        from_backup |= from_backup_now;
        read_pos += block.len() as u64;
        let eof = block.len() < BLOCK || read_pos >= size;
        pending.extend_from_slice(&block);
        drop(block);
        let buf = pending.split().freeze();
        let params = reader.params;
        let store = reader.store.clone();
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
        .await
        .map_err(|e| ReadError::Internal(e.to_string()))?;
        let cache_ahead = reader.may_cache_ahead(pressure);
        let mut at = 0;
        for (len, hash) in cut {
            let data: Bytes = buf.slice(at..at + len);
            at += len;
            reader.memory.insert(hash, data.clone());
            if cache_ahead {
                reader.persist(hash, data).await;
            } else {
                reader.stats.ahead_not_cached.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
    if !from_backup {
        let now = tokio::time::timeout(reader.origin_timeout, file.origin.stat(&file.rel_path))
            .await
            .map_err(|_| musicfs_origins::OriginError::Timeout(reader.origin_timeout))??;
        let now = Fingerprint { size: now.size, mtime_ns: now.mtime_ns, version: now.version };
        if !now.matches(&file.fingerprint) {
            return Err(ReadError::Changed);
        }
    }
    reader.persist_barrier().await;
    Ok(Manifest { fingerprint: file.fingerprint, chunks, from_backup })
}
