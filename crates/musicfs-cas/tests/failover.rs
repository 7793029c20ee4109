//! Failover to a backup origin in-process (4.2.6, N2): a late origin is hedged by its backup, marked slow
//! while only one probe at a time still asks it, and trusted again once it answers.

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
use std::time::{Duration, Instant};

const PARAMS: ChunkParams = ChunkParams { min: 16 << 10, avg: 64 << 10, max: 256 << 10 };
/// The origin timeout: without the hedge, a read of a track with a backup waits half of it for the origin.
const TIMEOUT: Duration = Duration::from_secs(10);

fn track(len: usize, seed: u64) -> Bytes {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data.into()
}

fn file(id: i64, rel: &str, len: usize, origin: &Arc<MemoryOrigin>, backup: &Arc<MemoryOrigin>) -> FileRef {
    FileRef {
        track_id: id,
        origin: origin.clone(),
        backup: Some(backup.clone()),
        rel_path: PathBuf::from(rel),
        fingerprint: Fingerprint { size: len as u64, mtime_ns: 1, version: 0 },
    }
}

/// Proves L1: N2, 4.2.6
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_origin_is_hedged_by_its_backup_marked_slow_and_trusted_again_once_it_answers() {
    let (one, two) = (track(2 << 20, 1), track(2 << 20, 2));
    let Mirrored { origin, backup, reader, file: first, _dir } = mirrored(&one);
    for o in [&origin, &backup] {
        o.insert("two.flac", two.clone(), 1);
    }

    // The origin answers each read only after 3 s: late, not dead.
    origin.set_latency(Duration::from_secs(3));
    let started = Instant::now();
    assert_eq!(read_all(&reader, &first, 128 << 10).await, one);
    let took = started.elapsed();
    eprintln!("2 MiB read with the origin 3 s late: {took:?}");
    // The backup was asked within the hedge's ceiling (1.5 s), not after half the timeout (5 s), and once it
    // had answered, the later reads went to it alone.
    assert!(took < Duration::from_secs(3), "the read waited for the late origin: {took:?}");
    assert!(reader.stats.backup_reads.load(Ordering::Relaxed) >= 1);
    assert_eq!(reader.backup_served_count(), 1, "the track is flagged for re-validation");
    assert_eq!(reader.slow_origins(), ["nas"]);
    assert_eq!(origin.in_flight(), 1, "one probe at a time asks the origin while it is slow");
    assert_eq!(origin.reads(), 0, "the probe has not answered yet");

    // The probe answers (3 s after it was sent): the origin is trusted again, and the next track is read
    // from it, not from the backup.
    origin.set_latency(Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reader.slow_origins().is_empty() {
        assert!(Instant::now() < deadline, "the origin stayed marked slow after answering");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let from_backup = reader.stats.backup_reads.load(Ordering::Relaxed);
    assert_eq!(read_all(&reader, &file(2, "two.flac", two.len(), &origin, &backup), 128 << 10).await, two);
    assert_eq!(reader.stats.backup_reads.load(Ordering::Relaxed), from_backup, "read from the backup again");
    assert_eq!(reader.backup_served_count(), 1, "only the first track is flagged");
}

/// Proves L1: 4.2.6
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_missing_from_its_origin_is_not_found_even_when_its_backup_has_it() {
    let one = track(1 << 20, 3);
    let Mirrored { origin, reader, file, _dir, .. } = mirrored(&one);
    origin.remove(std::path::Path::new("one.flac"));

    // Missing at its own origin: not found, whatever the backup holds (the sync removes the track).
    let err = reader.read(&file, 0, 4096).await.unwrap_err();
    assert!(err.to_string().contains("not found") || err.to_string().contains("No such"), "{err}");
    assert_eq!(reader.stats.backup_reads.load(Ordering::Relaxed), 0);
}

/// One track, "one.flac", on an origin ("nas") and on its backup ("mirror"), and a reader over an empty cache.
struct Mirrored {
    origin: Arc<MemoryOrigin>,
    backup: Arc<MemoryOrigin>,
    reader: Arc<Reader>,
    file: FileRef,
    _dir: tempfile::TempDir,
}

fn mirrored(data: &Bytes) -> Mirrored {
    let (origin, backup) = (Arc::new(MemoryOrigin::named("nas")), Arc::new(MemoryOrigin::named("mirror")));
    origin.insert("one.flac", data.clone(), 1);
    backup.insert("one.flac", data.clone(), 1);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ChunkStore::open(dir.path(), 1 << 30).unwrap());
    let manifests: Arc<dyn ManifestStore> = Arc::new(MemoryManifests::default());
    let reader = Reader::new(store, manifests, PARAMS, 8 << 20, TIMEOUT);
    let file = file(1, "one.flac", data.len(), &origin, &backup);
    Mirrored { origin, backup, reader, file, _dir: dir }
}

/// Re-validation waits for an ingest the backup still feeds, so it compares the backup's copy with the
/// origin's rather than joining that ingest and "re-validating" the backup against itself (a mutant that
/// skipped the wait answered "nothing was cached from the backup").
/// Proves L1: 4.2.6
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revalidation_waits_for_the_ingest_the_backup_feeds_and_compares_it_with_the_origin() {
    // Within the ingest's leash of the first read, so that read alone lets the ingest fetch all of it.
    let one = track(1 << 20, 4);
    let Mirrored { origin, backup, reader, file, _dir } = mirrored(&one);

    // The origin is late, so the track is read from the backup; at 100 ms a block, its ingest takes a while.
    origin.set_latency(Duration::from_secs(3));
    backup.set_latency(Duration::from_millis(100));
    assert_eq!(&reader.read(&file, 0, 4096).await.unwrap()[..], &one[..4096]);
    assert_eq!(reader.backup_served_count(), 1);

    // The origin answers again (the health monitor says so) while the backup's ingest still runs.
    origin.set_latency(Duration::ZERO);
    reader.origin_is_back("nas");
    let same = reader.revalidate(&file).await.unwrap();
    assert_eq!(same, Some(true), "the backup's copy, cached, compared with the origin's");
    assert_eq!(read_all(&reader, &file, 128 << 10).await, one);
}

/// A track the origin served alone is not flagged as cached from the backup, even when it has one: its
/// re-validation finds nothing to compare (a mutant flagging origin blocks as the backup's went unnoticed).
/// Proves L1: 4.2.6
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_the_origin_served_alone_is_not_flagged_as_the_backups() {
    let one = track(1 << 20, 5);
    let Mirrored { backup, reader, file, _dir, .. } = mirrored(&one);

    assert_eq!(read_all(&reader, &file, 128 << 10).await, one);
    reader.flush(Duration::from_secs(30)).await.unwrap();
    assert!(reader.is_cached(&file).await.unwrap());
    assert_eq!(backup.reads(), 0, "the backup was never asked");
    assert_eq!(reader.revalidate(&file).await.unwrap(), None, "nothing was cached from the backup");
}
