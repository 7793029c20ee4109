//! The chunk store's own tests: exact size accounting, LRU eviction across restarts, corrupt chunks and
//! indexes, orphans, poisoned locks and unfinished writes.

use super::*;

/// The real disk, with its fullness hidden: these tests are about the store's own accounting, and must
/// not change with how full the host's disk happens to be (2.8 is tested on a `FaultyDisk`).
struct Roomy;

impl CacheDisk for Roomy {
    fn space(&self, _dir: &Path) -> Option<(u64, u64)> {
        None
    }
    fn write_durable(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
        RealDisk.write_durable(path, data)
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        RealDisk.read(path)
    }
}

fn open_roomy(dir: &Path, max_size: u64) -> Result<ChunkStore, StoreError> {
    ChunkStore::open_on(dir, max_size, Arc::new(Roomy))
}

fn chunk(n: u8, len: usize) -> (ChunkHash, Bytes) {
    let data = Bytes::from(vec![n; len]);
    (ChunkHash::of(&data), data)
}

/// Proves L1: 3.10
#[test]
fn access_order_survives_a_restart_and_decides_eviction() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_roomy(dir.path(), 2500).unwrap();
    let (a, b, c) = (chunk(1, 1000), chunk(2, 1000), chunk(3, 1000));
    store.put_batch(std::slice::from_ref(&a)).unwrap();
    store.put_batch(std::slice::from_ref(&b)).unwrap();
    store.get(&a.0).unwrap();
    assert_eq!(store.flush_access_times().unwrap(), 1);
    drop(store);
    let store = open_roomy(dir.path(), 2500).unwrap();
    store.put_batch(std::slice::from_ref(&c)).unwrap();
    assert!(store.contains(&a.0), "a was read after b, so it is the more recently used");
    assert!(!store.contains(&b.0), "b is the least recently used and makes room");
    assert!(store.contains(&c.0));
}

/// Proves L1: 3.10
#[test]
fn put_get_and_reopen_keep_exact_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_roomy(dir.path(), 1 << 20).unwrap();
    let (a, b) = (chunk(1, 1000), chunk(2, 500));
    store.put_batch(&[a.clone(), b.clone(), a.clone()]).unwrap();
    assert_eq!(store.total_bytes(), 1500);
    assert_eq!(store.get(&a.0).unwrap().unwrap(), a.1);
    drop(store);
    let store = open_roomy(dir.path(), 1 << 20).unwrap();
    assert_eq!(store.total_bytes(), 1500);
    assert_eq!(store.chunk_count(), 2);
    assert_eq!(store.get(&b.0).unwrap().unwrap(), b.1);
}

/// Proves L1: 6.4
#[test]
fn a_corrupt_chunk_is_detected_removed_and_reported_missing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_roomy(dir.path(), 1 << 20).unwrap();
    let a = chunk(3, 4096);
    store.put_batch(std::slice::from_ref(&a)).unwrap();
    let path = store.chunk_path(&a.0);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    assert_eq!(store.get(&a.0).unwrap(), None);
    assert!(!path.exists());
    assert_eq!(store.total_bytes(), 0);
    assert_eq!(store.stats.corrupt_detected.load(Ordering::Relaxed), 1);
}

/// Proves L1: 3.10
#[test]
fn eviction_keeps_the_store_under_max_size_dropping_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_roomy(dir.path(), 2500).unwrap();
    let (a, b, c) = (chunk(1, 1000), chunk(2, 1000), chunk(3, 1000));
    store.put_batch(&[a.clone(), b.clone()]).unwrap();
    store.put_batch(std::slice::from_ref(&c)).unwrap();
    assert!(store.total_bytes() <= 2500);
    assert_eq!(store.chunk_count(), 2);
    assert!(store.contains(&c.0), "the newest chunk survives");
}

/// Proves L1: 3.5
#[test]
fn orphans_are_adopted_or_removed_and_dangling_entries_dropped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_roomy(dir.path(), 1 << 20).unwrap();
    let (kept, lost) = (chunk(1, 1000), chunk(2, 2000));
    store.put_batch(&[kept.clone(), lost.clone()]).unwrap();
    // A crash between rename and index: a complete chunk file the index does not know.
    let orphan = chunk(3, 3000);
    let orphan_path = store.chunk_path(&orphan.0);
    std::fs::create_dir_all(orphan_path.parent().unwrap()).unwrap();
    std::fs::write(&orphan_path, &orphan.1).unwrap();
    // A half-written file under a chunk name: content does not match.
    let torn = chunk(4, 4000);
    let torn_path = store.chunk_path(&torn.0);
    std::fs::create_dir_all(torn_path.parent().unwrap()).unwrap();
    std::fs::write(&torn_path, &torn.1[..100]).unwrap();
    // A chunk file deleted behind the index's back.
    std::fs::remove_file(store.chunk_path(&lost.0)).unwrap();
    drop(store);

    let store = open_roomy(dir.path(), 1 << 20).unwrap();
    assert!(store.contains(&kept.0));
    assert!(store.contains(&orphan.0), "a verified orphan is adopted");
    assert!(!store.contains(&lost.0), "a dangling entry is dropped");
    assert!(!torn_path.exists(), "a torn orphan is removed");
    assert_eq!(store.total_bytes(), 1000 + 3000, "size accounting matches the files");
    assert_eq!(store.get(&orphan.0).unwrap(), Some(orphan.1));
}

/// Proves L1: 3.5, 2.4
#[test]
fn a_corrupt_index_is_rebuilt_from_the_chunk_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_roomy(dir.path(), 1 << 20).unwrap();
    let (a, b) = (chunk(1, 1000), chunk(2, 2000));
    store.put_batch(&[a.clone(), b.clone()]).unwrap();
    drop(store);
    std::fs::write(dir.path().join("chunks/v1/index.redb"), b"definitely not a redb file".repeat(50)).unwrap();
    let store = open_roomy(dir.path(), 1 << 20).unwrap();
    assert_eq!(store.chunk_count(), 2);
    assert_eq!(store.total_bytes(), 3000);
    assert_eq!(store.get(&a.0).unwrap(), Some(a.1));
}

/// Proves L1: 6.4, 6.3
#[test]
fn verify_finds_rot_everywhere_and_repair_rebuilds_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_roomy(dir.path(), 1 << 20).unwrap();
    let chunks: Vec<_> = (1..=20).map(|n| chunk(n, 500)).collect();
    store.put_batch(&chunks).unwrap();
    for (hash, _) in &chunks[..3] {
        let path = store.chunk_path(hash);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[7] ^= 0x10;
        std::fs::write(&path, bytes).unwrap();
    }
    // The scrubber's small steps cover every chunk exactly once per round.
    let (mut cursor, mut seen) = (None, 0);
    loop {
        let (next, step) = store.scrub_step(cursor, 6).unwrap();
        seen += step.checked;
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, 20);
    assert_eq!(store.chunk_count(), 17, "the three rotten chunks were found and removed");
    assert_eq!(store.verify_all().unwrap(), VerifyReport { checked: 17, bytes: 17 * 500, rotten: 0 });
    drop(store);
    let store = ChunkStore::rebuild(dir.path(), 1 << 20).unwrap();
    assert_eq!((store.chunk_count(), store.total_bytes()), (17, 17 * 500), "repair rebuilt the index from the files");
}

/// Proves L1: 2.9
#[test]
fn a_panic_while_holding_the_index_lock_does_not_poison_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(open_roomy(dir.path(), 1 << 20).unwrap());
    let a = chunk(1, 1000);
    store.put_batch(std::slice::from_ref(&a)).unwrap();
    let poisoner = store.clone();
    let joined = std::thread::spawn(move || {
        let _guard = poisoner.index.lock();
        panic!("writer panics while holding the index lock");
    })
    .join();
    assert!(joined.is_err());
    assert!(store.index.is_poisoned(), "the lock really is poisoned");
    assert_eq!(store.get(&a.0).unwrap(), Some(a.1));
    store.put_batch(&[chunk(2, 10)]).unwrap();
    assert_eq!(store.total_bytes(), 1010);
}

/// Proves L1: 5.7
#[test]
fn unfinished_writes_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(open_roomy(dir.path(), 1 << 20).unwrap());
    let leftover = dir.path().join("chunks/v1/tmp/abc.123");
    std::fs::write(&leftover, b"partial").unwrap();
    drop(open_roomy(dir.path(), 1 << 20).unwrap());
    assert!(!leftover.exists());
}
