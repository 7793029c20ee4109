//! Chunk writes interrupted at each step (5.7, 3.5), disk full before a write (2.8), manifest unreadable (6.2).

use bytes::Bytes;
use musicfs_cas::{ChunkHash, ChunkStore};
use musicfs_test_utils::fixtures::{InProcessFs, track_bytes};
use std::path::Path;
use std::time::Duration;

fn chunk(n: u8) -> (ChunkHash, Bytes) {
    let data = Bytes::from(vec![n; 5000]);
    (ChunkHash::of(&data), data)
}

fn tmp_files(cache: &Path) -> usize {
    std::fs::read_dir(cache.join("chunks/v1/tmp")).map_or(0, |d| d.count())
}

/// Proves L1: 5.7
#[test]
fn enospc_before_a_chunk_write_leaves_nothing_behind() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path(), 1 << 20).unwrap();
    let c = chunk(1);
    fail::cfg("cas::put::before_write", "return").unwrap();
    let err = store.put_batch(std::slice::from_ref(&c)).unwrap_err().to_string();
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!store.contains(&c.0) && !store.chunk_path(&c.0).exists() && tmp_files(dir.path()) == 0);
    assert_eq!(store.total_bytes(), 0);
    fail::remove("cas::put::before_write");
    store.put_batch(std::slice::from_ref(&c)).unwrap();
    assert_eq!(store.get(&c.0).unwrap(), Some(c.1));
    scenario.teardown();
}

/// Proves L1: 5.7
#[test]
fn a_crash_after_write_before_rename_never_shows_a_partial_chunk() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path(), 1 << 20).unwrap();
    let c = chunk(2);
    fail::cfg("cas::put::after_write_before_rename", "return").unwrap();
    assert!(store.put_batch(std::slice::from_ref(&c)).is_err());
    assert_eq!(tmp_files(dir.path()), 1, "the write reached its temp file");
    assert!(!store.chunk_path(&c.0).exists(), "but no chunk is visible");
    assert_eq!(store.get(&c.0).unwrap(), None);
    drop(store);
    fail::remove("cas::put::after_write_before_rename");
    let store = ChunkStore::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(tmp_files(dir.path()), 0, "leftovers are removed at start");
    store.put_batch(std::slice::from_ref(&c)).unwrap();
    assert_eq!(store.get(&c.0).unwrap(), Some(c.1));
    scenario.teardown();
}

/// Proves L1: 3.5, 5.7
#[test]
fn a_crash_between_chunk_file_and_index_is_reconciled_at_start() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path(), 1 << 20).unwrap();
    let (a, b) = (chunk(3), chunk(4));
    fail::cfg("cas::put::after_rename_before_index", "return").unwrap();
    assert!(store.put_batch(&[a.clone(), b.clone()]).is_err());
    assert!(store.chunk_path(&a.0).exists() && !store.contains(&a.0), "an orphan: on disk, not indexed");
    drop(store);
    fail::remove("cas::put::after_rename_before_index");
    let store = ChunkStore::open(dir.path(), 1 << 20).unwrap();
    assert!(store.contains(&a.0) && store.contains(&b.0), "orphans with the right content are adopted");
    assert_eq!(store.total_bytes(), 10_000);
    assert_eq!(store.get(&b.0).unwrap(), Some(b.1));
    scenario.teardown();
}

/// A new reader (empty memory cache) over the fixture's store and database, as after a restart.
fn fresh_reader(fx: &InProcessFs) -> std::sync::Arc<musicfs_cas::Reader> {
    let store: std::sync::Arc<dyn musicfs_cas::ChunkBackend> = fx.store.clone();
    let manifests: std::sync::Arc<dyn musicfs_cas::ManifestStore> = fx.db.clone();
    musicfs_cas::Reader::new(
        store,
        manifests,
        musicfs_test_utils::fixtures::SMALL_CHUNKS,
        1 << 20,
        Duration::from_secs(5),
    )
}

/// Proves L1: 6.2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_manifest_does_not_fail_the_read() {
    let scenario = fail::FailScenario::setup();
    let fx = InProcessFs::new(1, 300_000, Duration::from_secs(5)).await.unwrap();
    let ino = fx.ino(0).unwrap();
    assert_eq!(fx.read_all(ino, 65536).await.unwrap(), track_bytes(0, 300_000));
    fx.fs.reader().flush(Duration::from_secs(5)).await.unwrap();
    fail::cfg("cas::reader::manifest_fetch", "return").unwrap();
    let reads_before = fx.origin.read_calls();
    // A fresh reader over the same database: the manifest exists but cannot be loaded.
    let reader = fresh_reader(&fx);
    let file = fx.fs.file(ino).unwrap();
    let got = reader.read(&file, 1000, 5000).await.unwrap();
    assert_eq!(&got[..], &track_bytes(0, 300_000)[1000..6000]);
    assert!(fx.origin.read_calls() > reads_before, "without the manifest the bytes came from the origin");
    // That read started an ingest, which goes on reading the track block by block: let it finish, or its
    // later blocks would count as reads of the next reader.
    reader.flush(Duration::from_secs(5)).await.unwrap();
    fail::remove("cas::reader::manifest_fetch");
    let reader = fresh_reader(&fx);
    let reads_before = fx.origin.read_calls();
    assert_eq!(&reader.read(&file, 1000, 5000).await.unwrap()[..], &track_bytes(0, 300_000)[1000..6000]);
    assert_eq!(fx.origin.read_calls(), reads_before, "with the manifest back, the chunks serve the read");
    scenario.teardown();
}
