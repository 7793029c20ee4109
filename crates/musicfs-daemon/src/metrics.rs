//! `musicfs metrics`: the daemon's [`Status`] and a few counters in the Prometheus text exposition format.
//! [`render`] is a pure function of its inputs, so the format can be checked without a daemon.

use crate::search::SearchState;
use crate::status::Status;
use musicfs_fuse::stats::READ_BUCKETS;
use std::fmt::{Display, Write as _};

/// What the metrics need beyond [`Status`].
pub struct Counters {
    /// Chunks that failed their hash check, and chunks evicted to stay under the limit.
    pub chunks_corrupt: u64,
    pub chunks_evicted: u64,
    /// FUSE reads per [`READ_BUCKETS`] bucket (one more, the last, for slower ones), and their total time.
    pub read_buckets: Vec<u64>,
    pub read_seconds: f64,
}

/// The exposition text.
pub fn render(s: &Status, counters: &Counters) -> String {
    let mut out = Exposition::default();
    out.gauge("musicfs_open_fds", "Open file descriptors.", s.open_fds as f64);
    out.gauge("musicfs_fd_limit", "RLIMIT_NOFILE soft limit.", s.fd_limit as f64);
    out.gauge("musicfs_rss_bytes", "Resident memory.", s.rss_bytes as f64);
    out.gauge("musicfs_tree_heap_bytes", "Heap held by the library tree (5.5).", s.tree_bytes as f64);
    if let Some(limit) = s.memory_limit_bytes {
        out.gauge("musicfs_memory_limit_bytes", "The service's cgroup memory limit.", limit as f64);
    }
    out.gauge("musicfs_tracks", "Tracks in the mounted library.", s.tracks as f64);
    out.gauge(
        "musicfs_served_from_backup_tracks",
        "Tracks served from a backup origin, awaiting re-validation (4.2.6).",
        s.served_from_backup as f64,
    );
    out.gauge("musicfs_search_documents", "Tracks searchable in the search index.", s.search_documents as f64);
    let search_up = f64::from(u8::from(s.search == SearchState::Ready));
    out.gauge("musicfs_search_up", "Whether search is available (6.5).", search_up);
    out.gauge("musicfs_cache_bytes", "Chunk bytes in the cache.", s.cache_bytes as f64);
    out.gauge("musicfs_cache_max_bytes", "Cache size limit.", s.cache_max_bytes as f64);
    out.gauge("musicfs_cache_chunks", "Chunks in the cache.", s.chunks as f64);
    out.gauge(
        "musicfs_cache_hit_ratio",
        "Chunk lookups served from the cache, of all chunk lookups.",
        s.cache_hit_ratio,
    );
    out.gauge("musicfs_reads_in_flight", "FUSE reads being served.", s.reads_in_flight as f64);
    out.counter("musicfs_backup_reads_total", "Origin reads answered by a backup origin.", s.backup_reads);
    out.gauge("musicfs_origins_slow", "Origins their backup beat on a hedged read (N2).", s.slow_origins.len() as f64);
    out.counter("musicfs_chunks_corrupt_total", "Chunks that failed their hash check.", counters.chunks_corrupt);
    out.counter("musicfs_chunks_evicted_total", "Chunks evicted to stay under the limit.", counters.chunks_evicted);
    out.labelled(
        ("musicfs_origin_up", "Whether the origin answered its last health check.", "gauge"),
        "origin",
        s.origins.iter().map(|o| (o.id.as_str(), u8::from(o.healthy))),
    );
    out.labelled(
        ("musicfs_fuse_ops_total", "FUSE operations answered.", "counter"),
        "op",
        s.fuse_ops.iter().map(|(op, count, _)| (op.as_str(), *count)),
    );
    out.labelled(
        ("musicfs_fuse_op_errors_total", "FUSE operations answered with an error.", "counter"),
        "op",
        s.fuse_ops.iter().map(|(op, _, errors)| (op.as_str(), *errors)),
    );
    let e = &s.events;
    out.counter("musicfs_events_published_total", "Events published on the bus.", e.published);
    out.labelled(
        ("musicfs_events_delivered_total", "Events queued for a consumer.", "counter"),
        "consumer",
        e.consumers.iter().map(|c| (c.consumer.as_str(), c.delivered)),
    );
    out.labelled(
        ("musicfs_events_lost_total", "Events a lagging consumer lost (3.3).", "counter"),
        "consumer",
        e.consumers.iter().map(|c| (c.consumer.as_str(), c.lost)),
    );
    out.counter(
        "musicfs_kernel_cache_invalidations_total",
        "Kernel cache entries and inodes invalidated after library changes.",
        e.kernel_invalidations,
    );
    out.labelled(
        ("musicfs_task_restarts_total", "Restarts of a supervised background task (2.6).", "counter"),
        "task",
        s.tasks.iter().map(|t| (t.name.as_str(), t.restarts)),
    );
    out.labelled(
        ("musicfs_task_up", "Whether a supervised task is running.", "gauge"),
        "task",
        s.tasks.iter().map(|t| (t.name.as_str(), u8::from(t.alive))),
    );
    out.read_histogram(counters);
    out.text
}

/// Prometheus text, written one metric family at a time.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, help, "gauge");
        let _ = writeln!(self.text, "{name} {value}");
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, help, "counter");
        let _ = writeln!(self.text, "{name} {value}");
    }

    /// One family with a sample per label value.
    fn labelled<'a, V: Display>(
        &mut self,
        (name, help, kind): (&str, &str, &str),
        label: &str,
        samples: impl Iterator<Item = (&'a str, V)>,
    ) {
        self.family(name, help, kind);
        for (value, n) in samples {
            let _ = writeln!(self.text, "{name}{{{label}=\"{value}\"}} {n}");
        }
    }

    /// FUSE read durations, as a histogram over [`READ_BUCKETS`].
    fn read_histogram(&mut self, counters: &Counters) {
        let name = "musicfs_read_duration_seconds";
        self.family(name, "Time to answer a FUSE read.", "histogram");
        let mut cumulative = 0;
        for (i, count) in counters.read_buckets.iter().enumerate() {
            cumulative += count;
            let le = READ_BUCKETS.get(i).map_or("+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(self.text, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(self.text, "{name}_sum {}\n{name}_count {cumulative}", counters.read_seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_help_and_type_before_its_samples_and_nowhere_else() {
        let counters = Counters {
            chunks_corrupt: 1,
            chunks_evicted: 2,
            read_buckets: vec![3, 0, 0, 0, 0, 0, 0, 1],
            read_seconds: 2.5,
        };
        let text = render(&crate::status::tests::sample(), &counters);
        for line in [
            "musicfs_open_fds 12",
            "# TYPE musicfs_backup_reads_total counter",
            "musicfs_backup_reads_total 5",
            "musicfs_origins_slow 1",
            "musicfs_origin_up{origin=\"nas\"} 0",
            "musicfs_fuse_op_errors_total{op=\"read\"} 1",
            "musicfs_events_lost_total{consumer=\"musicfs events\"} 6",
            "musicfs_task_up{task=\"library watcher\"} 1",
            "musicfs_read_duration_seconds_bucket{le=\"0.001\"} 3",
            "musicfs_read_duration_seconds_bucket{le=\"+Inf\"} 4",
            "musicfs_read_duration_seconds_count 4",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
        }
        // Each family's samples follow its own TYPE line, before the next family starts.
        let mut family = String::new();
        let mut seen = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap_or_default().to_owned();
                assert!(seen.insert(family.clone()), "{family} declared twice");
            } else if !line.starts_with('#') {
                assert!(line.starts_with(&family), "{line:?} is outside its family ({family})");
            }
        }
    }
}
