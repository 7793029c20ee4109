//! The MusicFS daemon: everything between "here is a config" and "the mount is gone, exit 0".
//!
//! Start: lock the cache (3.9), open the database and chunk store, load the tree (or scan on first run),
//! clear a stale mount (2.7), mount, check that the mount answers, then tell systemd `READY=1` (2.10).
//! Run: a delta sync in the background, periodic write-back of access times. Stop on SIGTERM/SIGINT or when
//! the mount goes away: `STOPPING=1`, unmount, flush chunk writes and access times, checkpoint SQLite.

pub mod lock;
pub mod mounts;

use musicfs_cas::{ChunkParams, ChunkStore, ManifestStore, Reader};
use musicfs_core::{Config, OriginKind};
use musicfs_fuse::MusicFs;
use musicfs_fuse::adapter::{self, FuseAdapter};
use musicfs_meta::{Db, sync};
use musicfs_origins::{LocalOrigin, SharedOrigin};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use lock::{CacheLock, LockError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot prepare {what} at {path}: {source}")]
    Prepare { what: &'static str, path: std::path::PathBuf, source: std::io::Error },
    #[error("{0}")]
    Start(String),
    #[error("cannot mount at {path}: {source}")]
    Mount { path: std::path::PathBuf, source: std::io::Error },
}

fn start_err(e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Start(e.to_string())
}

/// How often changed chunk access times are written back.
const ACCESS_FLUSH_EVERY: Duration = Duration::from_secs(30);
/// The scrubber re-hashes a few chunks a minute (6.4): a full pass over 10 000 chunks (10 GiB) takes under
/// two days, at about 4 MiB of reads a minute.
const SCRUB_EVERY: Duration = Duration::from_secs(60);
const SCRUB_CHUNKS: usize = 4;
/// Kernel readahead for the mount: FUSE starts at 128 KiB; sequential playback and copies want larger reads.
const READAHEAD_KIB: u32 = 1024;
/// Bound on waiting for running ingests at shutdown.
const INGEST_WAIT_AT_SHUTDOWN: Duration = Duration::from_secs(5);
/// Bound on waiting for the FUSE session thread after unmount.
const SESSION_JOIN_TIMEOUT: Duration = Duration::from_secs(10);

fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

fn build_origins(config: &Config) -> Vec<SharedOrigin> {
    let mut origins: Vec<&musicfs_core::OriginConfig> = config.origins.iter().collect();
    origins.sort_by_key(|o| o.priority);
    origins
        .into_iter()
        .map(|o| match o.kind {
            OriginKind::Local => Arc::new(LocalOrigin::new(o.id.clone(), o.path.clone())) as SharedOrigin,
        })
        .collect()
}

/// `musicfs cache verify` / `musicfs cache repair`: offline maintenance of a cache directory. Takes the cache
/// lock, so it refuses to run beside a daemon on the same cache.
pub fn cache_maintenance(
    cache_dir: &Path,
    max_size: u64,
    rebuild_index: bool,
) -> Result<musicfs_cas::VerifyReport, DaemonError> {
    let _lock = CacheLock::acquire(cache_dir)?;
    let store =
        if rebuild_index { ChunkStore::rebuild(cache_dir, max_size) } else { ChunkStore::open(cache_dir, max_size) }
            .map_err(start_err)?;
    let mut report = store.verify_all().map_err(start_err)?;
    // Opening already re-hashes a sample; rot found there counts too.
    let found_at_open = store.stats.corrupt_detected.load(std::sync::atomic::Ordering::Relaxed) - report.rotten;
    report.rotten += found_at_open;
    report.checked += found_at_open;
    Ok(report)
}

/// Runs the daemon in the foreground until it is told to stop. Returns Ok after a clean shutdown.
pub fn run(config: Config) -> Result<(), DaemonError> {
    let started = Instant::now();
    std::fs::create_dir_all(&config.cache_dir).map_err(|source| DaemonError::Prepare {
        what: "cache directory",
        path: config.cache_dir.clone(),
        source,
    })?;
    let _lock = CacheLock::acquire(&config.cache_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8))
        .thread_name("musicfs-rt")
        .enable_all()
        .build()
        .map_err(|e| DaemonError::Start(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(serve(config, started))
}

async fn serve(config: Config, started: Instant) -> Result<(), DaemonError> {
    let origins = build_origins(&config);
    let db = Arc::new(Db::open(&config.cache_dir.join("meta.db")).map_err(start_err)?);
    let store = Arc::new(ChunkStore::open(&config.cache_dir, config.cache.max_size.0).map_err(start_err)?);
    tracing::info!(chunks = store.chunk_count(), bytes = store.total_bytes(), "chunk store opened");

    let known = db.track_count().map_err(start_err)?;
    let unnamed = db.unnamed_tracks().map_err(start_err)?;
    let first_run = known == 0 || unnamed > 0;
    let tree = if first_run {
        if known == 0 {
            tracing::info!("first start on this cache: scanning the origins");
        } else {
            tracing::info!(already_read = known, "2.5 resuming an interrupted scan from its last committed batch");
        }
        notify(&[sd_notify::NotifyState::Status("scanning library")]);
        let (report, tree) = sync::sync(&db, &origins, true).await.map_err(start_err)?;
        tracing::info!(tracks = report.total, elapsed_ms = started.elapsed().as_millis() as u64, "first scan done");
        tree
    } else {
        let db2 = db.clone();
        let tree =
            tokio::task::spawn_blocking(move || sync::load_tree(&db2)).await.map_err(start_err)?.map_err(start_err)?;
        tracing::info!(
            tracks = tree.file_count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded library from the database"
        );
        tree
    };

    let params = ChunkParams {
        min: config.cache.chunk_min.0 as usize,
        avg: config.cache.chunk_avg.0 as usize,
        max: config.cache.chunk_max.0 as usize,
    };
    let manifests: Arc<dyn ManifestStore> = db.clone();
    let reader = Reader::new(
        store.clone() as Arc<dyn musicfs_cas::ChunkBackend>,
        manifests,
        params,
        config.cache.memory.0,
        config.read_timeout(),
    );
    let fs = Arc::new(MusicFs::new(tree, reader.clone(), &origins, config.read_timeout()));

    let mount_point = config.mount_point.clone();
    // First clear a dead mount left by a killed daemon: until then even mkdir/stat on the path fail.
    if mounts::clear_stale_fuse_mount(&mount_point) {
        tracing::info!(mount_point = %mount_point.display(), "2.7 stale mount cleared");
    }
    std::fs::create_dir_all(&mount_point).map_err(|source| DaemonError::Prepare {
        what: "mount point",
        path: mount_point.clone(),
        source,
    })?;

    let adapter = FuseAdapter::new(fs.clone(), tokio::runtime::Handle::current());
    let mut session = adapter::mount(adapter, &mount_point, config.fuse.threads, config.fuse.allow_other)
        .map_err(|source| DaemonError::Mount { path: mount_point.clone(), source })?;
    let mut unmounter = session.unmount_callable();
    let (ended_tx, mut ended_rx) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
    let session_thread = std::thread::Builder::new()
        .name("musicfs-fuse".into())
        .spawn(move || {
            let result = session.run();
            let _ = ended_tx.send(result);
        })
        .map_err(|e| DaemonError::Start(format!("cannot start the FUSE thread: {e}")))?;

    wait_until_mount_answers(&mount_point).await?;
    mounts::raise_readahead(&mount_point, READAHEAD_KIB);
    release_freed_memory();
    let tracks = fs.tree().file_count();
    tracing::info!(mount_point = %mount_point.display(), tracks, elapsed_ms = started.elapsed().as_millis() as u64, "mounted and serving");
    notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&format!("serving {tracks} tracks"))]);

    let background = tokio::spawn(background_work(
        fs.clone(),
        store.clone(),
        db.clone(),
        origins.clone(),
        !first_run,
        config.library.sync_interval.0,
    ));

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(start_err)?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).map_err(start_err)?;
    let reason = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
        result = &mut ended_rx => {
            match result {
                Ok(Err(e)) => tracing::error!(error = %e, "FUSE session ended with an error"),
                _ => tracing::warn!("the mount went away (unmounted from outside)"),
            }
            "mount gone"
        }
    };
    let stopping = Instant::now();
    tracing::info!(reason, "2.1 shutting down");
    notify(&[sd_notify::NotifyState::Stopping, sd_notify::NotifyState::Status("shutting down")]);
    background.abort();
    if let Err(e) = unmounter.unmount() {
        tracing::warn!(error = %e, "unmount failed (mount busy?); detaching lazily");
        mounts::lazy_unmount(&mount_point);
    }
    let joined = tokio::task::spawn_blocking(move || session_thread.join());
    if tokio::time::timeout(SESSION_JOIN_TIMEOUT, joined).await.is_err() {
        tracing::warn!("FUSE thread did not finish in time");
    }
    if let Err(e) = reader.flush(INGEST_WAIT_AT_SHUTDOWN).await {
        tracing::warn!(error = %e, "could not flush the chunk cache");
    }
    if let Err(e) = db.checkpoint() {
        tracing::warn!(error = %e, "could not checkpoint the database");
    }
    tracing::info!(elapsed_ms = stopping.elapsed().as_millis() as u64, "stopped cleanly");
    Ok(())
}

/// READY=1 only once the kernel routes requests to us: stat the mount root from a blocking thread.
async fn wait_until_mount_answers(mount_point: &Path) -> Result<(), DaemonError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mp = mount_point.to_owned();
        let answered = tokio::task::spawn_blocking(move || {
            mounts::mounted_fstype(&mp).is_some_and(|t| t.starts_with("fuse")) && std::fs::read_dir(&mp).is_ok()
        })
        .await
        .unwrap_or(false);
        if answered {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(DaemonError::Start(format!(
                "the mount at {} did not answer within 30 s",
                mount_point.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn background_work(
    fs: Arc<MusicFs>,
    store: Arc<ChunkStore>,
    db: Arc<Db>,
    origins: Vec<SharedOrigin>,
    sync_now: bool,
    sync_every: Duration,
) {
    let mut flush = tokio::time::interval(ACCESS_FLUSH_EVERY);
    let mut scrub = tokio::time::interval(SCRUB_EVERY);
    let mut scrub_cursor = None;
    let mut resync = tokio::time::interval(sync_every);
    flush.tick().await;
    if !sync_now {
        resync.tick().await;
    }
    loop {
        tokio::select! {
            _ = resync.tick() => delta_sync(&fs, &db, &origins).await,
            _ = scrub.tick() => {
                let store = store.clone();
                let cursor = scrub_cursor;
                match tokio::task::spawn_blocking(move || store.scrub_step(cursor, SCRUB_CHUNKS)).await {
                    Ok(Ok((next, report))) => {
                        scrub_cursor = next;
                        if report.rotten > 0 {
                            tracing::warn!(rotten = report.rotten, checked = report.checked, "6.4 scrubber removed rotten chunks; they are refetched on the next read");
                        }
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "scrubber could not verify chunks"),
                    Err(e) => tracing::warn!(error = %e, "scrubber task failed"),
                }
            }
            _ = flush.tick() => {
                let store = store.clone();
                match tokio::task::spawn_blocking(move || store.flush_access_times()).await {
                    Ok(Ok(n)) if n > 0 => tracing::debug!(chunks = n, "access times written back"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "could not write back access times"),
                    _ => {}
                }
            }
        }
    }
}

/// Hands memory freed after a big transient allocation (loading or syncing the library) back to the
/// system; the allocator would otherwise keep it, and RSS would stay at the peak.
fn release_freed_memory() {
    // SAFETY: malloc_trim only walks glibc's own heap structures.
    unsafe {
        libc::malloc_trim(0);
    }
}

async fn delta_sync(fs: &MusicFs, db: &Arc<Db>, origins: &[SharedOrigin]) {
    match sync::sync(db, origins, false).await {
        Ok((report, tree)) => {
            if report.added + report.changed + report.removed + report.renamed > 0 {
                fs.replace_tree(tree);
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
        }
        Err(e) => tracing::warn!(error = %e, "delta sync failed; serving the library as it was"),
    }
    release_freed_memory();
}
