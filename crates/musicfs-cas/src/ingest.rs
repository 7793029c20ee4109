//! Ingest: the first read of a track streams it from the origin in blocks that grow while the origin keeps up
//! ([`next_block`]), as many in flight as the origin asks for ([`InFlight`]), cuts it into
//! chunks, hands each chunk to readers at once (memory) and to the store (through the [`WriteQueue`]), and
//! finally saves the manifest. One ingest per track at a time ([`Ingests`]); readers follow its progress
//! through a watch channel.
//!
//! Caching the whole track while a reader is still at its start is prefetch: at or above the 95 % watermark
//! (2.8) the ingest stops it and only hands its chunks to readers; the chunks they use are cached by the read
//! path (`Reader::chunk_bytes`), and the rest are fetched by range if they are ever read.

use crate::chunker::ChunkParams;
use crate::disk::DiskPressure;
use crate::error::ReadError;
use crate::hash::ChunkHash;
use crate::manifest::{ChunkRef, Manifest, ManifestCache};
use crate::memory::MemoryCache;
use crate::origin_read::{FileRef, OriginReads, Source};
use crate::pieces::Pieces;
use crate::stats::ReaderStats;
use crate::store::ChunkBackend;
use crate::write_queue::WriteQueue;
use bytes::Bytes;
use musicfs_core::sync_util::lock_or_recover;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// The first origin read of an ingest. Later reads grow while the origin keeps up, up to [`MAX_BLOCK`]: a
/// reader waits only for a small first block, and a slow origin is never asked for more than it can send
/// within its bound (an 8 MiB request to a 1 MB/s origin with a 4.5 s bound would time out every time, open
/// the origin's breaker and fail the reads behind it).
/// 128 KiB is the kernel's default read-ahead window, so the first read a player sends is answered by the
/// first block alone.
const FIRST_BLOCK: usize = 128 << 10;
/// The largest origin read of an ingest.
const MAX_BLOCK: usize = 8 << 20;
/// How far past its readers' furthest read an ingest fetches until a reader has shown it plays the track, by
/// reading on past [`PLAYING_FROM`]. A tag scanner (MPD's first scan, beets) reads the first 64 KiB of every
/// track and goes: unleashed, each of those reads fetched and cached the whole track (a 64 KiB read of a
/// 512 MiB file left 279 MB in the cache), so a scan of a remote library downloaded all of it; with a fixed
/// 4 MiB leash it still fetched 4 MiB per track. A player's next read finds the bytes it asks for on their way.
const LEASH_AHEAD: u64 = 1 << 20;
/// How far readers must read on from the start (or the origin ask for the ingest on any read) before the
/// ingest fetches the rest of the track: past the kernel's first read-ahead of a scanner's 64 KiB read.
const PLAYING_FROM: u64 = 2 << 20;
/// How long a leashed ingest waits for its reader to go on before it ends. A player that goes on later starts
/// a new one, which finds the chunks already cut in the store.
const LEASH_WAIT: Duration = Duration::from_secs(2);
/// The most origin reads one ingest keeps in flight, whatever its origin asks.
const MAX_READS_IN_FLIGHT: usize = 8;
/// Chunks an ingest holds for the store while the write queue is full (a cache disk slower than the origin),
/// in bytes; they are queued once the track has been read. Past this, chunks are left uncached (fetched by
/// range if ever read again).
const DEFERRED_LIMIT: usize = 64 << 20;

/// The next block's size: at most double the last one, and what the origin delivered at its last rate in a
/// quarter of the bound.
fn next_block(last: usize, got: usize, took: Duration, bound: Duration) -> usize {
    let rate = got as f64 / took.as_secs_f64().max(0.001);
    let fits = (rate * bound.as_secs_f64() / 4.0) as usize;
    fits.min(last.saturating_mul(2)).clamp(FIRST_BLOCK, MAX_BLOCK)
}

#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// Chunks cut so far, in order from offset 0.
    pub chunks: Arc<Vec<ChunkRef>>,
    /// Bytes covered by `chunks`.
    pub covered: u64,
    /// Bytes read from the origin but not yet cut into chunks, from `covered` on. Readers are served from them
    /// at once, while they are cut and hashed: a reader waits for the origin, never for the chunker.
    pub uncut: Pieces,
    /// How far readers have been served from `uncut` bytes, shared by every copy of the progress: when the
    /// disk is too full to cache ahead (2.8), the chunks cut from those bytes are still cached, as readers used
    /// them.
    pub served: Arc<AtomicU64>,
    /// How far the track's readers have read on from its start: the ingest's leash ([`LEASH_AHEAD`]).
    pub reach: Arc<Reach>,
    /// No more progress will come (done or failed).
    pub finished: bool,
}

/// How far readers have read a track on from its start, shared by an ingest and its readers.
#[derive(Debug, Default)]
pub struct Reach {
    end: AtomicU64,
    moved: Notify,
}

impl Reach {
    /// A reader that follows on from the start has read up to `end`.
    pub fn note(&self, end: u64) {
        if self.end.fetch_max(end, Ordering::Relaxed) < end {
            self.moved.notify_waiters();
        }
    }

    /// How far into a track of `size` bytes the ingest may fetch now: all of it once a reader has shown it plays
    /// the track, else [`LEASH_AHEAD`] past the furthest read.
    fn limit(&self, size: u64) -> u64 {
        let end = self.end.load(Ordering::Relaxed);
        if end >= PLAYING_FROM { size } else { size.min(end.saturating_add(LEASH_AHEAD)) }
    }

    /// Waits up to [`LEASH_WAIT`] for readers to move the leash to `needed` or beyond; whether they did.
    async fn wait_for(&self, needed: u64, size: u64) -> bool {
        let deadline = tokio::time::Instant::now() + LEASH_WAIT;
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            // Registered before the check, so a note in between is not missed.
            moved.as_mut().enable();
            if self.limit(size) >= needed {
                return true;
            }
            if tokio::time::timeout_at(deadline, moved).await.is_err() {
                return self.limit(size) >= needed;
            }
        }
    }
}

/// The running ingests, and what they need: the origin, the chunk memory, the write queue, the manifests.
pub struct Ingests {
    running: Mutex<HashMap<i64, watch::Receiver<Progress>>>,
    origin: Arc<OriginReads>,
    memory: Arc<MemoryCache>,
    writes: Arc<WriteQueue>,
    manifests: Arc<ManifestCache>,
    /// Asked how full the cache disk is (2.8).
    store: Arc<dyn ChunkBackend>,
    params: ChunkParams,
    /// Ingests have stopped caching ahead (2.8, 95 %); logged once per episode.
    ahead_paused: AtomicBool,
    stats: Arc<ReaderStats>,
}

impl Ingests {
    pub(crate) fn new(
        origin: Arc<OriginReads>,
        memory: Arc<MemoryCache>,
        writes: Arc<WriteQueue>,
        manifests: Arc<ManifestCache>,
        store: Arc<dyn ChunkBackend>,
        params: ChunkParams,
        stats: Arc<ReaderStats>,
    ) -> Ingests {
        Ingests {
            running: Mutex::new(HashMap::new()),
            origin,
            memory,
            writes,
            manifests,
            store,
            params,
            ahead_paused: AtomicBool::new(false),
            stats,
        }
    }

    fn running(&self) -> MutexGuard<'_, HashMap<i64, watch::Receiver<Progress>>> {
        // Single inserts and removes: a poisoned map is still consistent (2.9).
        lock_or_recover(&self.running)
    }

    /// Returns a receiver for the track's ingest, starting one if none runs. The ingest fetches
    /// [`LEASH_AHEAD`] past its readers, then the rest once a reader shows it plays the track ([`Reach`]).
    pub fn start_or_join(self: &Arc<Self>, file: &FileRef) -> watch::Receiver<Progress> {
        let mut running = self.running();
        if let Some(rx) = running.get(&file.track_id) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(Progress::default());
        running.insert(file.track_id, rx.clone());
        let (ingests, file) = (self.clone(), file.clone());
        tokio::spawn(async move {
            let track = file.track_id;
            match ingests.ingest(&file, &tx).await {
                Ok(manifest) => match ingests.manifests.save(track, Arc::new(manifest)).await {
                    Ok(()) => tracing::debug!(track, path = %file.rel_path.display(), "ingested"),
                    Err(e) => tracing::warn!(track, error = %e, "could not save manifest"),
                },
                // Origin failures are in the reader's summary (4.2.3); one line per track would be log spam.
                Err(ReadError::NotPlayed) => {
                    ingests.stats.ingests_not_played.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(track, path = %file.rel_path.display(), "no reader went on; ingest ended at its leash")
                }
                Err(e @ ReadError::Origin(_)) => {
                    tracing::debug!(track, path = %file.rel_path.display(), error = %e, "ingest failed; reads go to the origin")
                }
                Err(e) => {
                    tracing::warn!(track, path = %file.rel_path.display(), error = %e, "ingest failed; reads go to the origin")
                }
            }
            // Out of the running map before it says it has finished: whoever waited for it to finish
            // (`finish`, a re-validation) and then starts an ingest must start a new one, not join this one.
            ingests.running().remove(&track);
            tx.send_modify(|p| p.finished = true);
        });
        rx
    }

    /// [`Ingests::start_or_join`] for the whole track, whoever reads it: a re-validation (4.2.6).
    pub fn start_or_join_whole(self: &Arc<Self>, file: &FileRef) -> watch::Receiver<Progress> {
        let rx = self.start_or_join(file);
        rx.borrow().reach.note(u64::MAX);
        rx
    }

    /// Whether an ingest of the track runs now.
    pub fn is_running(&self, track_id: i64) -> bool {
        self.running().contains_key(&track_id)
    }

    /// Waits for the track's running ingest, if one runs, to finish.
    pub async fn finish(&self, track_id: i64) {
        let running = self.running().get(&track_id).cloned();
        if let Some(mut rx) = running {
            let _ = rx.wait_for(|p| p.finished).await;
        }
    }

    /// Waits until no ingest runs, or until `wait` has passed; says how many still run then.
    pub async fn wait_all(&self, wait: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let running: Vec<_> = self.running().values().cloned().collect();
            if running.is_empty() || tokio::time::Instant::now() >= deadline {
                return running.len();
            }
            for mut rx in running {
                let _ = tokio::time::timeout_at(deadline, rx.wait_for(|p| p.finished)).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn ingest(&self, file: &FileRef, tx: &watch::Sender<Progress>) -> Result<Manifest, ReadError> {
        let size = file.fingerprint.size;
        // Read but not cut yet: the start of the next chunk.
        let mut tail = Bytes::new();
        let mut read_pos = 0u64;
        let mut chunks: Vec<ChunkRef> = Vec::new();
        let mut covered = 0u64;
        let mut from_backup = false;
        let mut want = FIRST_BLOCK;
        let mut deferred = Deferred::default();
        let mut reads = InFlight::new(file.origin.reads_in_flight().clamp(1, MAX_READS_IN_FLIGHT));
        let reach = tx.borrow().reach.clone();
        reads.fill(self, file, reach.limit(size), size, want);
        // Where the ingest's time goes, logged at debug when it ends: waiting for the origin, or cutting.
        let started = std::time::Instant::now();
        let (mut first_block, mut waited, mut cutting, mut blocks) = (None, Duration::ZERO, Duration::ZERO, 0u32);
        let mut joined = 0usize;
        loop {
            if reads.is_empty() && reads.asked_to < size {
                // At the leash: go on only as far as readers lead it.
                if !reach.wait_for(reads.asked_to + InFlight::smallest(reads.asked_to, size), size).await {
                    return Err(ReadError::NotPlayed);
                }
                reads.fill(self, file, reach.limit(size), size, want);
            }
            // An empty file asks for nothing.
            let Some((asked, read)) = reads.next() else { break };
            let wait = std::time::Instant::now();
            let (block, source, took) = read.await??;
            waited += wait.elapsed();
            first_block.get_or_insert(started.elapsed());
            blocks += 1;
            from_backup |= source == Source::Backup;
            read_pos += block.len() as u64;
            let eof = block.len() < asked || read_pos >= size;
            // The backup's speed says nothing of the origin's.
            if source == Source::Origin {
                want = next_block(want, block.len(), took, self.origin.bound(file));
            }
            // The next reads go out before this block is cut: the origin and the CPU work at once. After a
            // short block (the end, or a file that shrank) the reads behind it are moot.
            match eof {
                true => reads.abort(),
                false => reads.fill(self, file, reach.limit(size), size, want),
            }
            let mut uncut = Pieces::from(tail.clone());
            uncut.push(block.clone());
            tx.send_modify(|p| {
                p.chunks = Arc::new(chunks.clone());
                p.covered = covered;
                p.uncut = uncut;
            });
            let cut_started = std::time::Instant::now();
            let Cut { chunks: cut, rest, pressure, joined: copied } =
                self.cut(std::mem::take(&mut tail), block, eof).await?;
            joined += copied;
            cutting += cut_started.elapsed();
            // Readers get the chunks first; only then does the ingest wait for room in the write queue.
            let first_new = chunks.len();
            for (data, hash) in &cut {
                self.memory.insert(*hash, data.clone());
                chunks.push(ChunkRef { offset: covered, len: data.len() as u32, hash: *hash });
                covered += data.len() as u64;
            }
            tail = rest;
            tx.send_modify(|p| {
                p.chunks = Arc::new(chunks.clone());
                p.covered = covered;
                p.uncut = Pieces::from(tail.clone());
            });
            let served = tx.borrow().served.load(Ordering::Relaxed);
            self.cache_ahead(&cut, &chunks[first_new..], pressure, served, &mut deferred);
            if eof {
                break;
            }
        }
        tracing::debug!(
            track = file.track_id,
            bytes = covered,
            blocks,
            first_block_ms = first_block.unwrap_or_default().as_secs_f64() * 1e3,
            waited_ms = waited.as_secs_f64() * 1e3,
            cutting_ms = cutting.as_secs_f64() * 1e3,
            joined_bytes = joined,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "ingest read the track"
        );
        if covered != size {
            return Err(ReadError::Changed);
        }
        // The origin's copy must still be the one the library knows. A backup's copy has its own mtime and
        // stamp, so only its size is checked (above); the manifest is flagged for re-validation (4.2.6).
        if !from_backup && !self.origin.fingerprint(file).await?.matches(&file.fingerprint) {
            return Err(ReadError::Changed);
        }
        // No reader waits for these any more: now the ingest may wait for the disk.
        for (hash, data) in deferred.chunks {
            self.writes.write(hash, data).await;
        }
        self.writes.barrier().await;
        Ok(Manifest { fingerprint: file.fingerprint, chunks, from_backup })
    }

    /// Cuts `tail` and the `block` after it into chunks and hashes them, on a blocking thread; reads how full
    /// the cache disk is too.
    async fn cut(&self, tail: Bytes, block: Bytes, eof: bool) -> Result<Cut, ReadError> {
        let (params, store) = (self.params, self.store.clone());
        Ok(tokio::task::spawn_blocking(move || {
            let cuts = params.cut_blocks(tail, block, eof);
            let chunks = cuts.chunks.into_iter().map(|data| (data.clone(), ChunkHash::of(&data))).collect();
            Cut { pressure: store.disk_pressure(), chunks, rest: cuts.rest, joined: cuts.joined }
        })
        .await?)
    }

    /// Queues the chunks just cut from `buf` for the store; when the disk is too full to cache ahead of
    /// readers (2.8), only those readers were served (below `served`). Never waits: a chunk the queue has no
    /// room for now is held in `deferred`, within its limit, so the next block is read at the origin's pace,
    /// not the cache disk's.
    fn cache_ahead(
        &self,
        data: &[(Bytes, ChunkHash)],
        cut: &[ChunkRef],
        pressure: DiskPressure,
        served: u64,
        deferred: &mut Deferred,
    ) {
        let cut = if self.may_cache_ahead(pressure) {
            cut
        } else {
            let used = cut.iter().take_while(|c| c.offset < served).count();
            self.stats.ahead_not_cached.fetch_add((cut.len() - used) as u64, Ordering::Relaxed);
            &cut[..used]
        };
        deferred.offer_held(&self.writes);
        for ((data, _), c) in data.iter().zip(cut) {
            if !self.writes.offer(c.hash, data.clone()) && !deferred.hold(c.hash, data.clone()) {
                self.stats.ahead_not_cached.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Whether an ingest may cache chunks ahead of its readers at this disk level: not at or above the 95 %
    /// watermark (2.8), where prefetching stops and only the chunks readers use are cached.
    fn may_cache_ahead(&self, pressure: DiskPressure) -> bool {
        let ahead = pressure < DiskPressure::StopPrefetch;
        if self.ahead_paused.swap(!ahead, Ordering::Relaxed) == ahead {
            if ahead {
                tracing::info!("2.8 cache disk under 95% again: ingests cache ahead of their readers again");
            } else {
                tracing::warn!(
                    ?pressure,
                    "2.8 cache disk above 95%: prefetch stopped, only chunks readers use are cached"
                );
            }
        }
        ahead
    }
}

/// One origin read of an ingest: the block, which origin answered, and how long it took.
type BlockRead = JoinHandle<Result<(Bytes, Source, Duration), ReadError>>;

/// The origin reads of an ingest in flight, oldest first, each a task of its own so that it proceeds while the
/// ingest cuts: up to the origin's [`reads_in_flight`](musicfs_origins::Origin::reads_in_flight), in order
/// from where the last one ended. Reads still running when the ingest ends (a failure, a short block) are
/// aborted.
struct InFlight {
    depth: usize,
    /// Where the next read starts.
    asked_to: u64,
    reads: VecDeque<(usize, BlockRead)>,
}

impl InFlight {
    fn new(depth: usize) -> InFlight {
        InFlight { depth, asked_to: 0, reads: VecDeque::new() }
    }

    /// Starts reads of `want` bytes (less at `to`, the end of the file of `size` bytes or the leash) until
    /// `depth` are in flight. None smaller than [`InFlight::smallest`]: a leash that moves a little at a time
    /// would otherwise cost a round trip per step.
    fn fill(&mut self, ingests: &Ingests, file: &FileRef, to: u64, size: u64, want: usize) {
        while self.reads.len() < self.depth && self.asked_to < to {
            let len = (want as u64).min(to - self.asked_to);
            if len < Self::smallest(self.asked_to, size) {
                return;
            }
            let len = len as usize;
            let (origin, file, offset) = (ingests.origin.clone(), file.clone(), self.asked_to);
            self.reads.push_back((
                len,
                tokio::spawn(async move {
                    let asked = tokio::time::Instant::now();
                    let (block, source) = origin.read(&file, offset, len).await?;
                    Ok((block, source, asked.elapsed()))
                }),
            ));
            self.asked_to += len as u64;
        }
    }

    /// The smallest read worth starting at `at` in a file of `size` bytes: a first block, or the rest.
    fn smallest(at: u64, size: u64) -> u64 {
        (FIRST_BLOCK as u64).min(size.saturating_sub(at))
    }

    fn is_empty(&self) -> bool {
        self.reads.is_empty()
    }

    /// The oldest read and how many bytes it asked for.
    fn next(&mut self) -> Option<(usize, BlockRead)> {
        self.reads.pop_front()
    }

    fn abort(&mut self) {
        for (_, read) in self.reads.drain(..) {
            read.abort();
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Chunks an ingest holds for the store while the write queue is full, until the queue has room or the track
/// has been read.
#[derive(Default)]
struct Deferred {
    chunks: VecDeque<(ChunkHash, Bytes)>,
    bytes: usize,
}

impl Deferred {
    /// Holds a chunk; false when that would pass [`DEFERRED_LIMIT`].
    fn hold(&mut self, hash: ChunkHash, data: Bytes) -> bool {
        if self.bytes + data.len() > DEFERRED_LIMIT {
            return false;
        }
        self.bytes += data.len();
        self.chunks.push_back((hash, data));
        true
    }

    /// Queues held chunks, oldest first, while the queue has room.
    fn offer_held(&mut self, writes: &WriteQueue) {
        while let Some((hash, data)) = self.chunks.front() {
            if !writes.offer(*hash, data.clone()) {
                return;
            }
            self.bytes -= data.len();
            self.chunks.pop_front();
        }
    }
}

/// A block cut into chunks: the bytes, each chunk's length and hash from the start of `buf`, and how full the
/// cache disk was.
struct Cut {
    /// The chunks cut, each with its hash.
    chunks: Vec<(Bytes, ChunkHash)>,
    /// The bytes after the last chunk, not cut yet.
    rest: Bytes,
    /// Bytes copied to join the tail before to the block.
    joined: usize,
    pressure: DiskPressure,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ChunkStore;

    /// A chunk of `mib` MiB, its hash made unique by `n` (the bytes are shared, not copied).
    fn chunk(n: u32, mib: usize) -> (ChunkHash, Bytes) {
        (ChunkHash::of(&n.to_le_bytes()), Bytes::from(vec![0u8; mib << 20]))
    }

    /// While the write queue is full, an ingest holds chunks up to its limit and no further: past it they are
    /// left uncached rather than held in memory without bound.
    #[test]
    fn held_chunks_stay_within_their_limit() {
        let mut deferred = Deferred::default();
        let held = (0..100).filter(|&n| {
            let (hash, data) = chunk(n, 1);
            deferred.hold(hash, data)
        });
        assert_eq!(held.count(), DEFERRED_LIMIT >> 20, "1 MiB chunks held");
        assert_eq!(deferred.bytes, DEFERRED_LIMIT);
    }

    /// Held chunks go to the write queue as soon as it has room, and their room in the hold is given back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn held_chunks_go_to_the_queue_once_it_has_room() {
        let dir = tempfile::tempdir().unwrap();
        let writes = WriteQueue::start(Arc::new(ChunkStore::open(dir.path(), 1 << 30).unwrap()));
        let mut deferred = Deferred::default();
        for n in 0..3 {
            let (hash, data) = chunk(n, 2);
            assert!(deferred.hold(hash, data));
        }
        deferred.offer_held(&writes);
        assert!(deferred.chunks.is_empty(), "every held chunk was offered");
        assert_eq!(deferred.bytes, 0);
        let again = (10..100).filter(|&n| {
            let (hash, data) = chunk(n, 1);
            deferred.hold(hash, data)
        });
        assert_eq!(again.count(), DEFERRED_LIMIT >> 20, "the whole limit is free again");
    }

    #[test]
    fn blocks_grow_while_the_origin_keeps_up_and_stay_small_when_it_is_slow() {
        let bound = Duration::from_millis(4500);
        // Local disk: 128 KiB in 1 ms. Doubling up to 8 MiB.
        let mut block = FIRST_BLOCK;
        let mut sizes = Vec::new();
        for _ in 0..8 {
            block = next_block(block, block, Duration::from_millis(1), bound);
            sizes.push(block >> 10);
        }
        assert_eq!(sizes, [256, 512, 1024, 2048, 4096, 8192, 8192, 8192]);
        // 1 MB/s: a quarter of 4.5 s holds about 1.1 MB, never 8 MiB.
        let slow = next_block(4 << 20, 4 << 20, Duration::from_secs(4), bound);
        assert!((FIRST_BLOCK..=(1200 << 10)).contains(&slow), "{slow}");
        // Slower still: never under the first block.
        assert_eq!(next_block(FIRST_BLOCK, FIRST_BLOCK, Duration::from_secs(10), bound), FIRST_BLOCK);
    }
}
