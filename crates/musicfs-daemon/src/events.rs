//! What the daemon announces on its event bus (3.3), and its critical consumer: the kernel-cache invalidator.
//!
//! Producers: the library watcher after every delta sync that changed something, and the health monitor
//! when an origin or the library state changes. Consumers: the invalidator (lossless; after lost events it
//! invalidates everything) and `musicfs events` clients (lossy; they are told how many they missed).

use musicfs_core::events::{Delivery, EventBus, Subscription};
use musicfs_fuse::MusicFs;
use musicfs_fuse::invalidate::{self, Invalidation, KernelCache};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A delta sync changed the library.
    LibraryChanged {
        added: usize,
        changed: usize,
        removed: usize,
        renamed: usize,
        tracks: usize,
        /// What the kernel may still hold from the tree before.
        #[serde(skip)]
        invalidations: Arc<[Invalidation]>,
        /// Its number among library changes ([`InvalidatorStats::published`]).
        #[serde(skip)]
        generation: u64,
    },
    OriginDown {
        origin: String,
        error: String,
    },
    OriginUp {
        origin: String,
    },
    /// Ready, degraded or offline (4.2.3).
    StateChanged {
        from: &'static str,
        to: &'static str,
    },
}

pub type Bus = EventBus<Event>;

/// The kernel-cache invalidator's counters, for status and metrics.
#[derive(Default)]
pub struct InvalidatorStats {
    /// Invalidations the kernel took.
    pub sent: AtomicU64,
    /// Full invalidations after lost events.
    pub resyncs: AtomicU64,
    /// Library changes announced (numbered by the publisher), and the last one the kernel has been told of.
    pub published: AtomicU64,
    pub applied: AtomicU64,
}

/// The blocking task that told the kernel what to forget panicked or was cancelled; the supervisor restarts
/// the invalidator, which resumes from its queue.
#[derive(Debug, thiserror::Error)]
#[error("invalidation task failed: {0}")]
pub struct InvalidationFailed(#[source] tokio::task::JoinError);

/// The invalidator: a lossless consumer that tells the kernel what each sync changed. Holding the
/// subscription behind a mutex lets the supervisor restart the loop without losing its queue.
pub struct Invalidator {
    pub events: tokio::sync::Mutex<Subscription<Event>>,
    pub kernel: Arc<dyn KernelCache>,
    pub fs: Arc<MusicFs>,
    pub stats: InvalidatorStats,
}

impl Invalidator {
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> Result<(), InvalidationFailed> {
        let mut events = self.events.lock().await;
        loop {
            let (list, generation): (Arc<[Invalidation]>, u64) = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                delivery = events.next() => match delivery {
                    Delivery::Event(Event::LibraryChanged { invalidations, generation, .. }) => (invalidations, generation),
                    Delivery::Event(_) => continue,
                    Delivery::Lost(lost) => {
                        tracing::warn!(lost, "3.3 invalidator lost events; invalidating the whole kernel cache");
                        self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
                        // Covers every change announced so far: the tree is read after the count.
                        let generation = self.stats.published.load(Ordering::SeqCst);
                        (invalidate::everything(&self.fs.tree()).into(), generation)
                    }
                    Delivery::Closed => return Ok(()),
                },
            };
            let kernel = self.kernel.clone();
            let sent = tokio::task::spawn_blocking(move || invalidate::apply(&*kernel, &list))
                .await
                .map_err(InvalidationFailed)?;
            self.stats.sent.fetch_add(sent as u64, Ordering::Relaxed);
            self.stats.applied.fetch_max(generation, Ordering::SeqCst);
            tracing::debug!(sent, "kernel cache invalidated after a library change");
        }
    }

    /// Waits (at most `bound`) until the kernel has been told of every library change announced so far, so
    /// that `musicfs sync` answers only once its changes show through the mount.
    pub async fn caught_up(&self, bound: std::time::Duration) -> bool {
        let target = self.stats.published.load(Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + bound;
        while self.stats.applied.load(Ordering::SeqCst) < target {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use musicfs_cas::manifest::MemoryManifests;
    use musicfs_cas::{ChunkParams, ManifestStore, Reader};
    use musicfs_core::events::Guarantee;
    use musicfs_fuse::invalidate::RecordingKernelCache;
    use musicfs_meta::Tree;
    use musicfs_meta::tree::TreeRow;
    use std::collections::HashMap;
    use std::time::Duration;

    fn tree(tracks: &[(&str, u64)]) -> Tree {
        let dirs: HashMap<String, u64> = Tree::dir_paths_of(tracks.iter().map(|t| t.0))
            .into_iter()
            .enumerate()
            .map(|(i, d)| (d, 1000 + i as u64))
            .collect();
        let rows = tracks.iter().map(|&(vpath, ino)| TreeRow {
            track_id: ino as i64,
            origin: "o".into(),
            rel_path: vpath.into(),
            size: 1,
            mtime_ns: 0,
            version: 0,
            vpath: vpath.into(),
            ino,
        });
        Tree::build(rows, &dirs)
    }

    fn invalidator(bus: &Bus, first: Tree) -> (Arc<Invalidator>, Arc<RecordingKernelCache>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(musicfs_cas::ChunkStore::open(dir.path(), 1 << 30).unwrap());
        let manifests: Arc<dyn ManifestStore> = Arc::new(MemoryManifests::default());
        let reader = Reader::new(store, manifests, ChunkParams::default(), 1 << 20, Duration::from_secs(1));
        let fs = Arc::new(MusicFs::new(first, reader, &[], Duration::from_secs(1)));
        let kernel = Arc::new(RecordingKernelCache::default());
        let events = tokio::sync::Mutex::new(bus.subscribe("kernel cache invalidator", Guarantee::Lossless));
        let inv = Arc::new(Invalidator { events, kernel: kernel.clone(), fs, stats: InvalidatorStats::default() });
        (inv, kernel)
    }

    /// What a delta sync does: swap the tree, publish what changed.
    async fn sync_to(bus: &Bus, inv: &Invalidator, next: Tree) {
        let old = inv.fs.replace_tree(next);
        let invalidations = invalidate::changes(&old, &inv.fs.tree()).into();
        let (added, changed, removed, renamed, tracks) = (0, 0, 1, 0, inv.fs.tree().file_count());
        let generation = inv.stats.published.fetch_add(1, Ordering::SeqCst) + 1;
        let event = Event::LibraryChanged { added, changed, removed, renamed, tracks, invalidations, generation };
        bus.publish(event).await;
    }

    async fn settle(kernel: &RecordingKernelCache, want: impl Fn(&[Invalidation]) -> bool) -> Vec<Invalidation> {
        let mut seen = Vec::new();
        for _ in 0..200 {
            seen.extend(kernel.take());
            if want(&seen) {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the invalidator never sent what was expected; it sent {seen:?}");
    }

    fn entry(parent: u64, name: &str) -> Invalidation {
        Invalidation::Entry { parent, name: name.as_bytes().into() }
    }

    /// Proves L1: 3.3
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_invalidator_forgets_each_removed_name_and_resyncs_everything_after_lost_events() {
        let bus = Bus::with_lossless_wait(1, Duration::from_millis(20));
        let (inv, kernel) = invalidator(&bus, tree(&[("A/X/1.flac", 2), ("A/X/2.flac", 3), ("B/Y/3.flac", 4)]));
        let t = inv.fs.tree();
        let ax = t.lookup(1, b"A").and_then(|a| t.lookup(a.ino, b"X")).unwrap().ino;

        // Running and keeping up: every change reaches the kernel, nothing is lost.
        let cancel = CancellationToken::new();
        let running = tokio::spawn(inv.clone().run(cancel.clone()));
        sync_to(&bus, &inv, tree(&[("A/X/2.flac", 3), ("B/Y/3.flac", 4)])).await;
        let seen = settle(&kernel, |s| s.contains(&entry(ax, "1.flac"))).await;
        assert!(!seen.contains(&Invalidation::Inode(4)), "unchanged files are left alone: {seen:?}");
        assert_eq!(inv.stats.resyncs.load(Ordering::Relaxed), 0);

        // Stopped (as while it restarts): the queue of one fills, the next syncs are lost, counted.
        cancel.cancel();
        running.await.unwrap().unwrap();
        sync_to(&bus, &inv, tree(&[("B/Y/3.flac", 4)])).await;
        sync_to(&bus, &inv, tree(&[("B/Y/3.flac", 4), ("C/Z/5.flac", 5)])).await;
        sync_to(&bus, &inv, tree(&[("C/Z/5.flac", 5)])).await;
        assert_eq!(bus.lost_total(), 2, "{:?}", bus.stats());

        // Back: the queued change, then a full invalidation of the current tree for what was lost.
        let running = tokio::spawn(inv.clone().run(CancellationToken::new()));
        let seen = settle(&kernel, |s| s.contains(&entry(1, "C"))).await;
        assert!(seen.contains(&entry(1, "A")), "the queued sync's removal arrives: {seen:?}");
        assert!(seen.contains(&Invalidation::Inode(5)), "every current inode is invalidated: {seen:?}");
        assert_eq!(inv.stats.resyncs.load(Ordering::Relaxed), 1);
        running.abort();
    }
}
