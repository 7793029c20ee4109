//! In-process fixtures: a library on an in-memory origin, synced into a real SQLite database, with a real
//! chunk store and reader, served by the real filesystem logic — everything but the kernel.

use crate::faulty_origin::{FailMode, FaultyOrigin};
use anyhow::Result;
use bytes::Bytes;
use musicfs_cas::{ChunkBackend, ChunkParams, ChunkStore, ManifestStore, Reader};
use musicfs_fuse::MusicFs;
use musicfs_meta::{Db, sync};
use musicfs_origins::SharedOrigin;
use musicfs_origins::memory::MemoryOrigin;
use std::sync::Arc;
use std::time::Duration;

/// Small chunks, so that even small test files span several.
pub const SMALL_CHUNKS: ChunkParams = ChunkParams { min: 4096, avg: 16384, max: 65536 };

/// A synced library served by [`MusicFs`] in-process. The origin is wrapped in a [`FaultyOrigin`] so tests
/// can break it at any moment; the store is the real one.
pub struct InProcessFs {
    pub dir: tempfile::TempDir,
    pub memory: Arc<MemoryOrigin>,
    pub origin: Arc<FaultyOrigin>,
    pub store: Arc<ChunkStore>,
    pub backend: Arc<dyn ChunkBackend>,
    pub db: Arc<Db>,
    pub fs: Arc<MusicFs>,
    read_timeout: Duration,
}

/// Deterministic file contents for fixture tracks.
pub fn track_bytes(i: usize, len: usize) -> Bytes {
    Bytes::from(crate::files::pseudo_random_bytes(len, i as u64 + 1))
}

impl InProcessFs {
    /// `tracks` untagged files `t000.wav`, … of `len` bytes each (they appear under `Unknown Artist/Unknown Album/`).
    /// Must run inside a multi-threaded tokio runtime.
    pub async fn new(tracks: usize, len: usize, read_timeout: Duration) -> Result<InProcessFs> {
        let store_maker =
            |dir: &std::path::Path| -> Result<Arc<ChunkStore>> { Ok(Arc::new(ChunkStore::open(dir, 1 << 30)?)) };
        let dir = tempfile::tempdir()?;
        let store = store_maker(dir.path())?;
        Self::with_backend(dir, store.clone(), store, tracks, len, read_timeout).await
    }

    /// Like [`InProcessFs::new`], reading chunks through `backend` (e.g. a `FaultyCasStore` over `store`).
    pub async fn with_backend(
        dir: tempfile::TempDir,
        store: Arc<ChunkStore>,
        backend: Arc<dyn ChunkBackend>,
        tracks: usize,
        len: usize,
        read_timeout: Duration,
    ) -> Result<InProcessFs> {
        let memory = Arc::new(MemoryOrigin::new());
        for i in 0..tracks {
            memory.insert(format!("t{i:03}.wav"), track_bytes(i, len), 1);
        }
        let origin = FaultyOrigin::new(memory.clone(), FailMode::Healthy);
        let origins: Vec<SharedOrigin> = vec![origin.clone()];
        let db = Arc::new(Db::open(&dir.path().join("meta.db"))?);
        let (_, tree) = sync::sync(&db, &origins, sync::SyncOptions::default()).await?;
        let manifests: Arc<dyn ManifestStore> = db.clone();
        let reader = Reader::new(backend.clone(), manifests, SMALL_CHUNKS, 1 << 20, read_timeout * 9 / 10);
        let fs = Arc::new(MusicFs::new(tree, reader, &origins, read_timeout));
        Ok(InProcessFs { dir, memory, origin, store, backend, db, fs, read_timeout })
    }

    /// As after a daemon restart: a new reader and filesystem (empty memory cache) over the same database,
    /// chunk store backend and origin. Waits for pending chunk writes first.
    pub async fn restart(&mut self) -> Result<()> {
        self.fs.reader().flush(Duration::from_secs(10)).await?;
        let tree = sync::load_tree(&self.db)?;
        let manifests: Arc<dyn ManifestStore> = self.db.clone();
        let reader = Reader::new(self.backend.clone(), manifests, SMALL_CHUNKS, 1 << 20, self.read_timeout * 9 / 10);
        let origins: Vec<SharedOrigin> = vec![self.origin.clone()];
        self.fs = Arc::new(MusicFs::new(tree, reader, &origins, self.read_timeout));
        Ok(())
    }

    /// The inode of fixture track `i`.
    pub fn ino(&self, i: usize) -> Result<u64> {
        let artist = self.fs.lookup(1, b"Unknown Artist")?.ino;
        let album = self.fs.lookup(artist, b"Unknown Album")?.ino;
        Ok(self.fs.lookup(album, format!("t{i:03}.wav").as_bytes())?.ino)
    }

    /// Reads a whole file through the filesystem logic in `step`-sized reads, as the kernel would.
    pub async fn read_all(&self, ino: u64, step: u32) -> Result<Vec<u8>, musicfs_fuse::FsError> {
        let mut out = Vec::new();
        loop {
            let got = self.fs.read(ino, out.len() as u64, step).await?.into_bytes();
            if got.is_empty() {
                return Ok(out);
            }
            out.extend_from_slice(&got);
        }
    }
}
