//! The files every system of `cargo xtask bench --peers` reads, and the servers that serve them: the read set
//! (three files of random bytes: one read sequentially, one for the time to first byte, one for random reads)
//! and the generated sample library, both kept in the workdir between runs. One `sshd` serves the workdir
//! over SFTP and one S3 server holds the same files, uploaded through the S3 API (s3s-fs computes the MD5 of
//! a whole object on every GET when the object was copied into its data directory instead). A server that
//! cannot start is kept as the reason, shown in the report rows of the systems that need it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use musicfs_test_utils::servers::object_store::ObjectStoreExt;
use musicfs_test_utils::servers::object_store::path::Path as ObjectPath;
use musicfs_test_utils::servers::s3::S3Server;
use musicfs_test_utils::servers::sshd::Sshd;
use musicfs_test_utils::servers::{runtime, tokio};

use super::tools::{MIB, ensure_library, ensure_random_file};

/// The file read sequentially, cold and then cached.
pub const SEQUENTIAL: &str = "sequential.wav";
/// The file whose first bytes are timed, not read before by the mount.
pub const FIRST_BYTE: &str = "first-byte.wav";
/// The file read at random offsets, not read before by the mount.
pub const RANDOM: &str = "random.wav";
/// How many bytes the time to first byte covers.
pub const FIRST_BYTES: usize = 64 << 10;
/// Uploads in flight at once.
const UPLOADS_IN_FLIGHT: usize = 16;

/// A directory of the workdir, which is also its own path over SFTP and a bucket of its own on the S3 server.
/// A bucket per set, not a prefix: a mount of `bucket/prefix` makes rclone and s3fs ask for the object
/// `prefix`, which s3s-fs answers with 500 (it is a directory there), and rclone retries that for over a minute.
pub struct DataSet {
    pub dir: PathBuf,
    pub bucket: &'static str,
}

/// Everything the systems read, and what a correct read returns.
pub struct Data {
    pub workdir: PathBuf,
    pub read_set: DataSet,
    pub library: DataSet,
    pub tracks: usize,
    pub sequential_bytes: usize,
    pub sequential_hash: blake3::Hash,
    pub first_bytes_hash: blake3::Hash,
}

impl Data {
    /// Generates whatever an earlier run did not leave in `workdir`, and hashes the origin's files.
    pub fn prepare(workdir: &Path, size_mib: usize, tracks: usize) -> Result<Data> {
        let read_dir = workdir.join(format!("peers-read-{size_mib}"));
        let sequential_bytes = size_mib * MIB;
        ensure_random_file(&read_dir.join(SEQUENTIAL), sequential_bytes)?;
        ensure_random_file(&read_dir.join(FIRST_BYTE), sequential_bytes.clamp(FIRST_BYTES, 16 * MIB))?;
        ensure_random_file(&read_dir.join(RANDOM), sequential_bytes)?;
        let library_dir = workdir.join(format!("library-{tracks}"));
        ensure_library(&library_dir, tracks)?;
        let sequential = std::fs::read(read_dir.join(SEQUENTIAL)).context("reading the sequential file")?;
        let first = std::fs::read(read_dir.join(FIRST_BYTE)).context("reading the first-byte file")?;
        Ok(Data {
            workdir: workdir.to_owned(),
            read_set: DataSet { dir: read_dir, bucket: "read" },
            library: DataSet { dir: library_dir, bucket: "library" },
            tracks,
            sequential_bytes,
            sequential_hash: blake3::hash(&sequential),
            first_bytes_hash: blake3::hash(&first[..FIRST_BYTES]),
        })
    }
}

/// The loopback servers of the run, or why each could not start.
pub struct Servers {
    pub sshd: Result<Sshd, String>,
    pub s3: Result<S3Server, String>,
}

impl Servers {
    /// Starts sshd serving the workdir and an S3 server holding both data sets.
    pub fn start(data: &Data) -> Servers {
        let sshd = Sshd::start(&data.workdir).map_err(|err| format!("sshd did not start: {err:#}"));
        let s3 = S3Server::start().map_err(|err| format!("the S3 server did not start: {err:#}")).and_then(|s3| {
            let clock = Instant::now();
            let count = upload(&s3, data).map_err(|err| format!("uploading to the S3 server failed: {err:#}"))?;
            println!("  uploaded {count} objects through the S3 API in {:.1} s", clock.elapsed().as_secs_f64());
            Ok(s3)
        });
        Servers { sshd, s3 }
    }

    pub fn sshd(&self) -> Result<&Sshd> {
        self.sshd.as_ref().map_err(|why| anyhow!("{why}"))
    }

    pub fn s3(&self) -> Result<&S3Server> {
        self.s3.as_ref().map_err(|why| anyhow!("{why}"))
    }
}

/// Creates a bucket per data set and PUTs every file of the set into it; returns how many.
fn upload(s3: &S3Server, data: &Data) -> Result<usize> {
    let mut files = Vec::new();
    for set in [&data.read_set, &data.library] {
        s3.http_create_bucket(set.bucket)?;
        let store = std::sync::Arc::new(s3.store(set.bucket)?);
        for path in musicfs_test_utils::files::walk_files(&set.dir)? {
            let rel = path.strip_prefix(&set.dir).context("a file outside its set")?;
            let rel = rel.to_str().with_context(|| format!("not UTF-8: {}", rel.display()))?.to_owned();
            files.push((store.clone(), path.clone(), rel));
        }
    }
    let count = files.len();
    runtime().block_on(async move {
        let mut uploads = tokio::task::JoinSet::new();
        for (store, path, key) in files {
            while uploads.len() >= UPLOADS_IN_FLIGHT {
                uploads.join_next().await.context("an upload task")?.context("an upload task panicked")??;
            }
            uploads.spawn(async move {
                let bytes = tokio::fs::read(&path).await.with_context(|| format!("reading {}", path.display()))?;
                store.put(&ObjectPath::from(key.as_str()), bytes.into()).await.with_context(|| format!("PUT {key}"))?;
                anyhow::Ok(())
            });
        }
        while let Some(done) = uploads.join_next().await {
            done.context("an upload task panicked")??;
        }
        anyhow::Ok(())
    })?;
    Ok(count)
}
