//! The SFTP origin: a directory on an SSH server, read over SFTP with libssh2 (the `ssh2` crate), whose
//! blocking calls run on blocking threads (`spawn_blocking` for the async trait methods, the caller's own
//! thread for [`Origin::open_blocking`]).
//!
//! Sessions are pooled (3.2): at most [`PoolSettings::max_sessions`] at once, the most recently used one
//! first. A session that sat idle for longer than [`PoolSettings::check_after_idle`] is checked (a stat of
//! the root) before it is used again; idle ones are closed after [`PoolSettings::idle_timeout`] by a small
//! reaper thread. A session whose connection fails is discarded (its socket cut at once, so nothing waits
//! on it) and the operation is retried once on a fresh session within its time bound, so a dropped
//! connection is replaced transparently (N3); the other idle sessions are then checked before reuse.
//!
//! Every operation is bounded: each blocking libssh2 call gets what is left of the operation's deadline
//! as its timeout, connecting (DNS, TCP, SSH handshake, host key check, login, SFTP start) is bounded by
//! [`SftpSettings::connect_timeout`] as well, and the async methods wait for their blocking thread with a
//! tokio timeout as the last word. Listing is bounded per directory, so a big library is not cut off by
//! one timeout.
//!
//! The server's host key must be known: it is checked against an OpenSSH known_hosts file (plain, hashed
//! and wildcard host patterns, `[host]:port`, `@revoked`) or against a configured `SHA256:` fingerprint.
//! An unknown or changed key is refused with a message that names the key's fingerprint.
//!
//! Paths are bytes: names that are not UTF-8 are listed and read as they are. A name that could escape the
//! root (`/`, `..`) is skipped, and so is a symbolic link that resolves outside the root or to anything but
//! a regular file. Errors map to [`OriginError`]: no such file is `NotFound`, a timeout is `Timeout`, a
//! refused connection or failed login is `Unavailable` with a message saying which, and a host name that
//! does not resolve is `Dns` (4.2.5).
//!
//! The parts: this file has the settings, the [`Origin`] impl and how libssh2 errors are classified;
//! `pool` keeps the sessions and runs operations on them, `connect` opens one session, `host_keys`
//! checks the server's key ([`known_hosts`], [`sha256_fingerprint`]); tag parsing reads through the
//! shared [`ReadAhead`].

mod connect;
mod host_keys;
mod pool;
#[cfg(test)]
mod tests;

pub use crate::read_ahead::READ_AHEAD;
pub use host_keys::{known_hosts, sha256_fingerprint};

use crate::read_ahead::ReadAhead;
use crate::{Origin, OriginEntry, OriginError, ReadSeek, is_safe_relative};
use async_trait::async_trait;
use bytes::Bytes;
use pool::{Pool, PoolState, spawn_reaper};
use ssh2::{ErrorCode, FileStat};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

// libssh2's codes (libssh2.h, libssh2_sftp.h).
const LIBSSH2_ERROR_TIMEOUT: i32 = -9;
const LIBSSH2_ERROR_FILE: i32 = -16;
const FX_NO_SUCH_FILE: i32 = 2;
const FX_PERMISSION_DENIED: i32 = 3;
const FX_NO_CONNECTION: i32 = 6;
const FX_CONNECTION_LOST: i32 = 7;
const FX_NO_SUCH_PATH: i32 = 10;

/// How the server's host key is checked. There is no "accept anything": unknown keys are refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// An OpenSSH known_hosts file that must list the key for the host (and port).
    KnownHosts(PathBuf),
    /// The key's SHA-256 fingerprint as OpenSSH prints it: `SHA256:` and 43 base64 characters.
    Fingerprint(String),
}

/// How many sessions, and how long they live.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Sessions open at once (busy and idle); more concurrent operations wait for one, within their bound.
    pub max_sessions: usize,
    /// An idle session is closed after this long.
    pub idle_timeout: Duration,
    /// A session idle for longer than this is checked (a stat of the root) before it is used again.
    pub check_after_idle: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self { max_sessions: 4, idle_timeout: Duration::from_secs(60), check_after_idle: Duration::from_secs(5) }
    }
}

/// Where the server is and how to log in.
#[derive(Clone, Debug)]
pub struct SftpSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The private key to log in with (OpenSSH or PEM format, without a passphrase).
    pub private_key_file: PathBuf,
    pub host_key: HostKeyCheck,
    /// The music directory on the server: absolute, or relative to where the server starts the session.
    pub root: PathBuf,
    /// Bound on one operation (a listing: on each directory), connecting and a retry included.
    pub timeout: Duration,
    /// Bound on opening one session (DNS, TCP, handshake, login, SFTP start).
    pub connect_timeout: Duration,
    pub pool: PoolSettings,
}

/// Counters of the session pool, for logs and tests.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Sessions opened (logged in).
    pub connects: AtomicU64,
    /// Operations served by a session that was already open.
    pub reuses: AtomicU64,
    /// Sessions thrown away after a connection failure, a timeout or a failed check.
    pub discarded: AtomicU64,
    /// Idle sessions closed by the reaper.
    pub closed_idle: AtomicU64,
    /// Operations retried on a fresh session after their session dropped.
    pub retries: AtomicU64,
    /// The cipher the last session opened agreed on with the server (client to server).
    pub cipher: std::sync::Mutex<Option<String>>,
}

pub struct SftpOrigin {
    id: String,
    pool: Arc<Pool>,
    timeout: Duration,
}

impl SftpOrigin {
    /// Sets the origin up; no connection is made until the first operation.
    pub fn new(id: impl Into<String>, settings: SftpSettings) -> Self {
        let id = id.into();
        let timeout = settings.timeout;
        let pool = Arc::new(Pool {
            id: id.clone(),
            target: format!("{}@{}:{}", settings.user, settings.host, settings.port),
            settings,
            state: Mutex::new(PoolState::default()),
            freed: Condvar::new(),
            health: Mutex::new(None),
            stats: PoolStats::default(),
        });
        spawn_reaper(&pool);
        Self { id, pool, timeout }
    }

    /// The pool's counters.
    pub fn stats(&self) -> &PoolStats {
        &self.pool.stats
    }

    /// Sessions open right now (busy or idle).
    pub fn open_sessions(&self) -> usize {
        self.pool.lock().live
    }

    /// Runs `op` on a blocking thread with a deadline one operation timeout away, and waits for it bounded.
    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Pool, Instant) -> Result<T, OriginError> + Send + 'static,
    ) -> Result<T, OriginError> {
        let pool = self.pool.clone();
        let deadline = Instant::now() + self.timeout;
        let task = tokio::task::spawn_blocking(move || op(&pool, deadline));
        // The operation bounds itself; the extra half second only covers scheduling.
        match tokio::time::timeout(self.timeout + Duration::from_millis(500), task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(OriginError::Unavailable(format!("SFTP task failed: {e}"))),
            Err(_) => Err(OriginError::Timeout(self.timeout)),
        }
    }
}

#[async_trait]
impl Origin for SftpOrigin {
    fn id(&self) -> &str {
        &self.id
    }

    async fn list(&self) -> Result<Vec<OriginEntry>, OriginError> {
        let root = self.pool.settings.root.clone();
        // The root's real path, to tell links that stay inside it from links that leave.
        let root_real = self.blocking(move |pool, deadline| pool.realpath(&root, deadline)).await?;
        let mut out = Vec::new();
        let mut dirs = vec![PathBuf::new()];
        while let Some(rel_dir) = dirs.pop() {
            let (pool_root, rr) = (self.pool.settings.root.clone(), root_real.clone());
            let found = self.blocking(move |pool, deadline| pool.list_dir(&pool_root, &rr, &rel_dir, deadline)).await?;
            out.extend(found.files);
            dirs.extend(found.dirs);
        }
        out.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
        Ok(out)
    }

    async fn stat(&self, rel: &Path) -> Result<OriginEntry, OriginError> {
        let rel = rel.to_owned();
        self.blocking(move |pool, deadline| pool.stat_file(&rel, deadline)).await
    }

    async fn read_range(&self, rel: &Path, offset: u64, len: usize) -> Result<Bytes, OriginError> {
        let rel = rel.to_owned();
        self.blocking(move |pool, deadline| pool.read_range(&rel, offset, len, deadline)).await
    }

    fn open_blocking(&self, rel: &Path) -> Result<Box<dyn ReadSeek>, OriginError> {
        let size = self.pool.stat_file(rel, Instant::now() + self.timeout)?.size;
        self.open_sized(rel, size)
    }

    fn open_sized(&self, rel: &Path, size: u64) -> Result<Box<dyn ReadSeek>, OriginError> {
        let (pool, rel, timeout) = (self.pool.clone(), rel.to_owned(), self.timeout);
        Ok(Box::new(ReadAhead::new(size, move |pos, want| {
            pool.read_range(&rel, pos, want, std::time::Instant::now() + timeout)
        })))
    }

    /// One tag read per pooled session: more would only wait for a session.
    fn scan_parallelism(&self) -> usize {
        self.pool.max_sessions()
    }

    /// Half the pool: each read holds a session, and other tracks (and readers far from the ingest) need some.
    fn reads_in_flight(&self) -> usize {
        (self.pool.max_sessions() / 2).max(1)
    }

    async fn health_check(&self) -> Result<(), OriginError> {
        self.blocking(|pool, deadline| pool.check_root(deadline)).await
    }
}

/// Why one operation on one session failed.
#[derive(Debug)]
enum Failure {
    NotFound,
    /// The bound ran out; the session is in doubt and thrown away.
    Timeout,
    /// The session is unusable (connection dropped, protocol error): thrown away, the operation retried once.
    Broken(String),
    /// The server refused this one request (permission denied, not a file, …); the session is fine.
    Refused(std::io::Error),
}

fn classify(e: ssh2::Error) -> Failure {
    match e.code() {
        ErrorCode::SFTP(FX_NO_SUCH_FILE | FX_NO_SUCH_PATH) => Failure::NotFound,
        ErrorCode::SFTP(FX_NO_CONNECTION | FX_CONNECTION_LOST) => Failure::Broken(e.to_string()),
        ErrorCode::SFTP(FX_PERMISSION_DENIED) => {
            Failure::Refused(std::io::Error::new(std::io::ErrorKind::PermissionDenied, format!("SFTP: {e}")))
        }
        ErrorCode::SFTP(_) => Failure::Refused(std::io::Error::other(format!("SFTP: {e}"))),
        ErrorCode::Session(LIBSSH2_ERROR_TIMEOUT) => Failure::Timeout,
        ErrorCode::Session(_) => Failure::Broken(e.to_string()),
    }
}

/// Errors of `File::read`, which come as `io::Error` (ssh2 keeps only the kind): anything but "not found"
/// and a timeout, in the middle of reading an open handle, means the session is gone.
fn classify_io(e: std::io::Error) -> Failure {
    match e.kind() {
        std::io::ErrorKind::NotFound => Failure::NotFound,
        std::io::ErrorKind::TimedOut => Failure::Timeout,
        _ => Failure::Broken(e.to_string()),
    }
}

fn entry(rel: PathBuf, stat: &FileStat) -> OriginEntry {
    let mtime_ns = stat.mtime.map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX / 1_000_000_000) * 1_000_000_000);
    // SFTP tells size and whole-second mtime only: no version stamp (5.6 is weaker here; see the README).
    OriginEntry { rel_path: rel, size: stat.size.unwrap_or(0), mtime_ns, version: 0 }
}

/// Whether a name from a directory listing is one plain path component (no `/`, not `.` or `..`, not empty).
pub fn is_one_name(name: &Path) -> bool {
    let mut parts = name.components();
    matches!((parts.next(), parts.next()), (Some(Component::Normal(_)), None))
        && !name.as_os_str().as_encoded_bytes().contains(&b'/')
}

/// `root/rel` on the server, or None for a relative path that could escape the root.
pub fn remote_path(root: &Path, rel: &Path) -> Option<PathBuf> {
    is_safe_relative(rel).then(|| root.join(rel))
}
