//! Origins: the places music is read from (a local directory, an S3 bucket, a directory on an SFTP server).
//!
//! Every backend implements [`Origin`]. Paths inside an origin are raw bytes relative to its root, so
//! file names that are not UTF-8 still work. [`memory::MemoryOrigin`] is the in-memory test double.

pub mod configured;
pub mod file_reader;
pub mod health;
pub mod local;
pub mod memory;
pub mod read_ahead;
pub mod s3;
pub mod sftp;

use async_trait::async_trait;
use bytes::Bytes;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use configured::{ConfiguredOrigins, from_config};
pub use local::LocalOrigin;
pub use s3::{S3Origin, S3Settings};
pub use sftp::{HostKeyCheck, PoolSettings, SftpOrigin, SftpSettings};

/// One file as an origin lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginEntry {
    /// Relative to the origin root; never absolute, never contains `..`.
    pub rel_path: PathBuf,
    pub size: u64,
    /// Modification time in nanoseconds since the epoch, as the origin reports it (change detection only).
    pub mtime_ns: i64,
    /// A stamp that changes whenever the content may have changed, without trusting the wall clock or a
    /// settable mtime (5.6): a hash of the ETag on S3 (a content hash), of inode and ctime for local files
    /// (the kernel stamps ctime on every change and nothing can set it back). 0 where the origin cannot
    /// tell (SFTP gives size and mtime only); 0 matches any stamp. See [`stamp`].
    pub version: i64,
}

/// A stable, never-zero stamp of some bytes (64-bit FNV-1a): stored in the database, so it must not change
/// between builds, as std's hasher may.
pub fn stamp(parts: &[&[u8]]) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &byte in *part {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        hash = (hash ^ 0xff).wrapping_mul(0x0100_0000_01b3);
    }
    match hash as i64 {
        0 => 1,
        v => v,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("not found on origin: {0}")]
    NotFound(PathBuf),
    #[error("origin timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("origin unavailable: {0}")]
    Unavailable(String),
    /// `host` did not resolve (4.2.5): usually a resolver hiccup, not a dead server, so it is re-checked soon
    /// and does not take the library offline. `detail` says what the resolver said.
    #[error("origin unavailable: DNS: {detail}")]
    Dns { host: String, detail: String },
    #[error("origin I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl OriginError {
    /// A name that did not resolve (4.2.5): see [`OriginError::Dns`].
    pub fn is_dns(&self) -> bool {
        matches!(self, OriginError::Dns { .. })
    }

    pub fn from_io(err: std::io::Error, rel: &Path) -> Self {
        match err.kind() {
            std::io::ErrorKind::NotFound => OriginError::NotFound(rel.to_owned()),
            _ => OriginError::Io(err),
        }
    }
}

/// Something that can be read with `Read + Seek` (used by the tag scanner).
pub trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// A source of music files.
#[async_trait]
pub trait Origin: Send + Sync + 'static {
    /// The configured id (stored with every track).
    fn id(&self) -> &str;

    /// Every regular file under the root, recursively.
    async fn list(&self) -> Result<Vec<OriginEntry>, OriginError>;

    /// Size and mtime of one file.
    async fn stat(&self, rel: &Path) -> Result<OriginEntry, OriginError>;

    /// Up to `len` bytes at `offset`; shorter only at end of file.
    async fn read_range(&self, rel: &Path, offset: u64, len: usize) -> Result<Bytes, OriginError>;

    /// A blocking seekable reader, for tag parsing on a blocking thread.
    fn open_blocking(&self, rel: &Path) -> Result<Box<dyn ReadSeek>, OriginError>;

    /// Like [`Origin::open_blocking`] for a file whose size the caller knows from a listing: a remote origin
    /// skips the request that would ask for it. A file that changed since reads short, as one that changes
    /// while open does.
    fn open_sized(&self, rel: &Path, _size: u64) -> Result<Box<dyn ReadSeek>, OriginError> {
        self.open_blocking(rel)
    }

    /// How many files a scan reads tags from at once. A remote origin answers each request after a round
    /// trip, so several in flight hide it. So does a local disk on a first scan, when the library is not in
    /// the page cache: a thread waiting for the disk costs no CPU, and the disk serves several reads at once.
    /// 100 000 tracks after their pages were evicted, on 2 cores: 6.0 s with 2 threads, 4.1 with 4, 3.6
    /// with 8, 3.5 with 16, 3.8 with 32; from the page cache 2.1–2.3 s with any of 2, 4 or 8.
    fn scan_parallelism(&self) -> usize {
        (4 * std::thread::available_parallelism().map_or(2, |n| n.get())).clamp(8, 16)
    }

    /// How many ranged reads of one file an ingest keeps in flight. A remote origin pays a round trip (and a
    /// server's own per-request cost) for each; several in flight hide it, as s3fs and rclone do. A local disk
    /// answers from the page cache at memory speed: one at a time, overlapped with the chunker, is enough.
    fn reads_in_flight(&self) -> usize {
        1
    }

    /// Whether a random read of an uncached track starts its ingest (the whole track read and cached from its
    /// start), as a player's first read does. An object store answers each request after a round trip of
    /// tens of milliseconds and counts every request: one pass over the track, after which every read is a
    /// cache hit, beats a request per random read (s3fs and rclone fetch ahead for the same reason). A disk
    /// or a file server answering within a millisecond serves random reads best alone: an ingest beside
    /// them only takes their CPU and connections.
    fn random_reads_ingest(&self) -> bool {
        false
    }

    /// A cheap check that the origin answers.
    async fn health_check(&self) -> Result<(), OriginError>;
}

pub type SharedOrigin = Arc<dyn Origin>;

/// Rejects relative paths that could escape an origin root.
pub fn is_safe_relative(rel: &Path) -> bool {
    rel.components().all(|c| matches!(c, std::path::Component::Normal(_))) && rel.components().next().is_some()
}
