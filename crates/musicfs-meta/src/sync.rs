//! Scanning origins into the database: the first full scan, and the delta sync that later picks up added,
//! changed and removed files. Both compare the origin listing with the database, read tags only for new or
//! changed files, recompute virtual paths deterministically, and apply everything in one transaction.

use crate::db::{Changes, Db, DbError, Track};
use crate::names;
use crate::tags::{self, TrackTags};
use crate::tree::Tree;
use musicfs_origins::{OriginEntry, SharedOrigin};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
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

/// Loads the tree from the database alone (no origin is touched).
pub fn load_tree(db: &Db) -> Result<(Tree, Vec<Track>), DbError> {
    let tracks = db.load_tracks()?;
    let tree = build_tree(db, &tracks)?;
    Ok((tree, tracks))
}

fn build_tree(db: &Db, tracks: &[Track]) -> Result<Tree, DbError> {
    let vpaths: Vec<&str> = tracks.iter().map(|t| t.vpath.as_str()).collect();
    let dirs = Tree::dir_paths_of(&vpaths);
    let mut wanted: Vec<(&str, bool)> = dirs.iter().map(|d| (d.as_str(), true)).collect();
    wanted.extend(vpaths.iter().map(|v| (*v, false)));
    let inodes = db.inodes_for(&wanted)?;
    Ok(Tree::build(tracks, &inodes))
}

/// Brings the database in line with the origins and returns the new tree.
pub async fn sync(
    db: &Arc<Db>,
    origins: &[SharedOrigin],
    show_progress: bool,
) -> Result<(SyncReport, Tree), SyncError> {
    let db2 = db.clone();
    let existing =
        tokio::task::spawn_blocking(move || db2.load_tracks()).await.map_err(|e| SyncError::Task(e.to_string()))??;
    let mut report = SyncReport::default();
    let mut listings: Vec<(usize, Vec<OriginEntry>)> = Vec::new();
    for (idx, origin) in origins.iter().enumerate() {
        match origin.list().await {
            Ok(entries) => listings.push((idx, entries.into_iter().filter(|e| tags::is_audio(&e.rel_path)).collect())),
            Err(e) => {
                tracing::warn!(origin = origin.id(), error = %e, "origin could not be listed; keeping its tracks as they were");
                report.unreachable.push(origin.id().to_owned());
            }
        }
    }
    let by_key: HashMap<(&str, &std::path::Path), &Track> =
        existing.iter().map(|t| ((t.origin.as_str(), t.rel_path.as_path()), t)).collect();
    let listed_origins: Vec<&str> = listings.iter().map(|(i, _)| origins[*i].id()).collect();

    // Decide what needs its tags read.
    let mut keep: Vec<Track> = Vec::new();
    let mut to_read: Vec<(usize, OriginEntry, Option<i64>)> = Vec::new();
    let mut seen: std::collections::HashSet<(String, PathBuf)> = std::collections::HashSet::new();
    for (idx, entries) in &listings {
        let origin_id = origins[*idx].id();
        for entry in entries {
            seen.insert((origin_id.to_owned(), entry.rel_path.clone()));
            match by_key.get(&(origin_id, entry.rel_path.as_path())) {
                Some(t) if t.size == entry.size && t.mtime_ns == entry.mtime_ns => keep.push((*t).clone()),
                Some(t) => to_read.push((*idx, entry.clone(), Some(t.id))),
                None => to_read.push((*idx, entry.clone(), None)),
            }
        }
    }
    let removed: Vec<i64> = existing
        .iter()
        .filter(|t| {
            listed_origins.contains(&t.origin.as_str()) && !seen.contains(&(t.origin.clone(), t.rel_path.clone()))
        })
        .map(|t| t.id)
        .collect();
    // Tracks of unreachable origins stay as they are.
    keep.extend(existing.iter().filter(|t| !listed_origins.contains(&t.origin.as_str())).cloned());

    let read = read_all_tags(origins, to_read, show_progress).await?;
    let mut added = Vec::new();
    let mut changed = Vec::new();
    for (idx, entry, old_id, tags) in read {
        let track = Track {
            id: old_id.unwrap_or(0),
            origin: origins[idx].id().to_owned(),
            rel_path: entry.rel_path,
            size: entry.size,
            mtime_ns: entry.mtime_ns,
            tags,
            vpath: String::new(),
        };
        if old_id.is_some() { changed.push(track) } else { added.push(track) }
    }

    // Deterministic names over the whole library.
    let old_vpath: HashMap<i64, String> = existing.iter().map(|t| (t.id, t.vpath.clone())).collect();
    let mut all: Vec<&mut Track> = keep.iter_mut().chain(changed.iter_mut()).chain(added.iter_mut()).collect();
    all.sort_by(|a, b| (a.origin.as_str(), a.rel_path.as_path()).cmp(&(b.origin.as_str(), b.rel_path.as_path())));
    let placements: Vec<names::Placement> = all.iter().map(|t| names::placement(&t.rel_path, &t.tags)).collect();
    for (t, vpath) in all.iter_mut().zip(names::assign_unique(&placements)) {
        t.vpath = vpath;
    }
    let renamed: Vec<(i64, String)> = keep
        .iter()
        .filter(|t| old_vpath.get(&t.id).is_some_and(|old| *old != t.vpath))
        .map(|t| (t.id, t.vpath.clone()))
        .collect();
    report.added = added.len();
    report.changed = changed.len();
    report.removed = removed.len();
    report.renamed = renamed.len();

    let db2 = db.clone();
    let tree = tokio::task::spawn_blocking(move || -> Result<(Tree, usize), DbError> {
        let changes = Changes { added, changed, removed, renamed };
        let ids = db2.apply(&changes)?;
        let Changes { mut added, changed, .. } = changes;
        for (t, id) in added.iter_mut().zip(ids) {
            t.id = id;
        }
        let mut tracks = keep;
        tracks.extend(changed);
        tracks.extend(added);
        let total = tracks.len();
        Ok((build_tree(&db2, &tracks)?, total))
    })
    .await
    .map_err(|e| SyncError::Task(e.to_string()))??;
    report.total = tree.1;
    Ok((report, tree.0))
}

type ReadTags = (usize, OriginEntry, Option<i64>, TrackTags);

async fn read_all_tags(
    origins: &[SharedOrigin],
    work: Vec<(usize, OriginEntry, Option<i64>)>,
    show_progress: bool,
) -> Result<Vec<ReadTags>, SyncError> {
    if work.is_empty() {
        return Ok(Vec::new());
    }
    let origins: Vec<SharedOrigin> = origins.to_vec();
    tokio::task::spawn_blocking(move || {
        let total = work.len();
        let done = AtomicUsize::new(0);
        let next = AtomicUsize::new(0);
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8);
        let bar = (show_progress && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("scanning {bar:40} {pos}/{len} tracks {per_sec} eta {eta}")
            {
                bar.set_style(style);
            }
            bar
        });
        let started = Instant::now();
        let mut results: Vec<Option<TrackTags>> = vec![None; total];
        let slots: Vec<std::sync::Mutex<Option<TrackTags>>> = (0..total).map(|_| std::sync::Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            break;
                        }
                        let (idx, entry, _) = &work[i];
                        let tags = match origins[*idx].open_blocking(&entry.rel_path) {
                            Ok(reader) => tags::read_tags(reader),
                            Err(e) => {
                                tracing::debug!(path = %entry.rel_path.display(), error = %e, "cannot open for tags");
                                TrackTags::default()
                            }
                        };
                        if let Ok(mut slot) = slots[i].lock() {
                            *slot = Some(tags);
                        }
                        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if let Some(bar) = &bar {
                            bar.set_position(n as u64);
                        }
                    }
                });
            }
            if bar.is_none() && show_progress {
                let mut last = Instant::now();
                while done.load(Ordering::Relaxed) < total {
                    std::thread::sleep(Duration::from_millis(100));
                    if last.elapsed() >= Duration::from_secs(2) {
                        tracing::info!(done = done.load(Ordering::Relaxed), total, "scanning tags");
                        last = Instant::now();
                    }
                }
            }
        });
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        for (slot, result) in slots.into_iter().zip(results.iter_mut()) {
            *result = slot.into_inner().unwrap_or_else(|p| p.into_inner());
        }
        tracing::info!(tracks = total, elapsed_ms = started.elapsed().as_millis() as u64, "read tags");
        Ok(work
            .into_iter()
            .zip(results)
            .map(|((idx, entry, id), tags)| (idx, entry, id, tags.unwrap_or_default()))
            .collect())
    })
    .await
    .map_err(|e| SyncError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use musicfs_origins::memory::MemoryOrigin;

    #[tokio::test]
    async fn delta_sync_adds_changes_and_removes_keeping_inodes() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("meta.db")).unwrap());
        let origin = Arc::new(MemoryOrigin::new());
        origin.insert("a.flac", vec![1u8; 10], 1);
        origin.insert("b.mp3", vec![2u8; 10], 1);
        origin.insert("notes.txt", vec![3u8; 10], 1);
        let origins: Vec<SharedOrigin> = vec![origin.clone()];
        let (report, tree) = sync(&db, &origins, false).await.unwrap();
        assert_eq!((report.added, report.total), (2, 2));
        let unknown = tree.lookup(crate::tree::ROOT_INO, b"Unknown Artist").unwrap().ino;
        let album = tree.lookup(unknown, b"Unknown Album").unwrap().ino;
        let a_ino = tree.lookup(album, b"a.flac").unwrap().ino;

        origin.remove(std::path::Path::new("b.mp3"));
        origin.insert("a.flac", vec![9u8; 20], 2);
        origin.insert("c.ogg", vec![4u8; 10], 1);
        let (report, tree) = sync(&db, &origins, false).await.unwrap();
        assert_eq!((report.added, report.changed, report.removed, report.total), (1, 1, 1, 2));
        let a = tree.lookup(album, b"a.flac").unwrap();
        assert_eq!(a.ino, a_ino, "inode numbers are stable across syncs");
        assert!(tree.lookup(album, b"b.mp3").is_none());
        assert!(tree.lookup(album, b"c.ogg").is_some());

        let (again, _) = sync(&db, &origins, false).await.unwrap();
        assert_eq!((again.added, again.changed, again.removed), (0, 0, 0));
    }
}
