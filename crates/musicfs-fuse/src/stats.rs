//! Counters of FUSE operations and read latencies, for `musicfs status` and the Prometheus metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Lookup,
    Getattr,
    Readdir,
    Open,
    Read,
}

impl Op {
    pub const ALL: [Op; 5] = [Op::Lookup, Op::Getattr, Op::Readdir, Op::Open, Op::Read];

    pub fn name(self) -> &'static str {
        match self {
            Op::Lookup => "lookup",
            Op::Getattr => "getattr",
            Op::Readdir => "readdir",
            Op::Open => "open",
            Op::Read => "read",
        }
    }
}

/// Upper bounds of the read latency histogram buckets, in seconds (plus +Inf).
pub const READ_BUCKETS: [f64; 7] = [0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0];

#[derive(Debug, Default)]
pub struct OpStats {
    counts: [AtomicU64; 5],
    errors: [AtomicU64; 5],
    read_buckets: [AtomicU64; READ_BUCKETS.len() + 1],
    read_micros: AtomicU64,
}

impl OpStats {
    pub fn record(&self, op: Op, ok: bool) {
        self.counts[op as usize].fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors[op as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn record_read(&self, took: Duration, ok: bool) {
        self.record(Op::Read, ok);
        let secs = took.as_secs_f64();
        let bucket = READ_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(READ_BUCKETS.len());
        self.read_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.read_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn count(&self, op: Op) -> u64 {
        self.counts[op as usize].load(Ordering::Relaxed)
    }

    pub fn errors(&self, op: Op) -> u64 {
        self.errors[op as usize].load(Ordering::Relaxed)
    }

    /// Per-bucket (not cumulative) read counts, the last one being +Inf.
    pub fn read_histogram(&self) -> Vec<u64> {
        self.read_buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect()
    }

    pub fn read_seconds_total(&self) -> f64 {
        self.read_micros.load(Ordering::Relaxed) as f64 / 1e6
    }
}
