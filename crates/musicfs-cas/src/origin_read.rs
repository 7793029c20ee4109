//! The origin side of a read: [`OriginReads`] reads a byte range of a track from its origin within a bound,
//! fails fast while the origin's breaker is open after a timeout (3.8, 5.1), falls back to the track's backup
//! origin (4.2.6) and remembers the tracks the backup served, and logs failures as a summary (4.2.3).
//!
//! Everything above it (the reader, ingests) sees one call, [`OriginReads::read`], and never an origin
//! directly.

use crate::error::ReadError;
use crate::failure_log::FailureLog;
use crate::manifest::Fingerprint;
use crate::stats::ReaderStats;
use bytes::Bytes;
use musicfs_core::sync_util::lock_or_recover;
use musicfs_origins::{OriginError, SharedOrigin};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Everything the reader needs to know about one track.
#[derive(Clone)]
pub struct FileRef {
    pub track_id: i64,
    pub origin: SharedOrigin,
    /// A copy of `origin` (same layout) read from when `origin` does not answer (4.2.6).
    pub backup: Option<SharedOrigin>,
    pub rel_path: PathBuf,
    pub fingerprint: Fingerprint,
}

/// Which origin answered a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Origin,
    Backup,
}

pub struct OriginReads {
    /// Bound on one origin call (a little under the FUSE read timeout).
    timeout: Duration,
    /// Origins whose reads fail fast until the instant given (see [`OriginReads::open_breaker`]).
    breakers: Mutex<HashMap<String, Instant>>,
    /// Origin read failures, summarised (4.2.3).
    pub failures: FailureLog,
    /// Tracks served (some bytes) from a backup origin, by the id of their own origin, until that origin
    /// returns and they are re-validated (4.2.6).
    backup_served: Mutex<HashMap<i64, String>>,
    stats: Arc<ReaderStats>,
}

impl OriginReads {
    pub fn new(timeout: Duration, stats: Arc<ReaderStats>) -> OriginReads {
        OriginReads {
            timeout,
            breakers: Mutex::new(HashMap::new()),
            failures: FailureLog::default(),
            backup_served: Mutex::new(HashMap::new()),
            stats,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How long one read of the track's own origin may take: the timeout, or half of it when a backup must
    /// still have time to answer (4.2.6).
    pub fn bound(&self, file: &FileRef) -> Duration {
        if file.backup.is_some() { self.timeout / 2 } else { self.timeout }
    }

    /// `len` bytes of the track at `offset` from its origin or, when that fails for any reason but a missing
    /// file, from its backup (4.2.6); says which answered. With a backup, the origin gets half the time, so
    /// the backup still has the rest: a hung origin then costs each read half a timeout until its breaker
    /// opens, after which reads go to the backup at once.
    pub async fn read(&self, file: &FileRef, offset: u64, len: usize) -> Result<(Bytes, Source), ReadError> {
        let bound = self.bound(file);
        let result = self.bounded_read(&file.origin, &file.rel_path, offset, len, bound).await;
        let failure = match result {
            Ok(data) => {
                self.failures.answered(file.origin.id());
                return Ok((data, Source::Origin));
            }
            // A file gone from its origin is the sync's business, not an origin outage.
            Err(e @ ReadError::Origin(OriginError::NotFound(_))) => return Err(e),
            Err(e) => e,
        };
        self.failures.failed(file.origin.id(), &failure);
        let Some(backup) = &file.backup else { return Err(failure) };
        let data = self.bounded_read(backup, &file.rel_path, offset, len, bound).await.inspect_err(|e| {
            tracing::debug!(track = file.track_id, backup = backup.id(), error = %e, "4.2.6 backup origin failed too");
        })?;
        self.stats.backup_reads.fetch_add(1, Ordering::Relaxed);
        let first = lock_or_recover(&self.backup_served).insert(file.track_id, file.origin.id().to_owned()).is_none();
        if first {
            tracing::warn!(track = file.track_id, path = %file.rel_path.display(), origin = file.origin.id(),
                backup = backup.id(), origin_error = %failure,
                "4.2.6 served from the backup origin; flagged for re-validation when the origin returns");
        }
        Ok((data, Source::Backup))
    }

    /// The track's fingerprint at its own origin now, within the bound: an ingest checks that the copy it cut
    /// is still the one the library knows (5.6).
    pub async fn fingerprint(&self, file: &FileRef) -> Result<Fingerprint, ReadError> {
        let now = tokio::time::timeout(self.timeout, file.origin.stat(&file.rel_path))
            .await
            .map_err(|_| OriginError::Timeout(self.timeout))??;
        Ok(Fingerprint { size: now.size, mtime_ns: now.mtime_ns, version: now.version })
    }

    async fn bounded_read(
        &self,
        origin: &SharedOrigin,
        rel: &Path,
        offset: u64,
        len: usize,
        bound: Duration,
    ) -> Result<Bytes, ReadError> {
        let id = origin.id();
        if let Some(left) = self.breaker_open_for(id) {
            return Err(OriginError::Unavailable(format!(
                "origin `{id}` did not answer within {bound:?}; reads fail fast for another {left:?}"
            ))
            .into());
        }
        let data = match tokio::time::timeout(bound, origin.read_range(rel, offset, len)).await {
            Ok(Ok(data)) => data,
            // A remote origin bounds its own requests (S3 and SFTP by the reader's own origin timeout) and then
            // reports the timeout a moment before ours would fire: it is the same hang, and must open the
            // breaker just the same.
            Ok(Err(e @ OriginError::Timeout(_))) => {
                self.open_breaker(id);
                return Err(e.into());
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                self.open_breaker(id);
                return Err(OriginError::Timeout(bound).into());
            }
        };
        self.stats.origin_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(data)
    }

    /// After an origin read times out, further reads from that origin fail at once for one timeout's length
    /// instead of each waiting a full timeout: with many readers (and the kernel retrying page reads) a hung
    /// origin would otherwise stack their waits (5.1, 3.8). The first read after the window tries again.
    fn open_breaker(&self, origin: &str) {
        let until = Instant::now() + self.timeout;
        if lock_or_recover(&self.breakers).insert(origin.to_owned(), until).is_none() {
            tracing::warn!(origin, timeout = ?self.timeout, "3.8 origin read timed out; failing its reads fast for one timeout");
        }
    }

    fn breaker_open_for(&self, origin: &str) -> Option<Duration> {
        let mut open = lock_or_recover(&self.breakers);
        let until = *open.get(origin)?;
        let now = Instant::now();
        if now >= until {
            open.remove(origin);
            return None;
        }
        Some(until - now)
    }

    /// The health monitor saw `origin` answer again after it was down: its reads stop failing fast now, not
    /// at the end of the breaker's window, so a healed origin is read from as soon as it is ready (N2, N4).
    pub fn origin_is_back(&self, origin: &str) {
        if lock_or_recover(&self.breakers).remove(origin).is_some() {
            tracing::info!(origin, "3.8 origin answers again; its reads no longer fail fast");
        }
    }

    /// The tracks of `origin` served from its backup since it went away, handed over (and forgotten here)
    /// for the caller to re-validate now that it is back (4.2.6).
    pub fn take_backup_served(&self, origin: &str) -> Vec<i64> {
        let mut served = lock_or_recover(&self.backup_served);
        let ids: Vec<i64> = served.iter().filter(|(_, o)| o.as_str() == origin).map(|(id, _)| *id).collect();
        for id in &ids {
            served.remove(id);
        }
        ids
    }

    /// Whether tracks of `origin` were served from its backup and wait for re-validation, and its reads no
    /// longer fail fast: then they can be re-validated now, whether or not a health round saw it away (4.2.6).
    pub fn awaits_revalidation(&self, origin: &str) -> bool {
        self.breaker_open_for(origin).is_none() && lock_or_recover(&self.backup_served).values().any(|o| o == origin)
    }

    /// How many tracks are waiting for re-validation after being served from a backup (4.2.6).
    pub fn backup_served_count(&self) -> usize {
        lock_or_recover(&self.backup_served).len()
    }
}
