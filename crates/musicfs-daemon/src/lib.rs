//! The MusicFS daemon: everything between "here is a config" and "the mount is gone, exit 0".
//!
//! [`run`] prepares the cache directory (6.7) and takes its lock (3.9), then drives three steps on the async
//! runtime, each in its own module:
//! - [`start`]: signals, origins, database and chunk store, the tree (loaded, or scanned on first run,
//!   resumably), a stale mount cleared (2.7), the mount, a check that it answers, the control socket, the
//!   background tasks and the watchdog, then `READY=1` (2.10).
//! - [`serve`]: waits for a shutdown request, applying SIGHUP reloads (3.6, [`reload`]) meanwhile. A FUSE
//!   session that ends on its own (3.4) ends the daemon with exit 1, so systemd restarts it.
//! - [`shutdown`] (2.1, 2.3): refuse new reads and drain in-flight ones, cancel background work, flush chunk
//!   writes and access times, commit the search index, checkpoint SQLite, unmount, exit 0 — a second signal
//!   exits at once.

pub mod background;
pub mod control;
pub mod events;
pub mod handover;
mod health;
pub mod lock;
pub mod metrics;
pub mod mount_helper;
pub mod mounts;
pub mod preflight;
pub mod process;
mod reload;
pub mod search;
mod serve;
mod shutdown;
pub mod signals;
mod start;
pub mod state;
pub mod status;
pub mod systemd;
mod watchdog;

use musicfs_cas::ChunkStore;
use musicfs_core::Config;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use lock::{CacheLock, LockError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot prepare {what} at {path}: {source}")]
    Prepare { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    CacheDir(#[from] preflight::CacheDirError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot listen for signals: {0}")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Origins(#[from] musicfs_origins::configured::BuildError),
    #[error(transparent)]
    Database(#[from] musicfs_meta::DbError),
    #[error(transparent)]
    Scan(#[from] musicfs_meta::sync::SyncError),
    #[error(transparent)]
    ChunkStore(#[from] musicfs_cas::StoreError),
    #[error(transparent)]
    Search(#[from] musicfs_search::SearchError),
    /// A blocking start-up task (loading the tree) panicked or was cancelled.
    #[error("{what} failed: {source}")]
    Task { what: &'static str, source: tokio::task::JoinError },
    #[error("cannot start the FUSE thread: {0}")]
    FuseThread(#[source] std::io::Error),
    #[error("cannot mount at {path}: {source}")]
    Mount { path: PathBuf, source: std::io::Error },
    #[error("the mount at {} did not answer within {waited:?}", path.display())]
    MountSilent { path: PathBuf, waited: Duration },
    #[error("cannot open the control socket at {path}: {source}")]
    Control { path: PathBuf, source: std::io::Error },
    #[error(
        "3.4 the FUSE session ended without a shutdown request (connection aborted or unmounted from outside); exiting 1 so the service restarts"
    )]
    Aborted,
}

/// The exit code of a daemon that left for a restart with its FUSE connection kept (2.11): the unit's
/// `RestartForceExitStatus=` restarts it, and its `ExecStopPost=` keeps the mount.
pub const RESTART_EXIT_CODE: i32 = 75;

/// Bound on draining in-flight reads at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What `musicfs cache verify` found: every chunk re-hashed, the chunk index against the chunk files, and the
/// library database's integrity.
#[derive(Debug)]
pub struct CacheCheck {
    pub chunks: musicfs_cas::VerifyReport,
    /// What opening the store had to fix between its index and the chunk files (nothing after a clean stop).
    pub index_repaired: musicfs_cas::ReconcileReport,
    /// SQLite's `integrity_check` of the library database ("ok"), or None when there is none yet.
    pub database: Option<String>,
}

/// `musicfs cache verify` / `musicfs cache repair`: offline maintenance of a cache directory. Takes the cache
/// lock, so it refuses to run beside a daemon on the same cache.
pub fn cache_maintenance(cache_dir: &Path, max_size: u64, rebuild_index: bool) -> Result<CacheCheck, DaemonError> {
    let _lock = CacheLock::acquire(cache_dir)?;
    let store =
        if rebuild_index { ChunkStore::rebuild(cache_dir, max_size) } else { ChunkStore::open(cache_dir, max_size) }?;
    let mut report = store.verify_all()?;
    // Opening already re-hashes a sample; rot found there counts too.
    let found_at_open = store.stats.corrupt_detected.load(std::sync::atomic::Ordering::Relaxed) - report.rotten;
    report.rotten += found_at_open;
    report.checked += found_at_open;
    let db_path = cache_dir.join(META_DB);
    let database = if db_path.exists() {
        Some(musicfs_meta::Db::integrity_check(&db_path).unwrap_or_else(|e| format!("cannot be checked: {e}")))
    } else {
        None
    };
    Ok(CacheCheck { chunks: report, index_repaired: store.repaired_at_open(), database })
}

/// The library database's file name in the cache directory.
pub const META_DB: &str = "meta.db";

/// Runs the daemon in the foreground until it is told to stop. Returns Ok after a clean shutdown.
/// `config_file` is re-read on SIGHUP.
pub fn run(config: Config, config_file: Option<PathBuf>) -> Result<(), DaemonError> {
    let started = Instant::now();
    process::use_one_malloc_arena();
    // Everything the daemon creates is its user's alone (as the unit's UMask=0077): the cache holds the
    // library's metadata and cached audio, the control socket answers whoever can open it.
    // SAFETY: umask cannot fail and only sets this process's file mode mask.
    unsafe { libc::umask(0o077) };
    std::fs::create_dir_all(&config.cache_dir).map_err(|source| DaemonError::Prepare {
        what: "cache directory",
        path: config.cache_dir.clone(),
        source,
    })?;
    preflight::check_cache_dir(&config.cache_dir)?;
    match preflight::make_private(&config.cache_dir) {
        Ok(tightened) if !tightened.is_empty() => tracing::info!(
            cache_dir = %config.cache_dir.display(),
            paths = tightened.len(),
            "cache made private to the daemon's user (directory 0700, files 0600)"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(cache_dir = %config.cache_dir.display(), error = %e,
            "could not make the cache private to the daemon's user"),
    }
    let _lock = CacheLock::acquire(&config.cache_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8))
        .thread_name("musicfs-rt")
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    let result = runtime.block_on(async {
        match start::Daemon::start(config, config_file, started).await? {
            Some(daemon) => daemon.serve().await,
            // Asked to stop during the first scan: nothing was mounted yet.
            None => Ok(()),
        }
    });
    // Blocking tasks still waiting on a hung origin must not hold the exit hostage.
    let exiting = Instant::now();
    runtime.shutdown_timeout(Duration::from_secs(1));
    tracing::debug!(elapsed_ms = exiting.elapsed().as_millis() as u64, "runtime stopped");
    result
}
