//! [`WriteQueue`]: chunk writes off the read path. Readers and ingests hand verified chunks to a queue; one
//! task writes them to the store in batches (one index transaction per batch), so a read never waits on a
//! chunk write or its fsync.
//!
//! The queue holds at most [`QUEUE_BYTES`]. Nothing that serves a reader waits for room in it: the read path
//! and ingests [`offer`](WriteQueue::offer) chunks, which never waits (a chunk that finds the queue full is
//! offered again later), and a chunk already queued is not queued twice however many reads use it. Only an
//! ingest that has read its whole track [`waits`](WriteQueue::write) for room, for the chunks it held.
//!
//! While idle, the task has the store check a full or failed disk again every [`DISK_RECHECK`], so caching
//! (and the status) recovers when the disk does, even if nothing is read meanwhile (2.8, 6.6).

use crate::disk::DISK_RECHECK;
use crate::hash::ChunkHash;
use crate::store::ChunkBackend;
use bytes::Bytes;
use musicfs_core::sync_util::lock_or_recover;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// Most chunks written in one batch.
const BATCH: usize = 16;
/// Most bytes of chunks waiting in the queue (about 64 chunks of the default average size).
const QUEUE_BYTES: usize = 64 << 20;
/// Room in the queue is counted in units of this many bytes.
const UNIT: usize = 1024;

enum Write {
    /// A chunk, and its room in the queue, given back once the writer has handled it.
    Chunk(ChunkHash, Bytes, OwnedSemaphorePermit),
    /// Answered once every chunk queued before it has been handled.
    Barrier(oneshot::Sender<()>),
}

pub struct WriteQueue {
    tx: mpsc::UnboundedSender<Write>,
    /// Room in the queue, in [`UNIT`]s.
    room: Arc<Semaphore>,
    /// Chunks queued and not yet handled by the writer.
    queued: Arc<Mutex<HashSet<ChunkHash>>>,
}

impl WriteQueue {
    /// Starts the writer task; must be called inside a tokio runtime. The task ends when the queue is dropped.
    pub fn start(store: Arc<dyn ChunkBackend>) -> WriteQueue {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(Mutex::new(HashSet::new()));
        tokio::spawn(write_loop(store, rx, queued.clone()));
        WriteQueue { tx, room: Arc::new(Semaphore::new(QUEUE_BYTES / UNIT)), queued }
    }

    /// Queues a verified chunk for the store, waiting for room in the queue. Never fails the caller: a full
    /// or broken cache only costs caching.
    pub async fn write(&self, hash: ChunkHash, data: Bytes) {
        if !self.claim(hash) {
            return;
        }
        match self.room.clone().acquire_many_owned(units(&data)).await {
            Ok(permit) => self.send(hash, data, permit),
            Err(_closed) => self.release(&hash),
        }
    }

    /// Queues a verified chunk for the store if the queue has room now; never waits. False when the queue was
    /// full.
    pub fn offer(&self, hash: ChunkHash, data: Bytes) -> bool {
        if !self.claim(hash) {
            return true;
        }
        match self.room.clone().try_acquire_many_owned(units(&data)) {
            Ok(permit) => {
                self.send(hash, data, permit);
                true
            }
            Err(_full) => {
                self.release(&hash);
                false
            }
        }
    }

    fn send(&self, hash: ChunkHash, data: Bytes, permit: OwnedSemaphorePermit) {
        if self.tx.send(Write::Chunk(hash, data, permit)).is_err() {
            self.release(&hash);
            tracing::warn!("chunk writer has stopped; chunk not cached");
        }
    }

    /// Marks the chunk queued; false when it already was.
    fn claim(&self, hash: ChunkHash) -> bool {
        // Single inserts and removes: a poisoned set is still consistent (2.9).
        lock_or_recover(&self.queued).insert(hash)
    }

    fn release(&self, hash: &ChunkHash) {
        lock_or_recover(&self.queued).remove(hash);
    }

    /// Waits until every chunk queued so far has been handled by the writer.
    pub async fn barrier(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Write::Barrier(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// The chunk's room in the queue, in [`UNIT`]s (at least one).
fn units(data: &Bytes) -> u32 {
    u32::try_from(data.len().div_ceil(UNIT).clamp(1, QUEUE_BYTES / UNIT)).unwrap_or(u32::MAX)
}

async fn write_loop(
    store: Arc<dyn ChunkBackend>,
    mut rx: mpsc::UnboundedReceiver<Write>,
    queued: Arc<Mutex<HashSet<ChunkHash>>>,
) {
    let mut batch = Vec::new();
    let mut permits = Vec::new();
    let mut barriers = Vec::new();
    loop {
        let first = match tokio::time::timeout(DISK_RECHECK, rx.recv()).await {
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
                Write::Chunk(hash, data, permit) => {
                    batch.push((hash, data));
                    permits.push(permit);
                }
                Write::Barrier(tx) => barriers.push(tx),
            }
            if batch.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let chunks = std::mem::take(&mut batch);
            let hashes: Vec<ChunkHash> = chunks.iter().map(|(hash, _)| *hash).collect();
            let store = store.clone();
            let count = chunks.len();
            let result = tokio::task::spawn_blocking(move || store.put_batch(&chunks)).await;
            // Written, skipped or failed: either way no longer queued, so a later use may offer it again.
            let mut queued_now = lock_or_recover(&queued);
            hashes.iter().for_each(|hash| {
                queued_now.remove(hash);
            });
            drop(queued_now);
            permits.clear();
            match result {
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

#[cfg(test)]
mod tests {
    //! The queue's promises, against a backend that records what it was given and can be held shut: what
    //! cargo-mutants found no test of (a mutant of `write`, `claim`, `release` or the room's arithmetic went
    //! unnoticed by the crate's tests).

    use super::*;
    use crate::error::StoreError;
    use std::sync::Condvar;

    /// Records every chunk written; `put_batch` waits while the gate is shut.
    #[derive(Default)]
    struct Recorder {
        written: Mutex<Vec<ChunkHash>>,
        shut: Mutex<bool>,
        opened: Condvar,
    }

    impl Recorder {
        fn shut(&self, shut: bool) {
            *lock_or_recover(&self.shut) = shut;
            self.opened.notify_all();
        }
        fn count(&self, hash: &ChunkHash) -> usize {
            lock_or_recover(&self.written).iter().filter(|h| *h == hash).count()
        }
    }

    impl ChunkBackend for Recorder {
        fn get(&self, _: &ChunkHash) -> Result<Option<Bytes>, StoreError> {
            Ok(None)
        }
        fn put_batch(&self, chunks: &[(ChunkHash, Bytes)]) -> Result<(), StoreError> {
            let mut shut = lock_or_recover(&self.shut);
            while *shut {
                shut = self.opened.wait(shut).unwrap_or_else(|e| e.into_inner());
            }
            lock_or_recover(&self.written).extend(chunks.iter().map(|(h, _)| *h));
            Ok(())
        }
        fn contains(&self, _: &ChunkHash) -> bool {
            false
        }
        fn flush_access_times(&self) -> Result<usize, StoreError> {
            Ok(0)
        }
    }

    fn chunk(len: usize, seed: u8) -> (ChunkHash, Bytes) {
        let data = Bytes::from(vec![seed; len]);
        (ChunkHash::of(&data), data)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_written_chunk_reaches_the_store_once_however_often_it_is_queued() {
        let store = Arc::new(Recorder::default());
        let queue = WriteQueue::start(store.clone());
        let (a, data) = chunk(4096, 1);
        store.shut(true);
        // The writer takes the first and blocks in the store; the others find it still queued.
        queue.write(a, data.clone()).await;
        assert!(queue.offer(a, data.clone()));
        queue.write(a, data.clone()).await;
        store.shut(false);
        queue.barrier().await;
        assert_eq!(store.count(&a), 1, "a chunk queued three times was written {} times", store.count(&a));
        // Once handled it may be queued again (a later read of an evicted chunk).
        queue.write(a, data).await;
        queue.barrier().await;
        assert_eq!(store.count(&a), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_offers_without_losing_the_chunk_for_later() {
        let store = Arc::new(Recorder::default());
        let queue = WriteQueue::start(store.clone());
        store.shut(true);
        // Two small chunks fit side by side.
        let (s1, d1) = chunk(1024, 2);
        let (s2, d2) = chunk(1024, 3);
        assert!(queue.offer(s1, d1) && queue.offer(s2, d2), "two 1 KiB chunks did not both fit");
        // One the size of the whole queue waits for room (offered: refused), a small one behind it too.
        let (big, big_data) = chunk(QUEUE_BYTES, 4);
        let (small, small_data) = chunk(1024, 5);
        assert!(!queue.offer(big, big_data.clone()), "a chunk the size of the queue fit beside others");
        store.shut(false);
        queue.barrier().await;
        // Room again: the chunk refused before is taken now, and fills the queue while the store is shut.
        store.shut(true);
        assert!(queue.offer(big, big_data));
        assert!(!queue.offer(small, small_data.clone()), "the queue took a chunk while full");
        store.shut(false);
        queue.barrier().await;
        assert!(queue.offer(small, small_data), "a chunk refused while the queue was full stayed marked queued");
        queue.barrier().await;
        assert_eq!((store.count(&big), store.count(&small), store.count(&s1)), (1, 1, 1));
    }
}
