//! The read path in-process, against the in-memory origin that counts what it serves: ingest on first read,
//! no origin traffic once cached, exactly the missing chunk refetched, corrupt chunks never served.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod common;
use bytes::Bytes;
use common::read_all;
use musicfs_cas::manifest::MemoryManifests;
use musicfs_cas::{ChunkParams, ChunkStore, FileRef, Fingerprint, ManifestStore, Reader};
use musicfs_origins::memory::MemoryOrigin;
use rand::{RngCore, SeedableRng};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

const PARAMS: ChunkParams = ChunkParams { min: 4096, avg: 16384, max: 65536 };
/// Chunks about a quarter of the real ones, for tracks of several MiB read as a player reads them.
const MIB_TRACK: ChunkParams = ChunkParams { min: 64 << 10, avg: 256 << 10, max: 1 << 20 };

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<ChunkStore>,
    params: ChunkParams,
    origin: Arc<MemoryOrigin>,
    manifests: Arc<MemoryManifests>,
    data: Vec<u8>,
}

impl Fixture {
    fn new(len: usize) -> Fixture {
        Fixture::with_params(len, PARAMS)
    }

    fn with_params(len: usize, params: ChunkParams) -> Fixture {
        let mut data = vec![0u8; len];
        rand::rngs::StdRng::seed_from_u64(1).fill_bytes(&mut data);
        let origin = Arc::new(MemoryOrigin::new());
        origin.insert("t.flac", Bytes::from(data.clone()), 1);
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ChunkStore::open(dir.path(), 1 << 30).unwrap());
        Fixture { _dir: dir, store, params, origin, manifests: Arc::new(MemoryManifests::default()), data }
    }

    /// A fresh reader over the same store and manifests: an empty memory cache, as after a restart.
    fn reader(&self) -> Arc<Reader> {
        let manifests: Arc<dyn ManifestStore> = self.manifests.clone();
        Reader::new(self.store.clone(), manifests, self.params, 1 << 20, Duration::from_secs(5))
    }

    fn file(&self) -> FileRef {
        FileRef {
            track_id: 1,
            origin: self.origin.clone(),
            backup: None,
            rel_path: PathBuf::from("t.flac"),
            fingerprint: Fingerprint { size: self.data.len() as u64, mtime_ns: 1, version: 0 },
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_cached_a_track_is_read_without_touching_the_origin() {
    let fx = Fixture::new(1 << 20);
    let reader = fx.reader();
    assert_eq!(read_all(&reader, &fx.file(), 131072).await, fx.data);
    reader.flush(Duration::from_secs(5)).await.unwrap();
    assert!(fx.manifests.load(1).unwrap().is_some(), "the manifest is saved after ingest");
    let origin_reads = fx.origin.reads();
    assert!(origin_reads >= 1);

    let reader = fx.reader();
    assert!(reader.is_cached(&fx.file()).await.unwrap());
    assert_eq!(read_all(&reader, &fx.file(), 4096).await, fx.data);
    assert_eq!(fx.origin.reads(), origin_reads, "no origin read after restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_chunk_is_refetched_alone() {
    let fx = Fixture::new(1 << 20);
    let reader = fx.reader();
    read_all(&reader, &fx.file(), 65536).await;
    reader.flush(Duration::from_secs(5)).await.unwrap();
    let manifest = fx.manifests.load(1).unwrap().unwrap();
    let victim = manifest.chunks[manifest.chunks.len() / 2];
    fx.store.forget(&[victim.hash]).unwrap();
    drop(reader);

    let reader = fx.reader();
    let (reads, bytes) = (fx.origin.reads(), fx.origin.bytes_read());
    assert_eq!(read_all(&reader, &fx.file(), 65536).await, fx.data);
    assert_eq!(fx.origin.reads(), reads + 1, "one origin read, for the one missing chunk");
    assert_eq!(fx.origin.bytes_read(), bytes + victim.len as u64, "exactly the missing byte range");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotten_chunk_is_never_served() {
    let fx = Fixture::new(512 << 10);
    let reader = fx.reader();
    read_all(&reader, &fx.file(), 65536).await;
    reader.flush(Duration::from_secs(5)).await.unwrap();
    let first = fx.manifests.load(1).unwrap().unwrap().chunks[0];
    let path = fx.store.chunk_path(&first.hash);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    drop(reader);

    let reader = fx.reader();
    assert_eq!(read_all(&reader, &fx.file(), 65536).await, fx.data);
    assert_eq!(fx.store.stats.corrupt_detected.load(Ordering::Relaxed), 1);
    // The refetched chunk is written back behind the read.
    reader.flush(Duration::from_secs(5)).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), fx.data[..first.len as usize], "rewritten with the true bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_far_ahead_of_the_ingest_goes_straight_to_the_origin() {
    let fx = Fixture::with_params(40 << 20, ChunkParams { min: 256 << 10, avg: 1 << 20, max: 4 << 20 });
    let reader = fx.reader();
    let offset = 39 << 20;
    let got = reader.read(&fx.file(), offset, 4096).await.unwrap();
    assert_eq!(&got[..], &fx.data[offset as usize..offset as usize + 4096]);
    assert!(reader.stats.passthrough_reads.load(Ordering::Relaxed) >= 1);
    reader.flush(Duration::from_secs(30)).await.unwrap();
    assert_eq!(read_all(&reader, &fx.file(), 1 << 20).await, fx.data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_keeps_as_many_reads_in_flight_as_its_origin_asks_and_the_bytes_stay_in_order() {
    let fx = Fixture::with_params(12 << 20, MIB_TRACK);
    fx.origin.set_latency(Duration::from_millis(20));
    fx.origin.set_reads_in_flight(4);
    let reader = fx.reader();
    assert_eq!(read_all(&reader, &fx.file(), 1 << 20).await, fx.data);
    reader.flush(Duration::from_secs(30)).await.unwrap();
    assert_eq!(fx.origin.max_in_flight(), 4, "reads in flight at most");
    // The manifest made from blocks that arrived four at a time covers the track in order.
    let chunks = fx.manifests.load(1).unwrap().unwrap().chunks;
    let cached = fx.reader();
    let reads = fx.origin.reads();
    assert_eq!(read_all(&cached, &fx.file(), 1 << 20).await, fx.data);
    assert_eq!(fx.origin.reads(), reads, "served from the {} chunks cached", chunks.len());
}

/// A random read that happens to land just ahead of the ingest's front, far from where the track's last read
/// ended, is not a reader at the front: it fetches its own range at once instead of waiting for the blocks
/// on their way (up to 8 MiB each; on SFTP that wait was the random-read p99).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_read_near_the_ingest_front_does_not_wait_for_it() {
    let fx = Fixture::with_params(16 << 20, MIB_TRACK);
    fx.origin.set_latency(Duration::from_millis(200));
    let reader = fx.reader();
    // A player starts the ingest at the start of the track.
    assert_eq!(&reader.read(&fx.file(), 0, 4096).await.unwrap()[..], &fx.data[..4096]);
    for offset in [10u64 << 20, 1 << 20] {
        let got = reader.read(&fx.file(), offset, 4096).await.unwrap();
        assert_eq!(&got[..], &fx.data[offset as usize..offset as usize + 4096]);
    }
    assert_eq!(reader.stats.passthrough_reads.load(Ordering::Relaxed), 2, "both fetched at once");
    // A reader that goes on from there waits for the ingest at its front, as before.
    let next = (1 << 20) + 4096;
    let got = reader.read(&fx.file(), next, 4096).await.unwrap();
    assert_eq!(&got[..], &fx.data[next as usize..next as usize + 4096]);
    assert_eq!(reader.stats.passthrough_reads.load(Ordering::Relaxed), 2, "the sequential read waited");
    reader.flush(Duration::from_secs(30)).await.unwrap();
    assert_eq!(read_all(&reader, &fx.file(), 1 << 20).await, fx.data);
}

/// Random reads of an uncached track fetch their own ranges and start no ingest: an ingest reads the whole
/// track, and on two cores it slowed every random read down while it ran (the SFTP random-read p99). A reader
/// that starts mid-track and goes on reading is a player: its second read in a row that starts where the
/// last one ended starts the ingest, which then caches the whole track. Reads of a track with no manifest ask
/// the manifest store once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_reads_start_no_ingest_and_a_player_starting_mid_track_does() {
    let fx = Fixture::with_params(16 << 20, MIB_TRACK);
    let reader = fx.reader();
    for offset in [10u64 << 20, 3 << 20, (3 << 20) + 8192, 7 << 20, 12 << 20] {
        let got = reader.read(&fx.file(), offset, 4096).await.unwrap();
        assert_eq!(&got[..], &fx.data[offset as usize..offset as usize + 4096]);
    }
    // An ingest, had one started, would have read much of the track by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fx.origin.bytes_read(), 5 * 4096, "only the random reads' own ranges were fetched");
    assert_eq!(reader.stats.passthrough_reads.load(Ordering::Relaxed), 5);
    // The store was asked for the track's manifest once, not before every read (a blocking-thread round trip).
    assert_eq!(fx.manifests.loads(), 1, "manifest loads for five reads of an uncached track");

    // A player resuming at 5 MiB: its first two reads are fetched by range, its third starts the ingest.
    let mut at = 5u64 << 20;
    for _ in 0..2 {
        assert_eq!(&reader.read(&fx.file(), at, 65536).await.unwrap()[..], &fx.data[at as usize..at as usize + 65536]);
        at += 65536;
    }
    assert_eq!(fx.origin.bytes_read(), 5 * 4096 + 2 * 65536, "no ingest yet");
    reader.read(&fx.file(), at, 65536).await.unwrap();
    reader.flush(Duration::from_secs(30)).await.unwrap();
    assert!(reader.is_cached(&fx.file()).await.unwrap(), "the ingest cached the whole track");
}

/// A tag scanner (MPD's first scan, beets) reads the first 64 KiB of each track and goes. The ingest that read
/// starts fetches the first few MiB and ends when no reader goes on, instead of fetching the whole track;
/// a player that then reads the track through has all of it cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_scanner_reading_the_start_of_a_track_does_not_fetch_all_of_it() {
    let fx = Fixture::with_params(32 << 20, MIB_TRACK);
    let reader = fx.reader();
    assert_eq!(&reader.read(&fx.file(), 0, 65536).await.unwrap()[..], &fx.data[..65536]);
    // Waits for the ingest, which ends at its leash once no reader has gone on for a while.
    reader.flush(Duration::from_secs(30)).await.unwrap();
    let fetched = fx.origin.bytes_read();
    // The leash: about 1 MiB past the read (it was a fixed 4 MiB, and the whole track before that).
    assert!(fetched <= (1 << 20) + (256 << 10), "{fetched} bytes fetched for a 64 KiB read of a 32 MiB track");
    assert_eq!(reader.stats.ingests_not_played.load(Ordering::Relaxed), 1);
    assert!(!reader.is_cached(&fx.file()).await.unwrap());

    assert_eq!(read_all(&reader, &fx.file(), 1 << 20).await, fx.data);
    reader.flush(Duration::from_secs(30)).await.unwrap();
    assert!(reader.is_cached(&fx.file()).await.unwrap(), "the player's reads cached the whole track");
}

/// A track that shrank on its origin since the scan: the ingest's short block is the end of what there is. It
/// stops there (no reads past the end), saves no manifest, and the reader still gets the origin's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_of_a_track_that_shrank_stops_at_its_end() {
    let fx = Fixture::with_params(16 << 20, MIB_TRACK);
    let now = (3 << 20) + 100;
    fx.origin.insert("t.flac", Bytes::from(fx.data[..now].to_vec()), 1);
    let reader = fx.reader();
    assert_eq!(&reader.read(&fx.file(), 0, 4 << 20).await.unwrap()[..], &fx.data[..now]);
    reader.flush(Duration::from_secs(30)).await.unwrap();
    assert_eq!(fx.origin.reads_past_end(), 0, "the ingest asked for bytes past the short block");
    assert!(!reader.is_cached(&fx.file()).await.unwrap(), "no manifest for a track that is not what was scanned");
}

/// A track of `len` bytes read through by a player, 1 MiB a read, and cached whole.
async fn played_through(len: usize) -> (Fixture, Arc<Reader>) {
    let fx = Fixture::with_params(len, MIB_TRACK);
    let reader = fx.reader();
    assert_eq!(read_all(&reader, &fx.file(), 1 << 20).await, fx.data);
    reader.flush(Duration::from_secs(30)).await.unwrap();
    assert!(reader.is_cached(&fx.file()).await.unwrap(), "a track read through is cached");
    (fx, reader)
}

/// An ingest asks a fast origin for ever larger blocks (up to 8 MiB): one round trip per 128 KiB would cost a
/// remote origin its throughput, and so would a leash moving a little at a time. A 16 MiB track read by a
/// player takes 8 origin reads, not 128. Block sizes follow the origin's measured pace, and under a loaded
/// test run an in-memory origin can look slow (27 reads were seen): the bound is loose, far under 128.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_asks_an_origin_that_keeps_up_for_larger_blocks() {
    let (fx, _reader) = played_through(16 << 20).await;
    let reads = fx.origin.reads();
    assert!(reads <= 48, "{reads} origin reads for a 16 MiB track");
}

/// A track rewritten on its origin at the same size (a re-tag that keeps the length) has a new mtime: the
/// manifest of the old version is not used, and the reader gets the new bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_rewritten_at_the_same_size_is_read_anew() {
    let (fx, reader) = played_through(4 << 20).await;
    let mut rewritten = fx.data.clone();
    rewritten[..4096].fill(7);
    fx.origin.insert("t.flac", Bytes::from(rewritten.clone()), 2);
    let now = FileRef { fingerprint: Fingerprint { mtime_ns: 2, ..fx.file().fingerprint }, ..fx.file() };
    assert_eq!(read_all(&reader, &now, 1 << 20).await, rewritten, "the new version's bytes");
}

/// An object store asks for the ingest on any read: a random read there costs a round trip of tens of ms and a
/// request, and one pass over the track makes every later read a cache hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_an_object_store_a_random_read_starts_the_ingest() {
    let fx = Fixture::with_params(4 << 20, MIB_TRACK);
    fx.origin.set_random_reads_ingest(true);
    let reader = fx.reader();
    let offset = 3u64 << 20;
    assert_eq!(&reader.read(&fx.file(), offset, 4096).await.unwrap()[..], &fx.data[offset as usize..][..4096]);
    reader.flush(Duration::from_secs(30)).await.unwrap();
    assert!(reader.is_cached(&fx.file()).await.unwrap(), "the random read's ingest cached the whole track");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_a_few_mib_ahead_of_the_ingest_fetches_its_own_range_at_once() {
    // A remote-like origin: the ingest has fetched little when the second read comes.
    let fx = Fixture::with_params(16 << 20, MIB_TRACK);
    fx.origin.set_latency(Duration::from_millis(200));
    let reader = fx.reader();
    let first = tokio::spawn({
        let (reader, file) = (reader.clone(), fx.file());
        async move { reader.read(&file, 0, 4096).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let offset = 6 << 20;
    let got = reader.read(&fx.file(), offset, 4096).await.unwrap();
    assert_eq!(&got[..], &fx.data[offset as usize..offset as usize + 4096]);
    assert_eq!(reader.stats.passthrough_reads.load(Ordering::Relaxed), 1, "fetched at once, not after the ingest");
    assert_eq!(&first.await.unwrap().unwrap()[..], &fx.data[..4096]);
    reader.flush(Duration::from_secs(30)).await.unwrap();
    assert_eq!(read_all(&reader, &fx.file(), 1 << 20).await, fx.data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequential_reader_of_a_cached_track_finds_the_next_chunks_loaded_and_a_random_one_does_not() {
    let fx = Fixture::new(1 << 20);
    let reader = fx.reader();
    read_all(&reader, &fx.file(), 65536).await;
    reader.flush(Duration::from_secs(5)).await.unwrap();
    let chunks = fx.manifests.load(1).unwrap().unwrap().chunks;
    let hits = |reader: &Arc<Reader>| reader.stats.chunk_hits.load(Ordering::Relaxed);

    // Random: reads that never start where the last one ended load only the chunks they touch.
    let reader = fx.reader();
    for c in [chunks[5], chunks[1], chunks[9]] {
        let got = reader.read(&fx.file(), c.offset, 100).await.unwrap();
        assert_eq!(&got[..], &fx.data[c.offset as usize..c.offset as usize + 100]);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hits(&reader), 3, "no chunk loaded ahead of random reads");

    // Sequential: the second read starts where the first ended, so the chunks after it are loaded meanwhile.
    let reader = fx.reader();
    let first = chunks[0].len;
    reader.read(&fx.file(), 0, first).await.unwrap();
    reader.read(&fx.file(), first as u64, 100).await.unwrap();
    // Each read took one chunk (a hit: it is in the store); what the load-ahead takes comes on top, and may
    // already have come by now.
    let loaded = 2;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while hits(&reader) <= loaded + 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(hits(&reader) > loaded + 2, "chunks after the read were loaded without being read: {}", hits(&reader));
    // What was loaded ahead is served from memory, and nothing comes from the origin.
    let origin_reads = fx.origin.reads();
    assert_eq!(read_all(&reader, &fx.file(), 65536).await, fx.data);
    assert_eq!(fx.origin.reads(), origin_reads);
}
