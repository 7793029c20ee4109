//! Origin read failures, logged as a summary rather than once per read (4.2.3). When an origin is down every
//! read of an uncached track fails, and a player retries many times a second. The first failure of an
//! episode is logged at once. Later ones are counted and summarised once a minute while the origin stays
//! down, and once more when it next answers.

use musicfs_core::sync_util::lock_or_recover;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often failures of one origin are summarised while it keeps failing.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

struct Episode {
    since: Instant,
    last_summary: Instant,
    /// Failures not yet in a log line.
    unlogged: u64,
    total: u64,
    last_error: String,
}

#[derive(Default)]
pub struct FailureLog {
    episodes: Mutex<HashMap<String, Episode>>,
    /// Log lines written (first failures, summaries, recoveries): what an operator reads.
    pub lines: AtomicU64,
}

impl FailureLog {
    /// A read from `origin` failed with `error`.
    pub fn failed(&self, origin: &str, error: &dyn std::fmt::Display) {
        self.failed_at(origin, error, Instant::now());
    }

    fn failed_at(&self, origin: &str, error: &dyn std::fmt::Display, now: Instant) {
        let mut episodes = lock_or_recover(&self.episodes);
        match episodes.get_mut(origin) {
            None => {
                tracing::warn!(origin, %error, every = ?SUMMARY_EVERY, "4.2.3 origin reads failing; further failures are summarised");
                self.lines.fetch_add(1, Ordering::Relaxed);
                let episode =
                    Episode { since: now, last_summary: now, unlogged: 0, total: 1, last_error: error.to_string() };
                episodes.insert(origin.to_owned(), episode);
            }
            Some(e) => {
                e.unlogged += 1;
                e.total += 1;
                e.last_error = error.to_string();
                if now.duration_since(e.last_summary) >= SUMMARY_EVERY {
                    tracing::warn!(origin, failed = e.unlogged, total = e.total, last_error = %e.last_error,
                        down_for = ?now.duration_since(e.since), "4.2.3 origin reads still failing");
                    self.lines.fetch_add(1, Ordering::Relaxed);
                    e.unlogged = 0;
                    e.last_summary = now;
                }
            }
        }
    }

    /// A read from `origin` worked: ends its episode, with one line if it had one.
    pub fn answered(&self, origin: &str) {
        let mut episodes = lock_or_recover(&self.episodes);
        if episodes.is_empty() {
            return;
        }
        if let Some(e) = episodes.remove(origin) {
            tracing::info!(origin, failed = e.total, down_for = ?e.since.elapsed(), "4.2.3 origin reads work again");
            self.lines.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_failures_is_one_line_then_a_summary_a_minute_then_one_on_recovery() {
        let log = FailureLog::default();
        let start = Instant::now();
        for i in 0..1000 {
            log.failed_at("nas", &"connection refused", start + Duration::from_millis(i));
        }
        assert_eq!(log.lines.load(Ordering::Relaxed), 1, "one line for a thousand failures");
        log.failed_at("nas", &"connection refused", start + SUMMARY_EVERY + Duration::from_secs(1));
        assert_eq!(log.lines.load(Ordering::Relaxed), 2, "a summary after a minute");
        log.failed_at("s3", &"timed out", start);
        assert_eq!(log.lines.load(Ordering::Relaxed), 3, "another origin has its own episode");
        log.answered("nas");
        log.answered("nas");
        assert_eq!(log.lines.load(Ordering::Relaxed), 4, "recovery is one line, once");
    }

    /// What the summary line says: the failures since the last line, and all of the episode's.
    #[test]
    fn an_episode_counts_every_failure_and_those_not_yet_logged() {
        let log = FailureLog::default();
        for _ in 0..3 {
            log.failed("nas", &"connection refused");
        }
        assert_eq!(log.lines.load(Ordering::Relaxed), 1);
        let episodes = lock_or_recover(&log.episodes);
        let nas = episodes.get("nas").expect("an episode for nas");
        assert_eq!((nas.unlogged, nas.total), (2, 3));
        assert_eq!(nas.last_error, "connection refused");
    }
}
