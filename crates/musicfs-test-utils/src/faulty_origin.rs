//! `FaultyOrigin`: wraps any origin and injects failures, switchable while a test runs, counting every call
//! and every injected fault so a test can prove the fault actually fired.

use async_trait::async_trait;
use bytes::Bytes;
use musicfs_core::sync_util::{read_or_recover, write_or_recover};
use musicfs_origins::{Origin, OriginEntry, OriginError, ReadSeek, SharedOrigin};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailMode {
    /// Pass every call through.
    Healthy,
    /// Fail calls number n, 2n, 3n, … (counting from 1).
    FailEveryNth(usize),
    /// Let n calls through, then fail every call.
    FailAfterN(usize),
    /// Sleep this long, then fail with a timeout: a hung NFS server. Large values model a hang.
    TimeoutMs(u64),
    /// Reads return at most this many bytes (other calls pass).
    PartialRead { max_bytes: usize },
    /// Reads take as long as their bytes take at this rate: a slow link that works (other calls pass).
    Throttle { bytes_per_sec: u64 },
    /// Fail every call with this error kind.
    ReturnError(io::ErrorKind),
    /// Fail every call as a host name that does not resolve (4.2.5).
    Dns,
    /// Panic in every call: a bug in a backend, which the task that called it must survive (2.6, 4.2.4).
    Panic,
}

pub struct FaultyOrigin {
    inner: SharedOrigin,
    mode: RwLock<FailMode>,
    calls: AtomicUsize,
    read_calls: AtomicUsize,
    faults: AtomicUsize,
}

enum Decision {
    Pass,
    Fail(OriginError),
    Hang(Duration),
    Truncate(usize),
    Throttle(u64),
}

impl FaultyOrigin {
    pub fn new(inner: SharedOrigin, mode: FailMode) -> Arc<FaultyOrigin> {
        Arc::new(FaultyOrigin {
            inner,
            mode: RwLock::new(mode),
            calls: AtomicUsize::new(0),
            read_calls: AtomicUsize::new(0),
            faults: AtomicUsize::new(0),
        })
    }

    /// Changes the behaviour from the next call on (the origin "recovers" or "breaks" mid-test).
    pub fn set_mode(&self, mode: FailMode) {
        *write_or_recover(&self.mode) = mode;
    }

    pub fn mode(&self) -> FailMode {
        read_or_recover(&self.mode).clone()
    }

    /// Every call, of any kind.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// `read_range` calls only.
    pub fn read_calls(&self) -> usize {
        self.read_calls.load(Ordering::SeqCst)
    }

    /// Calls that got a fault instead of the real answer.
    pub fn faults_injected(&self) -> usize {
        self.faults.load(Ordering::SeqCst)
    }

    fn decide(&self, is_read: bool) -> Decision {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if is_read {
            self.read_calls.fetch_add(1, Ordering::SeqCst);
        }
        let decision = match self.mode() {
            FailMode::Healthy => Decision::Pass,
            FailMode::FailEveryNth(every) if every > 0 && n.is_multiple_of(every) => {
                Decision::Fail(injected("every-nth"))
            }
            FailMode::FailEveryNth(_) => Decision::Pass,
            FailMode::FailAfterN(limit) if n > limit => Decision::Fail(injected("after-n")),
            FailMode::FailAfterN(_) => Decision::Pass,
            FailMode::TimeoutMs(ms) => Decision::Hang(Duration::from_millis(ms)),
            FailMode::PartialRead { max_bytes } if is_read => Decision::Truncate(max_bytes),
            FailMode::PartialRead { .. } => Decision::Pass,
            FailMode::Throttle { bytes_per_sec } if is_read => Decision::Throttle(bytes_per_sec),
            FailMode::Throttle { .. } => Decision::Pass,
            FailMode::Dns => Decision::Fail(OriginError::Dns {
                host: "origin.invalid".into(),
                detail: "cannot resolve origin.invalid".into(),
            }),
            FailMode::Panic => {
                self.faults.fetch_add(1, Ordering::SeqCst);
                panic!("injected by FaultyOrigin (panic)");
            }
            FailMode::ReturnError(kind) => {
                Decision::Fail(OriginError::Io(io::Error::new(kind, "injected by FaultyOrigin")))
            }
        };
        if !matches!(decision, Decision::Pass | Decision::Throttle(_)) {
            self.faults.fetch_add(1, Ordering::SeqCst);
        }
        decision
    }

    /// Whether a call goes through (and how a read is served), or the fault it gets instead.
    async fn gate(&self, is_read: bool) -> Result<Gate, OriginError> {
        match self.decide(is_read) {
            Decision::Pass => Ok(Gate::Whole),
            Decision::Throttle(rate) => Ok(Gate::Throttled(rate)),
            Decision::Fail(e) => Err(e),
            Decision::Hang(d) => {
                tokio::time::sleep(d).await;
                Err(OriginError::Timeout(d))
            }
            Decision::Truncate(max) => Ok(Gate::Capped(max)),
        }
    }
}

/// How a read that the mode lets through is served.
enum Gate {
    Whole,
    Capped(usize),
    /// Delayed by its length at this many bytes a second.
    Throttled(u64),
}

fn injected(what: &str) -> OriginError {
    OriginError::Io(io::Error::other(format!("injected by FaultyOrigin ({what})")))
}

#[async_trait]
impl Origin for FaultyOrigin {
    fn id(&self) -> &str {
        self.inner.id()
    }

    async fn list(&self) -> Result<Vec<OriginEntry>, OriginError> {
        self.gate(false).await?;
        self.inner.list().await
    }

    async fn stat(&self, rel: &Path) -> Result<OriginEntry, OriginError> {
        self.gate(false).await?;
        self.inner.stat(rel).await
    }

    fn reads_in_flight(&self) -> usize {
        self.inner.reads_in_flight()
    }

    fn random_reads_ingest(&self) -> bool {
        self.inner.random_reads_ingest()
    }

    async fn read_range(&self, rel: &Path, offset: u64, len: usize) -> Result<Bytes, OriginError> {
        let gate = self.gate(true).await?;
        let data = self.inner.read_range(rel, offset, len).await?;
        Ok(match gate {
            Gate::Capped(max) if data.len() > max => data.slice(..max),
            Gate::Throttled(rate) => {
                tokio::time::sleep(Duration::from_secs_f64(data.len() as f64 / rate.max(1) as f64)).await;
                data
            }
            _ => data,
        })
    }

    fn open_blocking(&self, rel: &Path) -> Result<Box<dyn ReadSeek>, OriginError> {
        match self.decide(false) {
            Decision::Pass | Decision::Truncate(_) | Decision::Throttle(_) => self.inner.open_blocking(rel),
            Decision::Fail(e) => Err(e),
            Decision::Hang(d) => {
                std::thread::sleep(d);
                Err(OriginError::Timeout(d))
            }
        }
    }

    async fn health_check(&self) -> Result<(), OriginError> {
        self.gate(false).await?;
        self.inner.health_check().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use musicfs_origins::memory::MemoryOrigin;

    fn origin(mode: FailMode) -> Arc<FaultyOrigin> {
        let inner = Arc::new(MemoryOrigin::new());
        inner.insert("a", vec![7u8; 100], 1);
        FaultyOrigin::new(inner, mode)
    }

    #[tokio::test]
    async fn every_mode_injects_what_it_says_and_counts_it() {
        let o = origin(FailMode::FailEveryNth(2));
        assert!(o.read_range(Path::new("a"), 0, 10).await.is_ok());
        assert!(o.read_range(Path::new("a"), 0, 10).await.is_err());
        assert_eq!((o.calls(), o.faults_injected()), (2, 1));

        let o = origin(FailMode::FailAfterN(1));
        assert!(o.stat(Path::new("a")).await.is_ok());
        assert!(o.stat(Path::new("a")).await.is_err());

        let o = origin(FailMode::PartialRead { max_bytes: 3 });
        assert_eq!(o.read_range(Path::new("a"), 0, 10).await.unwrap().len(), 3);

        let o = origin(FailMode::ReturnError(io::ErrorKind::PermissionDenied));
        match o.health_check().await {
            Err(OriginError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::PermissionDenied),
            other => panic!("{other:?}"),
        }

        let o = origin(FailMode::TimeoutMs(20));
        let started = std::time::Instant::now();
        assert!(matches!(o.read_range(Path::new("a"), 0, 1).await, Err(OriginError::Timeout(_))));
        assert!(started.elapsed() >= Duration::from_millis(20));

        o.set_mode(FailMode::Healthy);
        assert!(o.read_range(Path::new("a"), 0, 1).await.is_ok(), "the origin recovers when told");
        assert_eq!((o.read_calls(), o.faults_injected()), (2, 1));
    }
}
