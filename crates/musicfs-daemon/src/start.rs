//! Starting the daemon: every step before `READY=1`, in order, each a function of its own. [`Daemon::start`]
//! reads as the list of steps; the result is a [`Daemon`] that [`crate::serve`] runs and
//! [`crate::shutdown`] stops.

use crate::handover::Passed;
use crate::signals::{self, Request};
use crate::state::{OriginStatus, Shared, SyncRequest};
use crate::{DaemonError, background, control, events, handover, mounts, process, search, systemd, watchdog};
use musicfs_cas::{ChunkParams, ChunkStore, ManifestStore, Reader};
use musicfs_core::Config;
use musicfs_core::events::Guarantee;
use musicfs_core::supervisor::Supervisor;
use musicfs_fuse::MusicFs;
use musicfs_fuse::adapter::{self, FuseAdapter};
use musicfs_fuse::invalidate::KernelCache;
use musicfs_meta::{Db, Tree, sync};
use musicfs_origins::ConfiguredOrigins;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How long the new mount may take to answer before start fails.
const MOUNT_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How often STATUS= is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(10);
/// `musicfs sync` requests that may wait for the library watcher.
const SYNC_QUEUE: usize = 8;

/// A started daemon: mounted, serving, its background work running.
pub(crate) struct Daemon {
    /// The running config; SIGHUP changes its live fields.
    pub config: Config,
    pub config_file: Option<PathBuf>,
    /// Shutdown and reload requests from signals and the control socket.
    pub requests: mpsc::UnboundedReceiver<Request>,
    pub shared: Arc<Shared>,
    pub db: Arc<Db>,
    /// Stops every background task, the control socket, the watchdog and the status updates.
    pub cancel: CancellationToken,
    pub session: FuseSession,
}

/// The FUSE session running on its own thread.
pub(crate) struct FuseSession {
    /// Unmounts, which ends the session; fuser's own handle, kept behind a closure so that fuser's types
    /// stay inside the adapter.
    pub unmount: Box<dyn FnMut() -> std::io::Result<()> + Send>,
    pub thread: std::thread::JoinHandle<()>,
    /// Resolves when the session ends, with how it ended.
    pub ended: oneshot::Receiver<std::io::Result<()>>,
    /// False once the session thread has ended (the watchdog's self-check reads it).
    pub alive: Arc<AtomicBool>,
    /// The service manager holds a copy of the connection (2.11), so the mount can outlive this process.
    pub kept: bool,
    /// What tells the kernel which names and pages to forget.
    pub kernel: Arc<dyn KernelCache>,
}

/// The database and the chunk store in the cache directory.
struct Cache {
    db: Arc<Db>,
    store: Arc<ChunkStore>,
}

impl Cache {
    fn open(config: &Config) -> Result<Cache, DaemonError> {
        let db = Arc::new(Db::open(&config.cache_dir.join(crate::META_DB))?);
        let store = Arc::new(ChunkStore::open(&config.cache_dir, config.cache.max_size.0)?);
        tracing::info!(chunks = store.chunk_count(), bytes = store.total_bytes(), "chunk store opened");
        Ok(Cache { db, store })
    }
}

/// The library as start found it.
struct Library {
    tree: Tree,
    /// The start scanned the origins (first start, or an interrupted first scan resumed): no delta sync
    /// is needed right after.
    scanned: bool,
}

impl Daemon {
    /// Runs every start step. `None`: a shutdown was asked for during the first scan, before anything was
    /// mounted.
    pub async fn start(
        config: Config,
        config_file: Option<PathBuf>,
        started: Instant,
    ) -> Result<Option<Daemon>, DaemonError> {
        let (request_tx, mut requests) = mpsc::unbounded_channel();
        signals::listen(config.mount_point.clone(), request_tx.clone()).map_err(DaemonError::Signals)?;
        let origins =
            musicfs_origins::from_config(&config.origins, config.read_timeout(), &tokio::runtime::Handle::current())?;
        let cache = Cache::open(&config)?;
        let Some(library) = load_library(&config, &cache.db, &origins, &mut requests, started).await? else {
            return Ok(None);
        };
        let fs = filesystem(&config, library.tree, &cache, &origins);
        let session = mount(&config, &fs).await?;
        process::release_freed_memory();
        let tracks = fs.tree().file_count();

        let cancel = CancellationToken::new();
        let supervisor = Supervisor::new(cancel.child_token());
        let (shared, sync_requests) = share(&config, fs, &cache, &origins, &session, supervisor, started);
        let socket = control::socket_path(&config.cache_dir);
        control::start(&socket, shared.clone(), request_tx, cancel.child_token())
            .map_err(|source| DaemonError::Control { path: socket, source })?;
        // Logged once `musicfs status` answers too: the test harness starts asking at this line.
        tracing::info!(mount_point = %config.mount_point.display(), tracks,
            elapsed_ms = started.elapsed().as_millis() as u64, "mounted and serving");
        systemd::ready(&shared.status_line());

        spawn_background(&config, &shared, &cache.db, origins, !library.scanned, sync_requests);
        watchdog::spawn(&config.mount_point, session.alive.clone(), &shared.supervisor, &cancel);
        spawn_status_updates(shared.clone(), cancel.child_token());
        Ok(Some(Daemon { config, config_file, requests, shared, db: cache.db, cancel, session }))
    }
}

/// The tree from the database, or from a scan of the origins when the database has none (first start) or
/// holds an interrupted scan (2.5). A shutdown request during the scan ends start with `None`; the scan
/// resumes from its last committed batch next time.
async fn load_library(
    config: &Config,
    db: &Arc<Db>,
    origins: &ConfiguredOrigins,
    requests: &mut mpsc::UnboundedReceiver<Request>,
    started: Instant,
) -> Result<Option<Library>, DaemonError> {
    let known = db.track_count()?;
    let unnamed = db.unnamed_tracks()?;
    if known > 0 && unnamed == 0 {
        let db = db.clone();
        let tree = tokio::task::spawn_blocking(move || sync::load_tree(&db))
            .await
            .map_err(|source| DaemonError::Task { what: "loading the library", source })??;
        tracing::info!(
            tracks = tree.file_count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded library from the database"
        );
        return Ok(Some(Library { tree, scanned: false }));
    }
    if known == 0 {
        tracing::info!("first start on this cache: scanning the origins");
    } else {
        tracing::info!(already_read = known, "2.5 resuming an interrupted scan from its last committed batch");
    }
    systemd::status("scanning library");
    let options = sync::SyncOptions { show_progress: true, list_timeout: config.library.list_timeout.0 };
    let (report, tree) = tokio::select! {
        scanned = sync::sync(db, &origins.library, options) => scanned?,
        Some(Request::Shutdown(signal, _)) = requests.recv() => {
            tracing::info!(signal, "2.1 stopping during the first scan; it resumes from its last batch next time");
            return Ok(None);
        }
    };
    tracing::info!(tracks = report.total, elapsed_ms = started.elapsed().as_millis() as u64, "first scan done");
    Ok(Some(Library { tree, scanned: true }))
}

/// The filesystem logic over the tree: the reader (chunk store, manifests, origins) behind it.
fn filesystem(config: &Config, tree: Tree, cache: &Cache, origins: &ConfiguredOrigins) -> Arc<MusicFs> {
    let params = ChunkParams {
        min: config.cache.chunk_min().0 as usize,
        avg: config.cache.chunk_avg.0 as usize,
        max: config.cache.chunk_max.0 as usize,
    };
    let manifests: Arc<dyn ManifestStore> = cache.db.clone();
    let reader = Reader::new(
        cache.store.clone() as Arc<dyn musicfs_cas::ChunkBackend>,
        manifests,
        params,
        config.cache.memory.0,
        // Origin calls give up a little before the FUSE read does, so the reader sees the timeout itself.
        config.read_timeout() * 9 / 10,
    );
    let fs = MusicFs::new(tree, reader, &origins.library, config.read_timeout());
    Arc::new(fs.with_backups(origins.backups.clone()))
}

/// Mounts `fs` at the mount point — or resumes the connection an earlier daemon left with the service
/// manager (2.11) — and runs the session on its own thread; returns once the mount answers.
async fn mount(config: &Config, fs: &Arc<MusicFs>) -> Result<FuseSession, DaemonError> {
    let mount_point = config.mount_point.as_path();
    let (threads, allow_other) = (config.fuse.threads, config.fuse.allow_other);
    let adapter = FuseAdapter::new(fs.clone(), tokio::runtime::Handle::current());
    let (session, unmount, kept): (_, Box<dyn FnMut() -> std::io::Result<()> + Send>, bool) = match passed_connection(
        mount_point,
    ) {
        Some(Passed::Kept(fd)) => {
            let session = adapter::resume(adapter, fd, threads, allow_other);
            match adapter::resend_unanswered(&session) {
                Ok(()) => tracing::info!(mount_point = %mount_point.display(),
                        "2.11 resumed the FUSE connection the service manager kept: no remount, and the kernel resends what the old daemon had read"),
                Err(e) => tracing::warn!(error = %e,
                        "2.11 resumed the FUSE connection, but the kernel refused to resend what the old daemon had read"),
            }
            let mount_point = mount_point.to_owned();
            (session, Box::new(move || mounts::unmount(&mount_point)), true)
        }
        Some(Passed::Mounted(fd)) => {
            // Answers the kernel's INIT, which has waited since the helper mounted.
            let session = adapter::serve_mounted(adapter, fd, threads, allow_other)
                .map_err(|source| DaemonError::Mount { path: mount_point.to_owned(), source })?;
            handover::forget_mounted();
            let kept = adapter::connection(&session).is_ok_and(|fd| handover::store(fd.as_fd()));
            tracing::info!(mount_point = %mount_point.display(), kept,
                "serving the connection the mount helper mounted: this process never mounts");
            let mount_point = mount_point.to_owned();
            (session, Box::new(move || mounts::unmount(&mount_point)), kept)
        }
        None => {
            // First clear a dead mount left by a killed daemon: until then even mkdir/stat on the path fail.
            if mounts::clear_stale_fuse_mount(mount_point) {
                tracing::info!(mount_point = %mount_point.display(), "2.7 stale mount cleared");
            }
            std::fs::create_dir_all(mount_point).map_err(|source| DaemonError::Prepare {
                what: "mount point",
                path: mount_point.to_owned(),
                source,
            })?;
            let mut session = adapter::mount(adapter, mount_point, threads, allow_other)
                .map_err(|source| DaemonError::Mount { path: mount_point.to_owned(), source })?;
            let kept = adapter::connection(&session).is_ok_and(|fd| handover::store(fd.as_fd()));
            let mut unmounter = session.unmount_callable();
            (session, Box::new(move || unmounter.unmount()), kept)
        }
    };
    if let Some(limit) = handover::kernel_request_timeout() {
        tracing::warn!(
            ?limit,
            "2.11 the kernel aborts the FUSE connection when a request waits this long \
            (fs.fuse.default_request_timeout): a restart must finish well within it"
        );
    }
    let kernel = adapter::kernel_cache(&session);
    let alive = Arc::new(AtomicBool::new(true));
    let (ended_tx, ended) = oneshot::channel();
    let thread_alive = alive.clone();
    let thread = std::thread::Builder::new()
        .name("musicfs-fuse".into())
        .spawn(move || {
            let result = session.run();
            thread_alive.store(false, Ordering::SeqCst);
            let _ = ended_tx.send(result);
        })
        .map_err(DaemonError::FuseThread)?;
    let session = FuseSession { unmount, thread, ended, alive, kept, kernel };
    wait_until_mount_answers(mount_point).await?;
    mounts::raise_readahead(mount_point, mounts::READAHEAD_KIB);
    Ok(session)
}

/// The connection systemd passed in `LISTEN_FDS`, if one can be served: the one an earlier daemon kept
/// (2.11) when it can be resumed, else one the mount helper mounted (issue 16). Whatever is not served is
/// dropped from the store, so that an old connection ends and its mount can be cleared (2.7).
fn passed_connection(mount_point: &Path) -> Option<Passed> {
    let (kept, mounted) = handover::passed_connections();
    let kept = kept.and_then(|fd| match handover::resumable(fd.as_fd(), mount_point) {
        Ok(()) => Some(fd),
        Err(why) => {
            let next = if mounted.is_some() { "serving the one the mount helper mounted" } else { "mounting anew" };
            tracing::warn!(why, "2.11 not resuming the stored FUSE connection; {next}");
            handover::forget();
            None
        }
    });
    match (kept, mounted) {
        (Some(fd), mounted) => {
            if mounted.is_some() {
                handover::forget_mounted();
            }
            Some(Passed::Kept(fd))
        }
        (None, Some(fd)) => Some(Passed::Mounted(fd)),
        (None, None) => None,
    }
}

/// READY=1 only once the kernel routes requests to us: stat the mount root from a blocking thread.
async fn wait_until_mount_answers(mount_point: &Path) -> Result<(), DaemonError> {
    let deadline = Instant::now() + MOUNT_ANSWER_TIMEOUT;
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
            return Err(DaemonError::MountSilent { path: mount_point.to_owned(), waited: MOUNT_ANSWER_TIMEOUT });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the running daemon's parts share: the event bus with its two lossless consumers (the kernel cache
/// invalidator, the search indexer), origin states (all healthy until the first check says otherwise), and
/// the queue of `musicfs sync` requests, whose receiving end goes to the library watcher.
fn share(
    config: &Config,
    fs: Arc<MusicFs>,
    cache: &Cache,
    origins: &ConfiguredOrigins,
    session: &FuseSession,
    supervisor: Supervisor,
    started: Instant,
) -> (Arc<Shared>, mpsc::Receiver<SyncRequest>) {
    let (sync_requests, sync_queue) = mpsc::channel(SYNC_QUEUE);
    let bus = Arc::new(events::Bus::new(config.events.capacity));
    let invalidator = Arc::new(events::Invalidator {
        events: tokio::sync::Mutex::new(bus.subscribe("kernel cache invalidator", Guarantee::Lossless)),
        kernel: session.kernel.clone(),
        fs: fs.clone(),
        stats: Default::default(),
    });
    let search = Arc::new(search::Search::new(
        &config.cache_dir,
        cache.db.clone(),
        bus.subscribe("search indexer", Guarantee::Lossless),
    ));
    let origin_states = origins
        .all
        .iter()
        .map(|o| OriginStatus { id: o.id().to_owned(), healthy: true, dns_failure: false, last_error: None })
        .collect();
    let shared = Arc::new(Shared {
        reader: fs.reader().clone(),
        fs,
        store: cache.store.clone(),
        mount_point: config.mount_point.clone(),
        started,
        origins: std::sync::RwLock::new(origin_states),
        supervisor,
        stopping: AtomicBool::new(false),
        connection_kept: session.kept,
        events: bus,
        invalidator,
        search,
        sync_requests,
    });
    (shared, sync_queue)
}

/// The supervised tasks (2.6): critical ones (the invalidator, the health monitor, the library watcher)
/// are watched by the watchdog; search and cache upkeep may die without taking the daemon down.
fn spawn_background(
    config: &Config,
    shared: &Arc<Shared>,
    db: &Arc<Db>,
    origins: ConfiguredOrigins,
    sync_at_start: bool,
    sync_requests: mpsc::Receiver<SyncRequest>,
) {
    let work = Arc::new(background::Background {
        shared: shared.clone(),
        health_every: config.health.interval.0,
        health_timeout: config.health.timeout.0,
        db: db.clone(),
        origins: origins.library,
        checked: origins.all,
        sync_now: sync_at_start,
        sync_every: config.library.sync_interval.0,
        list_timeout: config.library.list_timeout.0,
        sync_requests: tokio::sync::Mutex::new(sync_requests),
        watcher_started: AtomicBool::new(false),
    });
    let supervisor = &shared.supervisor;
    let invalidator = shared.invalidator.clone();
    supervisor.spawn("kernel cache invalidator", true, move |token| invalidator.clone().run(token));
    let indexer = shared.search.clone();
    supervisor.spawn("search indexer", false, move |token| indexer.clone().run(token));
    let w = work.clone();
    supervisor.spawn("health monitor", true, move |token| w.clone().health_loop(token));
    let w = work.clone();
    supervisor.spawn("library watcher", true, move |token| w.clone().sync_loop(token));
    supervisor.spawn("cache upkeep", false, move |token| work.clone().maintenance_loop(token));
}

/// Refreshes systemd's STATUS= line every [`STATUS_EVERY`] until cancelled.
fn spawn_status_updates(shared: Arc<Shared>, cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(STATUS_EVERY);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => systemd::status(&shared.status_line()),
            }
        }
    });
}
