//! The disk under the chunk store, watched: free-space watermarks (2.8, [`DiskPressure`]) checked before each
//! chunk write, and the trouble state. A full disk stops writes; a failing one (6.6) puts the store in
//! passthrough mode until the disk passes a check. The disk is reached through [`CacheDisk`], so tests can
//! fill or break it without a real one.

use crate::store::{ChunkStore, StoreError};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
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

/// The filesystem under the chunk store, as the store uses it: its free space and the chunk file reads and
/// writes. [`RealDisk`] is statvfs and `std::fs`; a test double (`FaultyDisk` in musicfs-test-utils) reports
/// the fullness and fails the I/O it is told to, so the 2.8 and 6.6 decisions run for real without a real
/// full or failing disk.
pub trait CacheDisk: Send + Sync + 'static {
    /// (free bytes, total bytes) of the filesystem holding `dir`, if it can be read.
    fn space(&self, dir: &Path) -> Option<(u64, u64)>;
    /// Creates `path` holding `data`, synced to the disk.
    fn write_durable(&self, path: &Path, data: &[u8]) -> std::io::Result<()>;
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
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
pub(crate) struct Trouble {
    pub(crate) kind: TroubleKind,
    pub(crate) why: String,
    /// Last time the disk was checked (or failed).
    pub(crate) checked: Instant,
}

impl ChunkStore {
    /// (free bytes, total bytes) of the cache filesystem (statvfs), if it can be read.
    pub fn disk_space(&self) -> Option<(u64, u64)> {
        self.disk.space(&self.root)
    }

    /// The cache filesystem's level by the 2.8 watermarks (`Normal` when its space cannot be read).
    pub fn disk_pressure(&self) -> DiskPressure {
        self.disk_space().map_or(DiskPressure::Normal, |(free, total)| DiskPressure::of(free, total))
    }

    /// Watermarks (2.8) on the cache filesystem's real use, before writing a chunk of `size` bytes.
    ///
    /// At 90 %, if the cache is what fills the disk (other files hold under 80 %), least-recently-used chunks
    /// are evicted down to 80 %. If other files hold more, evicting cannot get there: the cache gives back all
    /// it holds once, and again only when the other files have grown by another 1 % of the disk. Evicting on
    /// every write instead would throw away the chunks readers are using for no gain.
    ///
    /// The chunk is written only if the disk stays at or under 99 %, evicting older chunks to make it fit —
    /// unless other files hold most of the disk, where evicting would only churn the cache: then caching
    /// pauses and reads come from the origin. False: no room now.
    pub(crate) fn make_disk_room(&self, size: u64) -> Result<bool, StoreError> {
        let Some((free, total)) = self.disk_space() else { return Ok(true) };
        let used = total.saturating_sub(free);
        let others = used.saturating_sub(self.cache_bytes_on_disk());
        let evict_to = share(total, WATERMARK_EVICT_TO);
        if others < evict_to {
            self.gave_back_at.store(0, Ordering::Relaxed);
        }
        if used >= share(total, WATERMARK_EVICT_HARDER) {
            if !self.squeezed.swap(true, Ordering::Relaxed) {
                tracing::warn!(free, total, "2.8 cache disk above 90%: evicting down to 80%");
            }
            if others < evict_to {
                self.evict_to(self.total_bytes().saturating_sub(used - evict_to))?;
            } else if others > self.gave_back_at.load(Ordering::Relaxed) + total / 100 {
                tracing::warn!(
                    others,
                    total,
                    cache = self.total_bytes(),
                    "2.8 other files hold over 80% of the cache disk: cache emptied to give the space back"
                );
                self.evict_to(0)?;
                // Measured again: on an overfull disk free space reads 0 and `others` came out too small.
                let others = self.disk_space().map_or(others, |(free, total)| {
                    total.saturating_sub(free).saturating_sub(self.cache_bytes_on_disk())
                });
                self.gave_back_at.store(others, Ordering::Relaxed);
            }
        } else if used < evict_to && self.squeezed.swap(false, Ordering::Relaxed) {
            tracing::info!(free, total, "2.8 cache disk back under 80%");
        }
        let Some((free, total)) = self.disk_space() else { return Ok(true) };
        let limit = share(total, WATERMARK_STOP_WRITES);
        let used = total.saturating_sub(free);
        if used + size <= limit {
            return Ok(true);
        }
        let shortfall = used + size - limit;
        let others = used.saturating_sub(self.cache_bytes_on_disk());
        if others > total / 2 || self.total_bytes() < shortfall {
            return Ok(false);
        }
        self.evict_to(self.total_bytes() - shortfall)?;
        Ok(self
            .disk_space()
            .is_none_or(|(free, total)| total.saturating_sub(free) + size <= share(total, WATERMARK_STOP_WRITES)))
    }

    pub(crate) fn trouble(&self) -> std::sync::MutexGuard<'_, Option<Trouble>> {
        // Updated in single assignments: a poisoned lock still holds a consistent value (2.9).
        self.trouble.lock().unwrap_or_else(|p| p.into_inner())
    }

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

    pub(crate) fn clear_trouble(&self) {
        let Some(was) = self.trouble().take() else { return };
        match was.kind {
            TroubleKind::Full => tracing::info!(was = was.why, "2.8 cache writes work again"),
            TroubleKind::Failed => {
                tracing::info!(was = was.why, "6.6 cache disk passed its check: passthrough mode ends, caching resumes")
            }
        }
    }

    /// Why the cache cannot take new chunks right now (disk full, read-only, I/O errors), if it cannot. The
    /// daemon's status says "degraded" meanwhile.
    pub fn write_failure(&self) -> Option<String> {
        self.trouble().as_ref().map(|t| t.why.clone())
    }

    /// Whether the store is in 6.6 passthrough mode: the disk failed and has not passed a check since; chunks
    /// are neither read nor written, reads go straight to the origin.
    pub fn passthrough(&self) -> bool {
        self.trouble().as_ref().is_some_and(|t| t.kind == TroubleKind::Failed)
    }

    /// Whether chunks may be written now: not in passthrough, or a due check of the disk passes.
    pub(crate) fn writable(&self) -> bool {
        let due = match self.trouble().as_ref() {
            Some(t) if t.kind == TroubleKind::Failed => t.checked.elapsed() >= DISK_RECHECK,
            _ => return true,
        };
        due && self.check_disk()
    }

    /// [`ChunkStore::check_disk`], if caching has stopped and the last check is [`DISK_RECHECK`] old.
    pub fn recheck_disk(&self) {
        let due = self.trouble().as_ref().is_some_and(|t| t.checked.elapsed() >= DISK_RECHECK);
        if due {
            self.check_disk();
        }
    }

    /// Checks a disk that stopped caching, now: a full one (2.8) for room under 99 %, a failing one (6.6) by
    /// writing, syncing, reading back and removing a probe file and committing an index transaction. Clears
    /// the trouble if it passes; true when caching may go on.
    pub fn check_disk(&self) -> bool {
        let Some(kind) = self.trouble().as_ref().map(|t| t.kind) else { return true };
        let result = match kind {
            TroubleKind::Full => match self.disk_pressure() {
                DiskPressure::StopWrites => Err("cache disk still above 99%".to_owned()),
                _ => Ok(()),
            },
            TroubleKind::Failed => self.probe_disk(),
        };
        match result {
            Ok(()) => {
                self.clear_trouble();
                true
            }
            Err(why) => {
                if kind == TroubleKind::Failed {
                    self.stats.disk_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(why, "6.6 cache disk still failing its check");
                }
                if let Some(t) = self.trouble().as_mut() {
                    t.checked = Instant::now();
                }
                false
            }
        }
    }

    pub(crate) fn probe_disk(&self) -> Result<(), String> {
        let path = self.root.join("tmp").join(format!("disk-check.{}", std::process::id()));
        let probe = format!("musicfs cache disk check {:?}", Instant::now());
        let written = self.disk.write_durable(&path, probe.as_bytes());
        let read_back = written.and_then(|()| self.disk.read(&path));
        let _ = std::fs::remove_file(&path);
        match read_back {
            Ok(bytes) if bytes == probe.as_bytes() => {}
            Ok(_) => return Err("the probe file read back different bytes".to_owned()),
            Err(e) => return Err(format!("probe file: {e}")),
        }
        let txn = self.db.begin_write().map_err(|e| format!("chunk index: {e}"))?;
        txn.commit().map_err(|e| format!("chunk index: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
