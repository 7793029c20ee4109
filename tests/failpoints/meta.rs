//! The metadata database corrupt at open (6.2, 2.4) and a scan killed between batches (2.5).

use musicfs_meta::Db;
use musicfs_meta::sync::{self, SYNC_BATCH};
use musicfs_origins::SharedOrigin;
use musicfs_origins::memory::MemoryOrigin;
use musicfs_test_utils::faulty_origin::{FailMode, FaultyOrigin};
use std::sync::Arc;

/// Proves L1: 6.2, 2.4
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_database_at_start_is_set_aside_and_rebuilt_by_rescan() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let origin = Arc::new(MemoryOrigin::new());
    origin.insert("a.flac", vec![1u8; 100], 1);
    let origins: Vec<SharedOrigin> = vec![origin];
    let db = Arc::new(Db::open(&path).unwrap());
    sync::sync(&db, &origins, sync::SyncOptions::default()).await.unwrap();
    assert_eq!(db.track_count().unwrap(), 1);
    drop(db);

    fail::cfg("meta::db::open_corrupt", "1*return->off").unwrap();
    let db = Arc::new(Db::open(&path).unwrap());
    assert_eq!(db.track_count().unwrap(), 0, "the damaged database is not used");
    let aside =
        std::fs::read_dir(dir.path()).unwrap().flatten().any(|e| e.file_name().to_string_lossy().contains("corrupt"));
    assert!(aside, "the damaged file is kept aside for inspection");
    let (report, tree) = sync::sync(&db, &origins, sync::SyncOptions::default()).await.unwrap();
    assert_eq!((report.added, tree.file_count()), (1, 1), "a rescan rebuilds the library");

    fail::remove("meta::db::open_corrupt");
    drop(db);
    assert_eq!(Db::open(&path).unwrap().track_count().unwrap(), 1, "a sound database opens as it is");
    scenario.teardown();
}

/// Proves L1: 2.5
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_interrupted_after_a_batch_resumes_without_rereading_it() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let total = SYNC_BATCH * 2 + 37;
    let memory = Arc::new(MemoryOrigin::new());
    for i in 0..total {
        memory.insert(format!("{i:05}.flac"), vec![(i % 251) as u8; 64], 1);
    }
    let origin = FaultyOrigin::new(memory, FailMode::Healthy);
    let origins: Vec<SharedOrigin> = vec![origin.clone()];
    let db = Arc::new(Db::open(&dir.path().join("meta.db")).unwrap());

    fail::cfg("meta::sync::after_batch", "1*panic(scan killed)->off").unwrap();
    let (db2, origins2) = (db.clone(), origins.clone());
    let killed =
        tokio::spawn(async move { sync::sync(&db2, &origins2, sync::SyncOptions::default()).await.map(|_| ()) }).await;
    assert!(killed.is_err(), "the scan died at the failpoint");
    assert_eq!(db.track_count().unwrap(), SYNC_BATCH as u64, "one batch was committed");
    assert_eq!(db.unnamed_tracks().unwrap(), SYNC_BATCH as u64, "its tracks wait for names");
    let opened_first = origin.calls();

    fail::remove("meta::sync::after_batch");
    let (report, tree) = sync::sync(&db, &origins, sync::SyncOptions::default()).await.unwrap();
    let opened_second = origin.calls() - opened_first;
    // One listing call plus one open per track still to read.
    assert_eq!(opened_second, 1 + total - SYNC_BATCH, "the committed batch was not read again");
    assert_eq!((report.added, tree.file_count()), (total - SYNC_BATCH, total));
    assert_eq!(db.unnamed_tracks().unwrap(), 0);
    scenario.teardown();
}
