//! What the running daemon knows about itself, in one place: read by `musicfs status`, the Prometheus
//! metrics, STATUS= for systemd and the watchdog; written by the health monitor and the resource watcher.

use crate::control::protocol::SyncReport;
pub use crate::status::{DaemonState, EventsStatus, OriginStatus, Status};
use musicfs_cas::{ChunkStore, Reader};
use musicfs_core::sync_util::read_or_recover;
use musicfs_fuse::MusicFs;
use musicfs_fuse::stats::Op;
use musicfs_meta::sync::SyncError;
use musicfs_origins::health::LibraryState;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// A `musicfs sync` request: run a delta sync now, answer with its summary. Sent by the control socket (and
/// by the health monitor when origins return), answered by the library watcher.
pub type SyncRequest = tokio::sync::oneshot::Sender<Result<SyncReport, SyncError>>;

/// The handles every part of the running daemon shares: the control socket, the background tasks and
/// shutdown read and change the daemon through it.
pub struct Shared {
    /// The filesystem logic the mount serves, with its tree and read gate.
    pub fs: Arc<MusicFs>,
    pub store: Arc<ChunkStore>,
    /// The same reader `fs` reads through (chunk cache, origins, backups).
    pub reader: Arc<Reader>,
    pub mount_point: PathBuf,
    /// When the process started (for uptime).
    pub started: Instant,
    /// Each origin's last health check, written by the health monitor.
    pub origins: RwLock<Vec<OriginStatus>>,
    pub supervisor: musicfs_core::supervisor::Supervisor,
    /// Set when the ordered shutdown begins: the state reads `stopping`.
    pub stopping: AtomicBool,
    /// The service manager holds a copy of the FUSE connection (2.11): a restart can keep the mount.
    pub connection_kept: bool,
    /// Library changes and origin states, for the invalidator, the search indexer and `musicfs events`.
    pub events: Arc<crate::events::Bus>,
    pub invalidator: Arc<crate::events::Invalidator>,
    pub search: Arc<crate::search::Search>,
    /// `musicfs sync` requests, answered by the library watcher.
    pub sync_requests: tokio::sync::mpsc::Sender<SyncRequest>,
}

impl Shared {
    pub fn library_state(&self) -> LibraryState {
        let origins = read_or_recover(&self.origins);
        let healthy = origins.iter().filter(|o| o.healthy).count();
        let dns = origins.iter().filter(|o| o.dns_failure).count();
        musicfs_origins::health::state_from(healthy, dns, origins.len())
    }

    /// Why the cache cannot grow right now (2.8, 6.6): writes failing, or its disk (nearly) full of other
    /// files. Music keeps playing from the origins; the state is "degraded".
    pub fn cache_trouble(&self) -> Option<String> {
        if let Some(why) = self.store.write_failure() {
            return Some(why);
        }
        let (free, total) = self.store.disk_space()?;
        (free < total / 50).then(|| {
            format!(
                "cache disk nearly full: {} free of {}",
                musicfs_core::ByteSize(free),
                musicfs_core::ByteSize(total)
            )
        })
    }

    pub fn status(&self) -> Status {
        let (open_fds, fd_limit) = crate::process::fd_usage();
        let (search_state, search_documents) = self.search.status();
        let stats = &self.reader.stats;
        let hits = stats.chunk_hits.load(Ordering::Relaxed);
        let misses = stats.chunk_misses.load(Ordering::Relaxed);
        Status {
            pid: std::process::id(),
            state: if self.stopping.load(Ordering::SeqCst) {
                DaemonState::Stopping
            } else if self.library_state() == LibraryState::Ready && self.cache_trouble().is_some() {
                // 2.8, 6.6: the cache cannot take chunks; music still plays from the origins.
                DaemonState::Degraded
            } else {
                self.library_state().into()
            },
            cache_write_failure: self.cache_trouble(),
            uptime_secs: self.started.elapsed().as_secs(),
            mount_point: self.mount_point.display().to_string(),
            tracks: self.fs.tree().file_count() as u64,
            cache_bytes: self.store.total_bytes(),
            cache_max_bytes: self.store.max_size(),
            chunks: self.store.chunk_count() as u64,
            chunks_written: self.store.stats.written.load(Ordering::Relaxed),
            cache_hit_ratio: if hits + misses == 0 { 0.0 } else { hits as f64 / (hits + misses) as f64 },
            reads_in_flight: self.fs.gate.in_flight() as u64,
            origins: read_or_recover(&self.origins).clone(),
            served_from_backup: self.reader.backup_served_count() as u64,
            backup_reads: self.reader.stats.backup_reads.load(Ordering::Relaxed),
            slow_origins: self.reader.slow_origins(),
            fuse_ops: Op::ALL
                .iter()
                .map(|op| (op.name().to_owned(), self.fs.stats.count(*op), self.fs.stats.errors(*op)))
                .collect(),
            open_fds,
            fd_limit,
            rss_bytes: crate::process::rss_bytes(),
            tree_bytes: self.fs.tree().heap_bytes() as u64,
            memory_limit_bytes: crate::process::memory_limit(),
            tasks: self.supervisor.health(),
            search: search_state,
            search_documents,
            events: EventsStatus {
                capacity: self.events.capacity(),
                published: self.events.published(),
                consumers: self.events.stats(),
                kernel_invalidations: self.invalidator.stats.sent.load(Ordering::Relaxed),
                kernel_resyncs: self.invalidator.stats.resyncs.load(Ordering::Relaxed),
            },
        }
    }

    /// One line for systemd's STATUS=.
    pub fn status_line(&self) -> String {
        self.status().line()
    }

    /// `musicfs metrics`: Prometheus text.
    pub fn metrics(&self) -> String {
        let counters = crate::metrics::Counters {
            chunks_corrupt: self.store.stats.corrupt_detected.load(Ordering::Relaxed),
            chunks_evicted: self.store.stats.evicted.load(Ordering::Relaxed),
            read_buckets: self.fs.stats.read_histogram(),
            read_seconds: self.fs.stats.read_seconds_total(),
        };
        crate::metrics::render(&self.status(), &counters)
    }
}
