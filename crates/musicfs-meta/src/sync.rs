//! Scanning origins into the database: the first full scan, and the delta sync that later picks up added,
//! changed and removed files. Both compare the origin listing with the database, read tags only for new or
//! changed files, recompute virtual paths deterministically, and apply everything in one transaction.

use crate::db::{Changes, Db, DbError, Track};
use crate::names;
use crate::tags::{self, TrackTags};
use crate::tree::{Tree, TreeRow};
use musicfs_core::sync_util::{into_inner_or_recover, lock_or_recover};
use musicfs_origins::{OriginEntry, SharedOrigin};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub renamed: usize,
    pub total: usize,
    /// Origins whose listing failed; their tracks were kept as they were.
    pub unreachable: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("sync task failed: {0}")]
    Task(String),
}

/// Loads the tree from the database alone (no origin is touched): one query for the files and their inode
/// numbers, one for the directories. Tags are not loaded: the tree does not need them.
pub fn load_tree(db: &Db) -> Result<Tree, DbError> {
    db.load_tree()
}

/// Builds the tree of `tracks`, consuming them: their strings move into the rows, not copied.
fn build_tree(db: &Db, tracks: Vec<Track>) -> Result<Tree, DbError> {
    let dirs = Tree::dir_paths_of(tracks.iter().map(|t| t.vpath.as_str()));
    let keys: Vec<String> = tracks.iter().map(|t| crate::db::file_inode_key(&t.origin, &t.rel_path)).collect();
    let mut wanted: Vec<(&str, bool)> = dirs.iter().map(|d| (d.as_str(), true)).collect();
    wanted.extend(keys.iter().map(|k| (k.as_str(), false)));
    let started = std::time::Instant::now();
    let inodes = db.inodes_for(&wanted)?;
    tracing::debug!(paths = wanted.len(), elapsed_ms = started.elapsed().as_millis() as u64, "sync: inode numbers");
    drop(wanted);
    drop(dirs);
    let rows = tracks.into_iter().zip(&keys).map(|(t, key)| TreeRow {
        track_id: t.id,
        origin: t.origin,
        rel_path: t.rel_path,
        size: t.size,
        mtime_ns: t.mtime_ns,
        version: t.version,
        vpath: t.vpath,
        ino: inodes.get(key).copied().unwrap_or(0),
    });
    Ok(Tree::build(rows, &inodes))
}

/// Whether a stored track is still what the origin lists: same size and mtime, and the same version stamp
/// where both sides know one (0 is unknown).
fn unchanged(track: &Track, entry: &OriginEntry) -> bool {
    track.size == entry.size
        && track.mtime_ns == entry.mtime_ns
        && (track.version == 0 || entry.version == 0 || track.version == entry.version)
}

/// Whether the listings show exactly what the database holds: every listed file stored with the same stamps
/// (and its version stamp known where the origin now gives one), no stored file of a listed origin gone, and
/// every track named (a scan interrupted before its names were assigned left some without).
fn nothing_changed(
    existing: &[Track],
    by_key: &HashMap<(&str, &std::path::Path), usize>,
    listings: &[(usize, Vec<OriginEntry>)],
    origins: &[SharedOrigin],
) -> bool {
    if existing.iter().any(|t| t.vpath.is_empty()) {
        return false;
    }
    let mut listed = 0;
    for (idx, entries) in listings {
        let origin_id = origins[*idx].id();
        for entry in entries {
            match by_key.get(&(origin_id, entry.rel_path.as_path())).map(|&at| &existing[at]) {
                Some(t) if unchanged(t, entry) && !(t.version == 0 && entry.version != 0) => listed += 1,
                _ => return false,
            }
        }
    }
    // Listed paths are distinct, so equal counts mean no stored track of a listed origin went missing.
    let stored = existing.iter().filter(|t| listings.iter().any(|(idx, _)| origins[*idx].id() == t.origin)).count();
    listed == stored
}

/// How a sync runs.
#[derive(Clone, Copy, Debug)]
pub struct SyncOptions {
    /// Print a progress line on stderr (the first scan, on a terminal).
    pub show_progress: bool,
    /// The longest one origin's listing may take; past it the origin counts as unreachable for this sync
    /// and its tracks stay as they were (4.2.4: a hung origin never leaves the watcher stuck).
    pub list_timeout: Duration,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions { show_progress: false, list_timeout: Duration::from_secs(5 * 60) }
    }
}

/// Brings the database in line with the origins and returns the new tree.
pub async fn sync(
    db: &Arc<Db>,
    origins: &[SharedOrigin],
    options: SyncOptions,
) -> Result<(SyncReport, Tree), SyncError> {
    let (report, tree) = sync_if_changed(db, origins, options).await?;
    let tree = match tree {
        Some(tree) => tree,
        None => {
            let db = db.clone();
            tokio::task::spawn_blocking(move || db.load_tree()).await.map_err(|e| SyncError::Task(e.to_string()))??
        }
    };
    Ok((report, tree))
}

/// As [`sync`], but with no tree when nothing changed: the daemon's periodic sync of an unchanged library
/// then costs one listing and one look at the stored stamps, not a rebuild of names and tree (at 100 000
/// tracks that rebuild held some 400 MB for two seconds, every `sync_interval`).
pub async fn sync_if_changed(
    db: &Arc<Db>,
    origins: &[SharedOrigin],
    options: SyncOptions,
) -> Result<(SyncReport, Option<Tree>), SyncError> {
    let show_progress = options.show_progress;
    let db2 = db.clone();
    let existing =
        tokio::task::spawn_blocking(move || db2.load_tracks()).await.map_err(|e| SyncError::Task(e.to_string()))??;
    let mut report = SyncReport::default();
    let mut listings: Vec<(usize, Vec<OriginEntry>)> = Vec::new();
    for (idx, origin) in origins.iter().enumerate() {
        let listing = std::time::Instant::now();
        match tokio::time::timeout(options.list_timeout, origin.list()).await {
            Ok(Ok(entries)) => {
                let elapsed_ms = listing.elapsed().as_millis() as u64;
                tracing::debug!(origin = origin.id(), files = entries.len(), elapsed_ms, "sync: origin listed");
                listings.push((idx, entries.into_iter().filter(|e| tags::is_audio(&e.rel_path)).collect()))
            }
            Ok(Err(e)) => {
                tracing::warn!(origin = origin.id(), error = %e, "origin could not be listed; keeping its tracks as they were");
                report.unreachable.push(origin.id().to_owned());
            }
            Err(_) => {
                tracing::warn!(origin = origin.id(), timeout = ?options.list_timeout,
                    "4.2.4 origin listing did not finish in time; keeping its tracks as they were");
                report.unreachable.push(origin.id().to_owned());
            }
        }
    }
    let listed_origins: Vec<&str> = listings.iter().map(|(i, _)| origins[*i].id()).collect();
    // Indices into `existing`, not copies: at library scale every copy of the tracks is tens of megabytes.
    let by_key: HashMap<(&str, &std::path::Path), usize> =
        existing.iter().enumerate().map(|(i, t)| ((t.origin.as_str(), t.rel_path.as_path()), i)).collect();
    if nothing_changed(&existing, &by_key, &listings, origins) {
        report.total = existing.len();
        return Ok((report, None));
    }

    // Decide what needs its tags read: anything whose size, mtime or version stamp moved. The stamp catches
    // what the mtime cannot (5.6): a tag editor that keeps the mtime, a clock set back, `rsync -t`.
    let mut keep_at: Vec<usize> = Vec::new();
    // (track id, stamp) for the database; (index into `existing`, stamp) for the tracks kept.
    let mut restamped: Vec<(i64, i64)> = Vec::new();
    let mut restamp_at: Vec<(usize, i64)> = Vec::new();
    let mut to_read: Vec<(usize, OriginEntry, Option<usize>)> = Vec::new();
    let mut seen = vec![false; existing.len()];
    for (idx, entries) in listings {
        let origin_id = origins[idx].id();
        for entry in entries {
            match by_key.get(&(origin_id, entry.rel_path.as_path())).copied() {
                Some(at) if unchanged(&existing[at], &entry) => {
                    seen[at] = true;
                    if existing[at].version == 0 && entry.version != 0 {
                        // Stored before the stamp was known (an upgraded database): stamp it, no re-read.
                        restamped.push((existing[at].id, entry.version));
                        restamp_at.push((at, entry.version));
                    }
                    keep_at.push(at);
                }
                Some(at) => {
                    seen[at] = true;
                    to_read.push((idx, entry, Some(at)));
                }
                None => to_read.push((idx, entry, None)),
            }
        }
    }
    let removed: Vec<i64> = existing
        .iter()
        .zip(&seen)
        .filter(|(t, seen)| !**seen && listed_origins.contains(&t.origin.as_str()))
        .map(|(t, _)| t.id)
        .collect();
    // Tracks of unreachable origins stay as they are.
    keep_at.extend((0..existing.len()).filter(|&at| !listed_origins.contains(&existing[at].origin.as_str())));
    drop((by_key, seen, listed_origins));
    let mut existing: Vec<Option<Track>> = existing.into_iter().map(Some).collect();
    for (at, version) in restamp_at {
        if let Some(track) = existing[at].as_mut() {
            track.version = version;
        }
    }
    let mut keep: Vec<Track> = keep_at.into_iter().filter_map(|at| existing[at].take()).collect();
    // A changed track keeps its id and, until names are assigned, its path.
    let to_read: Vec<(usize, OriginEntry, Option<StoredAs>)> = to_read
        .into_iter()
        .map(|(idx, entry, at)| (idx, entry, at.and_then(|at| existing[at].take()).map(|t| (t.id, t.vpath))))
        .collect();
    drop(existing);

    // Tags are read and committed batch by batch, so an interrupted scan resumes where it stopped (2.5):
    // committed tracks match the origin's size and mtime next time and are not read again. New tracks
    // are committed without a path; names are assigned once every batch is in. A batch's tags are read
    // while the batch before it commits.
    let progress = Progress::new(to_read.len(), show_progress);
    let mut queue = to_read.into_iter().peekable();
    let mut committing: Option<Commit> = None;
    while queue.peek().is_some() {
        let batch: Vec<_> = queue.by_ref().take(SYNC_BATCH).collect();
        let read = read_all_tags(origins, batch, &progress).await;
        if let Some(commit) = committing.take() {
            committed(commit, &mut keep).await?;
        }
        let read = read?;
        let mut changes = Changes::default();
        for (idx, entry, old, tags) in read {
            let (id, vpath) = old.map_or((None, String::new()), |(id, vpath)| (Some(id), vpath));
            let track = Track {
                id: id.unwrap_or(0),
                origin: origins[idx].id().to_owned(),
                rel_path: entry.rel_path,
                size: entry.size,
                mtime_ns: entry.mtime_ns,
                version: entry.version,
                tags,
                vpath,
            };
            if id.is_some() { changes.changed.push(track) } else { changes.added.push(track) }
        }
        report.added += changes.added.len();
        report.changed += changes.changed.len();
        let db2 = db.clone();
        committing = Some(tokio::task::spawn_blocking(move || db2.apply(&changes).map(|ids| (ids, changes))));
    }
    if let Some(commit) = committing.take() {
        committed(commit, &mut keep).await?;
    }
    progress.finish();

    // Deterministic names over the whole library; a track whose name moved is renamed in the database.
    let mut all: Vec<&mut Track> = keep.iter_mut().collect();
    all.sort_by(|a, b| (a.origin.as_str(), a.rel_path.as_path()).cmp(&(b.origin.as_str(), b.rel_path.as_path())));
    let placements: Vec<names::Placement> = all.iter().map(|t| names::placement(&t.rel_path, &t.tags)).collect();
    let mut renamed: Vec<(i64, String)> = Vec::new();
    for (t, vpath) in all.iter_mut().zip(names::assign_unique(&placements)) {
        if t.vpath != vpath {
            if !t.vpath.is_empty() {
                report.renamed += 1;
            }
            renamed.push((t.id, vpath.clone()));
            t.vpath = vpath;
        }
    }
    drop((all, placements));
    report.removed = removed.len();

    let db2 = db.clone();
    let tree = tokio::task::spawn_blocking(move || -> Result<(Tree, usize), DbError> {
        let started = std::time::Instant::now();
        let renamed_count = renamed.len();
        db2.apply(&Changes { removed, renamed, restamped, ..Default::default() })?;
        let stored = started.elapsed();
        let total = keep.len();
        let tree = build_tree(&db2, keep)?;
        tracing::debug!(
            renamed = renamed_count,
            names_stored_ms = stored.as_millis() as u64,
            tree_built_ms = (started.elapsed() - stored).as_millis() as u64,
            "sync: names stored, tree built"
        );
        Ok((tree, total))
    })
    .await
    .map_err(|e| SyncError::Task(e.to_string()))??;
    report.total = tree.1;
    Ok((report, Some(tree.0)))
}

/// A batch of a scan being committed: the ids of its new tracks, and the batch.
type Commit = tokio::task::JoinHandle<Result<(Vec<i64>, Changes), DbError>>;

/// Waits for a batch's commit; its tracks, the new ones with the ids the database gave them, join `keep`.
async fn committed(commit: Commit, keep: &mut Vec<Track>) -> Result<(), SyncError> {
    let (ids, changes) = commit.await.map_err(|e| SyncError::Task(e.to_string()))??;
    let Changes { mut added, changed, .. } = changes;
    for (t, id) in added.iter_mut().zip(ids) {
        t.id = id;
    }
    keep.extend(changed.into_iter().chain(added));
    fail::fail_point!("meta::sync::after_batch");
    Ok(())
}

/// What the database held for a changed track: its id and its path, kept until names are assigned again.
type StoredAs = (i64, String);

/// A file whose tags were read: its origin's index, its listing entry, what the caller passed along, its tags.
type ReadTags<T> = (usize, OriginEntry, T, TrackTags);

/// Tracks committed per transaction during a scan: the most an interrupted scan has to read again.
pub const SYNC_BATCH: usize = 500;

/// Scan progress: a bar on a terminal, a log line every few seconds otherwise.
struct Progress {
    total: usize,
    done: AtomicUsize,
    bar: Option<indicatif::ProgressBar>,
    log_lines: bool,
    last_log: std::sync::Mutex<Instant>,
    started: Instant,
}

impl Progress {
    fn new(total: usize, show: bool) -> Progress {
        let bar = (show && total > 0 && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("scanning {bar:40} {pos}/{len} tracks {per_sec} eta {eta}")
            {
                bar.set_style(style);
            }
            bar
        });
        let log_lines = show && bar.is_none();
        Progress {
            total,
            done: AtomicUsize::new(0),
            bar,
            log_lines,
            last_log: std::sync::Mutex::new(Instant::now()),
            started: Instant::now(),
        }
    }

    fn advance(&self) {
        let n = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(bar) = &self.bar {
            bar.set_position(n as u64);
        } else if self.log_lines {
            let mut last = lock_or_recover(&self.last_log);
            if last.elapsed() >= Duration::from_secs(2) {
                tracing::info!(done = n, total = self.total, "scanning tags");
                *last = Instant::now();
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.total > 0 {
            tracing::info!(tracks = self.total, elapsed_ms = self.started.elapsed().as_millis() as u64, "read tags");
        }
    }
}

async fn read_all_tags<T: Sync>(
    origins: &[SharedOrigin],
    work: Vec<(usize, OriginEntry, T)>,
    progress: &Progress,
) -> Result<Vec<ReadTags<T>>, SyncError> {
    let origins: Vec<SharedOrigin> = origins.to_vec();
    let total = work.len();
    let next = AtomicUsize::new(0);
    let threads = origins.iter().map(|o| o.scan_parallelism()).max().unwrap_or(1).max(1);
    let slots: Vec<std::sync::Mutex<Option<TrackTags>>> = (0..total).map(|_| std::sync::Mutex::new(None)).collect();
    // Tag parsing is blocking file I/O and CPU: it runs on scoped threads, off the async runtime's workers.
    tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            for _ in 0..threads.min(total) {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            break;
                        }
                        let (idx, entry, _) = &work[i];
                        let tags = match origins[*idx].open_sized(&entry.rel_path, entry.size) {
                            Ok(reader) => tags::read_tags(reader),
                            Err(e) => {
                                tracing::debug!(path = %entry.rel_path.display(), error = %e, "cannot open for tags");
                                TrackTags::default()
                            }
                        };
                        if let Ok(mut slot) = slots[i].lock() {
                            *slot = Some(tags);
                        }
                        progress.advance();
                    }
                });
            }
        })
    });
    Ok(work
        .into_iter()
        .zip(slots)
        .map(|((idx, entry, id), slot)| {
            let tags = into_inner_or_recover(slot).unwrap_or_default();
            (idx, entry, id, tags)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use musicfs_origins::Origin;
    use musicfs_origins::memory::MemoryOrigin;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delta_sync_adds_changes_and_removes_keeping_inodes() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("meta.db")).unwrap());
        let origin = Arc::new(MemoryOrigin::new());
        origin.insert("a.flac", vec![1u8; 10], 1);
        origin.insert("b.mp3", vec![2u8; 10], 1);
        origin.insert("notes.txt", vec![3u8; 10], 1);
        let origins: Vec<SharedOrigin> = vec![origin.clone()];
        let (report, tree) = sync(&db, &origins, SyncOptions::default()).await.unwrap();
        assert_eq!((report.added, report.total), (2, 2));
        let unknown = tree.lookup(crate::tree::ROOT_INO, b"Unknown Artist").unwrap().ino;
        let album = tree.lookup(unknown, b"Unknown Album").unwrap().ino;
        let a_ino = tree.lookup(album, b"a.flac").unwrap().ino;

        origin.remove(std::path::Path::new("b.mp3"));
        origin.insert("a.flac", vec![9u8; 20], 2);
        origin.insert("c.ogg", vec![4u8; 10], 1);
        let (report, tree) = sync(&db, &origins, SyncOptions::default()).await.unwrap();
        assert_eq!((report.added, report.changed, report.removed, report.total), (1, 1, 1, 2));
        let a = tree.lookup(album, b"a.flac").unwrap();
        assert_eq!(a.ino, a_ino, "inode numbers are stable across syncs");
        assert!(tree.lookup(album, b"b.mp3").is_none());
        assert!(tree.lookup(album, b"c.ogg").is_some());

        let (again, _) = sync(&db, &origins, SyncOptions::default()).await.unwrap();
        assert_eq!((again.added, again.changed, again.removed), (0, 0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unchanged_library_is_not_rebuilt_and_every_change_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("meta.db")).unwrap());
        let origin = Arc::new(MemoryOrigin::new());
        origin.insert("a.flac", vec![1u8; 10], 1);
        origin.insert("b.mp3", vec![2u8; 10], 1);
        let origins: Vec<SharedOrigin> = vec![origin.clone()];
        let again = || sync_if_changed(&db, &origins, SyncOptions::default());
        let (report, tree) = again().await.unwrap();
        assert!(tree.is_some() && report.added == 2);
        let (report, tree) = again().await.unwrap();
        assert!(tree.is_none(), "nothing changed: no rebuild");
        assert_eq!((report.added, report.changed, report.removed, report.total), (0, 0, 0, 2));

        origin.insert("a.flac", vec![9u8; 20], 2);
        let (report, tree) = again().await.unwrap();
        assert!(tree.is_some() && report.changed == 1, "a changed size: {report:?}");
        origin.remove(std::path::Path::new("b.mp3"));
        let (report, tree) = again().await.unwrap();
        assert!(tree.is_some() && report.removed == 1, "a removed track: {report:?}");
        origin.insert("c.ogg", vec![4u8; 10], 1);
        let (report, tree) = again().await.unwrap();
        assert!(tree.is_some() && report.added == 1, "an added track: {report:?}");
        assert!(again().await.unwrap().1.is_none());

        // A scan interrupted after committing tracks but before naming them left them without a path.
        let unnamed = db.load_tracks().unwrap()[0].id;
        db.apply(&Changes { renamed: vec![(unnamed, String::new())], ..Default::default() }).unwrap();
        let (_, tree) = again().await.unwrap();
        assert!(tree.is_some_and(|t| t.file_count() == 2), "the unnamed track is named again");
        assert!(db.load_tracks().unwrap().iter().all(|t| !t.vpath.is_empty()));
    }

    /// An origin whose tag reads each take a round trip, and that counts how many run at once.
    struct RemoteLike {
        inner: MemoryOrigin,
        in_flight: AtomicUsize,
        most_at_once: AtomicUsize,
        asked_for_size: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Origin for RemoteLike {
        fn id(&self) -> &str {
            self.inner.id()
        }
        async fn list(&self) -> Result<Vec<OriginEntry>, musicfs_origins::OriginError> {
            self.inner.list().await
        }
        async fn stat(&self, rel: &std::path::Path) -> Result<OriginEntry, musicfs_origins::OriginError> {
            self.inner.stat(rel).await
        }
        async fn read_range(
            &self,
            rel: &std::path::Path,
            offset: u64,
            len: usize,
        ) -> Result<bytes::Bytes, musicfs_origins::OriginError> {
            self.inner.read_range(rel, offset, len).await
        }
        fn open_blocking(
            &self,
            rel: &std::path::Path,
        ) -> Result<Box<dyn musicfs_origins::ReadSeek>, musicfs_origins::OriginError> {
            self.asked_for_size.fetch_add(1, Ordering::SeqCst);
            self.inner.open_blocking(rel)
        }
        fn open_sized(
            &self,
            rel: &std::path::Path,
            _size: u64,
        ) -> Result<Box<dyn musicfs_origins::ReadSeek>, musicfs_origins::OriginError> {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_at_once.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(30));
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.inner.open_blocking(rel)
        }
        fn scan_parallelism(&self) -> usize {
            8
        }
        async fn health_check(&self) -> Result<(), musicfs_origins::OriginError> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scan_reads_tags_as_many_at_once_as_the_origin_asks_without_asking_sizes_it_listed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("meta.db")).unwrap());
        let remote = Arc::new(RemoteLike {
            inner: MemoryOrigin::new(),
            in_flight: AtomicUsize::new(0),
            most_at_once: AtomicUsize::new(0),
            asked_for_size: AtomicUsize::new(0),
        });
        for i in 0..32 {
            remote.inner.insert(format!("t{i:02}.flac"), vec![i as u8; 100], 1);
        }
        let origins: Vec<SharedOrigin> = vec![remote.clone()];
        let (report, _) = sync(&db, &origins, SyncOptions::default()).await.unwrap();
        assert_eq!(report.added, 32);
        assert_eq!(remote.most_at_once.load(Ordering::SeqCst), 8, "tag reads in flight at once");
        assert_eq!(remote.asked_for_size.load(Ordering::SeqCst), 0, "sizes come from the listing");
    }
}
