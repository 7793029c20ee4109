//! The local origin: a directory on this machine (a disk, or an NFS/SMB mount point).

use crate::file_reader::FileReader;
use crate::{Origin, OriginEntry, OriginError, ReadSeek, is_safe_relative};
use async_trait::async_trait;
use bytes::Bytes;
use musicfs_core::config::normalise;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub struct LocalOrigin {
    id: String,
    root: PathBuf,
}

impl LocalOrigin {
    pub fn new(id: impl Into<String>, root: impl Into<PathBuf>) -> Self {
        Self { id: id.into(), root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn full(&self, rel: &Path) -> Result<PathBuf, OriginError> {
        if !is_safe_relative(rel) {
            return Err(OriginError::NotFound(rel.to_owned()));
        }
        Ok(self.root.join(rel))
    }
}

/// Size and mtime, plus a version stamp from the inode and ctime (5.6): a tag editor that keeps the mtime, a
/// `touch -d`, `rsync -t` or a clock set back all leave the mtime proving nothing, but every write moves ctime
/// (which nothing can set) and a replace by rename brings a new inode.
fn entry(rel: PathBuf, meta: &std::fs::Metadata) -> OriginEntry {
    let version = crate::stamp(&[
        &meta.dev().to_le_bytes(),
        &meta.ino().to_le_bytes(),
        &meta.ctime().to_le_bytes(),
        &meta.ctime_nsec().to_le_bytes(),
    ]);
    OriginEntry { rel_path: rel, size: meta.len(), mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(), version }
}

/// Listings with fewer files than this stat them on the listing's own thread.
const STAT_ALONE: usize = 4096;
/// Threads a big listing stats its files on: a stat waits on the disk or the network (NFS) as much as on a core.
const STAT_THREADS: usize = 4;

/// The entries of `files` (full paths under `root`), in order; a file without metadata is skipped and logged.
fn stat_files(root: &Path, files: &[PathBuf]) -> Vec<OriginEntry> {
    let mut out = Vec::with_capacity(files.len());
    for path in files {
        let Ok(rel) = path.strip_prefix(root) else { continue };
        // Followed, as the walk follows links: a link's entry is its target's.
        match std::fs::metadata(path) {
            Ok(meta) => out.push(entry(rel.to_owned(), &meta)),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "skipping file without metadata"),
        }
    }
    out
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, OriginError> + Send + 'static,
) -> Result<T, OriginError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| OriginError::Unavailable(format!("blocking task failed: {e}")))?
}

#[async_trait]
impl Origin for LocalOrigin {
    fn id(&self) -> &str {
        &self.id
    }

    async fn list(&self) -> Result<Vec<OriginEntry>, OriginError> {
        let root = self.root.clone();
        blocking(move || {
            // The root itself must exist: an empty listing of a missing NAS path is not "no music".
            std::fs::metadata(&root).map_err(|e| OriginError::from_io(e, &root))?;
            let mut out = Vec::new();
            // Never into a MusicFS mount (issue 16): its files are this library's own, shown again. Matched on
            // the path, and for a symlink on its target, without stat-ing inside such a mount.
            let musicfs_mounts = musicfs_core::mountinfo::musicfs_mount_points();
            let inside_musicfs = |entry: &walkdir::DirEntry| {
                let within = |path: &Path| musicfs_mounts.iter().any(|m| normalise(path).starts_with(m));
                within(entry.path())
                    || entry.path_is_symlink()
                        && std::fs::read_link(entry.path()).is_ok_and(|target| {
                            within(&entry.path().parent().map_or(target.clone(), |dir| dir.join(&target)))
                        })
            };
            let walk = walkdir::WalkDir::new(&root).follow_links(true).sort_by_file_name().into_iter();
            let mut files = Vec::new();
            for item in walk.filter_entry(|entry| {
                let skip = inside_musicfs(entry);
                if skip {
                    tracing::warn!(path = %entry.path().display(), "not scanning a MusicFS mount inside the origin");
                }
                !skip
            }) {
                match item {
                    Ok(item) if item.file_type().is_file() => files.push(item.into_path()),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "skipping unreadable entry in local origin"),
                }
            }
            // The walk reads directories only; one stat per file is most of a big listing's time, so the
            // stats run on a few threads, each over a run of the files in order.
            let threads = if files.len() < STAT_ALONE { 1 } else { STAT_THREADS };
            let per_thread = files.len().div_ceil(threads).max(1);
            let root = &root;
            // A run whose thread died is an unfinished listing, not files gone: the sync must keep the tracks.
            std::thread::scope(|scope| {
                let runs: Vec<_> =
                    files.chunks(per_thread).map(|run| scope.spawn(move || stat_files(root, run))).collect();
                for run in runs {
                    let run = run.join().map_err(|_| {
                        OriginError::Unavailable("a thread stat-ing the local origin's files failed".into())
                    })?;
                    out.extend(run);
                }
                Ok(out)
            })
        })
        .await
    }

    async fn stat(&self, rel: &Path) -> Result<OriginEntry, OriginError> {
        let full = self.full(rel)?;
        let rel = rel.to_owned();
        blocking(move || {
            let meta = std::fs::metadata(&full).map_err(|e| OriginError::from_io(e, &rel))?;
            Ok(entry(rel, &meta))
        })
        .await
    }

    async fn read_range(&self, rel: &Path, offset: u64, len: usize) -> Result<Bytes, OriginError> {
        let full = self.full(rel)?;
        let rel = rel.to_owned();
        blocking(move || {
            // An origin that stops answering mid-read (a dead NAS): `sleep(MS)` holds this read that long.
            fail::fail_point!("origins::read::stall");
            let mut file = std::fs::File::open(&full).map_err(|e| OriginError::from_io(e, &rel))?;
            file.seek(SeekFrom::Start(offset)).map_err(|e| OriginError::from_io(e, &rel))?;
            // Read into spare capacity: no zeroing of a buffer the read overwrites anyway.
            let mut buf = Vec::with_capacity(len);
            file.take(len as u64).read_to_end(&mut buf).map_err(|e| OriginError::from_io(e, &rel))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    fn open_blocking(&self, rel: &Path) -> Result<Box<dyn ReadSeek>, OriginError> {
        let full = self.full(rel)?;
        let file = std::fs::File::open(&full).map_err(|e| OriginError::from_io(e, rel))?;
        let len = file.metadata().map_err(|e| OriginError::from_io(e, rel))?.len();
        Ok(Box::new(FileReader::new(file, len)))
    }

    fn open_sized(&self, rel: &Path, size: u64) -> Result<Box<dyn ReadSeek>, OriginError> {
        // The listing's size: no stat of a file the scan just listed.
        let full = self.full(rel)?;
        let file = std::fs::File::open(&full).map_err(|e| OriginError::from_io(e, rel))?;
        Ok(Box::new(FileReader::new(file, size)))
    }

    async fn health_check(&self) -> Result<(), OriginError> {
        let root = self.root.clone();
        blocking(move || {
            std::fs::read_dir(&root).map_err(|e| OriginError::from_io(e, &root))?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lists_and_reads_ranges() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/x.flac"), b"0123456789").unwrap();
        let origin = LocalOrigin::new("o", dir.path());
        let list = origin.list().await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].rel_path, Path::new("a/b/x.flac"));
        assert_eq!(list[0].size, 10);
        let bytes = origin.read_range(Path::new("a/b/x.flac"), 3, 4).await.unwrap();
        assert_eq!(&bytes[..], b"3456");
        let tail = origin.read_range(Path::new("a/b/x.flac"), 8, 100).await.unwrap();
        assert_eq!(&tail[..], b"89");
    }

    /// A listing big enough to stat on several threads has every file once, in the walk's order (directories
    /// depth first, names sorted), each with its own size.
    #[tokio::test]
    async fn a_big_listing_stats_on_threads_and_keeps_every_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut expected = Vec::new();
        for d in 0..7 {
            std::fs::create_dir_all(dir.path().join(format!("artist {d}/album"))).unwrap();
            for f in 0..(STAT_ALONE / 6) {
                let rel = PathBuf::from(format!("artist {d}/album/{f:05}.flac"));
                std::fs::write(dir.path().join(&rel), vec![0u8; (d * 31 + f) % 97]).unwrap();
                expected.push(rel);
            }
        }
        assert!(expected.len() >= STAT_ALONE);
        let list = LocalOrigin::new("o", dir.path()).list().await.unwrap();
        let listed: Vec<&Path> = list.iter().map(|e| e.rel_path.as_path()).collect();
        assert_eq!(listed, expected.iter().map(PathBuf::as_path).collect::<Vec<_>>());
        for e in &list {
            assert_eq!(e.size, std::fs::metadata(dir.path().join(&e.rel_path)).unwrap().len(), "{e:?}");
        }
    }

    #[tokio::test]
    async fn refuses_paths_that_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let origin = LocalOrigin::new("o", dir.path().join("inner"));
        std::fs::create_dir_all(dir.path().join("inner")).unwrap();
        std::fs::write(dir.path().join("secret"), b"x").unwrap();
        assert!(matches!(origin.read_range(Path::new("../secret"), 0, 1).await, Err(OriginError::NotFound(_))));
        assert!(matches!(origin.read_range(Path::new("/etc/passwd"), 0, 1).await, Err(OriginError::NotFound(_))));
    }

    #[tokio::test]
    async fn a_missing_root_is_an_error_not_an_empty_library() {
        let origin = LocalOrigin::new("o", "/nonexistent/musicfs-origin");
        assert!(origin.list().await.is_err());
        assert!(origin.health_check().await.is_err());
    }
}
