//! The cache disk misbehaving under the real read path, in-process: reads fall back to the origin when the
//! chunk store cannot read, and keep working (uncached) when it cannot write.

use musicfs_cas::ChunkStore;
use musicfs_test_utils::faulty_cas::FaultyCasStore;
use musicfs_test_utils::fixtures::{InProcessFs, track_bytes};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

async fn fixture() -> (InProcessFs, Arc<FaultyCasStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ChunkStore::open(dir.path(), 1 << 30).unwrap());
    let faulty = FaultyCasStore::new(store.clone());
    let fx = InProcessFs::with_backend(dir, store, faulty.clone(), 3, 200_000, Duration::from_secs(5)).await.unwrap();
    (fx, faulty)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_reads_failing_with_eio_fall_back_to_the_origin() {
    let (mut fx, faulty) = fixture().await;
    let ino = fx.ino(0).unwrap();
    assert_eq!(fx.read_all(ino, 65536).await.unwrap(), track_bytes(0, 200_000));
    fx.restart().await.unwrap();
    assert!(fx.store.total_bytes() > 0);
    let origin_reads = fx.origin.read_calls();
    assert_eq!(fx.read_all(ino, 65536).await.unwrap(), track_bytes(0, 200_000));
    assert_eq!(fx.origin.read_calls(), origin_reads, "cached: served from the chunk store");

    faulty.inject_eio_on_read.store(true, Ordering::SeqCst);
    // After a restart nothing is in memory: every chunk read hits the failing disk.
    fx.restart().await.unwrap();
    assert_eq!(fx.read_all(ino, 65536).await.unwrap(), track_bytes(0, 200_000));
    assert!(faulty.faults_injected() > 0, "the EIO was injected");
    assert!(fx.origin.read_calls() > origin_reads, "the bytes came from the origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cache_disk_costs_caching_not_reads() {
    let (fx, faulty) = fixture().await;
    faulty.inject_enospc.store(true, Ordering::SeqCst);
    let ino = fx.ino(1).unwrap();
    assert_eq!(fx.read_all(ino, 65536).await.unwrap(), track_bytes(1, 200_000));
    fx.fs.reader().flush(Duration::from_secs(5)).await.unwrap();
    assert!(faulty.faults_injected() > 0, "ENOSPC was injected");
    assert_eq!(fx.store.total_bytes(), 0, "nothing could be cached");

    faulty.inject_enospc.store(false, Ordering::SeqCst);
    let ino = fx.ino(2).unwrap();
    assert_eq!(fx.read_all(ino, 65536).await.unwrap(), track_bytes(2, 200_000));
    fx.fs.reader().flush(Duration::from_secs(5)).await.unwrap();
    assert!(fx.store.total_bytes() > 0, "caching resumes once space is back");
}

/// Proves L1: 6.4
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bit_rot_under_the_reader_is_detected_and_never_served() {
    let (mut fx, faulty) = fixture().await;
    let ino = fx.ino(0).unwrap();
    fx.read_all(ino, 65536).await.unwrap();
    fx.restart().await.unwrap();
    faulty.inject_corruption.store(true, Ordering::SeqCst);
    assert_eq!(fx.read_all(ino, 65536).await.unwrap(), track_bytes(0, 200_000));
    assert!(faulty.faults_injected() > 0);
    assert_eq!(fx.store.stats.corrupt_detected.load(Ordering::Relaxed), faulty.faults_injected() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_never_waits_for_the_cache_disk() {
    // 72 MiB: more than the write queue holds.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ChunkStore::open(dir.path(), 1 << 30).unwrap());
    let faulty = FaultyCasStore::new(store.clone());
    let len = 72 << 20;
    let fx = InProcessFs::with_backend(dir, store, faulty.clone(), 1, len, Duration::from_secs(5)).await.unwrap();
    faulty.stall_writes(true);
    let ino = fx.ino(0).unwrap();
    let read = tokio::time::timeout(Duration::from_secs(20), fx.read_all(ino, 131072)).await;
    let bytes = read.expect("the cold read waited for a cache disk that hangs").unwrap();
    assert_eq!(bytes, track_bytes(0, len));
    // Read again while the disk still hangs: the read path offers the chunks it uses to the full queue, and
    // goes on without them.
    let tail = (len - (4 << 20)) as u64;
    let again = tokio::time::timeout(Duration::from_secs(20), fx.fs.read(ino, tail, 4 << 20)).await;
    let again = again.expect("a read of chunks in memory waited for a cache disk that hangs").unwrap();
    assert_eq!(again.into_bytes(), track_bytes(0, len)[tail as usize..]);
    let still_stalled = faulty.stalled_puts.load(Ordering::SeqCst);
    faulty.stall_writes(false);
    assert!(still_stalled > 0, "the writes really hung while the track was read");
    // The chunks the ingest held while the disk hung are cached once it answers again.
    fx.fs.reader().flush(Duration::from_secs(10)).await.unwrap();
    assert_eq!(fx.store.total_bytes(), len as u64, "every chunk was cached in the end");
    assert!(fx.fs.reader().stats.writes_deferred.load(Ordering::Relaxed) > 0, "reads found the queue full and went on");
}
