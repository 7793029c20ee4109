//! File descriptors run out (5.3): with RLIMIT_NOFILE at 64 and every descriptor taken, reads fail with an
//! error instead of crashing, and work again as soon as descriptors are free. The limit is restored by a
//! guard on every path, panics included.

use musicfs_cas::manifest::MemoryManifests;
use musicfs_cas::{ChunkBackend, ChunkStore, FileRef, Fingerprint, ManifestStore, Reader};
use musicfs_origins::{LocalOrigin, SharedOrigin};
use musicfs_test_utils::files::pseudo_random_bytes;
use musicfs_test_utils::fixtures::SMALL_CHUNKS;
use rlimit::Resource;
use std::sync::Arc;
use std::time::Duration;

/// Lowers RLIMIT_NOFILE for this process; Drop puts the original back.
struct NofileLimit {
    soft: u64,
    hard: u64,
}

impl NofileLimit {
    fn set(soft: u64) -> NofileLimit {
        let (old_soft, hard) = Resource::NOFILE.get().unwrap();
        Resource::NOFILE.set(soft, hard).unwrap();
        NofileLimit { soft: old_soft, hard }
    }
}

impl Drop for NofileLimit {
    fn drop(&mut self) {
        let _ = Resource::NOFILE.set(self.soft, self.hard);
    }
}

/// Opens /dev/null until the process has no descriptor left.
fn take_every_fd() -> Vec<std::fs::File> {
    let mut held = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => return held,
            Err(e) => panic!("unexpected error while taking descriptors: {e}"),
        }
    }
}

/// Proves L1: 5.3
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_file_descriptor_left_reads_fail_cleanly_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    let data = pseudo_random_bytes(300_000, 9);
    std::fs::write(lib.join("a.flac"), &data).unwrap();
    let store = Arc::new(ChunkStore::open(&dir.path().join("cache"), 1 << 30).unwrap());
    let manifests: Arc<dyn ManifestStore> = Arc::new(MemoryManifests::default());
    let backend: Arc<dyn ChunkBackend> = store.clone();
    let reader = Reader::new(backend, manifests, SMALL_CHUNKS, 1 << 20, Duration::from_secs(5));
    let origin: SharedOrigin = Arc::new(LocalOrigin::new("lib", &lib));
    let file = FileRef {
        track_id: 1,
        origin,
        rel_path: "a.flac".into(),
        backup: None,
        fingerprint: Fingerprint {
            size: data.len() as u64,
            mtime_ns: std::fs::metadata(lib.join("a.flac"))
                .map(|m| {
                    use std::os::unix::fs::MetadataExt;
                    m.mtime() * 1_000_000_000 + m.mtime_nsec()
                })
                .unwrap(),
            version: 0,
        },
    };

    let limit = NofileLimit::set(64);
    let held = take_every_fd();
    assert!(!held.is_empty());
    let result = reader.read(&file, 0, 4096).await;
    let err = result.expect_err("no descriptor left: the origin cannot be opened");
    assert!(err.to_string().contains("Too many open files"), "{err}");

    drop(held);
    let got = reader.read(&file, 0, 4096).await.expect("descriptors are free again");
    assert_eq!(&got[..], &data[..4096]);
    drop(limit);
    assert!(Resource::NOFILE.get().unwrap().0 > 64, "the original limit is back");
}
