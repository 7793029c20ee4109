//! What `musicfs status` shows, as one type: the daemon fills it in (`Shared::status`), sends it over the
//! control socket as JSON (`musicfs status --json` prints that JSON), and the command line renders it for
//! people with its `Display`.

use crate::search::SearchState;
use musicfs_core::ByteSize;
use musicfs_core::events::ConsumerStats;
use musicfs_core::supervisor::TaskHealth;
use musicfs_origins::health::LibraryState;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The daemon's overall state: the library's (from its origins' health), degraded when the cache cannot take
/// chunks, or stopping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DaemonState {
    /// Every origin answers and the cache takes chunks.
    Ready,
    /// Some origins do not answer (or only fail to resolve, 4.2.5), or the cache cannot grow (2.8, 6.6).
    Degraded,
    /// No origin answers: only cached music plays.
    Offline,
    /// An ordered shutdown is under way (2.3).
    Stopping,
}

impl DaemonState {
    pub fn as_str(self) -> &'static str {
        match self {
            DaemonState::Ready => "ready",
            DaemonState::Degraded => "degraded",
            DaemonState::Offline => "offline",
            DaemonState::Stopping => "stopping",
        }
    }
}

impl From<LibraryState> for DaemonState {
    fn from(state: LibraryState) -> Self {
        match state {
            LibraryState::Ready => DaemonState::Ready,
            LibraryState::Degraded => DaemonState::Degraded,
            LibraryState::Offline => DaemonState::Offline,
        }
    }
}

impl fmt::Display for DaemonState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OriginStatus {
    pub id: String,
    pub healthy: bool,
    /// The last check failed because the host name did not resolve (4.2.5): degraded, re-checked soon.
    pub dns_failure: bool,
    pub last_error: Option<String>,
}

/// The event bus (3.3) as `musicfs status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventsStatus {
    pub capacity: usize,
    pub published: u64,
    pub consumers: Vec<ConsumerStats>,
    /// Invalidations the kernel took after library changes, and full invalidations after lost events.
    pub kernel_invalidations: u64,
    pub kernel_resyncs: u64,
}

/// One FUSE operation's counts: its name, how often it was answered, how often with an error. Sent as a
/// three-element JSON array.
pub type FuseOpCount = (String, u64, u64);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub state: DaemonState,
    pub uptime_secs: u64,
    pub mount_point: String,
    pub tracks: u64,
    pub cache_bytes: u64,
    pub cache_max_bytes: u64,
    pub cache_write_failure: Option<String>,
    pub chunks: u64,
    /// Chunks written to the cache since start.
    pub chunks_written: u64,
    pub cache_hit_ratio: f64,
    pub reads_in_flight: u64,
    pub origins: Vec<OriginStatus>,
    /// Tracks served from a backup origin since their own origin went away, awaiting re-validation (4.2.6).
    pub served_from_backup: u64,
    /// Origin reads a backup answered since start (failovers and won hedges).
    pub backup_reads: u64,
    /// Origins their backup beat on a hedged read (N2): reads go to the backup, with one probe at a time to
    /// the origin, until it answers again.
    #[serde(default)]
    pub slow_origins: Vec<String>,
    pub fuse_ops: Vec<FuseOpCount>,
    pub open_fds: u64,
    pub fd_limit: u64,
    pub rss_bytes: u64,
    /// The library tree's share of that (5.5).
    pub tree_bytes: u64,
    /// The cgroup memory limit (MemoryHigh, else MemoryMax), if the service has one.
    pub memory_limit_bytes: Option<u64>,
    pub tasks: Vec<TaskHealth>,
    pub events: EventsStatus,
    /// "ready", "opening", or why search is unavailable (6.5); and the documents searchable.
    pub search: SearchState,
    pub search_documents: u64,
}

impl Status {
    /// One line for systemd's STATUS=.
    pub fn line(&self) -> String {
        let down: Vec<&str> = self.origins.iter().filter(|o| !o.healthy).map(|o| o.id.as_str()).collect();
        format!(
            "{}: {} tracks; cache {} of {}; {} reads in flight{}{}",
            self.state,
            self.tracks,
            ByteSize(self.cache_bytes),
            ByteSize(self.cache_max_bytes),
            self.reads_in_flight,
            if down.is_empty() { String::new() } else { format!("; origins down: {}", down.join(", ")) },
            if self.slow_origins.is_empty() {
                String::new()
            } else {
                format!("; origins slow: {}", self.slow_origins.join(", "))
            }
        )
    }
}

/// The human form `musicfs status` prints: one labelled line per part of the daemon.
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "state:      {}  (pid {}, up {} s)", self.state, self.pid, self.uptime_secs)?;
        writeln!(f, "mount:      {}  ({} tracks)", self.mount_point, self.tracks)?;
        writeln!(
            f,
            "cache:      {} of {}  ({} chunks, hit ratio {:.2})",
            ByteSize(self.cache_bytes),
            ByteSize(self.cache_max_bytes),
            self.chunks,
            self.cache_hit_ratio
        )?;
        if let Some(why) = &self.cache_write_failure {
            writeln!(f, "            NOT CACHING: {why}")?;
        }
        for o in &self.origins {
            let state = if !o.healthy {
                format!("DOWN: {}", o.last_error.as_deref().unwrap_or(""))
            } else if self.slow_origins.contains(&o.id) {
                "up, SLOW: its backup answered first; reads go to the backup until it answers again".to_owned()
            } else {
                "up".to_owned()
            };
            writeln!(f, "origin:     {}  {state}", o.id)?;
        }
        if self.served_from_backup > 0 {
            writeln!(
                f,
                "            {} tracks served from a backup origin, re-validated when their origin returns",
                self.served_from_backup
            )?;
        }
        let ops: Vec<String> =
            self.fuse_ops.iter().map(|(op, count, errors)| format!("{op} {count} ({errors} errors)")).collect();
        writeln!(f, "fuse ops:   {}; {} reads in flight", ops.join(", "), self.reads_in_flight)?;
        writeln!(
            f,
            "resources:  {} of {} fds, {} resident ({} for the library tree)",
            self.open_fds,
            self.fd_limit,
            ByteSize(self.rss_bytes),
            ByteSize(self.tree_bytes)
        )?;
        let tasks: Vec<String> = self
            .tasks
            .iter()
            .map(|t| {
                let alive = if t.alive { "alive" } else { "DEAD" };
                format!("{} {alive} ({} restarts)", t.name, t.restarts)
            })
            .collect();
        writeln!(f, "tasks:      {}", tasks.join(", "))?;
        writeln!(f, "search:     {}  ({} tracks indexed)", self.search, self.search_documents)?;
        let e = &self.events;
        let lost: Vec<String> =
            e.consumers.iter().filter(|c| c.lost > 0).map(|c| format!("{} lost {}", c.consumer, c.lost)).collect();
        writeln!(
            f,
            "events:     {} published (queue {} per consumer){}",
            e.published,
            e.capacity,
            if lost.is_empty() { String::new() } else { format!("; {}", lost.join(", ")) }
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use musicfs_core::events::Guarantee;

    /// A status with something in every part, for tests of what renders it.
    pub(crate) fn sample() -> Status {
        Status {
            pid: 42,
            state: DaemonState::Degraded,
            uptime_secs: 7,
            mount_point: "/mnt/music".into(),
            tracks: 4,
            cache_bytes: 3 << 20,
            cache_max_bytes: 1 << 30,
            cache_write_failure: Some("cache disk nearly full".into()),
            chunks: 3,
            chunks_written: 3,
            cache_hit_ratio: 0.25,
            reads_in_flight: 1,
            origins: vec![
                OriginStatus { id: "local".into(), healthy: true, dns_failure: false, last_error: None },
                OriginStatus {
                    id: "nas".into(),
                    healthy: false,
                    dns_failure: false,
                    last_error: Some("timed out".into()),
                },
            ],
            served_from_backup: 2,
            backup_reads: 5,
            slow_origins: vec!["local".into()],
            fuse_ops: vec![("read".into(), 10, 1)],
            open_fds: 12,
            fd_limit: 1024,
            rss_bytes: 8 << 20,
            tree_bytes: 1 << 20,
            memory_limit_bytes: None,
            tasks: vec![TaskHealth {
                name: "library watcher".into(),
                critical: true,
                alive: true,
                restarts: 0,
                last_failure: None,
            }],
            events: EventsStatus {
                capacity: 1024,
                published: 9,
                consumers: vec![ConsumerStats {
                    consumer: "musicfs events".into(),
                    guarantee: Guarantee::Lossy,
                    delivered: 3,
                    lost: 6,
                }],
                kernel_invalidations: 2,
                kernel_resyncs: 0,
            },
            search: SearchState::Unavailable("index damaged".into()),
            search_documents: 0,
        }
    }

    /// `musicfs status --json` prints what the client read back; it must be what the daemon sent.
    #[test]
    fn the_json_round_trips_with_its_states_as_strings() {
        let status = sample();
        let json = serde_json::to_string(&status).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (value["state"].as_str(), value["search"].as_str()),
            (Some("degraded"), Some("unavailable: index damaged"))
        );
        assert_eq!(value["fuse_ops"][0], serde_json::json!(["read", 10, 1]));
        let back: Status = serde_json::from_str(&json).unwrap();
        assert_eq!(back, status);
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
    }

    #[test]
    fn the_human_form_has_one_labelled_line_per_part() {
        let text = sample().to_string();
        for line in [
            "state:      degraded  (pid 42, up 7 s)",
            "mount:      /mnt/music  (4 tracks)",
            "            NOT CACHING: cache disk nearly full",
            "origin:     local  up, SLOW: its backup answered first; reads go to the backup until it answers again",
            "origin:     nas  DOWN: timed out",
            "            2 tracks served from a backup origin, re-validated when their origin returns",
            "fuse ops:   read 10 (1 errors); 1 reads in flight",
            "tasks:      library watcher alive (0 restarts)",
            "search:     unavailable: index damaged  (0 tracks indexed)",
            "events:     9 published (queue 1024 per consumer); musicfs events lost 6",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
        }
        assert!(text.contains("hit ratio 0.25") && text.contains("12 of 1024 fds"), "{text}");
        assert_eq!(
            sample().line(),
            format!(
                "degraded: 4 tracks; cache {} of {}; 1 reads in flight; origins down: nas; origins slow: local",
                ByteSize(3 << 20),
                ByteSize(1 << 30)
            )
        );
    }
}
