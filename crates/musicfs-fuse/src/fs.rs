//! `MusicFs`: the filesystem's behaviour, independent of FUSE. Metadata comes from the in-memory tree (never
//! blocked by an origin); reads go through the chunk reader, each bounded by the read timeout.

use crate::error::FsError;
use musicfs_cas::{FileRef, Fingerprint, Pieces, Reader};
use musicfs_core::sync_util::{read_or_recover, write_or_recover};
use musicfs_meta::tree::{FileNode, NodeKind, ROOT_INO};
use musicfs_meta::{Node, Tree};
use musicfs_origins::SharedOrigin;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    pub perm: u16,
    pub nlink: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    /// Pass this back to continue the listing after this entry.
    pub next_offset: u64,
    pub kind: Kind,
    pub name: String,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct FsStats {
    pub files: u64,
}

/// Counts reads in flight and, once shutdown starts, turns new ones away (2.3).
#[derive(Debug, Default)]
pub struct ReadGate {
    in_flight: std::sync::atomic::AtomicUsize,
    closed: std::sync::atomic::AtomicBool,
}

/// Held for the life of one read; dropping it (also by a panic) counts the read as finished.
pub struct ReadTicket<'a>(&'a ReadGate);

impl Drop for ReadTicket<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl ReadGate {
    /// A ticket for a new read, or None once the gate is closed.
    pub fn enter(&self) -> Option<ReadTicket<'_>> {
        use std::sync::atomic::Ordering;
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(ReadTicket(self))
    }

    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until no read is in flight or `limit` passes; returns the reads still running.
    pub async fn drain(&self, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        while self.in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.in_flight()
    }
}

pub struct MusicFs {
    pub gate: ReadGate,
    pub stats: crate::stats::OpStats,
    tree: RwLock<Arc<Tree>>,
    reader: Arc<Reader>,
    origins: HashMap<String, SharedOrigin>,
    /// Backup origins by the id of the origin they copy (4.2.6).
    backups: HashMap<String, SharedOrigin>,
    /// Milliseconds; changeable at runtime (config reload).
    read_timeout_ms: std::sync::atomic::AtomicU64,
    started: SystemTime,
}

impl MusicFs {
    pub fn new(tree: Tree, reader: Arc<Reader>, origins: &[SharedOrigin], read_timeout: Duration) -> Self {
        MusicFs {
            gate: ReadGate::default(),
            stats: crate::stats::OpStats::default(),
            tree: RwLock::new(Arc::new(tree)),
            reader,
            origins: origins.iter().map(|o| (o.id().to_owned(), o.clone())).collect(),
            backups: HashMap::new(),
            read_timeout_ms: std::sync::atomic::AtomicU64::new(read_timeout.as_millis() as u64),
            started: SystemTime::now(),
        }
    }

    /// Reads of an origin's tracks fall back to its backup, keyed here by the origin's id (4.2.6).
    pub fn with_backups(mut self, backups: HashMap<String, SharedOrigin>) -> Self {
        self.backups = backups;
        self
    }

    /// The current tree (cheap: an Arc clone under a short read lock).
    pub fn tree(&self) -> Arc<Tree> {
        read_or_recover(&self.tree).clone()
    }

    /// Swaps in a tree from a sync and returns the one it replaced; open files keep reading through their own
    /// file references.
    pub fn replace_tree(&self, tree: Tree) -> Arc<Tree> {
        std::mem::replace(&mut *write_or_recover(&self.tree), Arc::new(tree))
    }

    pub fn reader(&self) -> &Arc<Reader> {
        &self.reader
    }

    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        self.read_timeout_ms.store(timeout.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn attr_of(&self, node: &Node) -> Attr {
        match &node.kind {
            NodeKind::Dir { children } => Attr {
                ino: node.ino,
                kind: Kind::Dir,
                size: 0,
                mtime: self.started,
                perm: 0o555,
                nlink: 2 + children.len() as u32,
            },
            NodeKind::File(f) => Attr {
                ino: node.ino,
                kind: Kind::File,
                size: f.size,
                mtime: UNIX_EPOCH + Duration::from_nanos(f.mtime_ns.max(0) as u64),
                perm: 0o444,
                nlink: 1,
            },
        }
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr, FsError> {
        let tree = self.tree();
        let dir = tree.get(parent).ok_or(FsError::NotFound)?;
        if !matches!(dir.kind, NodeKind::Dir { .. }) {
            return Err(FsError::NotDir);
        }
        tree.lookup(parent, name).map(|n| self.attr_of(n)).ok_or(FsError::NotFound)
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let tree = self.tree();
        tree.get(ino).map(|n| self.attr_of(n)).ok_or(FsError::NotFound)
    }

    /// Entries after `offset` (0 starts the listing), including `.` and `..`.
    pub fn readdir(&self, ino: u64, offset: u64) -> Result<Vec<DirEntry>, FsError> {
        let tree = self.tree();
        let node = tree.get(ino).ok_or(FsError::NotFound)?;
        let children = tree.children(ino).ok_or(FsError::NotDir)?;
        let parent = if ino == ROOT_INO { ROOT_INO } else { node.parent };
        let dots = [(ino, Kind::Dir, ".".to_owned()), (parent, Kind::Dir, "..".to_owned())];
        let all = dots.into_iter().chain(children.map(|c| {
            let kind = if matches!(c.kind, NodeKind::Dir { .. }) { Kind::Dir } else { Kind::File };
            (c.ino, kind, tree.name(c).to_owned())
        }));
        Ok(all
            .enumerate()
            .skip(offset as usize)
            .map(|(i, (ino, kind, name))| DirEntry { ino, next_offset: i as u64 + 1, kind, name })
            .collect())
    }

    /// Opening for writing is refused; opening a directory as a file too.
    pub fn open(&self, ino: u64, wants_write: bool) -> Result<(), FsError> {
        let tree = self.tree();
        match &tree.get(ino).ok_or(FsError::NotFound)?.kind {
            _ if wants_write => Err(FsError::ReadOnly),
            NodeKind::Dir { .. } => Err(FsError::IsDir),
            NodeKind::File(_) => Ok(()),
        }
    }

    fn file_ref(&self, tree: &Tree, file: &FileNode) -> Result<FileRef, FsError> {
        let origin =
            tree.origin_id(file.origin).and_then(|id| self.origins.get(id)).cloned().ok_or(FsError::NotFound)?;
        Ok(FileRef {
            track_id: file.track_id,
            backup: self.backups.get(origin.id()).cloned(),
            origin,
            rel_path: tree.rel_path(file).to_path_buf(),
            fingerprint: Fingerprint { size: file.size, mtime_ns: file.mtime_ns, version: file.version },
        })
    }

    /// The file behind an inode, resolved once per read.
    pub fn file(&self, ino: u64) -> Result<FileRef, FsError> {
        let tree = self.tree();
        match &tree.get(ino).ok_or(FsError::NotFound)?.kind {
            NodeKind::File(f) => self.file_ref(&tree, f),
            NodeKind::Dir { .. } => Err(FsError::IsDir),
        }
    }

    /// Reads up to `size` bytes at `offset`, or fails within the read timeout.
    /// Up to `size` bytes of the file at `offset`, in the buffers that hold them (see [`Pieces`]).
    pub async fn read(&self, ino: u64, offset: u64, size: u32) -> Result<Pieces, FsError> {
        let _ticket = self.gate.enter().ok_or(FsError::ShuttingDown)?;
        let file = self.file(ino)?;
        let limit = self.read_timeout();
        match tokio::time::timeout(limit, self.reader.read_pieces(&file, offset, size)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(FsError::TimedOut(limit)),
        }
    }

    pub fn stats(&self) -> FsStats {
        let tree = self.tree();
        FsStats { files: tree.file_count() as u64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use musicfs_cas::manifest::MemoryManifests;
    use musicfs_cas::{ChunkBackend, ChunkParams, ChunkStore, ManifestStore};

    fn empty_fs(dir: &std::path::Path) -> MusicFs {
        let store: Arc<dyn ChunkBackend> = Arc::new(ChunkStore::open(dir, 1 << 20).unwrap());
        let manifests: Arc<dyn ManifestStore> = Arc::new(MemoryManifests::default());
        let reader = Reader::new(store, manifests, ChunkParams::default(), 1 << 20, Duration::from_secs(1));
        MusicFs::new(Tree::build(Vec::new(), &HashMap::new()), reader, &[], Duration::from_secs(1))
    }

    /// Proves L1: 2.3
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_turns_new_reads_away_and_waits_a_bounded_time_for_running_ones() {
        let gate = Arc::new(ReadGate::default());
        let ticket = gate.enter().expect("open gate admits reads");
        assert_eq!(gate.in_flight(), 1);
        gate.close();
        assert!(gate.enter().is_none(), "a closed gate turns new reads away");
        assert_eq!(gate.drain(Duration::from_millis(100)).await, 1, "the drain gives up after its bound");
        let g = gate.clone();
        let drained = tokio::spawn(async move { g.drain(Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(ticket);
        assert_eq!(drained.await.unwrap(), 0, "the drain ends as soon as the last read finishes");
    }

    /// Proves L1: 2.9
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_panicking_while_holding_the_tree_lock_does_not_stop_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Arc::new(empty_fs(dir.path()));
        let poisoner = fs.clone();
        let joined = std::thread::spawn(move || {
            let _guard = poisoner.tree.write();
            panic!("a tree swap panics halfway");
        })
        .join();
        assert!(joined.is_err() && fs.tree.is_poisoned(), "the lock really is poisoned");
        assert_eq!(fs.getattr(ROOT_INO).unwrap().kind, Kind::Dir, "metadata still answers");
        assert!(fs.readdir(ROOT_INO, 0).unwrap().len() == 2);
        fs.replace_tree(Tree::build(Vec::new(), &HashMap::new()));
        assert!(matches!(fs.lookup(ROOT_INO, b"x"), Err(FsError::NotFound)));
    }
}
