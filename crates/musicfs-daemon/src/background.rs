//! The daemon's background work, as three loops the supervisor runs (and restarts) and one cancellation
//! token stops: the origin health monitor, the library watcher (delta sync, on its interval and on
//! `musicfs sync`), and cache upkeep (access-time write-back, the chunk scrubber of 6.4, the descriptor watch
//! of 5.3, memory handed back after reads). The first two announce what they find on the event bus (3.3).
//! One round of the health monitor is in `health.rs`.

use crate::control::protocol::SyncReport;
use crate::events::Event;
use crate::state::SyncRequest;
use crate::{health, process};
use musicfs_fuse::invalidate;
use musicfs_meta::Db;
use musicfs_meta::sync::{self, SyncError};
use musicfs_origins::SharedOrigin;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long `musicfs sync` waits for the kernel-cache invalidator before answering anyway.
const SYNC_INVALIDATION_WAIT: Duration = Duration::from_secs(5);

/// How often changed chunk access times are written back.
const ACCESS_FLUSH_EVERY: Duration = Duration::from_secs(30);
/// The scrubber re-hashes a few chunks a minute (6.4): a full pass over 10 000 chunks (10 GiB) takes under
/// two days, at about 4 MiB of reads a minute.
const SCRUB_EVERY: Duration = Duration::from_secs(60);
const SCRUB_CHUNKS: usize = 4;

pub struct Background {
    pub shared: Arc<crate::state::Shared>,
    pub health_every: Duration,
    pub health_timeout: Duration,
    pub db: Arc<Db>,
    /// The library's origins (listed by the watcher).
    pub origins: Vec<SharedOrigin>,
    /// Every origin the health monitor checks: the library's and their backups (4.2.6).
    pub checked: Vec<SharedOrigin>,
    pub sync_now: bool,
    pub sync_every: Duration,
    /// Bounds each origin's listing, so a hung origin cannot leave the watcher stuck (4.2.4).
    pub list_timeout: Duration,
    pub sync_requests: tokio::sync::Mutex<mpsc::Receiver<SyncRequest>>,
    /// Set once the library watcher has run; a later start is a restart after it died.
    pub watcher_started: AtomicBool,
}

impl Background {
    /// The health monitor (critical): one bounded, concurrent round of origin checks per interval, or
    /// sooner after a DNS failure (4.2.5).
    pub async fn health_loop(self: Arc<Self>, cancel: CancellationToken) -> Result<(), Infallible> {
        let mut next = Duration::ZERO;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(next) => {
                    let results = health::round(&self.shared, &self.db, &self.checked, self.health_timeout).await;
                    next = musicfs_origins::health::next_round(&results, self.health_every);
                }
            }
        }
    }

    /// The library watcher (critical): a delta sync after start (unless the start scanned), then every sync
    /// interval, and whenever `musicfs sync` asks. Restarted by the supervisor after it dies, it syncs at
    /// once, since it may have missed changes while it was down (4.2.4).
    pub async fn sync_loop(self: Arc<Self>, cancel: CancellationToken) -> Result<(), Infallible> {
        let restarted = self.watcher_started.swap(true, Ordering::SeqCst);
        if restarted {
            tracing::info!("4.2.4 library watcher restarted; syncing now for what it missed");
        }
        let mut resync = tokio::time::interval(self.sync_every);
        if !self.sync_now && !restarted {
            resync.tick().await;
        }
        let mut requests = self.sync_requests.lock().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = resync.tick() => {
                    let _ = self.delta_sync().await;
                }
                Some(reply) = requests.recv() => {
                    let report = self.delta_sync().await;
                    // Answer once the changes show through the mount, not merely in the tree.
                    if !self.shared.invalidator.caught_up(SYNC_INVALIDATION_WAIT).await {
                        tracing::warn!("3.3 kernel cache invalidation still behind when musicfs sync answered");
                    }
                    let _ = reply.send(report);
                    resync.reset();
                }
            }
        }
    }

    /// Cache upkeep: access-time write-back, the scrubber, and the descriptor watch.
    pub async fn maintenance_loop(self: Arc<Self>, cancel: CancellationToken) -> Result<(), Infallible> {
        let mut flush = tokio::time::interval(ACCESS_FLUSH_EVERY);
        let mut scrub = tokio::time::interval(SCRUB_EVERY);
        let mut resources = tokio::time::interval(process::RESOURCE_CHECK_EVERY);
        let (mut scrub_cursor, mut warned) = (None, process::Warned::default());
        let mut trim = process::TrimAfterReads::default();
        flush.tick().await;
        scrub.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    self.flush_access_times().await;
                    return Ok(());
                }
                _ = flush.tick() => self.flush_access_times().await,
                _ = scrub.tick() => scrub_cursor = self.scrub(scrub_cursor).await,
                _ = resources.tick() => {
                    warned = process::watch_resources(warned);
                    if trim.check(self.shared.fs.stats.count(musicfs_fuse::stats::Op::Read)) {
                        tracing::debug!(rss_bytes = process::rss_bytes(), "reads stopped: freed memory handed back");
                    }
                }
            }
        }
    }

    /// One delta sync. A changed library is swapped in and announced with what the kernel must forget.
    async fn delta_sync(&self) -> Result<SyncReport, SyncError> {
        let result = match sync::sync_if_changed(
            &self.db,
            &self.origins,
            sync::SyncOptions { show_progress: false, list_timeout: self.list_timeout },
        )
        .await
        {
            Ok((report, tree)) => {
                if let Some(tree) = tree.filter(|_| report.added + report.changed + report.removed + report.renamed > 0)
                {
                    let old = self.shared.fs.replace_tree(tree);
                    let new = self.shared.fs.tree();
                    let current = new.clone();
                    let invalidations = match tokio::task::spawn_blocking(move || invalidate::changes(&old, &new)).await
                    {
                        Ok(list) => list,
                        Err(e) => {
                            tracing::error!(error = %e, "working out what the kernel must forget failed; forgetting everything");
                            invalidate::everything(&current)
                        }
                    };
                    let event = Event::LibraryChanged {
                        added: report.added,
                        changed: report.changed,
                        removed: report.removed,
                        renamed: report.renamed,
                        tracks: report.total,
                        invalidations: invalidations.into(),
                        generation: self.shared.invalidator.stats.published.fetch_add(1, Ordering::SeqCst) + 1,
                    };
                    self.shared.events.publish(event).await;
                }
                tracing::info!(
                    added = report.added,
                    changed = report.changed,
                    removed = report.removed,
                    renamed = report.renamed,
                    total = report.total,
                    unreachable = ?report.unreachable,
                    "delta sync done"
                );
                Ok(SyncReport {
                    added: report.added,
                    changed: report.changed,
                    removed: report.removed,
                    renamed: report.renamed,
                    tracks: report.total,
                    unreachable: report.unreachable,
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "delta sync failed; serving the library as it was");
                Err(e)
            }
        };
        crate::process::release_freed_memory();
        result
    }

    async fn flush_access_times(&self) {
        let store = self.shared.store.clone();
        match tokio::task::spawn_blocking(move || store.flush_access_times()).await {
            Ok(Ok(n)) if n > 0 => tracing::debug!(chunks = n, "access times written back"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not write back access times"),
            _ => {}
        }
    }

    async fn scrub(&self, cursor: Option<musicfs_cas::ChunkHash>) -> Option<musicfs_cas::ChunkHash> {
        let store = self.shared.store.clone();
        match tokio::task::spawn_blocking(move || store.scrub_step(cursor, SCRUB_CHUNKS)).await {
            Ok(Ok((next, report))) => {
                if report.rotten > 0 {
                    tracing::warn!(
                        rotten = report.rotten,
                        checked = report.checked,
                        "6.4 scrubber removed rotten chunks; they are refetched on the next read"
                    );
                }
                next
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "scrubber could not verify chunks");
                cursor
            }
            Err(e) => {
                tracing::warn!(error = %e, "scrubber task failed");
                cursor
            }
        }
    }
}

#[cfg(test)]
#[path = "background_tests.rs"]
mod tests;
