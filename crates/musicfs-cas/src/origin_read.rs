//! The origin side of a read: [`OriginReads`] reads a byte range of a track from its origin within a bound,
//! fails fast while the origin's breaker is open after a timeout (3.8, 5.1), falls back to the track's backup
//! origin (4.2.6) or asks it too when the origin is late (a hedge, N2), remembers the tracks the backup
//! served, and logs failures as a summary (4.2.3).
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
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Each origin's recent pace, seconds per byte, for the hedge ([`OriginReads::hedge_delay`]).
    paces: Mutex<HashMap<String, f64>>,
    /// Origins their backup beat (N2).
    slow: Mutex<HashMap<String, Slow>>,
    stats: Arc<ReaderStats>,
}

/// An origin whose backup answered first: its reads go to the backup, one at a time to it as well.
struct Slow {
    /// A read of the origin is out; the next waits for its answer before probing again.
    probing: bool,
}

/// The least a read waits for a track's own origin before its backup is asked too.
pub const HEDGE_FLOOR: Duration = Duration::from_millis(300);
/// The most: failover inside two seconds at any read timeout (N2).
pub const HEDGE_CEILING: Duration = Duration::from_millis(1500);
/// Reads smaller than this mostly measure the round trip, not the pace.
const PACE_SAMPLE_MIN: usize = 64 << 10;

impl OriginReads {
    pub fn new(timeout: Duration, stats: Arc<ReaderStats>) -> OriginReads {
        OriginReads {
            timeout,
            breakers: Mutex::new(HashMap::new()),
            failures: FailureLog::default(),
            backup_served: Mutex::new(HashMap::new()),
            paces: Mutex::new(HashMap::new()),
            slow: Mutex::new(HashMap::new()),
            stats,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How long one read of the track's own origin should take, for sizing ingest blocks: the timeout, or half
    /// of it when a backup must still have time to answer (4.2.6).
    pub fn bound(&self, file: &FileRef) -> Duration {
        if file.backup.is_some() { self.timeout / 2 } else { self.timeout }
    }

    /// `len` bytes of the track at `offset` from its origin, or from its backup (4.2.6); says which answered.
    ///
    /// Without a backup the origin has the whole bound. With one, the read is hedged (N2): when the origin
    /// has not answered within [`OriginReads::hedge_delay`] (from its own recent pace, within
    /// [`HEDGE_FLOOR`]..[`HEDGE_CEILING`]), the backup is asked as well and the first good answer wins; an
    /// origin that fails outright (refused, breaker open) hands over at once. An origin the backup beat is
    /// marked slow: its later reads go to the backup alone, with one read at a time still sent to the origin
    /// as a probe, until one answers ([`Slow`]). A file missing from its origin is the sync's business, not
    /// an outage: that error is returned as is.
    pub async fn read(self: &Arc<Self>, file: &FileRef, offset: u64, len: usize) -> Result<(Bytes, Source), ReadError> {
        let Some(backup) = &file.backup else {
            let data = self.primary(file, offset, len).await?;
            return Ok((data, Source::Origin));
        };
        let id = file.origin.id();
        let started = Instant::now();
        if !self.take_probe(id) {
            return self.backup_alone(file, backup, offset, len, self.timeout, "slow").await;
        }
        let hedge = if self.is_slow(id) { Duration::ZERO } else { self.hedge_delay(id, len) };
        // A task of its own: when the backup wins, the origin's read goes on as the probe that tells whether
        // it answers again.
        // Set, under the slow-mark lock, when the origin's read has ended: a backup answer that lost the race
        // to it by a hair must not mark the origin slow with no probe left out to clear the mark.
        let primary_ended = Arc::new(AtomicBool::new(false));
        let mut primary = tokio::spawn({
            let (this, file, ended) = (self.clone(), file.clone(), primary_ended.clone());
            async move {
                let result = this.primary(&file, offset, len).await;
                this.probe_done(file.origin.id(), result.is_ok(), &ended);
                result
            }
        });
        let first = tokio::select! {
            done = &mut primary => Some(done),
            _ = tokio::time::sleep(hedge) => None,
        };
        let failure = match first {
            Some(done) => match done? {
                Ok(data) => return Ok((data, Source::Origin)),
                Err(e @ ReadError::Origin(OriginError::NotFound(_))) => return Err(e),
                Err(e) => e,
            },
            None => {
                // The origin is late: ask the backup too, within what is left of the bound.
                let left = self.timeout.saturating_sub(started.elapsed());
                let backup_read = self.bounded_read(backup, &file.rel_path, offset, len, left);
                tokio::pin!(backup_read);
                tokio::select! {
                    done = &mut primary => match done? {
                        Ok(data) => return Ok((data, Source::Origin)),
                        Err(e @ ReadError::Origin(OriginError::NotFound(_))) => return Err(e),
                        Err(e) => {
                            let data = backup_read.await?;
                            return Ok((self.served_by_backup(file, backup, data, &e), Source::Backup));
                        }
                    },
                    done = &mut backup_read => match done {
                        Ok(data) => {
                            self.mark_slow(id, started.elapsed(), &primary_ended);
                            let late = OriginError::Timeout(started.elapsed());
                            return Ok((self.served_by_backup(file, backup, data, &late.into()), Source::Backup));
                        }
                        // The backup failed: the origin keeps what is left of its bound.
                        Err(backup_error) => {
                            tracing::debug!(track = file.track_id, backup = backup.id(), error = %backup_error,
                                "4.2.6 backup origin failed while the origin was late");
                            let left = self.timeout.saturating_sub(started.elapsed());
                            return match tokio::time::timeout(left, primary).await {
                                Ok(done) => Ok((done??, Source::Origin)),
                                Err(_) => Err(OriginError::Timeout(self.timeout).into()),
                            };
                        }
                    },
                }
            }
        };
        let left = self.timeout.saturating_sub(started.elapsed());
        let data = self.bounded_read(backup, &file.rel_path, offset, len, left).await.inspect_err(|e| {
            tracing::debug!(track = file.track_id, backup = backup.id(), error = %e, "4.2.6 backup origin failed too");
        })?;
        Ok((self.served_by_backup(file, backup, data, &failure), Source::Backup))
    }

    /// A read of the track's own origin within the whole bound, summarised in the failure log (4.2.3), its
    /// pace remembered for the hedge.
    async fn primary(&self, file: &FileRef, offset: u64, len: usize) -> Result<Bytes, ReadError> {
        let id = file.origin.id();
        let started = Instant::now();
        match self.bounded_read(&file.origin, &file.rel_path, offset, len, self.timeout).await {
            Ok(data) => {
                self.failures.answered(id);
                self.learn_pace(id, data.len(), started.elapsed());
                Ok(data)
            }
            Err(e @ ReadError::Origin(OriginError::NotFound(_))) => Err(e),
            Err(e) => {
                self.failures.failed(id, &e);
                Err(e)
            }
        }
    }

    /// A read from the backup alone, while the track's origin is marked slow.
    async fn backup_alone(
        &self,
        file: &FileRef,
        backup: &SharedOrigin,
        offset: u64,
        len: usize,
        bound: Duration,
        why: &str,
    ) -> Result<(Bytes, Source), ReadError> {
        let data = self.bounded_read(backup, &file.rel_path, offset, len, bound).await?;
        let reason = OriginError::Unavailable(format!("origin `{}` is {why}", file.origin.id()));
        Ok((self.served_by_backup(file, backup, data, &reason.into()), Source::Backup))
    }

    /// Counts a read the backup served and flags its track for re-validation (4.2.6).
    fn served_by_backup(&self, file: &FileRef, backup: &SharedOrigin, data: Bytes, origin_error: &ReadError) -> Bytes {
        self.stats.backup_reads.fetch_add(1, Ordering::Relaxed);
        let first = lock_or_recover(&self.backup_served).insert(file.track_id, file.origin.id().to_owned()).is_none();
        if first {
            tracing::warn!(track = file.track_id, path = %file.rel_path.display(), origin = file.origin.id(),
                backup = backup.id(), origin_error = %origin_error,
                "4.2.6 served from the backup origin; flagged for re-validation when the origin returns");
        }
        data
    }

    /// How long a read of `len` bytes waits for the origin before the backup is asked too: three times what
    /// the origin's recent pace says it takes, within [`HEDGE_FLOOR`]..[`HEDGE_CEILING`] (and never more than
    /// half the bound); the ceiling while nothing is known of it.
    pub fn hedge_delay(&self, origin: &str, len: usize) -> Duration {
        let ceiling = HEDGE_CEILING.min(self.timeout / 2);
        match lock_or_recover(&self.paces).get(origin) {
            Some(secs_per_byte) => {
                Duration::from_secs_f64(3.0 * secs_per_byte * len as f64).clamp(HEDGE_FLOOR.min(ceiling), ceiling)
            }
            None => ceiling,
        }
    }

    /// Remembers how fast the origin answered a read large enough to say (a moving average).
    fn learn_pace(&self, origin: &str, len: usize, took: Duration) {
        if len < PACE_SAMPLE_MIN {
            return;
        }
        let sample = took.as_secs_f64() / len as f64;
        let mut paces = lock_or_recover(&self.paces);
        let pace = paces.entry(origin.to_owned()).or_insert(sample);
        *pace = 0.8 * *pace + 0.2 * sample;
    }

    /// The origins marked slow now (N2), by id.
    pub fn slow_origins(&self) -> Vec<String> {
        let mut ids: Vec<String> = lock_or_recover(&self.slow).keys().cloned().collect();
        ids.sort();
        ids
    }

    fn is_slow(&self, origin: &str) -> bool {
        lock_or_recover(&self.slow).contains_key(origin)
    }

    /// Whether this read may ask the origin: always, unless it is marked slow and a probe is already out.
    fn take_probe(&self, origin: &str) -> bool {
        match lock_or_recover(&self.slow).get_mut(origin) {
            None => true,
            Some(slow) if slow.probing => false,
            Some(slow) => {
                slow.probing = true;
                true
            }
        }
    }

    /// The backup answered before the origin, which was asked `late` ago and still runs (the probe) unless
    /// `primary_ended` says it has answered or failed meanwhile.
    fn mark_slow(&self, origin: &str, late: Duration, primary_ended: &AtomicBool) {
        let mut slow = lock_or_recover(&self.slow);
        if primary_ended.load(Ordering::SeqCst) {
            return;
        }
        if slow.insert(origin.to_owned(), Slow { probing: true }).is_none() {
            tracing::warn!(
                origin,
                ?late,
                "N2 origin slow: its backup answered first; reads go to the backup until the origin answers again"
            );
        }
    }

    /// An origin read ended: an answer clears the slow mark, a failure frees the next read to probe.
    fn probe_done(&self, origin: &str, answered: bool, ended: &AtomicBool) {
        let mut slow = lock_or_recover(&self.slow);
        ended.store(true, Ordering::SeqCst);
        if answered {
            if slow.remove(origin).is_some() {
                tracing::info!(origin, "N2 origin answers again; reads go to it first again");
            }
        } else if let Some(s) = slow.get_mut(origin) {
            s.probing = false;
        }
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
        lock_or_recover(&self.slow).remove(origin);
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

#[cfg(test)]
mod tests {
    //! The breaker, the pace the hedge learns, and the backup-served bookkeeping, each on its own: the tests
    //! cargo-mutants found missing (a mutant in any of them went unnoticed by the crate's tests).

    use super::*;
    use musicfs_origins::memory::MemoryOrigin;

    fn reads(timeout: Duration) -> Arc<OriginReads> {
        Arc::new(OriginReads::new(timeout, Arc::new(ReaderStats::default())))
    }

    fn origin(id: &str, len: usize) -> Arc<MemoryOrigin> {
        let origin = Arc::new(MemoryOrigin::named(id));
        origin.insert("t.flac", vec![7u8; len], 1);
        origin
    }

    fn file(id: i64, origin: &Arc<MemoryOrigin>, backup: Option<&Arc<MemoryOrigin>>, len: usize) -> FileRef {
        FileRef {
            track_id: id,
            origin: origin.clone(),
            backup: backup.map(|b| b.clone() as SharedOrigin),
            rel_path: PathBuf::from("t.flac"),
            fingerprint: Fingerprint { size: len as u64, mtime_ns: 1, version: 0 },
        }
    }

    #[test]
    fn the_bound_is_the_timeout_or_half_of_it_when_a_backup_must_still_answer() {
        let r = reads(Duration::from_secs(10));
        let (a, b) = (origin("a", 10), origin("b", 10));
        assert_eq!(r.timeout(), Duration::from_secs(10));
        assert_eq!(r.bound(&file(1, &a, None, 10)), Duration::from_secs(10));
        assert_eq!(r.bound(&file(1, &a, Some(&b), 10)), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_timed_out_origin_fails_fast_for_one_timeout_then_is_asked_again() {
        let r = reads(Duration::from_millis(200));
        let a = origin("a", 4096);
        let f = file(1, &a, None, 4096);
        a.set_latency(Duration::from_secs(5));
        let first = r.read(&f, 0, 4096).await.unwrap_err();
        assert!(matches!(first, ReadError::Origin(OriginError::Timeout(_))), "{first}");
        // Within the window: refused at once, without asking the origin.
        let asked = a.reads();
        let second = r.read(&f, 0, 4096).await.unwrap_err();
        assert!(second.to_string().contains("reads fail fast"), "{second}");
        assert_eq!(a.reads(), asked, "the origin was asked while its breaker was open");
        // After the window it is asked again.
        a.set_latency(Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(r.read(&f, 0, 4096).await.unwrap().0.len(), 4096);
    }

    #[tokio::test]
    async fn an_origin_seen_back_is_read_at_once_inside_the_breakers_window() {
        let r = reads(Duration::from_millis(300));
        let a = origin("a", 4096);
        let f = file(1, &a, None, 4096);
        a.set_latency(Duration::from_secs(5));
        assert!(r.read(&f, 0, 4096).await.is_err());
        a.set_latency(Duration::ZERO);
        r.origin_is_back("a");
        assert_eq!(r.read(&f, 0, 4096).await.unwrap().0.len(), 4096, "origin_is_back left the breaker open");
    }

    /// An origin marked slow whose probe failed gets the next read as its new probe, and the backup is asked
    /// at once beside it, without waiting out a hedge (a mutant that forgot the mark waited the ceiling).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_probe_of_a_slow_origin_asks_the_backup_at_once() {
        let r = reads(Duration::from_secs(1));
        let (a, b) = (origin("a", 4096), origin("b", 4096));
        let f = file(1, &a, Some(&b), 4096);
        a.set_latency(Duration::from_secs(3));
        // The backup answers after the hedge (half the timeout): the origin is marked slow; its read, the
        // probe, times out at 1 s and opens the breaker for 1 s more.
        assert_eq!(r.read(&f, 0, 4096).await.unwrap().1, Source::Backup);
        assert_eq!(r.slow_origins(), ["a"]);
        tokio::time::sleep(Duration::from_millis(1700)).await;
        assert_eq!(r.slow_origins(), ["a"], "a probe that timed out cleared the slow mark");

        let started = Instant::now();
        assert_eq!(r.read(&f, 0, 4096).await.unwrap().1, Source::Backup);
        let took = started.elapsed();
        assert!(took < Duration::from_millis(250), "the backup was asked only after {took:?}");
        assert_eq!(a.in_flight(), 1, "no new probe asks the origin (the first one timed out)");
    }

    #[tokio::test]
    async fn the_hedge_waits_the_ceiling_for_an_unknown_origin_and_three_times_its_learned_pace_after() {
        // The ceiling is half the timeout when that is shorter than HEDGE_CEILING.
        assert_eq!(reads(Duration::from_secs(2)).hedge_delay("a", 1 << 20), Duration::from_secs(1));
        let r = reads(Duration::from_secs(10));
        assert_eq!(r.hedge_delay("a", 1 << 20), HEDGE_CEILING);
        let a = origin("a", 1 << 20);
        let f = file(1, &a, None, 1 << 20);
        // A small read says little about the pace and is not learned.
        r.read(&f, 0, 4096).await.unwrap();
        assert_eq!(r.hedge_delay("a", 1 << 20), HEDGE_CEILING, "a 4 KiB read was taken as the pace");
        // One of PACE_SAMPLE_MIN bytes is large enough: 200 ms for it, a hedge after 600 ms.
        r.learn_pace("b", PACE_SAMPLE_MIN, Duration::from_millis(200));
        let hedge = r.hedge_delay("b", PACE_SAMPLE_MIN).as_secs_f64();
        assert!((hedge - 0.6).abs() < 0.001, "a read of PACE_SAMPLE_MIN bytes was not learned: hedge after {hedge} s");
        // A 1 MiB read in 300 ms (and a little more): the hedge for the next 1 MiB is three times that.
        a.set_latency(Duration::from_millis(300));
        r.read(&f, 0, 1 << 20).await.unwrap();
        let hedge = r.hedge_delay("a", 1 << 20);
        assert!(hedge >= Duration::from_millis(850) && hedge < HEDGE_CEILING, "hedge {hedge:?} after a 300 ms read");
        // Never below the floor, however fast the origin.
        assert_eq!(r.hedge_delay("a", 1), HEDGE_FLOOR);
    }

    #[tokio::test]
    async fn a_fast_origin_is_never_hedged() {
        let r = reads(Duration::from_secs(10));
        let (a, b) = (origin("a", 1 << 20), origin("b", 1 << 20));
        let f = file(1, &a, Some(&b), 1 << 20);
        // Quick, but not instant: a read that asked the backup at once would find the backup first.
        a.set_latency(Duration::from_millis(20));
        for i in 0..8u64 {
            r.read(&f, i * (128 << 10), 128 << 10).await.unwrap();
        }
        assert_eq!(b.reads(), 0, "the backup was asked while the origin answered at once");
        assert!(r.slow_origins().is_empty());
    }

    #[tokio::test]
    async fn tracks_served_by_a_backup_are_handed_over_once_for_their_own_origin() {
        let r = reads(Duration::from_millis(400));
        let (a, b, c) = (origin("a", 4096), origin("b", 4096), origin("c", 4096));
        a.set_latency(Duration::from_secs(5));
        for id in [3, 9] {
            let (data, source) = r.read(&file(id, &a, Some(&b), 4096), 0, 4096).await.unwrap();
            assert_eq!((data.len(), source), (4096, Source::Backup));
        }
        // Another origin's track, served by its own origin.
        assert_eq!(r.read(&file(5, &c, Some(&b), 4096), 0, 4096).await.unwrap().1, Source::Origin);
        assert_eq!(r.backup_served_count(), 2);
        assert!(r.awaits_revalidation("a") && !r.awaits_revalidation("c"));
        // While reads of `a` fail fast (a timed-out read without a backup), its tracks are not re-validated.
        assert!(r.read(&file(4, &a, None, 4096), 0, 4096).await.is_err());
        assert!(!r.awaits_revalidation("a"), "re-validation would run against an origin that does not answer");
        r.origin_is_back("a");
        assert!(r.awaits_revalidation("a"));
        assert!(r.take_backup_served("c").is_empty(), "tracks of another origin were handed over");
        let mut ids = r.take_backup_served("a");
        ids.sort();
        assert_eq!(ids, vec![3, 9]);
        assert!(r.take_backup_served("a").is_empty(), "handed over twice");
        assert_eq!(r.backup_served_count(), 0);
        assert!(!r.awaits_revalidation("a"));
    }
}
