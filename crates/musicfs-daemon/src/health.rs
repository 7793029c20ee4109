//! One round of the origin health monitor (4.2.1–4.2.6): every origin checked at once, each bounded by the
//! health timeout; the results recorded for status; origins that went down or came back announced on the
//! event bus (once per change, not per read); and what a returning origin needs done: its backup-served
//! tracks re-validated, given-up tasks revived, a catch-up sync.

use crate::events::Event;
use crate::state::{OriginStatus, Shared};
use musicfs_core::sync_util::{read_or_recover, write_or_recover};
use musicfs_fuse::MusicFs;
use musicfs_fuse::invalidate;
use musicfs_meta::Db;
use musicfs_origins::health::{self, CheckResult};
use musicfs_origins::{OriginError, SharedOrigin};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// One health round (4.2.1, 4.2.2): every origin checked at once, each bounded by the timeout; state
/// changes are logged once, not per read.
pub(crate) async fn round(
    shared: &Shared,
    db: &Arc<Db>,
    origins: &[SharedOrigin],
    timeout: Duration,
) -> Vec<CheckResult> {
    let before = shared.library_state();
    let was: Vec<(String, bool)> = {
        let states = read_or_recover(&shared.origins);
        states.iter().map(|o| (o.id.clone(), o.healthy)).collect()
    };
    let results = health::check_all(origins, timeout).await;
    record(shared, &results);
    let returned = announce(shared, &was, &results).await;
    if !returned.is_empty() {
        welcome_back(shared, db, &returned);
    }
    // A read can fail over to the backup while the origin is away for less than a round: no round saw it
    // down, so none sees it return. Its backup-served tracks are re-validated once it answers (4.2.6).
    for r in results.iter().filter(|r| r.outcome.is_ok() && !returned.contains(&r.origin)) {
        if shared.reader.awaits_revalidation(&r.origin) {
            let (fs, kernel) = (shared.fs.clone(), shared.invalidator.kernel.clone());
            tokio::spawn(revalidate_backup_served(fs, db.clone(), kernel, r.origin.clone()));
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

/// The round's results as each origin's state, for status and the library state.
fn record(shared: &Shared, results: &[CheckResult]) {
    let mut states = write_or_recover(&shared.origins);
    *states = results
        .iter()
        .map(|r| OriginStatus {
            id: r.origin.clone(),
            healthy: r.outcome.is_ok(),
            dns_failure: r.outcome.as_ref().is_err_and(OriginError::is_dns),
            last_error: r.outcome.as_ref().err().map(|e| e.to_string()),
        })
        .collect();
}

/// Announces origins that went down or came back since the last round (`was`: id and health then); returns
/// the ones that came back. A returned origin is read from again at once, before the state says ready
/// (3.8, N2, N4).
async fn announce(shared: &Shared, was: &[(String, bool)], results: &[CheckResult]) -> Vec<String> {
    let mut returned = Vec::new();
    for r in results {
        let was_healthy = was.iter().find(|(id, _)| *id == r.origin).is_none_or(|(_, healthy)| *healthy);
        match (&r.outcome, was_healthy) {
            (Err(e), true) => {
                if e.is_dns() {
                    tracing::warn!(origin = %r.origin, error = %e, recheck = ?health::DNS_RECHECK,
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
    returned
}

/// What follows origins coming back: tracks served from their backups are re-validated (4.2.6), given-up
/// tasks restarted (4.2.4), and a catch-up sync requested (4.2.3).
fn welcome_back(shared: &Shared, db: &Arc<Db>, returned: &[String]) {
    for origin in returned {
        let (fs, kernel) = (shared.fs.clone(), shared.invalidator.kernel.clone());
        tokio::spawn(revalidate_backup_served(fs, db.clone(), kernel, origin.clone()));
    }
    {
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
}

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
