//! Keeping the kernel's caches honest after a sync. The kernel keeps names and attributes for the adapter's
//! TTL and file pages for as long as it likes (keep_cache). When a delta sync swaps in a new tree, what
//! changed is computed here, once, as a list of [`Invalidation`]s. The daemon's kernel-cache invalidator
//! is a lossless consumer of the event bus (3.3): it hands that list to a [`KernelCache`], and the adapter
//! passes it on to the kernel.
//!
//! If that consumer ever loses events, it falls back to [`everything`]. That invalidation covers every name
//! of the current tree and every subtree under the root. A root-level name that appeared and vanished
//! entirely within the lost events is not covered; it can stay cached for at most one TTL.

use musicfs_core::sync_util::lock_or_recover;
use musicfs_meta::Tree;
use musicfs_meta::tree::{NodeKind, ROOT_INO};
use std::cmp::Ordering;
use std::sync::Mutex;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// Forget the name `name` in directory `parent` (removed, or now another inode). For a directory it
    /// also drops everything cached under it.
    Entry { parent: u64, name: Box<[u8]> },
    /// Forget an inode's attributes and cached pages (a file's content changed; a directory's entries did).
    Inode(u64),
}

/// Where invalidations go: the kernel (the adapter's notifier) or, in tests, [`RecordingKernelCache`].
pub trait KernelCache: Send + Sync {
    /// Errors for entries the kernel does not hold are expected and ignored by callers.
    fn invalidate(&self, what: &Invalidation) -> std::io::Result<()>;
}

/// Test double: remembers every invalidation it was given.
#[derive(Default)]
pub struct RecordingKernelCache(Mutex<Vec<Invalidation>>);

impl RecordingKernelCache {
    pub fn take(&self) -> Vec<Invalidation> {
        std::mem::take(&mut *lock_or_recover(&self.0))
    }
}

impl KernelCache for RecordingKernelCache {
    fn invalidate(&self, what: &Invalidation) -> std::io::Result<()> {
        lock_or_recover(&self.0).push(what.clone());
        Ok(())
    }
}

/// Sends every invalidation; returns how many the kernel took. An entry the kernel does not hold answers
/// ENOENT, which is the normal case and not an error.
pub fn apply(cache: &dyn KernelCache, list: &[Invalidation]) -> usize {
    let mut sent = 0;
    for what in list {
        match cache.invalidate(what) {
            Ok(()) => sent += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => tracing::debug!(error = %e, ?what, "kernel cache invalidation refused"),
        }
    }
    sent
}

/// What the kernel may hold from `old` that `new` contradicts.
pub fn changes(old: &Tree, new: &Tree) -> Vec<Invalidation> {
    let mut out = Vec::new();
    let mut dirs = vec![ROOT_INO];
    while let Some(dir) = dirs.pop() {
        let (Some(old_children), new_children) = (old.children(dir), new.children(dir)) else { continue };
        let mut new_children = new_children.into_iter().flatten().peekable();
        let mut dir_changed = false;
        for o in old_children {
            let name = old.name(o).as_bytes();
            // Children are sorted by name: skip (and note) names only the new tree has.
            while new_children.peek().is_some_and(|n| new.name(n).as_bytes() < name) {
                new_children.next();
                dir_changed = true;
            }
            let same = new_children.next_if(|n| new.name(n).as_bytes().cmp(name) == Ordering::Equal);
            match (same, &o.kind) {
                (Some(n), NodeKind::File(of)) if n.ino == o.ino => {
                    if let NodeKind::File(nf) = &n.kind {
                        if (nf.track_id, nf.size, nf.mtime_ns, nf.version)
                            != (of.track_id, of.size, of.mtime_ns, of.version)
                        {
                            out.push(Invalidation::Inode(o.ino));
                        }
                    } else {
                        out.push(Invalidation::Entry { parent: dir, name: name.into() });
                        dir_changed = true;
                    }
                }
                (Some(n), NodeKind::Dir { .. }) if n.ino == o.ino && matches!(n.kind, NodeKind::Dir { .. }) => {
                    dirs.push(o.ino);
                }
                _ => {
                    out.push(Invalidation::Entry { parent: dir, name: name.into() });
                    dir_changed = true;
                }
            }
        }
        if dir_changed || new_children.next().is_some() {
            out.push(Invalidation::Inode(dir));
        }
    }
    // A file keeps its inode when its name moves (new tags, or a ` (2)` after a collision): its data
    // invalidated wherever its content changed, whatever name it had before.
    let before = file_states(old);
    let mut sent: std::collections::HashSet<u64> =
        out.iter().filter_map(|i| if let Invalidation::Inode(ino) = i { Some(*ino) } else { None }).collect();
    for (ino, now) in file_states(new) {
        if before.get(&ino).is_some_and(|was| *was != now) && sent.insert(ino) {
            out.push(Invalidation::Inode(ino));
        }
    }
    out
}

/// Every file of `tree` by inode: what its content is (track, size, mtime, version stamp).
fn file_states(tree: &Tree) -> std::collections::HashMap<u64, (i64, u64, i64, i64)> {
    let mut out = std::collections::HashMap::new();
    let mut dirs = vec![ROOT_INO];
    while let Some(dir) = dirs.pop() {
        for child in tree.children(dir).into_iter().flatten() {
            match &child.kind {
                NodeKind::Dir { .. } => dirs.push(child.ino),
                NodeKind::File(f) => {
                    out.insert(child.ino, (f.track_id, f.size, f.mtime_ns, f.version));
                }
            }
        }
    }
    out
}

/// The fallback after lost events: every inode of `tree`, and every name under the root (which drops
/// whole cached subtrees in the kernel).
pub fn everything(tree: &Tree) -> Vec<Invalidation> {
    let mut out = Vec::new();
    let mut dirs = vec![ROOT_INO];
    while let Some(dir) = dirs.pop() {
        out.push(Invalidation::Inode(dir));
        for child in tree.children(dir).into_iter().flatten() {
            if dir == ROOT_INO {
                out.push(Invalidation::Entry { parent: dir, name: tree.name(child).as_bytes().into() });
            }
            match child.kind {
                NodeKind::Dir { .. } => dirs.push(child.ino),
                NodeKind::File(_) => out.push(Invalidation::Inode(child.ino)),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use musicfs_meta::tree::TreeRow;
    use std::collections::HashMap;

    fn tree(files: &[(&str, u64, u64)]) -> Tree {
        let vpaths: Vec<&str> = files.iter().map(|f| f.0).collect();
        let mut dirs = HashMap::new();
        for (i, d) in Tree::dir_paths_of(vpaths.iter().copied()).into_iter().enumerate() {
            dirs.insert(d, 100 + i as u64);
        }
        let rows = files.iter().map(|&(vpath, ino, size)| TreeRow {
            track_id: ino as i64,
            origin: "o".into(),
            rel_path: vpath.into(),
            size,
            mtime_ns: 0,
            version: 0,
            vpath: vpath.into(),
            ino,
        });
        Tree::build(rows, &dirs)
    }

    fn ino_of(t: &Tree, path: &str) -> u64 {
        path.split('/').try_fold(ROOT_INO, |dir, name| t.lookup(dir, name.as_bytes()).map(|n| n.ino)).unwrap()
    }

    #[test]
    fn changes_name_removed_renamed_and_changed_entries_and_their_directories() {
        let old = tree(&[("A/X/1.flac", 2, 10), ("A/X/2.flac", 3, 10), ("B/Y/3.flac", 4, 10), ("C/Z/4.flac", 5, 10)]);
        // 1 removed, 2 changed in place, 3 unchanged, artist C gone, 6 added under A/X.
        let new = tree(&[("A/X/2.flac", 3, 20), ("A/X/6.flac", 6, 10), ("B/Y/3.flac", 4, 10)]);
        let list = changes(&old, &new);
        let ax = ino_of(&old, "A/X");
        let expected = [
            Invalidation::Entry { parent: ROOT_INO, name: b"C"[..].into() },
            Invalidation::Inode(ROOT_INO),
            Invalidation::Entry { parent: ax, name: b"1.flac"[..].into() },
            Invalidation::Inode(3),
            Invalidation::Inode(ax),
        ];
        for e in &expected {
            assert!(list.contains(e), "{e:?} missing from {list:?}");
        }
        assert_eq!(list.len(), expected.len(), "nothing unchanged is invalidated: {list:?}");
        assert!(changes(&new, &new).is_empty());
    }

    #[test]
    fn a_name_that_now_points_elsewhere_is_invalidated() {
        let old = tree(&[("A/X/1.flac", 2, 10)]);
        let new = tree(&[("A/X/1.flac", 9, 10)]);
        let ax = ino_of(&old, "A/X");
        assert!(changes(&old, &new).contains(&Invalidation::Entry { parent: ax, name: b"1.flac"[..].into() }));
    }

    #[test]
    fn everything_covers_every_inode_and_every_root_name() {
        let t = tree(&[("A/X/1.flac", 2, 10), ("B/Y/3.flac", 4, 10)]);
        let list = everything(&t);
        for ino in [ROOT_INO, 2, 4, ino_of(&t, "A"), ino_of(&t, "A/X"), ino_of(&t, "B/Y")] {
            assert!(list.contains(&Invalidation::Inode(ino)), "inode {ino} missing");
        }
        for name in ["A", "B"] {
            assert!(list.contains(&Invalidation::Entry { parent: ROOT_INO, name: name.as_bytes().into() }));
        }
    }

    /// A file keeps its inode when its name moves; when its content changed as well (a tag edit rewrites
    /// the file and moves it), the kernel's pages of that inode are dropped, though no name matched.
    #[test]
    fn a_file_that_moved_and_changed_has_its_data_invalidated() {
        let old = tree(&[("A/X/1.flac", 7, 10), ("B/Y/2.flac", 8, 10)]);
        let new = tree(&[("C/Z/1 renamed.flac", 7, 20), ("B/Y/2 moved.flac", 8, 10)]);
        let list = changes(&old, &new);
        assert!(list.contains(&Invalidation::Inode(7)), "the moved, changed file kept its pages: {list:?}");
        assert!(!list.contains(&Invalidation::Inode(8)), "a file that only moved lost its pages: {list:?}");
    }
}
