//! The chunk store: one file per chunk under `<cache_dir>/chunks/v1/<2 hex>/<64 hex>`, indexed in redb.
//!
//! Writes go to `tmp/`, are fsynced, renamed into place, their directories fsynced, and only then indexed, so
//! no partial chunk is ever visible (5.7) and the index never names a chunk a crash can take back. Reads re-hash the bytes; a chunk that fails its hash is removed and reported missing so the
//! caller refetches it (6.4). Sizes are accounted exactly from the index, and least-recently-used chunks are
//! evicted beyond `max_size` (3.10). Access times live in memory and are written back in batches.
//!
//! The disk under the store is watched by its [`DiskGuard`] (`disk.rs`): free-space watermarks (2.8,
//! [`DiskPressure`]), and a failing disk (6.6) puts the store in passthrough mode, where it neither reads nor
//! writes chunks until the disk passes a check. Both go through [`CacheDisk`], so tests can fill or break the
//! disk without a real one.

use crate::disk::{CacheDisk, DiskGuard, DiskPressure, GuardedStore, RealDisk, TroubleKind};
pub use crate::error::StoreError;
use crate::hash::ChunkHash;
use bytes::Bytes;
use musicfs_core::sync_util::lock_or_recover;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// hash → (size in bytes, last access as a logical tick: a counter persisted with the index, so LRU order
/// survives restarts and does not depend on the wall clock)
const CHUNKS: TableDefinition<&[u8; 32], (u64, u64)> = TableDefinition::new("chunks");

/// Bump when the on-disk layout changes; an old layout directory is left alone, never misread.
pub const LAYOUT: &str = "v1";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_owned(), source }
}

fn index_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Index(e.to_string())
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    size: u64,
    last_access: u64,
}

#[derive(Default)]
struct Index {
    entries: HashMap<ChunkHash, Entry>,
    /// (last_access, hash): the eviction order.
    lru: BTreeSet<(u64, ChunkHash)>,
    total: u64,
    /// Access times changed since the last write-back.
    dirty: HashMap<ChunkHash, u64>,
    /// Bytes of chunk files written in the current batch but not yet indexed.
    reserved: u64,
}

impl Index {
    fn insert(&mut self, hash: ChunkHash, entry: Entry) {
        if let Some(old) = self.entries.insert(hash, entry) {
            self.lru.remove(&(old.last_access, hash));
            self.total -= old.size;
        }
        self.lru.insert((entry.last_access, hash));
        self.total += entry.size;
    }

    fn remove(&mut self, hash: &ChunkHash) -> Option<Entry> {
        let old = self.entries.remove(hash)?;
        self.lru.remove(&(old.last_access, *hash));
        self.total -= old.size;
        self.dirty.remove(hash);
        Some(old)
    }

    fn touch(&mut self, hash: ChunkHash, now: u64) {
        if let Some(entry) = self.entries.get_mut(&hash)
            && entry.last_access != now
        {
            self.lru.remove(&(entry.last_access, hash));
            entry.last_access = now;
            self.lru.insert((now, hash));
            self.dirty.insert(hash, now);
        }
    }
}

/// Chunks re-hashed at every open, a quick probe for bit rot (the scrubber covers the rest).
const RECHECK_SAMPLE: usize = 8;

/// What [`ChunkStore::reconcile`] found and fixed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    pub orphans_adopted: usize,
    pub orphans_removed: usize,
    pub dangling_dropped: usize,
    pub sample_rotten: usize,
}

impl ReconcileReport {
    pub fn repaired(&self) -> bool {
        self.orphans_adopted + self.orphans_removed + self.dangling_dropped + self.sample_rotten > 0
    }
}

/// What a verification pass found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VerifyReport {
    pub checked: u64,
    pub bytes: u64,
    pub rotten: u64,
}

/// Counters for status and tests.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub corrupt_detected: AtomicU64,
    pub evicted: AtomicU64,
    pub written: AtomicU64,
    /// Chunks not written because the disk was full (2.8) or failing (6.6).
    pub skipped_writes: AtomicU64,
    /// Chunk reads answered "not cached" without touching a failing disk (6.6 passthrough).
    pub bypassed_reads: AtomicU64,
    /// Chunk reads and writes that failed with an I/O error (6.6).
    pub disk_errors: AtomicU64,
}

/// What the reader needs from a chunk store. [`ChunkStore`] is the real one; fault-injecting wrappers
/// (`FaultyCasStore` in musicfs-test-utils) implement it too, so faults travel the real read path.
pub trait ChunkBackend: Send + Sync + 'static {
    /// A verified chunk, or `Ok(None)` when absent or found corrupt (then removed).
    fn get(&self, hash: &ChunkHash) -> Result<Option<Bytes>, StoreError>;
    /// Stores chunks durably, evicting to stay under the size limit.
    fn put_batch(&self, chunks: &[(ChunkHash, Bytes)]) -> Result<(), StoreError>;
    fn contains(&self, hash: &ChunkHash) -> bool;
    /// Writes changed access times back to the index.
    fn flush_access_times(&self) -> Result<usize, StoreError>;
    /// How full the cache disk is (2.8). Wrappers pass it through.
    fn disk_pressure(&self) -> DiskPressure {
        DiskPressure::Normal
    }
    /// If caching has stopped (disk full, 2.8, or failing, 6.6), checks the disk again, at most every
    /// [`DISK_RECHECK`]; caching resumes if it passes. Wrappers pass it through.
    fn recheck_disk(&self) {}
}

impl ChunkBackend for ChunkStore {
    fn get(&self, hash: &ChunkHash) -> Result<Option<Bytes>, StoreError> {
        ChunkStore::get(self, hash)
    }
    fn put_batch(&self, chunks: &[(ChunkHash, Bytes)]) -> Result<(), StoreError> {
        ChunkStore::put_batch(self, chunks)
    }
    fn contains(&self, hash: &ChunkHash) -> bool {
        ChunkStore::contains(self, hash)
    }
    fn flush_access_times(&self) -> Result<usize, StoreError> {
        ChunkStore::flush_access_times(self)
    }
    fn disk_pressure(&self) -> DiskPressure {
        ChunkStore::disk_pressure(self)
    }
    fn recheck_disk(&self) {
        ChunkStore::recheck_disk(self)
    }
}

pub struct ChunkStore {
    root: PathBuf,
    db: redb::Database,
    index: Mutex<Index>,
    max_size: AtomicU64,
    /// The LRU clock: one tick per access.
    clock: AtomicU64,
    /// The disk under the store: chunk file I/O, free space, and whether caching has stopped (2.8, 6.6).
    guard: DiskGuard,
    pub stats: StoreStats,
    /// What opening the store found out of step between the index and the chunk files, and fixed (3.5).
    repaired_at_open: Mutex<ReconcileReport>,
}

impl ChunkStore {
    /// Opens (or creates) the store under `cache_dir`, removes unfinished writes left by a crash, and loads the index.
    pub fn open(cache_dir: &Path, max_size: u64) -> Result<ChunkStore, StoreError> {
        ChunkStore::open_on(cache_dir, max_size, Arc::new(RealDisk))
    }

    /// [`ChunkStore::open`] with chunk file I/O and free space going through `disk`.
    pub fn open_on(cache_dir: &Path, max_size: u64, disk: Arc<dyn CacheDisk>) -> Result<ChunkStore, StoreError> {
        let root = cache_dir.join("chunks").join(LAYOUT);
        let tmp = root.join("tmp");
        disk.create_dir_all(&tmp).map_err(io_err(&tmp))?;
        // Every shard directory exists from the start (its own entry synced below with the index's), so a
        // chunk write is one rename into a directory that is already durable.
        for shard in 0..=u8::MAX {
            let dir = root.join(format!("{shard:02x}"));
            disk.create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        let mut leftovers = 0;
        for item in disk.list(&tmp).map_err(io_err(&tmp))? {
            if disk.remove(&tmp.join(&item.name)).is_ok() {
                leftovers += 1;
            }
        }
        if leftovers > 0 {
            tracing::info!(leftovers, "5.7 removed unfinished chunk writes left by an earlier crash");
        }
        let db_path = root.join("index.redb");
        let opened = disk.open_index(&db_path).map_err(index_err).and_then(|db| {
            // A new index file (or tmp/) is no use if a crash can take its name back.
            disk.sync_dir(&root).map_err(io_err(&root))?;
            let store = ChunkStore::with_db(root.clone(), db, max_size, disk.clone());
            store.load_index().map(|()| store)
        });
        let store = match opened {
            Ok(store) => store,
            Err(e) => {
                // The chunk files are the truth; the index can always be rebuilt from them (3.5).
                let aside = root.join(format!("index.redb.corrupt-{}", std::process::id()));
                tracing::error!(error = %e, moved_to = %aside.display(), "3.5 chunk index unreadable; rebuilding it from the chunk files");
                let _ = disk.rename(&db_path, &aside);
                musicfs_core::aside::prune(&root, "index.redb.corrupt-");
                let db = disk.open_index(&db_path).map_err(index_err)?;
                disk.sync_dir(&root).map_err(io_err(&root))?;
                let store = ChunkStore::with_db(root, db, max_size, disk);
                store.load_index()?;
                store
            }
        };
        let report = store.reconcile()?;
        *lock_or_recover(&store.repaired_at_open) = report.clone();
        if report.repaired() {
            tracing::warn!(
                adopted = report.orphans_adopted,
                removed = report.orphans_removed,
                dangling = report.dangling_dropped,
                rotten = report.sample_rotten,
                "3.5 chunk store reconciled with its index at start"
            );
        }
        Ok(store)
    }

    /// What opening the store found out of step between its index and the chunk files, and fixed.
    pub fn repaired_at_open(&self) -> ReconcileReport {
        lock_or_recover(&self.repaired_at_open).clone()
    }

    fn with_db(root: PathBuf, db: redb::Database, max_size: u64, disk: Arc<dyn CacheDisk>) -> ChunkStore {
        ChunkStore {
            guard: DiskGuard::new(root.clone(), disk),
            root,
            db,
            index: Mutex::new(Index::default()),
            max_size: AtomicU64::new(max_size),
            clock: AtomicU64::new(0),
            stats: StoreStats::default(),
            repaired_at_open: Mutex::new(ReconcileReport::default()),
        }
    }

    /// Makes the index and the chunk files agree (3.5): index entries without a file are dropped; files
    /// without an index entry are adopted if their content matches their name, removed otherwise; a small
    /// sample of indexed chunks is re-hashed (2.4). Runs at every open.
    pub fn reconcile(&self) -> Result<ReconcileReport, StoreError> {
        let mut report = ReconcileReport::default();
        let mut on_disk: HashMap<ChunkHash, u64> = HashMap::new();
        let disk = self.guard.disk();
        for shard in disk.list(&self.root).map_err(io_err(&self.root))? {
            if shard.name.len() != 2 || !shard.is_dir {
                continue;
            }
            let dir = self.root.join(&shard.name);
            for item in disk.list(&dir).map_err(io_err(&dir))? {
                match item.name.to_str().and_then(ChunkHash::from_hex) {
                    Some(hash) => {
                        on_disk.insert(hash, item.len);
                    }
                    None => {
                        let _ = disk.remove(&dir.join(&item.name));
                        report.orphans_removed += 1;
                    }
                }
            }
        }
        let (dangling, orphans): (Vec<ChunkHash>, Vec<ChunkHash>) = {
            let index = self.lock();
            let dangling =
                index.entries.iter().filter(|(h, e)| on_disk.get(h) != Some(&e.size)).map(|(h, _)| *h).collect();
            let orphans = on_disk.keys().filter(|h| !index.entries.contains_key(h)).copied().collect();
            (dangling, orphans)
        };
        if !dangling.is_empty() {
            // A size mismatch means a damaged file: forget() removes the file as well as the entry.
            self.forget(&dangling)?;
            report.dangling_dropped = dangling.len();
        }
        let mut adopt = Vec::new();
        for hash in orphans {
            let path = self.chunk_path(&hash);
            match disk.read(&path) {
                Ok(data) if ChunkHash::of(&data) == hash => adopt.push((hash, data.len() as u64)),
                _ => {
                    let _ = disk.remove(&path);
                    report.orphans_removed += 1;
                }
            }
        }
        if !adopt.is_empty() {
            let txn = self.db.begin_write().map_err(index_err)?;
            {
                let mut table = txn.open_table(CHUNKS).map_err(index_err)?;
                for (hash, size) in &adopt {
                    // Adopted chunks count as least recently used: first to go when space is needed.
                    table.insert(&hash.0, (*size, 0)).map_err(index_err)?;
                }
            }
            txn.commit().map_err(index_err)?;
            let mut index = self.lock();
            for (hash, size) in &adopt {
                index.insert(*hash, Entry { size: *size, last_access: 0 });
            }
            report.orphans_adopted = adopt.len();
        }
        let sample: Vec<ChunkHash> = self.lock().entries.keys().take(RECHECK_SAMPLE).copied().collect();
        for hash in sample {
            if self.read_verified(&hash)?.is_none() {
                report.sample_rotten += 1;
            }
        }
        Ok(report)
    }

    fn load_index(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(index_err)?;
        txn.open_table(CHUNKS).map_err(index_err)?;
        txn.commit().map_err(index_err)?;
        let txn = self.db.begin_read().map_err(index_err)?;
        let table = txn.open_table(CHUNKS).map_err(index_err)?;
        let mut index = self.lock();
        for row in table.iter().map_err(index_err)? {
            let (key, value) = row.map_err(index_err)?;
            let (size, last_access) = value.value();
            index.insert(ChunkHash(*key.value()), Entry { size, last_access });
            self.clock.fetch_max(last_access, Ordering::Relaxed);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        // A panic while holding this lock leaves the index consistent (every method updates it atomically
        // under the lock), so a poisoned lock is safe to keep using (2.9).
        lock_or_recover(&self.index)
    }

    pub fn chunk_path(&self, hash: &ChunkHash) -> PathBuf {
        let hex = hash.to_hex();
        self.root.join(&hex[..2]).join(hex)
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn contains(&self, hash: &ChunkHash) -> bool {
        self.lock().entries.contains_key(hash)
    }

    /// Exact bytes of all indexed chunks.
    pub fn total_bytes(&self) -> u64 {
        self.lock().total
    }

    pub fn chunk_count(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn max_size(&self) -> u64 {
        self.max_size.load(Ordering::Relaxed)
    }

    /// Changes the size limit at runtime (config reload) and evicts down to it.
    pub fn set_max_size(&self, max_size: u64) {
        self.max_size.store(max_size, Ordering::Relaxed);
        if let Err(e) = self.evict_to(max_size) {
            tracing::warn!(error = %e, "could not evict down to the new size limit");
        }
    }

    /// Reads and verifies a chunk. `Ok(None)` when absent, or when it was corrupt (it is then removed), or
    /// while the disk is failing (6.6 passthrough: the caller reads the origin). A read counts as a use for
    /// eviction.
    pub fn get(&self, hash: &ChunkHash) -> Result<Option<Bytes>, StoreError> {
        if self.passthrough() {
            self.stats.bypassed_reads.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        let data = self.read_verified(hash)?;
        if data.is_some() {
            let tick = self.tick();
            self.lock().touch(*hash, tick);
        }
        Ok(data)
    }

    /// Re-hashes every chunk; rotten ones are removed (and refetched when next read). `musicfs cache verify`.
    pub fn verify_all(&self) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        let mut cursor = None;
        loop {
            let (next, step) = self.scrub_step(cursor, 256)?;
            report.checked += step.checked;
            report.bytes += step.bytes;
            report.rotten += step.rotten;
            match next {
                Some(next) => cursor = Some(next),
                None => return Ok(report),
            }
        }
    }

    /// Verifies up to `count` chunks after `after` in hash order; returns where to continue (None: done, start
    /// over). The background scrubber calls this a little at a time to find bit rot before a reader does (6.4).
    pub fn scrub_step(
        &self,
        after: Option<ChunkHash>,
        count: usize,
    ) -> Result<(Option<ChunkHash>, VerifyReport), StoreError> {
        if self.passthrough() {
            // 6.6: a failing disk is left alone until it passes a check; the next round starts over.
            return Ok((None, VerifyReport::default()));
        }
        let mut batch: Vec<(ChunkHash, u64)> = self
            .lock()
            .entries
            .iter()
            .filter(|(h, _)| after.is_none_or(|a| **h > a))
            .map(|(h, e)| (*h, e.size))
            .collect();
        batch.sort_unstable();
        let more = batch.len() > count;
        batch.truncate(count);
        let mut report = VerifyReport::default();
        for (hash, size) in &batch {
            report.checked += 1;
            report.bytes += size;
            if self.read_verified(hash)?.is_none() {
                report.rotten += 1;
            }
        }
        let next = if more { batch.last().map(|(h, _)| *h) } else { None };
        Ok((next, report))
    }

    /// Throws the index away and rebuilds it from the chunk files, verifying each (`musicfs cache repair`).
    pub fn rebuild(cache_dir: &Path, max_size: u64) -> Result<ChunkStore, StoreError> {
        let index = cache_dir.join("chunks").join(LAYOUT).join("index.redb");
        if index.exists() {
            let aside = index.with_extension(format!("redb.replaced-{}", std::process::id()));
            std::fs::rename(&index, &aside).map_err(io_err(&index))?;
            tracing::info!(moved_to = %aside.display(), "6.3 old chunk index set aside; rebuilding from the chunk files");
        }
        ChunkStore::open(cache_dir, max_size)
    }

    /// Reads and verifies a chunk without counting it as a use (integrity checks, scrubbing).
    pub fn read_verified(&self, hash: &ChunkHash) -> Result<Option<Bytes>, StoreError> {
        if !self.contains(hash) {
            return Ok(None);
        }
        let path = self.chunk_path(hash);
        let data = match self.guard.disk().read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(chunk = %hash, "6.4 indexed chunk file is missing; dropping it from the index");
                self.forget(&[*hash])?;
                return Ok(None);
            }
            Err(e) => {
                // 6.6: the disk fails under a read. Drop the chunk (it is refetched and rewritten once the disk
                // is back: a bad spot does not fail it again), best effort: a dead disk refuses that too.
                self.stats.disk_errors.fetch_add(1, Ordering::Relaxed);
                self.guard.note_trouble(TroubleKind::Failed, &format!("reading a chunk: {e}"));
                let _ = self.forget(&[*hash]);
                return Err(StoreError::Io { path, source: e });
            }
        };
        if ChunkHash::of(&data) != *hash {
            self.stats.corrupt_detected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(chunk = %hash, path = %path.display(), "6.4 chunk failed its hash check; removed, will refetch");
            let _ = self.guard.disk().remove(&path);
            self.forget(&[*hash])?;
            return Ok(None);
        }
        Ok(Some(Bytes::from(data)))
    }

    /// Stores chunks durably (tmp + fsync + rename, one fsync per directory renamed into, then one index
    /// transaction). Room is made first, by
    /// evicting least-recently-used chunks, so the bytes on disk never exceed `max_size`, even for a moment.
    /// Chunks already present are skipped. The caller guarantees each hash matches its bytes.
    ///
    /// A full disk (2.8) or a failing one (6.6) costs caching, not the caller: chunks that cannot be written
    /// are skipped (`Ok`); only the batch in which a write fails returns its error.
    pub fn put_batch(&self, chunks: &[(ChunkHash, Bytes)]) -> Result<(), StoreError> {
        if !self.guard.writable(self) {
            self.stats.skipped_writes.fetch_add(chunks.len() as u64, Ordering::Relaxed);
            return Ok(());
        }
        let mut added: Vec<(ChunkHash, u64)> = Vec::new();
        let result = self.write_new_chunks(chunks, &mut added);
        // Index whatever reached its final place, even if a later chunk failed (e.g. ENOSPC).
        if !added.is_empty() {
            fail::fail_point!("cas::put::after_rename_before_index", |_| {
                Err(StoreError::Index("failpoint cas::put::after_rename_before_index".into()))
            });
            let ticks: Vec<u64> = added.iter().map(|_| self.tick()).collect();
            let indexed = self.sync_chunk_dirs(&added).and_then(|()| self.index_new_chunks(&added, &ticks));
            if let Err(e) = indexed {
                // The index lives on the same disk (6.6). The files cannot be found without it: remove them
                // and give back their reservation, so the size accounting stays exact.
                let mut index = self.lock();
                for (hash, size) in &added {
                    index.reserved -= size;
                    let _ = self.guard.disk().remove(&self.chunk_path(hash));
                }
                drop(index);
                self.stats.disk_errors.fetch_add(1, Ordering::Relaxed);
                self.guard.note_trouble(TroubleKind::Failed, &format!("indexing new chunks: {e}"));
                return Err(e);
            }
            let mut index = self.lock();
            for ((hash, size), tick) in added.iter().zip(&ticks) {
                index.insert(*hash, Entry { size: *size, last_access: *tick });
                index.reserved -= size;
            }
            drop(index);
            self.stats.written.fetch_add(added.len() as u64, Ordering::Relaxed);
            if matches!(result, Ok(true)) {
                self.guard.clear_trouble();
            }
        }
        result.map(|_| ())
    }

    /// Makes the renames of `added` durable before the index names them: without this a crash can keep the
    /// index's commit and lose the rename (the index would name a chunk that is not there).
    fn sync_chunk_dirs(&self, added: &[(ChunkHash, u64)]) -> Result<(), StoreError> {
        let dirs: BTreeSet<PathBuf> =
            added.iter().filter_map(|(hash, _)| self.chunk_path(hash).parent().map(Path::to_owned)).collect();
        for dir in &dirs {
            self.guard.disk().sync_dir(dir).map_err(io_err(dir))?;
        }
        Ok(())
    }

    fn index_new_chunks(&self, added: &[(ChunkHash, u64)], ticks: &[u64]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(index_err)?;
        {
            let mut table = txn.open_table(CHUNKS).map_err(index_err)?;
            for ((hash, size), tick) in added.iter().zip(ticks) {
                table.insert(&hash.0, (*size, *tick)).map_err(index_err)?;
            }
        }
        txn.commit().map_err(index_err)
    }

    /// Writes the chunks not yet stored; true when all of them were, false when the disk had no room (2.8).
    fn write_new_chunks(
        &self,
        chunks: &[(ChunkHash, Bytes)],
        added: &mut Vec<(ChunkHash, u64)>,
    ) -> Result<bool, StoreError> {
        for (at, (hash, data)) in chunks.iter().enumerate() {
            if self.contains(hash) || added.iter().any(|(h, _)| h == hash) {
                continue;
            }
            let size = data.len() as u64;
            // 2.8: the filesystem under the cache may fill up for reasons of its own (other files, a small
            // disk): watermarks on its real free space, not only on max_size.
            if !self.guard.make_room(size, self)? {
                let skipped = chunks[at..].iter().filter(|(h, _)| !self.contains(h)).count();
                self.stats.skipped_writes.fetch_add(skipped as u64, Ordering::Relaxed);
                self.guard
                    .note_trouble(TroubleKind::Full, "cache disk above 99%: not caching, reading from the origin");
                return Ok(false);
            }
            // Written but not yet indexed chunks count against the limit too.
            let pending = self.lock().reserved;
            self.evict_to(self.max_size().saturating_sub(size + pending))?;
            self.lock().reserved += size;
            if let Err(e) = self.write_chunk_file(hash, data) {
                self.lock().reserved -= size;
                let no_room = matches!(&e, StoreError::Io { source, .. }
                    if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)));
                if no_room {
                    self.guard.note_trouble(TroubleKind::Full, &e.to_string());
                } else {
                    self.stats.disk_errors.fetch_add(1, Ordering::Relaxed);
                    self.guard.note_trouble(TroubleKind::Failed, &e.to_string());
                }
                return Err(e);
            }
            added.push((*hash, size));
        }
        Ok(true)
    }

    fn write_chunk_file(&self, hash: &ChunkHash, data: &[u8]) -> Result<(), StoreError> {
        let final_path = self.chunk_path(hash);
        let tmp_path = self.root.join("tmp").join(format!("{}.{}", hash.to_hex(), std::process::id()));
        fail::fail_point!("cas::put::before_write", |_| Err(StoreError::Io {
            path: tmp_path.clone(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        }));
        let disk = self.guard.disk();
        if let Err(e) = disk.write_durable(&tmp_path, data) {
            // A half-written temp file on a full disk would only make it fuller.
            let _ = disk.remove(&tmp_path);
            return Err(StoreError::Io { path: tmp_path, source: e });
        }
        fail::fail_point!("cas::put::after_write_before_rename", |_| Err(StoreError::Io {
            path: tmp_path.clone(),
            source: std::io::Error::other("failpoint cas::put::after_write_before_rename"),
        }));
        let mut renamed = disk.rename(&tmp_path, &final_path);
        if let (Err(e), Some(dir)) = (&renamed, final_path.parent())
            && e.kind() == std::io::ErrorKind::NotFound
        {
            // Someone removed the shard directory under a running store: make it again, durably.
            disk.create_dir_all(dir).map_err(io_err(dir))?;
            disk.sync_dir(&self.root).map_err(io_err(&self.root))?;
            renamed = disk.rename(&tmp_path, &final_path);
        }
        if let Err(e) = renamed {
            let _ = disk.remove(&tmp_path);
            return Err(StoreError::Io { path: final_path, source: e });
        }
        Ok(())
    }

    /// Removes chunks from the index and disk.
    pub fn forget(&self, hashes: &[ChunkHash]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(index_err)?;
        {
            let mut table = txn.open_table(CHUNKS).map_err(index_err)?;
            for hash in hashes {
                table.remove(&hash.0).map_err(index_err)?;
            }
        }
        txn.commit().map_err(index_err)?;
        let mut index = self.lock();
        for hash in hashes {
            index.remove(hash);
            // Not synced: a removal a crash takes back leaves an orphan, which the next open adopts.
            let _ = self.guard.disk().remove(&self.chunk_path(hash));
        }
        Ok(())
    }

    /// Evicts least-recently-used chunks until at most `limit` bytes remain.
    pub fn evict_to(&self, limit: u64) -> Result<u64, StoreError> {
        let victims: Vec<ChunkHash> = {
            let index = self.lock();
            let mut excess = index.total.saturating_sub(limit);
            let mut victims = Vec::new();
            for (_, hash) in index.lru.iter() {
                if excess == 0 {
                    break;
                }
                let size = index.entries.get(hash).map_or(0, |e| e.size);
                excess = excess.saturating_sub(size);
                victims.push(*hash);
            }
            victims
        };
        if victims.is_empty() {
            return Ok(0);
        }
        self.forget(&victims)?;
        self.stats.evicted.fetch_add(victims.len() as u64, Ordering::Relaxed);
        tracing::debug!(evicted = victims.len(), total = self.total_bytes(), "3.10 evicted chunks beyond max_size");
        Ok(victims.len() as u64)
    }

    /// Writes changed access times to the index (periodically and at shutdown), so LRU order survives restarts.
    pub fn flush_access_times(&self) -> Result<usize, StoreError> {
        if self.passthrough() {
            // 6.6: kept in memory until the disk passes a check.
            return Ok(0);
        }
        let dirty: Vec<(ChunkHash, u64)> = std::mem::take(&mut self.lock().dirty).into_iter().collect();
        if dirty.is_empty() {
            return Ok(0);
        }
        let txn = self.db.begin_write().map_err(index_err)?;
        {
            let mut table = txn.open_table(CHUNKS).map_err(index_err)?;
            for (hash, at) in &dirty {
                let size = table.get(&hash.0).map_err(index_err)?.map(|v| v.value().0);
                if let Some(size) = size {
                    table.insert(&hash.0, (size, *at)).map_err(index_err)?;
                }
            }
        }
        txn.commit().map_err(index_err)?;
        Ok(dirty.len())
    }
}

/// The store's disk, as the rest of the program sees it (2.8, 6.6): the [`DiskGuard`] decides, the store
/// answers.
impl ChunkStore {
    /// (free bytes, total bytes) of the cache filesystem (statvfs), if it can be read.
    pub fn disk_space(&self) -> Option<(u64, u64)> {
        self.guard.space()
    }

    /// The cache filesystem's level by the 2.8 watermarks (`Normal` when its space cannot be read).
    pub fn disk_pressure(&self) -> DiskPressure {
        self.guard.pressure()
    }

    /// Why the cache cannot take new chunks right now (disk full, read-only, I/O errors), if it cannot. The
    /// daemon's status says "degraded" meanwhile.
    pub fn write_failure(&self) -> Option<String> {
        self.guard.write_failure()
    }

    /// Whether the store is in 6.6 passthrough mode: the disk failed and has not passed a check since; chunks
    /// are neither read nor written, reads go straight to the origin.
    pub fn passthrough(&self) -> bool {
        self.guard.passthrough()
    }

    /// If caching has stopped and the last check of the disk is [`crate::disk::DISK_RECHECK`] old, checks it
    /// again (see [`ChunkStore::check_disk`]).
    pub fn recheck_disk(&self) {
        self.guard.recheck(self)
    }

    /// Checks a disk that stopped caching, now: a full one (2.8) for room under 99 %, a failing one (6.6) by
    /// writing, syncing, reading back and removing a probe file and committing an index transaction. True
    /// when caching may go on.
    pub fn check_disk(&self) -> bool {
        self.guard.check(self)
    }

    /// Checks of a failing disk (6.6) that failed again.
    pub fn failed_disk_checks(&self) -> u64 {
        self.guard.failed_checks.load(Ordering::Relaxed)
    }
}

impl GuardedStore for ChunkStore {
    fn bytes_on_disk(&self) -> u64 {
        let index = self.lock();
        index.total + index.reserved
    }

    fn indexed_bytes(&self) -> u64 {
        self.total_bytes()
    }

    fn evict_to(&self, limit: u64) -> Result<u64, StoreError> {
        ChunkStore::evict_to(self, limit)
    }

    fn commit_index(&self) -> Result<(), StoreError> {
        self.db.begin_write().map_err(index_err)?.commit().map_err(index_err)
    }
}

#[cfg(test)]
mod crash_disk;
#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod tests;
