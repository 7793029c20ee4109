//! Crash images (issue 13): an ingest's writes to the chunk store, stopped at every write step, and every
//! state a power cut there could leave opened again. Whatever the step, the store opens, its index names
//! exactly the chunk files there are and each of them holds the bytes of its name, and every chunk a
//! `put_batch` acknowledged (and nothing later removed) is still there.

use super::crash_disk::{CrashDisk, Image};
use super::*;
use std::collections::BTreeSet as Set;

const CACHE: &str = "/cache";
const CHUNK: usize = 1000;

fn chunk(n: u8) -> (ChunkHash, Bytes) {
    // Bytes that differ through the whole chunk, so a torn or swapped file cannot pass as another.
    let data: Vec<u8> = (0..CHUNK).map(|i| (i as u8).wrapping_mul(31).wrapping_add(n)).collect();
    let data = Bytes::from(data);
    (ChunkHash::of(&data), data)
}

/// One step of the workload: what an ingest, its readers and a restart ask of the store.
enum Op {
    Put(Vec<u8>),
    Read(u8),
    FlushAccessTimes,
    Forget(u8),
    Restart,
}

/// Room for five chunks: the third batch evicts.
const MAX_SIZE: u64 = 5 * CHUNK as u64;

fn workload() -> Vec<Op> {
    vec![
        Op::Put(vec![1, 2, 3]),
        Op::Put(vec![3, 4]),
        Op::Read(1),
        Op::FlushAccessTimes,
        Op::Put(vec![5, 6, 7]),
        Op::Restart,
        Op::Forget(5),
        Op::Put(vec![8]),
    ]
}

fn open(disk: &CrashDisk) -> Result<ChunkStore, StoreError> {
    ChunkStore::open_on(Path::new(CACHE), MAX_SIZE, Arc::new(disk.clone()))
}

/// Chunks the store holds, by their number.
fn held(store: &ChunkStore) -> Set<u8> {
    (1..=8).filter(|n| store.contains(&chunk(*n).0)).collect()
}

/// Runs the workload on `disk` until its first failure. Returns the chunks held before each step that
/// finished, and the index of the step that failed (if one did).
fn run(disk: &CrashDisk) -> (Vec<Set<u8>>, Option<usize>) {
    let mut before = Vec::new();
    let Ok(mut store) = open(disk) else { return (before, Some(0)) };
    for (at, op) in workload().into_iter().enumerate() {
        before.push(held(&store));
        let done = match op {
            Op::Put(numbers) => store.put_batch(&numbers.into_iter().map(chunk).collect::<Vec<_>>()),
            Op::Read(n) => store.get(&chunk(n).0).map(|_| ()),
            Op::FlushAccessTimes => store.flush_access_times().map(|_| ()),
            Op::Forget(n) => store.forget(&[chunk(n).0]),
            Op::Restart => {
                drop(store);
                match open(disk) {
                    Ok(reopened) => {
                        store = reopened;
                        Ok(())
                    }
                    Err(_) => return (before, Some(at + 1)),
                }
            }
        };
        if done.is_err() || disk.crashed() {
            return (before, Some(at + 1));
        }
    }
    before.push(held(&store));
    // Dropping the store writes too (the index closes).
    drop(store);
    let failed = disk.crashed().then_some(before.len());
    (before, failed)
}

/// What must hold of a store opened on `image`, where `must_hold` were acknowledged and not removed since.
fn check_image(image: &Image, must_hold: &Set<u8>, why: &str) {
    let disk = CrashDisk::from_image(image);
    let store = open(&disk).unwrap_or_else(|e| panic!("{why}: the store does not open: {e}"));
    let report = store.repaired_at_open();
    assert_eq!(report.dangling_dropped, 0, "{why}: the index named chunks that were not on disk: {report:?}");
    assert_eq!(report.sample_rotten, 0, "{why}: {report:?}");
    let root = Path::new(CACHE).join("chunks").join(LAYOUT);
    let mut files = Set::new();
    for (path, bytes) in disk.files_under(&root) {
        if path.starts_with(root.join("tmp")) {
            panic!("{why}: an unfinished write survived the open: {}", path.display());
        }
        if path.parent() == Some(root.as_path()) {
            continue; // the index
        }
        let name = path.file_name().and_then(|n| n.to_str()).and_then(ChunkHash::from_hex);
        let hash = name.unwrap_or_else(|| panic!("{why}: a stray file in a shard: {}", path.display()));
        assert_eq!(ChunkHash::of(&bytes), hash, "{why}: {} does not hold the bytes of its name", path.display());
        files.insert(hash);
    }
    let indexed: Set<ChunkHash> = store.lock().entries.keys().copied().collect();
    assert_eq!(indexed, files, "{why}: the index and the chunk files disagree");
    assert_eq!(store.total_bytes(), files.len() as u64 * CHUNK as u64, "{why}: size accounting");
    for n in must_hold {
        assert!(store.contains(&chunk(*n).0), "{why}: acknowledged chunk {n} was lost");
        assert_eq!(store.get(&chunk(*n).0).ok().flatten(), Some(chunk(*n).1), "{why}: chunk {n}");
    }
    drop(store);
    let again = open(&disk).unwrap_or_else(|e| panic!("{why}: a second open fails: {e}"));
    assert!(!again.repaired_at_open().repaired(), "{why}: the first open left repairs: {:?}", again.repaired_at_open());
}

/// Proves L1: 5.7, 3.5
#[test]
fn a_crash_at_any_write_step_leaves_a_store_that_opens_whole_and_keeps_what_it_acknowledged() {
    let clean = CrashDisk::new(None);
    let (held_before, failed) = run(&clean);
    assert_eq!(failed, None, "the workload runs through on a disk that does not crash");
    let steps = clean.steps();
    assert!(steps > 50, "the workload writes: {steps} steps");
    // The workload does what it is meant to: 2 and 3 evicted (1 was read since), 5 forgotten, 8 after the restart.
    assert_eq!(held_before.last(), Some(&Set::from([1, 4, 6, 7, 8])), "{held_before:?}");

    let mut images = 0;
    for crash_after in 0..steps {
        let disk = CrashDisk::new(Some(crash_after));
        let (held, failed_at) = run(&disk);
        let Some(failed_at) = failed_at else { panic!("a crash after {crash_after} steps went unnoticed") };
        // Acknowledged: held before the step that crashed, and not removed by it in the clean run.
        let after_clean = held_before.get(failed_at).or(held_before.last());
        let must_hold: Set<u8> = match (held.get(failed_at.saturating_sub(1)), after_clean) {
            (Some(before), Some(after_clean)) if failed_at > 0 => before.intersection(after_clean).copied().collect(),
            _ => Set::new(),
        };
        for (prefix, image) in disk.images().iter().enumerate() {
            check_image(image, &must_hold, &format!("crash after step {crash_after} (op {failed_at}), image {prefix}"));
            images += 1;
        }
    }
    eprintln!("{steps} write steps, {images} crash images opened");
}
