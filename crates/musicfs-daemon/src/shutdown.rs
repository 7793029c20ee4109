//! Stopping: the ordered shutdown (2.1, 2.3) after a request, and the cleanup after a FUSE session that
//! ended on its own (3.4). Each step is bounded, so a hung origin or a busy mount cannot stall the exit.

use crate::start::Daemon;
use crate::{DaemonError, mounts, systemd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::oneshot::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Bound on waiting for running ingests at shutdown.
const INGEST_WAIT_AT_SHUTDOWN: Duration = Duration::from_secs(5);
/// Bound on waiting for the FUSE session thread after unmount.
const SESSION_JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The same after a lazy unmount: the session only ends once every file open in the mount is closed (a
/// paused player may hold one for hours), so it is not waited for; leaving closes the connection.
const DETACHED_SESSION_JOIN_TIMEOUT: Duration = Duration::from_millis(200);
/// How long the cancelled background loops get to write back their state.
const BACKGROUND_WIND_DOWN: Duration = Duration::from_millis(20);

impl Daemon {
    /// The ordered shutdown (2.3): refuse new reads and drain in-flight ones (at most `drain_timeout`), stop
    /// the background work, flush chunk writes, commit the search index, checkpoint the database, unmount.
    pub(crate) async fn shutdown(self, reason: &str, drain_timeout: Duration) {
        let Daemon { shared, db, cancel, mut session, config, .. } = self;
        let stopping = Instant::now();
        tracing::info!(reason, ?drain_timeout, "2.1 shutting down");
        shared.stopping.store(true, Ordering::SeqCst);
        systemd::stopping();
        shared.fs.gate.close();
        let undrained = shared.fs.gate.drain(drain_timeout).await;
        if undrained > 0 {
            tracing::warn!(reads = undrained, "2.3 reads still running after the drain timeout; they get EIO");
        }
        let drained_ms = stopping.elapsed().as_millis() as u64;
        stop_and_write_back(&shared, &db, &cancel).await;
        let flushed_ms = stopping.elapsed().as_millis() as u64;
        let mut join_timeout = SESSION_JOIN_TIMEOUT;
        let mut unmounted = "unmounted";
        match (session.unmount)() {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                // The unprivileged daemon of the privilege split: the mount is the helper's, and the unit's
                // ExecStopPost= takes it down once this process is gone.
                tracing::info!("2.3 this process may not unmount; the service manager unmounts after it exits");
                join_timeout = DETACHED_SESSION_JOIN_TIMEOUT;
                unmounted = "the unmount left to the service manager";
            }
            Err(e) => {
                tracing::warn!(error = %e, "2.3 unmount failed: files are open in the mount; detached it lazily, and \
                    their next reads fail once this process is gone");
                mounts::lazy_unmount(&config.mount_point);
                join_timeout = DETACHED_SESSION_JOIN_TIMEOUT;
            }
        }
        if session.kept {
            crate::handover::forget();
        }
        let thread = session.thread;
        let joined = tokio::task::spawn_blocking(move || thread.join());
        if tokio::time::timeout(join_timeout, joined).await.is_err() {
            tracing::debug!(?join_timeout, "FUSE thread still running (files open in the detached mount); leaving");
        }
        tracing::info!(
            drained_ms,
            flushed_ms,
            total_ms = stopping.elapsed().as_millis() as u64,
            "2.3 stopped cleanly: reads drained, background stopped, cache flushed, search index committed, database checkpointed, {unmounted}"
        );
    }

    /// Leaves for a restart (2.11): the background work stops and the cache, the search index and the
    /// database are written back as in a shutdown, but nothing is drained or unmounted. Reads keep being
    /// answered until the process exits; those still in flight then are resent by the kernel to the next
    /// daemon, which takes the connection back from the service manager. Exits with
    /// [`crate::RESTART_EXIT_CODE`].
    pub(crate) async fn hand_over(self, who: &str) -> ! {
        let Daemon { shared, db, cancel, .. } = self;
        let stopping = Instant::now();
        tracing::info!(who, "2.11 restarting: the mount and its FUSE connection stay with the service manager");
        systemd::stopping();
        stop_and_write_back(&shared, &db, &cancel).await;
        tracing::info!(
            total_ms = stopping.elapsed().as_millis() as u64,
            "2.11 handed over: cache flushed, search index committed, database checkpointed, mount kept; exiting for the restart"
        );
        // Now, from here: an orderly runtime shutdown would fail the reads that arrive meanwhile, where an
        // exit leaves them to be resent.
        std::process::exit(crate::RESTART_EXIT_CODE)
    }

    /// The FUSE session ended without a shutdown request: the connection was aborted (3.4) or someone
    /// unmounted it from outside. fuser has already detached the mount either way; nothing serves the library
    /// any more, so this is a failure: exit 1 and let systemd's Restart=on-failure bring the mount back.
    pub(crate) async fn session_ended(self, ended: Result<std::io::Result<()>, RecvError>) -> Result<(), DaemonError> {
        if let Ok(Err(e)) = &ended {
            tracing::error!(error = %e, "FUSE session ended with an error");
        }
        let _ = self.shared.reader.flush(INGEST_WAIT_AT_SHUTDOWN).await;
        let _ = self.db.checkpoint();
        let mount_point = &self.config.mount_point;
        if mounts::mounted_fstype(mount_point).is_some_and(|t| t.starts_with("fuse")) {
            mounts::lazy_unmount(mount_point);
        }
        Err(DaemonError::Aborted)
    }
}

/// What both a shutdown and a hand-over do once reads are taken care of: stop the background work, then
/// flush chunk writes (and running ingests, within a bound), commit the search index, checkpoint the database.
async fn stop_and_write_back(shared: &crate::state::Shared, db: &musicfs_meta::Db, cancel: &CancellationToken) {
    cancel.cancel();
    // The supervised loops see the token at their next await; give them a moment to write back state.
    tokio::time::sleep(BACKGROUND_WIND_DOWN).await;
    if let Err(e) = shared.reader.flush(INGEST_WAIT_AT_SHUTDOWN).await {
        tracing::warn!(error = %e, "could not flush the chunk cache");
    }
    let search = shared.search.clone();
    let _ = tokio::task::spawn_blocking(move || search.close()).await;
    if let Err(e) = db.checkpoint() {
        tracing::warn!(error = %e, "could not checkpoint the database");
    }
}
