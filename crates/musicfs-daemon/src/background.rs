//! The daemon's background work, as three loops the supervisor runs (and restarts) and one cancellation
//! token stops: the origin health monitor, the library watcher (delta sync, on its interval and on
//! `musicfs sync`), and cache upkeep (access-time write-back, the chunk scrubber of 6.4, the descriptor watch
//! of 5.3). The first two announce what they find on the event bus (3.3).

use crate::control::protocol::SyncReport;
use crate::events::Event;
use crate::process;
use crate::state::SyncRequest;
use musicfs_fuse::MusicFs;
use musicfs_fuse::invalidate;
use musicfs_meta::Db;
use musicfs_meta::sync::{self, SyncError};
use musicfs_origins::{OriginError, SharedOrigin};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
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
                    let results = health_round_impl(&self.shared, &self.db, &self.checked, self.health_timeout).await;
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
                _ = resources.tick() => warned = process::watch_resources(warned),
            }
        }
    }

    /// One delta sync. A changed library is swapped in and announced with what the kernel must forget.
    async fn delta_sync(&self) -> Result<SyncReport, SyncError> {
        let result = match sync::sync(
            &self.db,
            &self.origins,
            sync::SyncOptions { show_progress: false, list_timeout: self.list_timeout },
        )
        .await
        {
            Ok((report, tree)) => {
                if report.added + report.changed + report.removed + report.renamed > 0 {
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

/// One health round (4.2.1, 4.2.2): every origin checked at once, each bounded by the timeout; state
/// changes are logged once, not per read.
async fn health_round_impl(
    shared: &crate::state::Shared,
    db: &Arc<Db>,
    origins: &[SharedOrigin],
    timeout: Duration,
) -> Vec<musicfs_origins::health::CheckResult> {
    let before = shared.library_state();
    let was: Vec<(String, bool)> = {
        let states = shared.origins.read().unwrap_or_else(|p| p.into_inner());
        states.iter().map(|o| (o.id.clone(), o.healthy)).collect()
    };
    let results = musicfs_origins::health::check_all(origins, timeout).await;
    {
        let mut states = shared.origins.write().unwrap_or_else(|p| p.into_inner());
        *states = results
            .iter()
            .map(|r| crate::state::OriginStatus {
                id: r.origin.clone(),
                healthy: r.outcome.is_ok(),
                dns_failure: r.outcome.as_ref().is_err_and(OriginError::is_dns),
                last_error: r.outcome.as_ref().err().map(|e| e.to_string()),
            })
            .collect();
    }
    let mut returned = Vec::new();
    for r in &results {
        let was_healthy = was.iter().find(|(id, _)| *id == r.origin).is_none_or(|(_, healthy)| *healthy);
        match (&r.outcome, was_healthy) {
            (Err(e), true) => {
                if e.is_dns() {
                    tracing::warn!(origin = %r.origin, error = %e, recheck = ?musicfs_origins::health::DNS_RECHECK,
                        "4.2.5 origin host name does not resolve: DNS, not a dead origin; degraded, re-checking soon");
                }
                shared.events.publish(Event::OriginDown { origin: r.origin.clone(), error: e.to_string() }).await
            }
            (Ok(_), false) => {
                // Before the state says ready: a healed origin is read from at once (3.8, N2, N4).
                shared.reader.origin_is_back(&r.origin);
                returned.push(r.origin.clone());
                shared.events.publish(Event::OriginUp { origin: r.origin.clone() }).await
            }
            _ => {}
        }
    }
    for origin in &returned {
        let (fs, kernel) = (shared.fs.clone(), shared.invalidator.kernel.clone());
        tokio::spawn(revalidate_backup_served(fs, db.clone(), kernel, origin.clone()));
    }
    if !returned.is_empty() {
        // Tasks that failed too often while an origin was gone get a fresh start (4.2.4).
        let revived = shared.supervisor.revive_given_up();
        if !revived.is_empty() {
            tracing::info!(origins = ?returned, tasks = ?revived, "4.2.4 origins back: given-up tasks restarted");
        }
        // Catch-up sync (4.2.3, N4): what changed on the origins while they were away shows now, not at the
        // next sync interval. Nobody waits for the answer; a full queue means a sync is already coming.
        let (reply, _) = oneshot::channel();
        match shared.sync_requests.try_send(reply) {
            Ok(()) => tracing::info!(origins = ?returned, "4.2.3 origins back: catch-up sync requested"),
            Err(e) => tracing::debug!(error = %e, "catch-up sync not queued; one is already pending"),
        }
    }
    let after = shared.library_state();
    if after != before {
        let down: Vec<String> = results.iter().filter(|r| r.outcome.is_err()).map(|r| r.origin.clone()).collect();
        tracing::warn!(from = before.as_str(), to = after.as_str(), down = ?down, "4.2.3 library state changed");
        shared.events.publish(Event::StateChanged { from: before.as_str(), to: after.as_str() }).await;
    }
    results
}

#[cfg(test)]
#[path = "background_tests.rs"]
mod tests;

/// Re-validates the tracks of `origin` that were served from its backup while it was away (4.2.6): each is
/// read again from `origin`; where its copy differs from the backup's, the kernel is told to drop what it
/// cached, so readers see the origin's bytes. Runs beside the health monitor, never blocking it.
async fn revalidate_backup_served(
    fs: Arc<MusicFs>,
    db: Arc<Db>,
    kernel: Arc<dyn invalidate::KernelCache>,
    origin: String,
) {
    let mut ids = fs.reader().take_backup_served(&origin);
    let db2 = db.clone();
    let o = origin.clone();
    match tokio::task::spawn_blocking(move || db2.backup_served(&o)).await {
        Ok(Ok(stored)) => ids.extend(stored),
        Ok(Err(e)) => tracing::warn!(origin, error = %e, "4.2.6 could not list tracks cached from the backup"),
        Err(e) => tracing::warn!(origin, error = %e, "4.2.6 backup listing task failed"),
    }
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return;
    }
    let tree = fs.tree();
    let (mut same, mut differed, mut failed) = (0usize, 0usize, 0usize);
    for id in &ids {
        let Some((ino, file)) = tree.file_by_track(*id).and_then(|ino| Some((ino, fs.file(ino).ok()?))) else {
            continue; // removed from the library meanwhile
        };
        match fs.reader().revalidate(&file).await {
            Ok(Some(true)) => same += 1,
            Ok(None) => {
                // Only read through, never cached from the backup: the kernel may still hold its pages.
                invalidate::apply(&*kernel, &[invalidate::Invalidation::Inode(ino)]);
                same += 1;
            }
            Ok(Some(false)) => {
                differed += 1;
                invalidate::apply(&*kernel, &[invalidate::Invalidation::Inode(ino)]);
                tracing::warn!(origin, track = id, path = %file.rel_path.display(),
                    "4.2.6 the backup's copy differed from the origin's; now served from the origin");
            }
            Err(e) => {
                failed += 1;
                tracing::warn!(origin, track = id, error = %e, "4.2.6 re-validation failed; retried when the origin returns again");
            }
        }
    }
    tracing::info!(
        origin,
        tracks = ids.len(),
        same,
        differed,
        failed,
        "4.2.6 origin back: tracks served from its backup re-validated"
    );
}
