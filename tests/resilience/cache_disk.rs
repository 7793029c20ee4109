//! The disk under the chunk cache fills up (2.8) or fails (6.6), in-process: a real chunk store on a
//! `FaultyDisk` that reports the fullness it is told and fails the I/O it is told to, under the real reader and
//! filesystem logic. Reads always return the origin's bytes; what changes is what gets cached, and the state.

use bytes::Bytes;
use musicfs_cas::{ChunkHash, ChunkStore, DiskPressure, FileRef, ManifestStore};
use musicfs_test_utils::faulty_cas::FaultyDisk;
use musicfs_test_utils::fixtures::{InProcessFs, track_bytes};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const TRACK: usize = 1 << 20;
const KIB_64: u32 = 65536;

async fn fixture(disk_bytes: u64) -> (InProcessFs, Arc<FaultyDisk>) {
    let dir = tempfile::tempdir().unwrap();
    let disk = FaultyDisk::new(disk_bytes);
    let store = Arc::new(ChunkStore::open_on(dir.path(), 1 << 30, disk.clone()).unwrap());
    let fx = InProcessFs::with_backend(dir, store.clone(), store, 6, TRACK, Duration::from_secs(5)).await.unwrap();
    (fx, disk)
}

fn file(fx: &InProcessFs, track: usize) -> FileRef {
    fx.fs.file(fx.ino(track).unwrap()).unwrap()
}

/// The chunks of a track (its manifest, saved by the ingest) and which of them the store holds.
fn cached_chunks(fx: &InProcessFs, track: usize) -> (Vec<musicfs_cas::ChunkRef>, Vec<bool>) {
    let manifest = fx.db.load(file(fx, track).track_id).unwrap().expect("the ingest saved a manifest");
    let held = manifest.chunks.iter().map(|c| fx.store.contains(&c.hash)).collect();
    (manifest.chunks, held)
}

async fn is_cached(fx: &InProcessFs, track: usize) -> bool {
    fx.fs.reader().is_cached(&file(fx, track)).await.unwrap()
}

/// Reads `len` bytes of `track` at `offset` through the filesystem and checks them against the origin's.
async fn read_checked(fx: &InProcessFs, track: usize, offset: u64, len: u32) {
    let got = fx.fs.read(fx.ino(track).unwrap(), offset, len).await.unwrap().into_bytes();
    let want = track_bytes(track, TRACK);
    assert_eq!(&got[..], &want[offset as usize..offset as usize + len as usize], "track {track} at {offset}");
}

async fn read_all_checked(fx: &InProcessFs, track: usize) {
    assert_eq!(fx.read_all(fx.ino(track).unwrap(), KIB_64).await.unwrap(), track_bytes(track, TRACK));
}

async fn settle(fx: &InProcessFs) {
    fx.fs.reader().flush(Duration::from_secs(10)).await.unwrap();
}

fn tmp_files(store: &ChunkStore) -> usize {
    std::fs::read_dir(store.root().join("tmp")).map_or(0, |d| d.count())
}

fn written(store: &ChunkStore) -> u64 {
    store.stats.written.load(Ordering::Relaxed)
}

/// Polls `done` until it holds; `bound` only detects a hang.
async fn wait_until(bound: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < bound, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Proves L1: 2.8
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filling_cache_disk_climbs_the_watermarks_and_recovers() {
    let (mut fx, disk) = fixture(16 << 20).await;
    let store = fx.store.clone();
    let root = store.root().to_owned();
    let share = |store: &ChunkStore| disk.used(store.root()) as f64 / disk.total() as f64;

    // Under 90 %: the ingest caches the whole track ahead of a reader that has read only its start.
    read_checked(&fx, 0, 0, KIB_64).await;
    read_all_checked(&fx, 1).await;
    read_all_checked(&fx, 2).await;
    settle(&fx).await;
    assert!(is_cached(&fx, 0).await && is_cached(&fx, 1).await && is_cached(&fx, 2).await);
    assert_eq!(fx.fs.reader().stats.ahead_not_cached.load(Ordering::Relaxed), 0);
    assert_eq!(store.disk_pressure(), DiskPressure::Normal);

    // 90 %, the cache being what fills the disk: the next write evicts least-recently-used chunks down to 80 %.
    disk.fill_to(&root, 0.91);
    assert_eq!(store.disk_pressure(), DiskPressure::EvictHarder);
    let small = Bytes::from(vec![7u8; 4096]);
    store.put_batch(&[(ChunkHash::of(&small), small.clone())]).unwrap();
    let evicted = store.stats.evicted.load(Ordering::Relaxed);
    assert!(evicted > 0, "nothing was evicted at 91 %");
    let after = share(&store);
    assert!((0.79..=0.805).contains(&after), "evicted down to {after:.3} of the disk, not to 80 %");
    assert!(!is_cached(&fx, 0).await && !is_cached(&fx, 1).await, "the least recently used tracks went first");
    assert!(is_cached(&fx, 2).await, "the most recently used track stays");
    let more = Bytes::from(vec![8u8; 4096]);
    store.put_batch(&[(ChunkHash::of(&more), more)]).unwrap();
    assert_eq!(store.stats.evicted.load(Ordering::Relaxed), evicted, "hysteresis: no eviction under 90 %");

    // 95 %, other files filling the disk by themselves: the cache gives its space back once, the ingest stops
    // caching ahead, and the chunks the reader uses are still cached (and kept: not evicted again by each write).
    disk.others.store((disk.total() as f64 * 0.955) as u64, Ordering::SeqCst);
    let marker = Bytes::from(vec![9u8; 4096]);
    store.put_batch(&[(ChunkHash::of(&marker), marker.clone())]).unwrap();
    assert_eq!(store.total_bytes(), 4096, "the cache gave back all it held but the chunk just written");
    assert_eq!(store.disk_pressure(), DiskPressure::StopPrefetch);
    read_checked(&fx, 3, 0, KIB_64).await;
    settle(&fx).await;
    read_checked(&fx, 3, KIB_64 as u64, KIB_64).await;
    settle(&fx).await;
    assert!(fx.fs.reader().stats.ahead_not_cached.load(Ordering::Relaxed) > 0, "the ingest cached ahead at 95 %");
    let (chunks, held) = cached_chunks(&fx, 3);
    let used_by_reader: Vec<bool> = chunks.iter().map(|c| c.offset < 2 * KIB_64 as u64).collect();
    assert_eq!(held, used_by_reader, "exactly the chunks the reader used are cached");
    assert_eq!(store.chunk_count(), used_by_reader.iter().filter(|u| **u).count() + 1, "nothing else is cached");
    assert!(store.write_failure().is_none());

    // 99 %: chunk writes stop, reads are served from the origin, the state says why.
    disk.others.store((disk.total() as f64 * 0.995) as u64, Ordering::SeqCst);
    assert_eq!(store.disk_pressure(), DiskPressure::StopWrites);
    let (written_before, origin_before) = (written(&store), fx.origin.read_calls());
    read_all_checked(&fx, 4).await;
    settle(&fx).await;
    assert_eq!(written(&store), written_before, "a chunk was written at 99 %");
    assert!(store.stats.skipped_writes.load(Ordering::Relaxed) > 0);
    assert!(store.write_failure().is_some_and(|why| why.contains("99%")), "{:?}", store.write_failure());
    assert!(!store.passthrough(), "a full disk is not a failed one: cached chunks are still read");
    assert_eq!(store.total_bytes(), 0, "the cache gave its space back to the growing other files");
    fx.restart().await.unwrap();
    read_checked(&fx, 3, 0, 2 * KIB_64).await;
    settle(&fx).await;
    assert!(fx.origin.read_calls() > origin_before, "served from the origin");
    assert_eq!(written(&store), written_before);
    assert_eq!(tmp_files(&store), 0);

    // Space returns: the state clears without any read (the idle chunk writer checks the disk), caching and
    // prefetch resume.
    disk.others.store(0, Ordering::SeqCst);
    wait_until(Duration::from_secs(20), "the full-disk state to clear", || store.write_failure().is_none()).await;
    read_checked(&fx, 5, 0, KIB_64).await;
    settle(&fx).await;
    assert!(is_cached(&fx, 5).await, "caching (and caching ahead) resumed");
    assert!(written(&store) > written_before);

    // ENOSPC under a write that the watermarks allowed (another process was faster): half a temp file lands,
    // then the error. Nothing partial stays, the read is served, caching stops until the disk has room.
    disk.fail_with(libc::ENOSPC, 0);
    let written_before = written(&store);
    read_all_checked(&fx, 4).await;
    settle(&fx).await;
    assert!(disk.faults_injected() > 0, "ENOSPC was injected");
    assert!(store.write_failure().is_some_and(|why| why.contains("No space left on device")));
    assert_eq!(written(&store), written_before);
    assert_eq!(tmp_files(&store), 0, "the half-written temp file was removed");
    assert!(cached_chunks(&fx, 4).1.iter().all(|held| !held));
    disk.fail_with(0, 0);
    wait_until(Duration::from_secs(20), "ENOSPC state to clear", || store.write_failure().is_none()).await;
    read_all_checked(&fx, 4).await;
    settle(&fx).await;
    assert!(is_cached(&fx, 4).await);

    // Nothing corrupt and nothing half-done on disk after all this.
    let report = store.verify_all().unwrap();
    assert_eq!((report.checked, report.rotten), (store.chunk_count() as u64, 0));
    assert!(!store.reconcile().unwrap().repaired(), "no orphan or dangling chunk");
}

/// Proves L1: 6.6
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_cache_disk_switches_to_passthrough_and_back() {
    let (mut fx, disk) = fixture(1 << 30).await;
    let store = fx.store.clone();
    read_all_checked(&fx, 0).await;
    settle(&fx).await;
    assert!(is_cached(&fx, 0).await);

    // The disk turns read-only: the first chunk write fails, the store goes into passthrough.
    disk.fail_with(libc::EROFS, 0);
    let written_before = written(&store);
    read_all_checked(&fx, 1).await;
    settle(&fx).await;
    assert!(store.passthrough());
    assert!(store.write_failure().is_some_and(|why| why.contains("Read-only file system")));
    assert!(store.stats.disk_errors.load(Ordering::Relaxed) >= 1);
    assert!(store.stats.skipped_writes.load(Ordering::Relaxed) > 0, "passthrough: later chunks not even tried");
    assert_eq!(written(&store), written_before);
    assert!(!is_cached(&fx, 1).await);
    assert_eq!(tmp_files(&store), 0);

    // In passthrough, even cached music is read straight from the origin: the disk is left alone.
    fx.restart().await.unwrap();
    let (disk_reads, origin_reads) = (disk.reads.load(Ordering::SeqCst), fx.origin.read_calls());
    read_all_checked(&fx, 0).await;
    assert_eq!(disk.reads.load(Ordering::SeqCst), disk_reads, "a chunk was read from the failing disk");
    assert!(fx.origin.read_calls() > origin_reads, "the bytes came from the origin");
    assert!(store.stats.bypassed_reads.load(Ordering::Relaxed) > 0);

    // The disk returns: it passes the check without any read, and caching resumes.
    disk.fail_with(0, 0);
    wait_until(Duration::from_secs(20), "passthrough to end", || !store.passthrough()).await;
    assert!(store.write_failure().is_none());
    read_all_checked(&fx, 1).await;
    settle(&fx).await;
    assert!(is_cached(&fx, 1).await, "caching resumed");
    fx.restart().await.unwrap();
    let origin_reads = fx.origin.read_calls();
    read_all_checked(&fx, 0).await;
    assert_eq!(fx.origin.read_calls(), origin_reads, "cached music is read from the disk again");

    // Reads fail with EIO: the one failing read switches to passthrough, the rest never touch the disk.
    disk.fail_with(libc::EIO, libc::EIO);
    fx.restart().await.unwrap();
    let (disk_reads, faults) = (disk.reads.load(Ordering::SeqCst), disk.faults_injected());
    read_all_checked(&fx, 0).await;
    assert!(store.passthrough());
    assert!(store.write_failure().is_some_and(|why| why.contains("Input/output error")));
    assert_eq!(disk.reads.load(Ordering::SeqCst), disk_reads + 1, "the disk was read after it failed");
    assert!(disk.faults_injected() > faults);
    disk.fail_with(0, 0);
    wait_until(Duration::from_secs(20), "passthrough to end", || !store.passthrough()).await;
    read_all_checked(&fx, 0).await;
    settle(&fx).await;
    assert!(is_cached(&fx, 0).await, "the chunk that failed to read was fetched again and cached");
    let report = store.verify_all().unwrap();
    assert_eq!((report.checked, report.rotten), (store.chunk_count() as u64, 0));
}

/// 6.7 at runtime: the cache directory's permissions change under the daemon (EACCES on chunk writes). The
/// store goes into passthrough like any failing disk, reads stay correct, and it comes back on its own.
/// Proves L1: 6.7
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_taken_away_at_runtime_switch_to_passthrough_and_back() {
    let (fx, disk) = fixture(1 << 30).await;
    let store = fx.store.clone();
    disk.fail_with(libc::EACCES, libc::EACCES);
    read_all_checked(&fx, 0).await;
    settle(&fx).await;
    assert!(store.passthrough(), "EACCES switches to passthrough");
    assert!(store.write_failure().is_some_and(|why| why.contains("Permission denied")), "{:?}", store.write_failure());
    assert_eq!(tmp_files(&store), 0);
    read_all_checked(&fx, 1).await;
    disk.fail_with(0, 0);
    wait_until(Duration::from_secs(20), "passthrough to end", || !store.passthrough()).await;
    read_all_checked(&fx, 1).await;
    settle(&fx).await;
    assert!(is_cached(&fx, 1).await, "caching resumed once the permissions were back");
}
