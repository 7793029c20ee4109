//! [`WriteQueue`]: chunk writes off the read path. Readers and ingests hand verified chunks to a queue; one
//! task writes them to the store in batches (one index transaction per batch), so a read never waits on a
//! chunk write or its fsync. While idle, the task has the store check a full or failed disk again every
//! [`DISK_RECHECK`], so caching (and the status) recovers when the disk does, even if nothing is read
//! meanwhile (2.8, 6.6).

use crate::disk::DISK_RECHECK;
use crate::hash::ChunkHash;
use crate::store::ChunkBackend;
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most chunks written in one batch.
const BATCH: usize = 16;

enum Write {
    Chunk(ChunkHash, Bytes),
    /// Answered once every chunk queued before it has been handled.
    Barrier(oneshot::Sender<()>),
}

pub struct WriteQueue {
    tx: mpsc::Sender<Write>,
}

impl WriteQueue {
    /// Starts the writer task; must be called inside a tokio runtime. The task ends when the queue is dropped.
    pub fn start(store: Arc<dyn ChunkBackend>) -> WriteQueue {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(write_loop(store, rx));
        WriteQueue { tx }
    }

    /// Queues a verified chunk for the store. Never fails the caller: a full or broken cache only costs
    /// caching.
    pub async fn write(&self, hash: ChunkHash, data: Bytes) {
        if self.tx.send(Write::Chunk(hash, data)).await.is_err() {
            tracing::warn!("chunk writer has stopped; chunk not cached");
        }
    }

    /// Waits until every chunk queued so far has been handled by the writer.
    pub async fn barrier(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Write::Barrier(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn write_loop(store: Arc<dyn ChunkBackend>, mut rx: mpsc::Receiver<Write>) {
    let mut batch = Vec::new();
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
                Write::Chunk(hash, data) => batch.push((hash, data)),
                Write::Barrier(tx) => barriers.push(tx),
            }
            if batch.len() < BATCH {
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
