//! 5.6: change detection does not trust the wall clock. A file rewritten with the same size while its
//! mtime ends up where it was — the clock set back, a tag editor that "preserves timestamps", `rsync -t`,
//! `touch -d` — is still seen as changed, by the origin's version stamp (ctime and inode for local files, a
//! content hash such as S3's ETag for remote ones).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

use musicfs_meta::Db;
use musicfs_meta::sync::{SyncOptions, sync};
use musicfs_origins::memory::MemoryOrigin;
use musicfs_origins::{LocalOrigin, SharedOrigin};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

fn open_db(dir: &Path) -> Arc<Db> {
    Arc::new(Db::open(&dir.join("meta.db")).unwrap())
}

/// Rewrites `path` in place with `data` (same length), then sets its mtime back to `mtime`.
fn rewrite_keeping_mtime(path: &Path, data: &[u8], mtime: SystemTime) {
    let mut f = OpenOptions::new().write(true).truncate(true).open(path).unwrap();
    f.write_all(data).unwrap();
    f.set_modified(mtime).unwrap();
    f.sync_all().unwrap();
}

/// Proves L1: 5.6
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_size_rewrite_with_its_mtime_set_back_is_seen_as_changed() {
    let dir = tempfile::tempdir().unwrap();
    let music = dir.path().join("music");
    std::fs::create_dir(&music).unwrap();
    let track = music.join("a.wav");
    std::fs::write(&track, vec![1u8; 4096]).unwrap();
    // An mtime from "the future": what a file written while the clock ran ahead keeps after it is fixed.
    let ahead = SystemTime::now() + Duration::from_secs(3600);
    File::options().write(true).open(&track).unwrap().set_modified(ahead).unwrap();

    let db = open_db(dir.path());
    let origins: Vec<SharedOrigin> = vec![Arc::new(LocalOrigin::new("local", &music))];
    let (first, _) = sync(&db, &origins, SyncOptions::default()).await.unwrap();
    assert_eq!((first.added, first.total), (1, 1));
    let before = db.load_tracks().unwrap()[0].clone();
    assert_ne!(before.version, 0, "the local origin stamps every file");

    // The clock is set back; the file is rewritten (same size) and its mtime restored to what it was.
    std::thread::sleep(Duration::from_millis(20));
    rewrite_keeping_mtime(&track, &[2u8; 4096], ahead);
    let (second, _) = sync(&db, &origins, SyncOptions::default()).await.unwrap();
    let after = db.load_tracks().unwrap()[0].clone();
    assert_eq!((after.size, after.mtime_ns), (before.size, before.mtime_ns), "size and mtime say nothing changed");
    assert_eq!(second.changed, 1, "5.6: the rewrite went unseen; change detection trusted the mtime alone");
    assert_ne!(after.version, before.version);

    // And a sync with nothing changed reads nothing again.
    let (third, _) = sync(&db, &origins, SyncOptions::default()).await.unwrap();
    assert_eq!((third.added, third.changed, third.removed), (0, 0, 0));
}

/// Proves L1: 5.6
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_object_replaced_under_the_same_size_and_time_is_seen_by_its_content_hash() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    // The in-memory origin stamps objects by a hash of their content, as S3 does with the ETag.
    let origin = Arc::new(MemoryOrigin::new());
    origin.insert("a.flac", vec![1u8; 100], 1_700_000_000_000_000_000);
    let origins: Vec<SharedOrigin> = vec![origin.clone()];
    sync(&db, &origins, SyncOptions::default()).await.unwrap();

    origin.insert("a.flac", vec![2u8; 100], 1_700_000_000_000_000_000);
    let (report, _) = sync(&db, &origins, SyncOptions::default()).await.unwrap();
    assert_eq!(report.changed, 1, "5.6: an object replaced at the same size and time went unseen");
}

/// A database from before version stamps (schema 1) is upgraded in place: nothing is lost, and the next
/// sync stamps its tracks without reading them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_1_database_is_upgraded_and_stamped_without_rereading() {
    let dir = tempfile::tempdir().unwrap();
    let music = dir.path().join("music");
    std::fs::create_dir(&music).unwrap();
    std::fs::write(music.join("a.wav"), vec![1u8; 4096]).unwrap();
    let meta = std::fs::metadata(music.join("a.wav")).unwrap();
    let mtime_ns = {
        use std::os::unix::fs::MetadataExt;
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
    };
    {
        let conn = rusqlite::Connection::open(dir.path().join("meta.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO meta VALUES ('schema', '1');
             CREATE TABLE tracks (id INTEGER PRIMARY KEY, origin TEXT NOT NULL, rel_path BLOB NOT NULL,
                 size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
                 artist TEXT, album TEXT, year INTEGER, track INTEGER, title TEXT,
                 vpath TEXT NOT NULL, UNIQUE (origin, rel_path));
             CREATE TABLE inodes (path TEXT PRIMARY KEY, ino INTEGER NOT NULL UNIQUE, is_dir INTEGER NOT NULL);
             CREATE TABLE manifests (track_id INTEGER PRIMARY KEY REFERENCES tracks(id) ON DELETE CASCADE,
                 size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, chunks BLOB NOT NULL);",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO tracks (origin, rel_path, size, mtime_ns, artist, title, vpath)
             VALUES ('local', X'612e776176', 4096, ?1, 'Kept Artist', 'Kept Title', 'Kept Artist/x/a.wav')",
            [mtime_ns],
        )
        .unwrap();
    }

    let db = open_db(dir.path());
    let tracks = db.load_tracks().unwrap();
    assert_eq!(tracks.len(), 1, "the upgrade keeps every track");
    assert_eq!((tracks[0].version, tracks[0].tags.artist.as_deref()), (0, Some("Kept Artist")));

    let origins: Vec<SharedOrigin> = vec![Arc::new(LocalOrigin::new("local", &music))];
    let (report, _) = sync(&db, &origins, SyncOptions::default()).await.unwrap();
    assert_eq!((report.added, report.changed), (0, 0), "an unknown stamp matches: nothing is read again");
    let stamped = db.load_tracks().unwrap()[0].clone();
    assert_ne!(stamped.version, 0, "the sync stamps the upgraded track");
    assert_eq!(stamped.tags.artist.as_deref(), Some("Kept Artist"), "tags were not re-read");
}
