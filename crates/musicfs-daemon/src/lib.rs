//! The MusicFS daemon: everything between "here is a config" and "the mount is gone, exit 0".
//!
//! Start: check the cache directory (6.7), lock the cache (3.9), open the database and chunk store, load the
//! tree (or scan on first run, resumably), clear a stale mount (2.7), mount, check that the mount answers,
//! then `READY=1` (2.10).
//! Run: background work under one cancellation token, the watchdog (3.1), status updates, SIGHUP reloads
//! (3.6). Stop (2.1, 2.3): refuse new reads and drain in-flight ones, cancel background work, flush chunk
//! writes and access times, checkpoint SQLite, unmount, exit 0 — a second signal exits at once. A FUSE
//! connection aborted under the live daemon (3.4) ends it with exit 1, so systemd restarts it.

pub mod background;
pub mod control;
pub mod events;
pub mod lock;
pub mod mounts;
pub mod preflight;
pub mod process;
pub mod search;
pub mod signals;
pub mod state;
pub mod status;
pub mod systemd;

use musicfs_cas::{ChunkParams, ChunkStore, ManifestStore, Reader};
use musicfs_core::events::Guarantee;
use musicfs_core::{Config, OriginKind};
use musicfs_fuse::MusicFs;
use musicfs_fuse::adapter::{self, FuseAdapter};
use musicfs_meta::{Db, sync};
use musicfs_origins::{LocalOrigin, S3Origin, S3Settings, SharedOrigin};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub use lock::{CacheLock, LockError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot prepare {what} at {path}: {source}")]
    Prepare { what: &'static str, path: std::path::PathBuf, source: std::io::Error },
    #[error("{0}")]
    Start(String),
    #[error("{0}")]
    CacheDir(String),
    #[error("cannot mount at {path}: {source}")]
    Mount { path: std::path::PathBuf, source: std::io::Error },
    #[error(
        "3.4 the FUSE session ended without a shutdown request (connection aborted or unmounted from outside); exiting 1 so the service restarts"
    )]
    Aborted,
}

fn start_err(e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Start(e.to_string())
}

/// Kernel readahead for the mount: FUSE starts at 128 KiB; sequential playback and copies want larger reads.
const READAHEAD_KIB: u32 = 1024;
/// Bound on draining in-flight reads at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on waiting for running ingests at shutdown.
const INGEST_WAIT_AT_SHUTDOWN: Duration = Duration::from_secs(5);
/// Bound on waiting for the FUSE session thread after unmount.
const SESSION_JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often STATUS= is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(10);
/// Bound on opening one connection to an S3 origin.
const S3_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The configured origins, most preferred first. S3 requests are bounded a little under the read timeout
/// (like the reader's own origin calls), connecting by at most [`S3_CONNECT_TIMEOUT`].
fn build_origins(config: &Config) -> Result<Vec<SharedOrigin>, DaemonError> {
    let mut origins: Vec<&musicfs_core::OriginConfig> = config.origins.iter().collect();
    origins.sort_by_key(|o| o.priority);
    let request_timeout = (config.read_timeout() * 9 / 10).max(Duration::from_millis(100));
    // SFTP operations get the same bound as S3 requests; opening a session (login included) at most 5 s.
    use musicfs_origins::sftp::{HostKeyCheck, PoolSettings, SftpOrigin, SftpSettings};
    const SFTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    origins
        .into_iter()
        .map(|o| match o.kind {
            OriginKind::Local => {
                let path = o.path.clone().ok_or_else(|| start_err(format!("origin `{}` has no path", o.id)))?;
                Ok(Arc::new(LocalOrigin::new(o.id.clone(), path)) as SharedOrigin)
            }
            OriginKind::S3 => {
                let settings = S3Settings {
                    endpoint: o.endpoint.clone().unwrap_or_default(),
                    bucket: o.bucket.clone().unwrap_or_default(),
                    prefix: o.prefix.clone(),
                    region: o.region.clone().unwrap_or_else(|| musicfs_core::config::DEFAULT_S3_REGION.into()),
                    access_key: o.access_key.clone().unwrap_or_default(),
                    secret_key: o.secret().map_err(start_err)?,
                    request_timeout,
                    connect_timeout: request_timeout.min(S3_CONNECT_TIMEOUT),
                    pool_idle: musicfs_origins::s3::POOL_IDLE,
                };
                tracing::info!(origin = %o.id, endpoint = %settings.endpoint, bucket = %settings.bucket, prefix = ?settings.prefix, "S3 origin");
                let origin = S3Origin::new(o.id.clone(), settings, tokio::runtime::Handle::current()).map_err(start_err)?;
                Ok(Arc::new(origin) as SharedOrigin)
            }
            OriginKind::Sftp => {
                let host_key = match (&o.known_hosts_file, &o.host_key_fingerprint) {
                    (Some(file), _) => HostKeyCheck::KnownHosts(file.clone()),
                    (None, Some(fingerprint)) => HostKeyCheck::Fingerprint(fingerprint.clone()),
                    (None, None) => return Err(start_err(format!("sftp origin `{}` has no host key to check", o.id))),
                };
                let settings = SftpSettings {
                    host: o.host.clone().unwrap_or_default(),
                    port: o.port.unwrap_or(musicfs_core::config::DEFAULT_SFTP_PORT),
                    user: o.user.clone().unwrap_or_default(),
                    private_key_file: o.private_key_file.clone().unwrap_or_default(),
                    host_key,
                    root: o.path.clone().unwrap_or_default(),
                    timeout: request_timeout,
                    connect_timeout: request_timeout.min(SFTP_CONNECT_TIMEOUT),
                    pool: PoolSettings::default(),
                };
                tracing::info!(origin = %o.id, host = %settings.host, port = settings.port, user = %settings.user, root = %settings.root.display(), "SFTP origin");
                Ok(Arc::new(SftpOrigin::new(o.id.clone(), settings)) as SharedOrigin)
            }
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
/// `config_file` is re-read on SIGHUP.
pub fn run(config: Config, config_file: Option<PathBuf>) -> Result<(), DaemonError> {
    let started = Instant::now();
    std::fs::create_dir_all(&config.cache_dir).map_err(|source| DaemonError::Prepare {
        what: "cache directory",
        path: config.cache_dir.clone(),
        source,
    })?;
    preflight::check_cache_dir(&config.cache_dir).map_err(DaemonError::CacheDir)?;
    let _lock = CacheLock::acquire(&config.cache_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8))
        .thread_name("musicfs-rt")
        .enable_all()
        .build()
        .map_err(|e| DaemonError::Start(format!("cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(serve(config, config_file, started));
    // Blocking tasks still waiting on a hung origin must not hold the exit hostage.
    let exiting = Instant::now();
    runtime.shutdown_timeout(Duration::from_secs(1));
    tracing::debug!(elapsed_ms = exiting.elapsed().as_millis() as u64, "runtime stopped");
    result
}

async fn serve(mut config: Config, config_file: Option<PathBuf>, started: Instant) -> Result<(), DaemonError> {
    let mount_point = config.mount_point.clone();
    let (request_tx, mut requests) = tokio::sync::mpsc::unbounded_channel();
    signals::listen(mount_point.clone(), request_tx.clone()).map_err(start_err)?;
    // Every origin is health-checked; only library origins are listed, backups are read from (4.2.6).
    let checked = build_origins(&config)?;
    let is_backup = |o: &SharedOrigin| config.origins.iter().any(|c| c.id == o.id() && c.backup_for.is_some());
    let origins: Vec<SharedOrigin> = checked.iter().filter(|o| !is_backup(o)).cloned().collect();
    let backups: std::collections::HashMap<String, SharedOrigin> = config
        .origins
        .iter()
        .filter_map(|c| Some((c.backup_for.clone()?, checked.iter().find(|o| o.id() == c.id)?.clone())))
        .collect();
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
        systemd::status("scanning library");
        let (report, tree) = tokio::select! {
            scanned = sync::sync(&db, &origins, sync::SyncOptions { show_progress: true, list_timeout: config.library.list_timeout.0 }) => scanned.map_err(start_err)?,
            Some(signals::Request::Shutdown(signal, _)) = requests.recv() => {
                tracing::info!(signal, "2.1 stopping during the first scan; it resumes from its last batch next time");
                return Ok(());
            }
        };
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
        // Origin calls give up a little before the FUSE read does, so the reader sees the timeout itself.
        config.read_timeout() * 9 / 10,
    );
    let fs = Arc::new(MusicFs::new(tree, reader.clone(), &origins, config.read_timeout()).with_backups(backups));

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
    let kernel_cache = adapter::kernel_cache(&session);
    let session_alive = Arc::new(AtomicBool::new(true));
    let (ended_tx, mut ended_rx) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
    let alive = session_alive.clone();
    let session_thread = std::thread::Builder::new()
        .name("musicfs-fuse".into())
        .spawn(move || {
            let result = session.run();
            alive.store(false, Ordering::SeqCst);
            let _ = ended_tx.send(result);
        })
        .map_err(|e| DaemonError::Start(format!("cannot start the FUSE thread: {e}")))?;

    wait_until_mount_answers(&mount_point).await?;
    mounts::raise_readahead(&mount_point, READAHEAD_KIB);
    process::release_freed_memory();
    let tracks = fs.tree().file_count();
    tracing::info!(mount_point = %mount_point.display(), tracks, elapsed_ms = started.elapsed().as_millis() as u64, "mounted and serving");
    let cancel = CancellationToken::new();
    let supervisor = musicfs_core::supervisor::Supervisor::new(cancel.child_token());
    let bus = Arc::new(events::Bus::new(config.events.capacity));
    let invalidator = Arc::new(events::Invalidator {
        events: tokio::sync::Mutex::new(bus.subscribe("kernel cache invalidator", Guarantee::Lossless)),
        kernel: kernel_cache,
        fs: fs.clone(),
        stats: Default::default(),
    });
    let search = Arc::new(search::Search::new(
        &config.cache_dir,
        db.clone(),
        bus.subscribe("search indexer", Guarantee::Lossless),
    ));
    let (sync_tx, sync_rx) = tokio::sync::mpsc::channel(8);
    let shared = Arc::new(state::Shared {
        fs: fs.clone(),
        store: store.clone(),
        reader: reader.clone(),
        mount_point: mount_point.clone(),
        started,
        origins: std::sync::RwLock::new(
            checked
                .iter()
                .map(|o| state::OriginStatus {
                    id: o.id().to_owned(),
                    healthy: true,
                    dns_failure: false,
                    last_error: None,
                })
                .collect(),
        ),
        supervisor: supervisor.clone(),
        stopping: AtomicBool::new(false),
        events: bus,
        invalidator: invalidator.clone(),
        search: search.clone(),
        sync_requests: sync_tx,
    });
    let socket = control::socket_path(&config.cache_dir);
    control::start(&socket, shared.clone(), request_tx.clone(), cancel.child_token()).map_err(start_err)?;
    systemd::ready(&shared.status_line());

    let work = Arc::new(background::Background {
        shared: shared.clone(),
        health_every: config.health.interval.0,
        health_timeout: config.health.timeout.0,
        fs: fs.clone(),
        store: store.clone(),
        db: db.clone(),
        origins: origins.clone(),
        checked: checked.clone(),
        sync_now: !first_run,
        sync_every: config.library.sync_interval.0,
        list_timeout: config.library.list_timeout.0,
        sync_requests: tokio::sync::Mutex::new(sync_rx),
        watcher_started: AtomicBool::new(false),
    });
    supervisor.spawn("kernel cache invalidator", true, move |token| invalidator.clone().run(token));
    let indexer = search.clone();
    supervisor.spawn("search indexer", false, move |token| indexer.clone().run(token));
    let w = work.clone();
    supervisor.spawn("health monitor", true, move |token| w.clone().health_loop(token));
    let w = work.clone();
    supervisor.spawn("library watcher", true, move |token| w.clone().sync_loop(token));
    let w = work.clone();
    supervisor.spawn("cache upkeep", false, move |token| w.clone().maintenance_loop(token));

    if let Some(interval) = systemd::watchdog_interval() {
        tracing::info!(?interval, "3.1 systemd watchdog enabled");
        let (mp, alive, cancel) = (mount_point.clone(), session_alive.clone(), cancel.child_token());
        let supervisor = supervisor.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = systemd::watchdog_loop(
                    interval,
                    move || self_check(mp.clone(), alive.clone(), supervisor.clone()),
                    || systemd::notify(&[sd_notify::NotifyState::Watchdog]),
                ) => {}
            }
        });
    }
    let (status_shared, status_cancel) = (shared.clone(), cancel.child_token());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(STATUS_EVERY);
        loop {
            tokio::select! {
                _ = status_cancel.cancelled() => return,
                _ = tick.tick() => systemd::status(&status_shared.status_line()),
            }
        }
    });

    let (reason, drain_timeout) = loop {
        tokio::select! {
            request = requests.recv() => match request {
                Some(signals::Request::Shutdown(who, drain)) => break (who, drain.unwrap_or(DRAIN_TIMEOUT)),
                Some(signals::Request::Reload) => reload(&mut config, config_file.as_deref(), &fs, &store),
                None => break ("signal thread ended", DRAIN_TIMEOUT),
            },
            result = &mut ended_rx => {
                cancel.cancel();
                return session_ended(result, &mount_point, &reader, &db).await;
            }
        }
    };

    // Ordered shutdown (2.3).
    let stopping = Instant::now();
    tracing::info!(reason, ?drain_timeout, "2.1 shutting down");
    shared.stopping.store(true, Ordering::SeqCst);
    systemd::stopping();
    fs.gate.close();
    let undrained = fs.gate.drain(drain_timeout).await;
    if undrained > 0 {
        tracing::warn!(reads = undrained, "2.3 reads still running after the drain timeout; they get EIO");
    }
    let drained_ms = stopping.elapsed().as_millis() as u64;
    cancel.cancel();
    // The supervised loops see the token at their next await; give them a moment to write back state.
    tokio::time::sleep(Duration::from_millis(20)).await;
    if let Err(e) = reader.flush(INGEST_WAIT_AT_SHUTDOWN).await {
        tracing::warn!(error = %e, "could not flush the chunk cache");
    }
    let _ = tokio::task::spawn_blocking(move || search.close()).await;
    if let Err(e) = db.checkpoint() {
        tracing::warn!(error = %e, "could not checkpoint the database");
    }
    let flushed_ms = stopping.elapsed().as_millis() as u64;
    if let Err(e) = unmounter.unmount() {
        tracing::warn!(error = %e, "unmount failed (mount busy?); detaching lazily");
        mounts::lazy_unmount(&mount_point);
    }
    let joined = tokio::task::spawn_blocking(move || session_thread.join());
    if tokio::time::timeout(SESSION_JOIN_TIMEOUT, joined).await.is_err() {
        tracing::warn!("FUSE thread did not finish in time");
    }
    tracing::info!(
        drained_ms,
        flushed_ms,
        total_ms = stopping.elapsed().as_millis() as u64,
        "2.3 stopped cleanly: reads drained, background stopped, cache flushed, search index committed, database checkpointed, unmounted"
    );
    Ok(())
}

/// The FUSE session ended without a shutdown request: the connection was aborted (3.4) or someone unmounted
/// it from outside. fuser has already detached the mount either way; nothing serves the library any more, so
/// this is a failure: exit 1 and let systemd's Restart=on-failure bring the mount back.
async fn session_ended(
    result: Result<std::io::Result<()>, tokio::sync::oneshot::error::RecvError>,
    mount_point: &Path,
    reader: &Arc<Reader>,
    db: &Db,
) -> Result<(), DaemonError> {
    if let Ok(Err(e)) = &result {
        tracing::error!(error = %e, "FUSE session ended with an error");
    }
    let _ = reader.flush(INGEST_WAIT_AT_SHUTDOWN).await;
    let _ = db.checkpoint();
    if mounts::mounted_fstype(mount_point).is_some_and(|t| t.starts_with("fuse")) {
        mounts::lazy_unmount(mount_point);
    }
    Err(DaemonError::Aborted)
}

/// The watchdog's self-check (3.1): the FUSE thread is alive, no critical task has been given up, the mount answers a
/// listing (which always reaches the daemon, unlike a cached stat), and the runtime ran this check at all.
async fn self_check(
    mount_point: PathBuf,
    session_alive: Arc<AtomicBool>,
    supervisor: musicfs_core::supervisor::Supervisor,
) -> Result<(), String> {
    #[cfg(feature = "failpoints")]
    if fail::eval("daemon::watchdog::selfcheck_stall", |_| ()).is_some() {
        std::future::pending::<()>().await;
    }
    if !session_alive.load(Ordering::SeqCst) {
        return Err("the FUSE session thread has ended".into());
    }
    let dead = supervisor.dead_critical();
    if !dead.is_empty() {
        return Err(format!("critical tasks given up: {}", dead.join(", ")));
    }
    tokio::task::spawn_blocking(move || {
        std::fs::read_dir(&mount_point).map(|mut d| d.next()).map_err(|e| format!("the mount does not answer: {e}"))
    })
    .await
    .map_err(|e| e.to_string())??;
    Ok(())
}

/// SIGHUP (3.6): re-read and validate the config file; apply what can change live, report the rest, keep
/// the old config if the new one is invalid.
fn reload(config: &mut Config, file: Option<&Path>, fs: &MusicFs, store: &ChunkStore) {
    let Some(file) = file else {
        tracing::warn!("3.6 SIGHUP: started without --config, nothing to reload");
        return;
    };
    let new = match Config::load(file) {
        Ok(new) => new,
        Err(e) => {
            tracing::error!(error = %e, "3.6 SIGHUP: new config rejected; keeping the running one");
            return;
        }
    };
    let mut applied = Vec::new();
    if new.cache.max_size != config.cache.max_size {
        store.set_max_size(new.cache.max_size.0);
        applied.push(format!("cache.max_size {} -> {}", config.cache.max_size, new.cache.max_size));
    }
    if new.fuse.read_timeout != config.fuse.read_timeout {
        fs.set_read_timeout(new.fuse.read_timeout.0);
        applied.push(format!("fuse.read_timeout {:?} -> {:?}", config.fuse.read_timeout.0, new.fuse.read_timeout.0));
    }
    let mut restart = Vec::new();
    let live = Config {
        cache: musicfs_core::CacheConfig { max_size: new.cache.max_size, ..config.cache.clone() },
        fuse: musicfs_core::FuseConfig { read_timeout: new.fuse.read_timeout, ..config.fuse.clone() },
        ..config.clone()
    };
    if live != new {
        for (name, changed) in [
            ("mount_point", new.mount_point != config.mount_point),
            ("cache_dir", new.cache_dir != config.cache_dir),
            ("origins", new.origins != config.origins),
            ("cache (chunk sizes, memory)", new.cache != live.cache),
            ("library", new.library != config.library),
            ("health", new.health != config.health),
            ("fuse (threads, allow_other)", new.fuse != live.fuse),
            ("logging", new.logging != config.logging),
            ("events", new.events != config.events),
        ] {
            if changed {
                restart.push(name);
            }
        }
    }
    tracing::info!(applied = ?applied, needs_restart = ?restart, "3.6 SIGHUP: config reloaded");
    config.cache.max_size = new.cache.max_size;
    config.fuse.read_timeout = new.fuse.read_timeout;
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

#[cfg(test)]
mod tests {
    use super::*;
    use musicfs_cas::manifest::MemoryManifests;

    /// Proves L1: 3.6
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reload_applies_live_fields_and_rejects_an_invalid_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("musicfs.toml");
        let text = |max: &str, timeout: &str, threads: u32| {
            format!(
                "mount_point = \"/m\"\ncache_dir = \"/c\"\n[[origins]]\nid = \"o\"\ntype = \"local\"\npath = \"/o\"\n\
                 [cache]\nmax_size = \"{max}\"\n[fuse]\nread_timeout = \"{timeout}\"\nthreads = {threads}\n"
            )
        };
        std::fs::write(&file, text("1GiB", "30s", 2)).unwrap();
        let mut config = Config::load(&file).unwrap();
        let store = Arc::new(ChunkStore::open(dir.path(), config.cache.max_size.0).unwrap());
        let manifests: Arc<dyn ManifestStore> = Arc::new(MemoryManifests::default());
        let reader = Reader::new(store.clone(), manifests, ChunkParams::default(), 1 << 20, Duration::from_secs(1));
        let tree = musicfs_meta::Tree::build(Vec::new(), &std::collections::HashMap::new());
        let fs = MusicFs::new(tree, reader, &[], config.read_timeout());

        std::fs::write(&file, text("512MiB", "7s", 4)).unwrap();
        reload(&mut config, Some(&file), &fs, &store);
        assert_eq!(store.max_size(), 512 << 20);
        assert_eq!(fs.read_timeout(), Duration::from_secs(7));
        assert_eq!(config.fuse.threads, 2, "threads need a restart: the running value stays");

        std::fs::write(&file, "max_size = = broken").unwrap();
        reload(&mut config, Some(&file), &fs, &store);
        assert_eq!(store.max_size(), 512 << 20, "an invalid file changes nothing");
        assert_eq!(fs.read_timeout(), Duration::from_secs(7));
    }
}
