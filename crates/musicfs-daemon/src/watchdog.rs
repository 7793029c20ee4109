//! The systemd watchdog (3.1): while `WATCHDOG_USEC` is set, the daemon pets systemd only after a
//! self-check passes, so a daemon that is alive but not serving is restarted like a frozen one.

use crate::systemd;
use musicfs_core::supervisor::Supervisor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::CancellationToken;

/// Why the self-check failed.
#[derive(Debug, thiserror::Error)]
pub enum SelfCheckError {
    #[error("the FUSE session thread has ended")]
    SessionEnded,
    #[error("critical tasks given up: {}", .0.join(", "))]
    TasksGivenUp(Vec<String>),
    #[error("the mount does not answer: {0}")]
    MountSilent(#[source] std::io::Error),
    #[error("the mount check could not run: {0}")]
    CheckFailed(#[source] tokio::task::JoinError),
}

/// Starts the watchdog loop if systemd asked for one; it stops when `cancel` is.
pub(crate) fn spawn(
    mount_point: &Path,
    session_alive: Arc<AtomicBool>,
    supervisor: &Supervisor,
    cancel: &CancellationToken,
) {
    let Some(interval) = systemd::watchdog_interval() else { return };
    tracing::info!(?interval, "3.1 systemd watchdog enabled");
    let (mount_point, supervisor, cancel) = (mount_point.to_owned(), supervisor.clone(), cancel.child_token());
    tokio::spawn(async move {
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = systemd::watchdog_loop(
                interval,
                move || self_check(mount_point.clone(), session_alive.clone(), supervisor.clone()),
                || systemd::notify(&[sd_notify::NotifyState::Watchdog]),
            ) => {}
        }
    });
}

/// The watchdog's self-check: the FUSE thread is alive, no critical task has been given up, the mount
/// answers a listing (which always reaches the daemon, unlike a cached stat), and the runtime ran this check
/// at all.
async fn self_check(
    mount_point: PathBuf,
    session_alive: Arc<AtomicBool>,
    supervisor: Supervisor,
) -> Result<(), SelfCheckError> {
    #[cfg(feature = "failpoints")]
    if fail::eval("daemon::watchdog::selfcheck_stall", |_| ()).is_some() {
        std::future::pending::<()>().await;
    }
    if !session_alive.load(Ordering::SeqCst) {
        return Err(SelfCheckError::SessionEnded);
    }
    let dead = supervisor.dead_critical();
    if !dead.is_empty() {
        return Err(SelfCheckError::TasksGivenUp(dead));
    }
    tokio::task::spawn_blocking(move || std::fs::read_dir(&mount_point).map(|mut d| d.next()))
        .await
        .map_err(SelfCheckError::CheckFailed)?
        .map_err(SelfCheckError::MountSilent)?;
    Ok(())
}
