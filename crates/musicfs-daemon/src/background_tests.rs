//! L1 tests of the library watcher and the health monitor: the real loops, store, database and filesystem
//! logic, with the origin an in-memory double behind a [`FaultyOrigin`] — a remote origin that cannot tell
//! anyone what changed, so it must be polled (5.4).

use super::*;
use crate::events::{Bus, Invalidator};
use crate::state::{OriginStatus, Shared};
use musicfs_core::events::Guarantee;
use musicfs_core::supervisor::Supervisor;
use musicfs_fuse::MusicFs;
use musicfs_fuse::invalidate::RecordingKernelCache;
use musicfs_test_utils::faulty_origin::FailMode;
use musicfs_test_utils::fixtures::{InProcessFs, track_bytes};
use std::time::Instant;
use tokio::sync::oneshot;

struct Harness {
    lib: InProcessFs,
    /// The filesystem the loops serve (lib's, or one that also knows a backup origin).
    fs: Arc<MusicFs>,
    kernel: Arc<RecordingKernelCache>,
    backups: Vec<SharedOrigin>,
    shared: Arc<Shared>,
    supervisor: Supervisor,
    cancel: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A library of two tracks with its watcher (and the invalidator it waits for) running under a supervisor
/// that restarts after `backoff` and gives up after `max_restarts`.
async fn harness(sync_every: Duration, list_timeout: Duration, backoff: Duration, max_restarts: u32) -> Harness {
    let lib = InProcessFs::new(2, 1000, Duration::from_secs(5)).await.unwrap();
    let fs = lib.fs.clone();
    harness_over(lib, fs, Vec::new(), sync_every, list_timeout, backoff, max_restarts).await
}

async fn harness_over(
    lib: InProcessFs,
    fs: Arc<MusicFs>,
    backups: Vec<SharedOrigin>,
    sync_every: Duration,
    list_timeout: Duration,
    backoff: Duration,
    max_restarts: u32,
) -> Harness {
    let cancel = CancellationToken::new();
    let supervisor = Supervisor::with_policy(cancel.child_token(), vec![backoff], max_restarts);
    let bus = Arc::new(Bus::new(64));
    let kernel = Arc::new(RecordingKernelCache::default());
    let invalidator = Arc::new(Invalidator {
        events: tokio::sync::Mutex::new(bus.subscribe("kernel cache invalidator", Guarantee::Lossless)),
        kernel: kernel.clone(),
        fs: fs.clone(),
        stats: Default::default(),
    });
    let search = Arc::new(crate::search::Search::new(
        lib.dir.path(),
        lib.db.clone(),
        bus.subscribe("search indexer", Guarantee::Lossy),
    ));
    let (sync_tx, sync_rx) = mpsc::channel(8);
    let shared = Arc::new(Shared {
        fs: fs.clone(),
        store: lib.store.clone(),
        reader: fs.reader().clone(),
        mount_point: lib.dir.path().join("mnt"),
        started: Instant::now(),
        origins: std::sync::RwLock::new(
            std::iter::once(&(lib.origin.clone() as SharedOrigin))
                .chain(&backups)
                .map(|o| OriginStatus { id: o.id().to_owned(), healthy: true, dns_failure: false, last_error: None })
                .collect(),
        ),
        supervisor: supervisor.clone(),
        stopping: AtomicBool::new(false),
        connection_kept: false,
        events: bus,
        invalidator: invalidator.clone(),
        search,
        sync_requests: sync_tx,
    });
    let work = Arc::new(Background {
        shared: shared.clone(),
        health_every: Duration::from_secs(3600),
        health_timeout: Duration::from_secs(1),
        db: lib.db.clone(),
        origins: vec![lib.origin.clone()],
        checked: std::iter::once(lib.origin.clone() as SharedOrigin).chain(backups.clone()).collect(),
        sync_now: false,
        sync_every,
        list_timeout,
        sync_requests: tokio::sync::Mutex::new(sync_rx),
        watcher_started: AtomicBool::new(false),
    });
    supervisor.spawn("kernel cache invalidator", true, move |token| invalidator.clone().run(token));
    supervisor.spawn("library watcher", true, move |token| work.clone().sync_loop(token));
    Harness { lib, fs, kernel, backups, shared, supervisor, cancel }
}

impl Harness {
    fn tracks(&self) -> usize {
        self.fs.tree().file_count()
    }

    fn watcher(&self) -> musicfs_core::supervisor::TaskHealth {
        self.supervisor.health().into_iter().find(|t| t.name == "library watcher").unwrap()
    }

    /// What `musicfs sync` does: ask the watcher, wait for its answer.
    async fn sync_now(&self) -> Result<Result<SyncReport, SyncError>, oneshot::error::RecvError> {
        let (reply, answer) = oneshot::channel();
        self.shared.sync_requests.send(reply).await.unwrap();
        answer.await
    }

    async fn health_round(&self) {
        // The monitor's own list: the library's origin and any backup.
        let origins: Vec<SharedOrigin> =
            std::iter::once(self.lib.origin.clone() as SharedOrigin).chain(self.backups.clone()).collect();
        crate::health::round(&self.shared, &self.lib.db, &origins, Duration::from_secs(1)).await;
    }
}

/// Polls `done` for up to `within`; returns how long it took, or None.
async fn eventually(within: Duration, done: impl Fn() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if done() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Proves L1: 4.2.4
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_watcher_survives_a_hung_origin_a_crash_and_being_given_up() {
    // Interval syncs are an hour apart: every sync below comes from a request, a restart or a recovery.
    let h = harness(Duration::from_secs(3600), Duration::from_millis(300), Duration::from_millis(300), 1).await;
    assert_eq!(h.tracks(), 2);

    // A listing that hangs (a dead NFS server) is abandoned at the bound; the watcher answers and lives on.
    h.lib.origin.set_mode(FailMode::TimeoutMs(60_000));
    let asked = Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(10), h.sync_now())
        .await
        .expect("4.2.4: a hung origin listing left the library watcher stuck")
        .expect("the watcher answered")
        .expect("the sync itself succeeds");
    assert_eq!(report.unreachable, ["memory"], "{report:?}");
    assert_eq!(h.tracks(), 2, "the hung origin's tracks are kept as they were");
    println!("hung listing abandoned after {:?}", asked.elapsed());

    // The watcher dies (a bug in a backend) while a track is added; the supervisor restarts it after the
    // backoff, and the restarted watcher syncs at once instead of an hour later.
    h.lib.memory.insert("t002.wav", track_bytes(2, 1000), 1);
    h.lib.origin.set_mode(FailMode::Panic);
    assert!(h.sync_now().await.is_err(), "the watcher died without answering");
    h.lib.origin.set_mode(FailMode::Healthy);
    let caught_up = eventually(Duration::from_secs(5), || h.tracks() == 3).await;
    assert!(caught_up.is_some(), "4.2.4: the restarted watcher did not catch up: {:?}", h.watcher());
    println!("restarted watcher caught up {caught_up:?} after the crash");
    assert_eq!((h.watcher().alive, h.watcher().restarts), (true, 1), "{:?}", h.watcher());

    // Crashing past its restart budget gets it given up; the origin going away and coming back revives it,
    // and it syncs what changed meanwhile.
    h.lib.memory.insert("t003.wav", track_bytes(3, 1000), 1);
    h.lib.origin.set_mode(FailMode::Panic);
    assert!(h.sync_now().await.is_err());
    assert!(eventually(Duration::from_secs(5), || !h.watcher().alive).await.is_some(), "{:?}", h.watcher());
    h.lib.origin.set_mode(FailMode::ReturnError(std::io::ErrorKind::ConnectionRefused));
    h.health_round().await;
    assert_eq!(h.tracks(), 3, "nothing syncs while the watcher is given up");
    h.lib.origin.set_mode(FailMode::Healthy);
    h.health_round().await;
    let revived = eventually(Duration::from_secs(5), || h.tracks() == 4).await;
    assert!(revived.is_some(), "4.2.4: the origin's return did not revive the watcher: {:?}", h.watcher());
    assert!(h.watcher().alive);
    assert!(h.sync_now().await.is_ok(), "the revived watcher answers requests");
}

/// Proves L1: 5.4
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_cannot_notify_is_polled_and_changes_show_within_the_interval() {
    let interval = Duration::from_millis(500);
    let h = harness(interval, Duration::from_secs(5), Duration::from_millis(50), 3).await;
    let mut events = h.shared.events.subscribe("test", Guarantee::Lossless);

    h.lib.memory.insert("t002.wav", track_bytes(2, 1000), 1);
    let appeared = eventually(Duration::from_secs(10), || h.tracks() == 3).await;
    assert!(appeared.is_some(), "5.4: a track added on the origin never appeared without `musicfs sync`");
    println!("added track appeared after {appeared:?} (interval {interval:?})");
    match tokio::time::timeout(Duration::from_secs(5), events.next()).await {
        Ok(musicfs_core::events::Delivery::Event(Event::LibraryChanged { added: 1, tracks: 3, .. })) => {}
        other => panic!("the poll announces what it found: {other:?}"),
    }

    h.lib.memory.remove(std::path::Path::new("t000.wav"));
    let gone = eventually(Duration::from_secs(10), || h.tracks() == 2).await;
    assert!(gone.is_some(), "5.4: a track removed on the origin stayed in the library");
    println!("removed track disappeared after {gone:?}");
}

/// A library of 200 kB tracks whose origin (`memory`) has a backup (`mirror`) holding a current copy of
/// t000 and a stale one of t001 (same size, other bytes), in the harness (4.2.6).
struct BackupCase {
    h: Harness,
    fs: Arc<MusicFs>,
}

const BACKUP_CASE_LEN: usize = 200_000;

impl BackupCase {
    async fn new() -> BackupCase {
        const LEN: usize = BACKUP_CASE_LEN;
        let lib = InProcessFs::new(2, LEN, Duration::from_secs(5)).await.unwrap();
        let backup = Arc::new(musicfs_origins::memory::MemoryOrigin::named("mirror"));
        backup.insert("t000.wav", track_bytes(0, LEN), 7);
        backup.insert("t001.wav", track_bytes(99, LEN), 7);
        let manifests: Arc<dyn musicfs_cas::ManifestStore> = lib.db.clone();
        let reader = musicfs_cas::Reader::new(
            lib.backend.clone(),
            manifests,
            musicfs_test_utils::fixtures::SMALL_CHUNKS,
            1 << 20,
            Duration::from_secs(4),
        );
        let tree = musicfs_meta::sync::load_tree(&lib.db).unwrap();
        let origins: Vec<SharedOrigin> = vec![lib.origin.clone()];
        let backups = std::collections::HashMap::from([("memory".to_owned(), backup.clone() as SharedOrigin)]);
        let fs = Arc::new(MusicFs::new(tree, reader, &origins, Duration::from_secs(5)).with_backups(backups));
        let h = harness_over(
            lib,
            fs.clone(),
            vec![backup.clone()],
            Duration::from_secs(3600),
            Duration::from_secs(5),
            Duration::from_millis(50),
            3,
        )
        .await;
        BackupCase { h, fs }
    }

    fn ino(&self, name: &str) -> u64 {
        let tree = self.fs.tree();
        let dir = tree.lookup(1, b"Unknown Artist").and_then(|a| tree.lookup(a.ino, b"Unknown Album")).unwrap().ino;
        tree.lookup(dir, name.as_bytes()).unwrap().ino
    }

    async fn read_all(&self, name: &str) -> Vec<u8> {
        let file = self.fs.file(self.ino(name)).unwrap();
        let mut out = Vec::new();
        while out.len() < BACKUP_CASE_LEN {
            let got = self.fs.reader().read(&file, out.len() as u64, 65536).await.expect("read served");
            assert!(!got.is_empty());
            out.extend_from_slice(&got);
        }
        out
    }

    /// Waits until the stale t001 was re-validated: the kernel told to drop it, nothing left flagged.
    async fn revalidated(&self) -> (Option<Duration>, Vec<musicfs_fuse::invalidate::Invalidation>) {
        let stale = musicfs_fuse::invalidate::Invalidation::Inode(self.ino("t001.wav"));
        let told = std::sync::Mutex::new(Vec::new());
        let took = eventually(Duration::from_secs(10), || {
            let mut told = told.lock().unwrap();
            told.extend(self.h.kernel.take());
            told.contains(&stale)
                && self.h.lib.db.backup_served("memory").unwrap().is_empty()
                && self.h.shared.status().served_from_backup == 0
        })
        .await;
        (took, told.into_inner().unwrap())
    }
}

/// Proves L1: 4.2.6
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracks_read_while_their_origin_is_away_come_from_its_backup_and_are_revalidated_on_its_return() {
    const LEN: usize = BACKUP_CASE_LEN;
    let case = BackupCase::new().await;
    let h = &case.h;

    // The origin is away: both tracks play, from the backup, and are flagged.
    h.lib.origin.set_mode(FailMode::ReturnError(std::io::ErrorKind::ConnectionRefused));
    h.health_round().await;
    assert_eq!(case.read_all("t000.wav").await, track_bytes(0, LEN), "4.2.6: not served from the backup");
    assert_eq!(case.read_all("t001.wav").await, track_bytes(99, LEN), "served as the backup has it");
    assert_eq!(h.shared.status().served_from_backup, 2, "both tracks flagged");
    case.fs.reader().flush(Duration::from_secs(5)).await.unwrap();
    let mut stored = h.lib.db.backup_served("memory").unwrap();
    stored.sort_unstable();
    assert_eq!(stored.len(), 2, "their cached copies are marked as the backup's: {stored:?}");
    h.kernel.take();

    // The origin returns: each flagged track is read again from it; the stale one is replaced and the
    // kernel told to drop its pages, the current one is left as it was.
    h.lib.origin.set_mode(FailMode::Healthy);
    h.health_round().await;
    let (revalidated, told) = case.revalidated().await;
    assert!(revalidated.is_some(), "4.2.6: the origin's return did not re-validate the backup's copies: {told:?}");
    let current = musicfs_fuse::invalidate::Invalidation::Inode(case.ino("t000.wav"));
    assert!(!told.contains(&current), "{told:?}");
    assert_eq!(case.read_all("t001.wav").await, track_bytes(1, LEN), "the origin's bytes now, not the stale copy's");
    assert_eq!(case.read_all("t000.wav").await, track_bytes(0, LEN));
}

/// Proves L1: 4.2.6
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_served_track_is_revalidated_even_if_no_health_round_saw_its_origin_away() {
    const LEN: usize = BACKUP_CASE_LEN;
    let case = BackupCase::new().await;
    let h = &case.h;

    // The origin fails a read between two rounds (a connection cut mid-stream): the backup serves it.
    h.lib.origin.set_mode(FailMode::ReturnError(std::io::ErrorKind::ConnectionReset));
    assert_eq!(case.read_all("t001.wav").await, track_bytes(99, LEN), "served from the backup");
    assert_eq!(h.shared.status().served_from_backup, 1);
    h.kernel.take();

    // The next round finds the origin up, as the last one did: no transition, and still a re-validation.
    h.lib.origin.set_mode(FailMode::Healthy);
    h.health_round().await;
    let (revalidated, told) = case.revalidated().await;
    assert!(revalidated.is_some(), "4.2.6: a track served from the backup was never re-validated: {told:?}");
    assert_eq!(case.read_all("t001.wav").await, track_bytes(1, LEN), "the origin's bytes now, not the stale copy's");
}
