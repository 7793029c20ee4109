//! What the running daemon knows about itself, in one place: read by `musicfs status`, the Prometheus
//! metrics, STATUS= for systemd and the watchdog; written by the health monitor and the resource watcher.

use crate::search::SearchState;
pub use crate::status::{DaemonState, EventsStatus, OriginStatus, Status};
use musicfs_cas::{ChunkStore, Reader};
use musicfs_fuse::MusicFs;
use musicfs_fuse::stats::{Op, READ_BUCKETS};
use musicfs_origins::health::LibraryState;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use std::sync::{Arc, RwLock};
use std::time::Instant;

pub struct Shared {
    pub fs: Arc<MusicFs>,
    pub store: Arc<ChunkStore>,
    pub reader: Arc<Reader>,
    pub mount_point: PathBuf,
    pub started: Instant,
    pub origins: RwLock<Vec<OriginStatus>>,
    pub supervisor: musicfs_core::supervisor::Supervisor,
    pub stopping: AtomicBool,
    pub events: Arc<crate::events::Bus>,
    pub invalidator: Arc<crate::events::Invalidator>,
    pub search: Arc<crate::search::Search>,
    /// `musicfs sync` requests, answered by the library watcher.
    pub sync_requests: tokio::sync::mpsc::Sender<crate::background::SyncRequest>,
}

impl Shared {
    pub fn library_state(&self) -> LibraryState {
        let origins = self.origins.read().unwrap_or_else(|p| p.into_inner());
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
            origins: self.origins.read().unwrap_or_else(|p| p.into_inner()).clone(),
            served_from_backup: self.reader.backup_served_count() as u64,
            backup_reads: self.reader.stats.backup_reads.load(Ordering::Relaxed),
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

    /// Prometheus text exposition format.
    pub fn metrics(&self) -> String {
        let s = self.status();
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, value: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        };
        gauge("musicfs_open_fds", "Open file descriptors.", s.open_fds as f64);
        gauge("musicfs_fd_limit", "RLIMIT_NOFILE soft limit.", s.fd_limit as f64);
        gauge("musicfs_rss_bytes", "Resident memory.", s.rss_bytes as f64);
        gauge("musicfs_tree_heap_bytes", "Heap held by the library tree (5.5).", s.tree_bytes as f64);
        if let Some(limit) = s.memory_limit_bytes {
            gauge("musicfs_memory_limit_bytes", "The service's cgroup memory limit.", limit as f64);
        }
        gauge("musicfs_tracks", "Tracks in the mounted library.", s.tracks as f64);
        gauge(
            "musicfs_served_from_backup_tracks",
            "Tracks served from a backup origin, awaiting re-validation (4.2.6).",
            s.served_from_backup as f64,
        );
        gauge("musicfs_search_documents", "Tracks searchable in the search index.", s.search_documents as f64);
        gauge(
            "musicfs_search_up",
            "Whether search is available (6.5).",
            f64::from(u8::from(s.search == SearchState::Ready)),
        );
        gauge("musicfs_cache_bytes", "Chunk bytes in the cache.", s.cache_bytes as f64);
        gauge("musicfs_cache_max_bytes", "Cache size limit.", s.cache_max_bytes as f64);
        gauge("musicfs_cache_chunks", "Chunks in the cache.", s.chunks as f64);
        gauge(
            "musicfs_cache_hit_ratio",
            "Chunk lookups served from the cache, of all chunk lookups.",
            s.cache_hit_ratio,
        );
        gauge("musicfs_reads_in_flight", "FUSE reads being served.", s.reads_in_flight as f64);
        let _ = writeln!(
            out,
            "# HELP musicfs_backup_reads_total Origin reads answered by a backup origin.\n# TYPE musicfs_backup_reads_total counter\nmusicfs_backup_reads_total {}",
            s.backup_reads
        );
        let store = &self.store.stats;
        let _ = writeln!(
            out,
            "# HELP musicfs_chunks_corrupt_total Chunks that failed their hash check.\n# TYPE musicfs_chunks_corrupt_total counter\nmusicfs_chunks_corrupt_total {}",
            store.corrupt_detected.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP musicfs_chunks_evicted_total Chunks evicted to stay under the limit.\n# TYPE musicfs_chunks_evicted_total counter\nmusicfs_chunks_evicted_total {}",
            store.evicted.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP musicfs_origin_up Whether the origin answered its last health check.\n# TYPE musicfs_origin_up gauge"
        );
        for o in &s.origins {
            let _ = writeln!(out, "musicfs_origin_up{{origin=\"{}\"}} {}", o.id, u8::from(o.healthy));
        }
        let _ = writeln!(
            out,
            "# HELP musicfs_fuse_ops_total FUSE operations answered.\n# TYPE musicfs_fuse_ops_total counter"
        );
        for (op, count, _) in &s.fuse_ops {
            let _ = writeln!(out, "musicfs_fuse_ops_total{{op=\"{op}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "# HELP musicfs_fuse_op_errors_total FUSE operations answered with an error.\n# TYPE musicfs_fuse_op_errors_total counter"
        );
        for (op, _, errors) in &s.fuse_ops {
            let _ = writeln!(out, "musicfs_fuse_op_errors_total{{op=\"{op}\"}} {errors}");
        }
        let _ = writeln!(
            out,
            "# HELP musicfs_read_duration_seconds Time to answer a FUSE read.\n# TYPE musicfs_read_duration_seconds histogram"
        );
        let mut counter = |name: &str, help: &str, label: &str, values: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (value, n) in values {
                match label {
                    "" => writeln!(out, "{name} {n}"),
                    _ => writeln!(out, "{name}{{{label}=\"{value}\"}} {n}"),
                }
                .unwrap_or(());
            }
        };
        let consumers = &s.events.consumers;
        counter("musicfs_events_published_total", "Events published on the bus.", "", &[("", s.events.published)]);
        let delivered: Vec<(&str, u64)> = consumers.iter().map(|c| (c.consumer.as_str(), c.delivered)).collect();
        counter("musicfs_events_delivered_total", "Events queued for a consumer.", "consumer", &delivered);
        let lost: Vec<(&str, u64)> = consumers.iter().map(|c| (c.consumer.as_str(), c.lost)).collect();
        counter("musicfs_events_lost_total", "Events a lagging consumer lost (3.3).", "consumer", &lost);
        counter(
            "musicfs_kernel_cache_invalidations_total",
            "Kernel cache entries and inodes invalidated after library changes.",
            "",
            &[("", s.events.kernel_invalidations)],
        );
        let restarts: Vec<(&str, u64)> = s.tasks.iter().map(|t| (t.name.as_str(), u64::from(t.restarts))).collect();
        counter("musicfs_task_restarts_total", "Restarts of a supervised background task (2.6).", "task", &restarts);
        let _ =
            writeln!(out, "# HELP musicfs_task_up Whether a supervised task is running.\n# TYPE musicfs_task_up gauge");
        for t in &s.tasks {
            let _ = writeln!(out, "musicfs_task_up{{task=\"{}\"}} {}", t.name, u8::from(t.alive));
        }
        let buckets = self.fs.stats.read_histogram();
        let mut cumulative = 0;
        for (i, count) in buckets.iter().enumerate() {
            cumulative += count;
            let le = READ_BUCKETS.get(i).map_or("+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "musicfs_read_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(
            out,
            "musicfs_read_duration_seconds_sum {}\nmusicfs_read_duration_seconds_count {cumulative}",
            self.fs.stats.read_seconds_total()
        );
        out
    }
}
