//! The disk under the chunk store, watched by a [`DiskGuard`]: free-space watermarks (2.8, [`DiskPressure`])
//! checked before each chunk write, and the trouble state. A full disk stops writes; a failing one (6.6) puts
//! the store in passthrough mode until the disk passes a check. The disk is reached through [`CacheDisk`], so
//! tests can fill or break it without a real one. The guard knows the store only through [`GuardedStore`].

use crate::error::StoreError;
use musicfs_core::sync_util::lock_or_recover;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// 2.8 watermarks, shares of the cache filesystem in use (by anything, not only the cache). At 90 % a chunk
/// write first evicts least-recently-used chunks down to 80 % (hysteresis: the next round comes 10 % later).
pub const WATERMARK_EVICT_HARDER: f64 = 0.90;
/// 2.8: where evicting at [`WATERMARK_EVICT_HARDER`] stops.
pub const WATERMARK_EVICT_TO: f64 = 0.80;
/// 2.8: at 95 % prefetch stops: an ingest no longer caches ahead of its readers, only chunks a reader uses are
/// cached (see `ingest`).
pub const WATERMARK_STOP_PREFETCH: f64 = 0.95;
/// 2.8: no chunk write may take the disk past 99 %: caching stops and reads are served from the origin.
pub const WATERMARK_STOP_WRITES: f64 = 0.99;

/// How often a full (2.8) or failed (6.6) cache disk is checked again: by the next chunk write, or by the
/// reader's chunk writer when it is idle, so the state clears even when nothing is being read.
pub const DISK_RECHECK: Duration = Duration::from_secs(2);

/// `share` of `total`, in bytes.
fn share(total: u64, share: f64) -> u64 {
    (total as f64 * share) as u64
}

/// How full the cache filesystem is, by the 2.8 watermarks. Ordered: each level includes the ones below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DiskPressure {
    Normal,
    /// At or above [`WATERMARK_EVICT_HARDER`].
    EvictHarder,
    /// At or above [`WATERMARK_STOP_PREFETCH`].
    StopPrefetch,
    /// At or above [`WATERMARK_STOP_WRITES`].
    StopWrites,
}

impl DiskPressure {
    /// The level of a filesystem with `free` of `total` bytes free.
    pub fn of(free: u64, total: u64) -> DiskPressure {
        let used = total.saturating_sub(free);
        if used >= share(total, WATERMARK_STOP_WRITES) {
            DiskPressure::StopWrites
        } else if used >= share(total, WATERMARK_STOP_PREFETCH) {
            DiskPressure::StopPrefetch
        } else if used >= share(total, WATERMARK_EVICT_HARDER) {
            DiskPressure::EvictHarder
        } else {
            DiskPressure::Normal
        }
    }
}

/// One entry of a directory, as [`CacheDisk::list`] gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: std::ffi::OsString,
    pub is_dir: bool,
    /// Bytes of a file (0 for a directory).
    pub len: u64,
}

/// The filesystem under the chunk store, as the store uses it: its free space, the chunk files, their
/// directories and the index. Every byte the store keeps goes through here, so a double can stand for the
/// disk. [`RealDisk`] is statvfs, `std::fs` and a redb file; `FaultyDisk` (musicfs-test-utils) reports the
/// fullness and fails the I/O it is told to, so the 2.8 and 6.6 decisions run for real without a real full or
/// failing disk; `CrashDisk` (the store's tests) keeps what was written apart from what is durable, for the
/// crash images of issue 13.
///
/// What is durable when: a file's bytes after [`CacheDisk::write_durable`]; a directory entry (a file
/// created, renamed or removed, a directory made) only after [`CacheDisk::sync_dir`] of its directory. The
/// methods with a body are the real filesystem's, for doubles that only change the first three.
pub trait CacheDisk: Send + Sync + 'static {
    /// (free bytes, total bytes) of the filesystem holding `dir`, if it can be read.
    fn space(&self, dir: &Path) -> Option<(u64, u64)>;
    /// Creates `path` holding `data`, its bytes synced to the disk (its name is not, see `sync_dir`).
    fn write_durable(&self, path: &Path, data: &[u8]) -> std::io::Result<()>;
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;

    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_file(path)
    }
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    /// Makes the entries of `dir` durable: the files created, renamed into or removed from it (fsync of the
    /// directory).
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
    /// The entries of `dir`, in no particular order.
    fn list(&self, dir: &Path) -> std::io::Result<Vec<DirEntry>> {
        let mut entries = Vec::new();
        for item in std::fs::read_dir(dir)? {
            let item = item?;
            let Ok(meta) = item.metadata() else { continue };
            entries.push(DirEntry { name: item.file_name(), is_dir: meta.is_dir(), len: meta.len() });
        }
        Ok(entries)
    }
    /// Opens (or creates) the chunk index kept in the file `path`.
    fn open_index(&self, path: &Path) -> Result<redb::Database, redb::DatabaseError> {
        redb::Database::create(path)
    }
}

/// (free, total) bytes as df counts them: blocks reserved for root are neither free nor part of the total.
/// Counted as used, a large reserve (two thirds of the disk on one of our hosts) reads as a nearly full disk,
/// and the 2.8 watermarks empty the cache for nothing.
fn usable_space(blocks: u64, free_blocks: u64, available_blocks: u64, block_size: u64) -> (u64, u64) {
    let reserved = free_blocks.saturating_sub(available_blocks);
    (available_blocks * block_size, blocks.saturating_sub(reserved) * block_size)
}

/// The real disk: statvfs and `std::fs`.
pub struct RealDisk;

impl CacheDisk for RealDisk {
    fn space(&self, dir: &Path) -> Option<(u64, u64)> {
        let c_path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
        // SAFETY: an all-zero statvfs is a valid value for this plain C struct.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: statvfs writes into the struct we own; the path is NUL-terminated.
        if unsafe { libc::statvfs(c_path.as_ptr(), &mut st) } != 0 || st.f_blocks == 0 {
            return None;
        }
        Some(usable_space(st.f_blocks, st.f_bfree, st.f_bavail, st.f_frsize))
    }

    fn write_durable(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
        let mut file = std::fs::File::create(path)?;
        file.write_all(data)?;
        file.sync_data()
    }

    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

/// What the [`DiskGuard`] needs from the store it guards: how much it holds, a way to make it hold less, and a
/// proof that its index can still commit.
pub(crate) trait GuardedStore {
    /// Bytes of chunk files on disk: indexed, and written but not yet indexed.
    fn bytes_on_disk(&self) -> u64;
    /// Bytes of indexed chunks (what eviction can give back).
    fn indexed_bytes(&self) -> u64;
    /// Evicts least-recently-used chunks until at most `limit` bytes remain.
    fn evict_to(&self, limit: u64) -> Result<u64, StoreError>;
    /// Commits an empty index transaction (part of the 6.6 disk check).
    fn commit_index(&self) -> Result<(), StoreError>;
}

/// Why the store is not caching right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TroubleKind {
    /// 2.8: no room under [`WATERMARK_STOP_WRITES`], or a write hit ENOSPC/EDQUOT. Cached chunks are still
    /// read; writes resume when a write (or a check) finds room.
    Full,
    /// 6.6: the disk fails (EIO, read-only, permissions). Passthrough: chunks are neither read nor written,
    /// reads go straight to the origin, until the disk passes a check (a probe file written, synced, read
    /// back and removed, and an index transaction committed).
    Failed,
}

#[derive(Debug, Clone)]
struct Trouble {
    kind: TroubleKind,
    why: String,
    /// Last time the disk was checked (or failed).
    checked: Instant,
}

/// The disk under one chunk store, watched: its free space against the 2.8 watermarks, and whether caching
/// has stopped (disk full, 2.8, or failing, 6.6) and why. The store asks it before every chunk write
/// ([`DiskGuard::make_room`], [`DiskGuard::writable`]) and tells it about failed I/O
/// ([`DiskGuard::note_trouble`]); all chunk file I/O goes through its [`CacheDisk`].
pub(crate) struct DiskGuard {
    /// The store's directory, on the disk watched.
    root: PathBuf,
    disk: Arc<dyn CacheDisk>,
    /// Set while caching is stopped (2.8 full, 6.6 failing); cleared by a successful write or a passed check.
    trouble: Mutex<Option<Trouble>>,
    /// The cache filesystem is above the eviction watermark (logged once per episode).
    squeezed: AtomicBool,
    /// Bytes held by other files when the cache last gave all its space back to them (0: not since they fell
    /// under 80 %). See `make_room`.
    gave_back_at: AtomicU64,
    /// Checks of a failing disk (6.6) that failed again.
    pub(crate) failed_checks: AtomicU64,
}

impl DiskGuard {
    pub(crate) fn new(root: PathBuf, disk: Arc<dyn CacheDisk>) -> DiskGuard {
        DiskGuard {
            root,
            disk,
            trouble: Mutex::new(None),
            squeezed: AtomicBool::new(false),
            gave_back_at: AtomicU64::new(0),
            failed_checks: AtomicU64::new(0),
        }
    }

    /// The disk, for chunk file reads and writes.
    pub(crate) fn disk(&self) -> &dyn CacheDisk {
        &*self.disk
    }

    /// (free bytes, total bytes) of the cache filesystem, if it can be read.
    pub(crate) fn space(&self) -> Option<(u64, u64)> {
        self.disk.space(&self.root)
    }

    /// The cache filesystem's level by the 2.8 watermarks (`Normal` when its space cannot be read).
    pub(crate) fn pressure(&self) -> DiskPressure {
        self.space().map_or(DiskPressure::Normal, |(free, total)| DiskPressure::of(free, total))
    }

    /// Watermarks (2.8) on the cache filesystem's real use, before `store` writes a chunk of `size` bytes.
    ///
    /// At 90 %, if the cache is what fills the disk (other files hold under 80 %), least-recently-used chunks
    /// are evicted down to 80 %. If other files hold more, evicting cannot get there: the cache gives back all
    /// it holds once, and again only when the other files have grown by another 1 % of the disk. Evicting on
    /// every write instead would throw away the chunks readers are using for no gain.
    ///
    /// The chunk is written only if the disk stays at or under 99 %, evicting older chunks to make it fit —
    /// unless other files hold most of the disk, where evicting would only churn the cache: then caching
    /// pauses and reads come from the origin. False: no room now.
    pub(crate) fn make_room(&self, size: u64, store: &impl GuardedStore) -> Result<bool, StoreError> {
        let Some((free, total)) = self.space() else { return Ok(true) };
        let used = total.saturating_sub(free);
        let others = used.saturating_sub(store.bytes_on_disk());
        let evict_to = share(total, WATERMARK_EVICT_TO);
        if others < evict_to {
            self.gave_back_at.store(0, Ordering::Relaxed);
        }
        if used >= share(total, WATERMARK_EVICT_HARDER) {
            if !self.squeezed.swap(true, Ordering::Relaxed) {
                tracing::warn!(free, total, "2.8 cache disk above 90%: evicting down to 80%");
            }
            if others < evict_to {
                store.evict_to(store.indexed_bytes().saturating_sub(used - evict_to))?;
            } else if others > self.gave_back_at.load(Ordering::Relaxed) + total / 100 {
                tracing::warn!(
                    others,
                    total,
                    cache = store.indexed_bytes(),
                    "2.8 other files hold over 80% of the cache disk: cache emptied to give the space back"
                );
                store.evict_to(0)?;
                // Measured again: on an overfull disk free space reads 0 and `others` came out too small.
                let others = self
                    .space()
                    .map_or(others, |(free, total)| total.saturating_sub(free).saturating_sub(store.bytes_on_disk()));
                self.gave_back_at.store(others, Ordering::Relaxed);
            }
        } else if used < evict_to && self.squeezed.swap(false, Ordering::Relaxed) {
            tracing::info!(free, total, "2.8 cache disk back under 80%");
        }
        let Some((free, total)) = self.space() else { return Ok(true) };
        let limit = share(total, WATERMARK_STOP_WRITES);
        let used = total.saturating_sub(free);
        if used + size <= limit {
            return Ok(true);
        }
        let shortfall = used + size - limit;
        let others = used.saturating_sub(store.bytes_on_disk());
        if others > total / 2 || store.indexed_bytes() < shortfall {
            return Ok(false);
        }
        store.evict_to(store.indexed_bytes() - shortfall)?;
        Ok(self
            .space()
            .is_none_or(|(free, total)| total.saturating_sub(free) + size <= share(total, WATERMARK_STOP_WRITES)))
    }

    fn trouble(&self) -> MutexGuard<'_, Option<Trouble>> {
        // Updated in single assignments: a poisoned lock still holds a consistent value (2.9).
        lock_or_recover(&self.trouble)
    }

    /// Caching stops (or stays stopped) for `why`: logged once per kind of trouble.
    pub(crate) fn note_trouble(&self, kind: TroubleKind, why: &str) {
        let mut trouble = self.trouble();
        if trouble.as_ref().is_none_or(|t| t.kind != kind) {
            match kind {
                TroubleKind::Full => {
                    tracing::warn!(why, "2.8 cache writes stopped; reads are served from the origin (degraded)")
                }
                TroubleKind::Failed => tracing::error!(
                    why,
                    "6.6 cache disk failing: passthrough mode, reads go straight to the origin (degraded)"
                ),
            }
        }
        *trouble = Some(Trouble { kind, why: why.to_owned(), checked: Instant::now() });
    }

    /// A write worked: caching goes on, and a stop ends (with one line).
    pub(crate) fn clear_trouble(&self) {
        let Some(was) = self.trouble().take() else { return };
        match was.kind {
            TroubleKind::Full => tracing::info!(was = was.why, "2.8 cache writes work again"),
            TroubleKind::Failed => {
                tracing::info!(was = was.why, "6.6 cache disk passed its check: passthrough mode ends, caching resumes")
            }
        }
    }

    /// Why the cache cannot take new chunks right now, if it cannot.
    pub(crate) fn write_failure(&self) -> Option<String> {
        self.trouble().as_ref().map(|t| t.why.clone())
    }

    /// Whether the store is in 6.6 passthrough mode: the disk failed and has not passed a check since.
    pub(crate) fn passthrough(&self) -> bool {
        self.trouble().as_ref().is_some_and(|t| t.kind == TroubleKind::Failed)
    }

    /// Whether chunks may be written now: not in passthrough, or a due check of the disk passes.
    pub(crate) fn writable(&self, store: &impl GuardedStore) -> bool {
        let due = match self.trouble().as_ref() {
            Some(t) if t.kind == TroubleKind::Failed => t.checked.elapsed() >= DISK_RECHECK,
            _ => return true,
        };
        due && self.check(store)
    }

    /// [`DiskGuard::check`], if caching has stopped and the last check is [`DISK_RECHECK`] old.
    pub(crate) fn recheck(&self, store: &impl GuardedStore) {
        let due = self.trouble().as_ref().is_some_and(|t| t.checked.elapsed() >= DISK_RECHECK);
        if due {
            self.check(store);
        }
    }

    /// Checks a disk that stopped caching, now: a full one (2.8) for room under 99 %, a failing one (6.6) by
    /// writing, syncing, reading back and removing a probe file and committing an index transaction. Clears
    /// the trouble if it passes; true when caching may go on.
    pub(crate) fn check(&self, store: &impl GuardedStore) -> bool {
        let Some(kind) = self.trouble().as_ref().map(|t| t.kind) else { return true };
        let result = match kind {
            TroubleKind::Full => match self.pressure() {
                DiskPressure::StopWrites => Err("cache disk still above 99%".to_owned()),
                _ => Ok(()),
            },
            TroubleKind::Failed => self.probe(store),
        };
        match result {
            Ok(()) => {
                self.clear_trouble();
                true
            }
            Err(why) => {
                if kind == TroubleKind::Failed {
                    self.failed_checks.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(why, "6.6 cache disk still failing its check");
                }
                if let Some(t) = self.trouble().as_mut() {
                    t.checked = Instant::now();
                }
                false
            }
        }
    }

    fn probe(&self, store: &impl GuardedStore) -> Result<(), String> {
        let path = self.root.join("tmp").join(format!("disk-check.{}", std::process::id()));
        let probe = format!("musicfs cache disk check {:?}", Instant::now());
        let written = self.disk.write_durable(&path, probe.as_bytes());
        let read_back = written.and_then(|()| self.disk.read(&path));
        let _ = self.disk.remove(&path);
        match read_back {
            Ok(bytes) if bytes == probe.as_bytes() => {}
            Ok(_) => return Err("the probe file read back different bytes".to_owned()),
            Err(e) => return Err(format!("probe file: {e}")),
        }
        store.commit_index().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A healthy disk (the real filesystem under a temporary directory) that counts its writes, with as much
    /// room as the test says (half of 2 GiB free until it says otherwise).
    #[derive(Default)]
    struct CountingDisk {
        writes: AtomicUsize,
        /// Free bytes of 2 GiB; 0 means 1 GiB.
        free: AtomicU64,
        /// Writes fail with EIO.
        failing: AtomicBool,
        /// Reads return other bytes than were written.
        garbling: AtomicBool,
    }

    impl CacheDisk for CountingDisk {
        fn space(&self, _dir: &Path) -> Option<(u64, u64)> {
            let free = self.free.load(Ordering::Relaxed);
            Some((if free == 0 { 1 << 30 } else { free }, 2 << 30))
        }
        fn write_durable(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            if self.failing.load(Ordering::Relaxed) {
                return Err(std::io::Error::from_raw_os_error(libc::EIO));
            }
            std::fs::write(path, data)
        }
        fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
            let mut bytes = std::fs::read(path)?;
            if self.garbling.load(Ordering::Relaxed)
                && let Some(b) = bytes.first_mut()
            {
                *b ^= 0xff;
            }
            Ok(bytes)
        }
    }

    /// A store with nothing in it, whose index commits.
    struct EmptyStore;

    impl GuardedStore for EmptyStore {
        fn bytes_on_disk(&self) -> u64 {
            0
        }
        fn indexed_bytes(&self) -> u64 {
            0
        }
        fn evict_to(&self, _limit: u64) -> Result<u64, StoreError> {
            Ok(0)
        }
        fn commit_index(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    /// Log lines at warn and above written while `f` runs.
    fn warnings_during(f: impl FnOnce()) -> String {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let lines = lines.clone();
            move || LineSink(lines.clone())
        };
        let subscriber = tracing_subscriber::fmt().with_max_level(tracing::Level::WARN).with_writer(writer).finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8_lossy(&lines.lock().unwrap()).into_owned()
    }

    struct LineSink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for LineSink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// 6.6: a disk in passthrough is probed again only once [`DISK_RECHECK`] has passed since it failed, not
    /// on every chunk write meanwhile (each probe writes, syncs and reads a file on a failing disk).
    #[test]
    fn a_failed_disk_is_probed_again_only_once_the_recheck_is_due() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let disk = Arc::new(CountingDisk::default());
        let guard = DiskGuard::new(dir.path().to_owned(), disk.clone());
        guard.note_trouble(TroubleKind::Failed, "EIO");
        assert!(!guard.writable(&EmptyStore), "no writes before the recheck is due");
        assert_eq!(disk.writes.load(Ordering::Relaxed), 0, "and no probe of the disk");
        std::thread::sleep(DISK_RECHECK + Duration::from_millis(100));
        assert!(guard.writable(&EmptyStore), "the due probe passes on a healthy disk");
        assert_eq!(disk.writes.load(Ordering::Relaxed), 1);
        assert!(!guard.passthrough(), "passthrough ends");
    }

    /// 6.6: the check of a failed disk writes, reads back and compares a probe file; a disk that still fails
    /// to write, or reads back other bytes, stays in passthrough and counts a failed check. Only a sound one
    /// ends passthrough.
    #[test]
    fn a_failed_disk_passes_its_check_only_when_it_writes_and_reads_back_sound_bytes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let disk = Arc::new(CountingDisk::default());
        let guard = DiskGuard::new(dir.path().to_owned(), disk.clone());
        guard.note_trouble(TroubleKind::Failed, "EIO");
        disk.failing.store(true, Ordering::Relaxed);
        assert!(!guard.check(&EmptyStore), "writes still fail");
        disk.failing.store(false, Ordering::Relaxed);
        disk.garbling.store(true, Ordering::Relaxed);
        assert!(!guard.check(&EmptyStore), "reads come back wrong");
        assert!(guard.passthrough(), "still in passthrough");
        assert_eq!(guard.failed_checks.load(Ordering::Relaxed), 2);
        disk.garbling.store(false, Ordering::Relaxed);
        assert!(guard.check(&EmptyStore), "a sound disk passes");
        assert!(!guard.passthrough());
    }

    /// 2.8: a full disk's check passes only once the disk is back under 99 %, and then caching resumes.
    #[test]
    fn a_full_disk_passes_its_check_only_under_the_stop_writes_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Arc::new(CountingDisk::default());
        let guard = DiskGuard::new(dir.path().to_owned(), disk.clone());
        disk.free.store((2 << 30) / 200, Ordering::Relaxed);
        guard.note_trouble(TroubleKind::Full, "ENOSPC");
        assert!(!guard.check(&EmptyStore), "99.5 % used: still full");
        assert!(guard.write_failure().is_some(), "caching stays stopped");
        assert_eq!(guard.failed_checks.load(Ordering::Relaxed), 0, "a full disk is not a failing one (6.6)");
        disk.free.store(1 << 30, Ordering::Relaxed);
        assert!(guard.check(&EmptyStore), "50 % used: room again");
        assert!(guard.write_failure().is_none(), "caching resumes");
    }

    /// 2.8 and 6.6 each say once that caching stopped, however many writes fail after, and a different
    /// trouble says so again (4.2.3: a summary, not a line per chunk).
    #[test]
    fn caching_stopped_is_logged_once_per_kind_of_trouble() {
        let dir = tempfile::tempdir().unwrap();
        let guard = DiskGuard::new(dir.path().to_owned(), Arc::new(CountingDisk::default()));
        let log = warnings_during(|| {
            for _ in 0..3 {
                guard.note_trouble(TroubleKind::Full, "ENOSPC");
            }
            for _ in 0..3 {
                guard.note_trouble(TroubleKind::Failed, "EIO");
            }
        });
        assert_eq!(log.matches("2.8 cache writes stopped").count(), 1, "{log}");
        assert_eq!(log.matches("6.6 cache disk failing").count(), 1, "{log}");
    }

    #[test]
    fn blocks_reserved_for_root_do_not_count_as_used() {
        // statvfs of a build host: 270 GB, 216 GB free, of which 43 GB available (df: 56 % used).
        let (free, total) = usable_space(66_053_021, 52_715_018, 10_483_469, 4096);
        assert_eq!(DiskPressure::of(free, total), DiskPressure::Normal);
        let used_share = 1.0 - free as f64 / total as f64;
        assert!((0.55..0.57).contains(&used_share), "{used_share}");
        // Without a reserve nothing changes.
        assert_eq!(usable_space(100, 40, 40, 10), (400, 1000));
    }
}
