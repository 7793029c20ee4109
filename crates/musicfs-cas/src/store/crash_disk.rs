//! `CrashDisk`: an in-memory [`CacheDisk`] that keeps what was written apart from what is durable, so a test
//! can stop the store at any write step and open what a power cut would have left (issue 13, the way redb
//! tests its own crashes).
//!
//! The model is a filesystem with an ordered metadata journal (ext4, xfs):
//! - a file's bytes are durable once synced (`write_durable`, or the index's `sync_data`);
//! - directory operations (create, rename, remove, mkdir) are durable once a `sync_dir` of a directory they
//!   touch commits them, and they commit in the order they were made, so `sync_dir` commits every earlier
//!   one too;
//! - a crash keeps the durable state plus any prefix of the directory operations not yet committed
//!   ([`CrashDisk::images`] gives each of them).
//!
//! The crash itself is a step budget: after `crash_after` mutating steps every further write fails and
//! changes nothing, as if the process had died there. A filesystem that reorders directory operations is not
//! modelled.

use crate::disk::{CacheDisk, DirEntry};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(u64),
}

#[derive(Clone, Debug)]
enum DirOp {
    Create(PathBuf, u64),
    Mkdir(PathBuf),
    Rename(PathBuf, PathBuf),
    Remove(PathBuf),
}

impl DirOp {
    fn touches(&self, dir: &Path) -> bool {
        let parent_is = |p: &PathBuf| p.parent() == Some(dir);
        match self {
            DirOp::Create(p, _) | DirOp::Mkdir(p) | DirOp::Remove(p) => parent_is(p),
            DirOp::Rename(from, to) => parent_is(from) || parent_is(to),
        }
    }

    fn apply(&self, names: &mut BTreeMap<PathBuf, Node>) {
        match self {
            DirOp::Create(p, ino) => {
                names.insert(p.clone(), Node::File(*ino));
            }
            DirOp::Mkdir(p) => {
                names.insert(p.clone(), Node::Dir);
            }
            DirOp::Rename(from, to) => {
                if let Some(node) = names.remove(from) {
                    names.insert(to.clone(), node);
                }
            }
            DirOp::Remove(p) => {
                names.remove(p);
            }
        }
    }
}

/// What a crash left: names and the bytes behind them.
#[derive(Clone, Debug, Default)]
pub(super) struct Image {
    names: BTreeMap<PathBuf, Node>,
    data: HashMap<u64, Vec<u8>>,
}

#[derive(Default)]
struct State {
    names: BTreeMap<PathBuf, Node>,
    data: HashMap<u64, Vec<u8>>,
    durable_names: BTreeMap<PathBuf, Node>,
    durable_data: HashMap<u64, Vec<u8>>,
    /// Directory operations not yet committed, oldest first.
    pending: Vec<DirOp>,
    next_ino: u64,
    steps: u64,
    crash_after: Option<u64>,
}

fn crashed() -> std::io::Error {
    std::io::Error::other("crashed (CrashDisk)")
}

fn not_found(path: &Path) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotFound, format!("{} (CrashDisk)", path.display()))
}

impl State {
    /// One mutating step, refused once the budget is spent.
    fn step(&mut self) -> std::io::Result<()> {
        if self.crash_after.is_some_and(|n| self.steps >= n) {
            return Err(crashed());
        }
        self.steps += 1;
        Ok(())
    }

    fn parent_is_dir(&self, path: &Path) -> std::io::Result<()> {
        match path.parent() {
            Some(dir) if dir.as_os_str().is_empty() || dir == Path::new("/") => Ok(()),
            Some(dir) if self.names.get(dir) == Some(&Node::Dir) => Ok(()),
            _ => Err(not_found(path)),
        }
    }

    fn file(&self, path: &Path) -> std::io::Result<u64> {
        match self.names.get(path) {
            Some(Node::File(ino)) => Ok(*ino),
            _ => Err(not_found(path)),
        }
    }

    fn create(&mut self, path: &Path) -> std::io::Result<u64> {
        self.step()?;
        self.parent_is_dir(path)?;
        self.next_ino += 1;
        let ino = self.next_ino;
        self.names.insert(path.to_owned(), Node::File(ino));
        self.data.insert(ino, Vec::new());
        self.pending.push(DirOp::Create(path.to_owned(), ino));
        Ok(ino)
    }

    fn sync_data(&mut self, ino: u64) -> std::io::Result<()> {
        self.step()?;
        let bytes = self.data.get(&ino).cloned().unwrap_or_default();
        self.durable_data.insert(ino, bytes);
        Ok(())
    }

    fn image_with(&self, committed: usize) -> Image {
        let mut names = self.durable_names.clone();
        for op in &self.pending[..committed] {
            op.apply(&mut names);
        }
        let data = names
            .values()
            .filter_map(|n| match n {
                Node::File(ino) => Some((*ino, self.durable_data.get(ino).cloned().unwrap_or_default())),
                Node::Dir => None,
            })
            .collect();
        Image { names, data }
    }
}

/// The disk double; clones share one state.
#[derive(Clone, Default)]
pub(super) struct CrashDisk {
    state: Arc<Mutex<State>>,
}

impl CrashDisk {
    /// An empty disk that dies after `crash_after` mutating steps (never, with `None`).
    pub(super) fn new(crash_after: Option<u64>) -> CrashDisk {
        let disk = CrashDisk::default();
        disk.lock().crash_after = crash_after;
        disk
    }

    /// A disk holding `image`, all of it durable, that does not crash.
    pub(super) fn from_image(image: &Image) -> CrashDisk {
        let disk = CrashDisk::default();
        {
            let mut state = disk.lock();
            state.names = image.names.clone();
            state.durable_names = image.names.clone();
            state.data = image.data.clone();
            state.durable_data = image.data.clone();
            state.next_ino = image.data.keys().max().copied().unwrap_or(0);
        }
        disk
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test double: a panic elsewhere in a test poisons nothing worth keeping.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The files under `dir` (at any depth) as the running program sees them, with their bytes.
    pub(super) fn files_under(&self, dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let state = self.lock();
        state
            .names
            .iter()
            .filter(|(p, _)| p.starts_with(dir))
            .filter_map(|(p, n)| match n {
                Node::File(ino) => Some((p.clone(), state.data.get(ino).cloned().unwrap_or_default())),
                Node::Dir => None,
            })
            .collect()
    }

    /// Mutating steps taken so far.
    pub(super) fn steps(&self) -> u64 {
        self.lock().steps
    }

    /// Whether the step budget ran out.
    pub(super) fn crashed(&self) -> bool {
        let state = self.lock();
        state.crash_after.is_some_and(|n| state.steps >= n)
    }

    /// Every state a crash now could leave: the durable state plus each prefix of the directory operations
    /// not yet committed (all of them when there are few, else none, half and all).
    pub(super) fn images(&self) -> Vec<Image> {
        let state = self.lock();
        let pending = state.pending.len();
        let mut prefixes: Vec<usize> =
            if pending <= 12 { (0..=pending).collect() } else { vec![0, pending / 2, pending] };
        prefixes.dedup();
        prefixes.into_iter().map(|p| state.image_with(p)).collect()
    }

    /// The index file as redb reaches it.
    fn index_file(&self, path: &Path) -> std::io::Result<IndexFile> {
        let mut state = self.lock();
        let ino = match state.file(path) {
            Ok(ino) => ino,
            Err(_) => state.create(path)?,
        };
        Ok(IndexFile { disk: self.clone(), ino })
    }
}

impl CacheDisk for CrashDisk {
    fn space(&self, _dir: &Path) -> Option<(u64, u64)> {
        None
    }

    fn write_durable(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
        let mut state = self.lock();
        let ino = state.create(path)?;
        state.step()?;
        state.data.insert(ino, data.to_vec());
        state.sync_data(ino)
    }

    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let state = self.lock();
        let ino = state.file(path)?;
        Ok(state.data.get(&ino).cloned().unwrap_or_default())
    }

    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        let mut state = self.lock();
        state.step()?;
        let node = *state.names.get(from).ok_or_else(|| not_found(from))?;
        state.parent_is_dir(to)?;
        state.names.remove(from);
        state.names.insert(to.to_owned(), node);
        state.pending.push(DirOp::Rename(from.to_owned(), to.to_owned()));
        Ok(())
    }

    fn remove(&self, path: &Path) -> std::io::Result<()> {
        let mut state = self.lock();
        state.step()?;
        state.file(path)?;
        state.names.remove(path);
        state.pending.push(DirOp::Remove(path.to_owned()));
        Ok(())
    }

    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        let mut state = self.lock();
        let missing: Vec<PathBuf> = dir
            .ancestors()
            .filter(|a| a.parent().is_some() && !state.names.contains_key(*a))
            .map(Path::to_owned)
            .collect();
        for made in missing.into_iter().rev() {
            state.step()?;
            state.names.insert(made.clone(), Node::Dir);
            state.pending.push(DirOp::Mkdir(made));
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        let mut state = self.lock();
        state.step()?;
        if let Some(last) = state.pending.iter().rposition(|op| op.touches(dir)) {
            let committed: Vec<DirOp> = state.pending.drain(..=last).collect();
            for op in &committed {
                op.apply(&mut state.durable_names);
            }
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> std::io::Result<Vec<DirEntry>> {
        let state = self.lock();
        if state.names.get(dir) != Some(&Node::Dir) {
            return Err(not_found(dir));
        }
        // Paths order by component, so everything under `dir` follows it in one run.
        Ok(state
            .names
            .range(dir.to_owned()..)
            .skip(1)
            .take_while(|(p, _)| p.starts_with(dir))
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, n)| DirEntry {
                name: p.file_name().map(OsString::from).unwrap_or_default(),
                is_dir: *n == Node::Dir,
                len: match n {
                    Node::File(ino) => state.data.get(ino).map_or(0, |d| d.len() as u64),
                    Node::Dir => 0,
                },
            })
            .collect())
    }

    fn open_index(&self, path: &Path) -> Result<redb::Database, redb::DatabaseError> {
        let file = self.index_file(path).map_err(|e| redb::DatabaseError::Storage(redb::StorageError::Io(e)))?;
        redb::Database::builder().create_with_backend(file)
    }
}

/// The index file: redb's writes land in the written bytes, its `sync_data` makes them durable.
struct IndexFile {
    disk: CrashDisk,
    ino: u64,
}

impl std::fmt::Debug for IndexFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IndexFile({})", self.ino)
    }
}

impl redb::StorageBackend for IndexFile {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.disk.lock().data.get(&self.ino).map_or(0, |d| d.len() as u64))
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let state = self.disk.lock();
        let data = state.data.get(&self.ino).map(Vec::as_slice).unwrap_or_default();
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        let bytes = data
            .get(start..start + out.len())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the end"))?;
        out.copy_from_slice(bytes);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut state = self.disk.lock();
        state.step()?;
        let len = usize::try_from(len).map_err(std::io::Error::other)?;
        state.data.entry(self.ino).or_default().resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.disk.lock().sync_data(self.ino)
    }

    fn write(&self, offset: u64, bytes: &[u8]) -> Result<(), std::io::Error> {
        let mut state = self.disk.lock();
        state.step()?;
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        let data = state.data.entry(self.ino).or_default();
        if data.len() < start + bytes.len() {
            data.resize(start + bytes.len(), 0);
        }
        data[start..start + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }
}
