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
//! does not resolve is `Unavailable` with a message that starts with "DNS" (4.2.5).

use crate::{Origin, OriginEntry, OriginError, ReadSeek, is_safe_relative};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use ssh2::{ErrorCode, FileStat, MethodType, Session, Sftp};
use std::cell::Cell;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// The blocking reader used for tag parsing fetches at least this much per request.
pub const READ_AHEAD: usize = 256 << 10;
/// Bound on closing one session politely (an idle one, by the reaper).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// A retry on a fresh session is only worth starting with at least this much time left.
const MIN_RETRY_BUDGET: Duration = Duration::from_millis(50);

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
        Ok(Box::new(BlockingReader {
            pool: self.pool.clone(),
            rel: rel.to_owned(),
            timeout: self.timeout,
            size,
            pos: 0,
            buf: Bytes::new(),
            buf_start: 0,
        }))
    }

    async fn health_check(&self) -> Result<(), OriginError> {
        self.blocking(|pool, deadline| pool.check_root(deadline)).await
    }
}

/// One logged-in session with its SFTP channel.
struct Conn {
    session: Session,
    sftp: Sftp,
    /// The session's socket, to cut it at once when the session is thrown away.
    tcp: TcpStream,
    last_used: Instant,
    /// Set by an operation that succeeded but left the session in doubt (a handle that would not close).
    broken: Cell<bool>,
}

impl Conn {
    /// Bounds the next blocking libssh2 call by what is left until `deadline`.
    fn arm(&self, deadline: Instant) -> Result<(), Failure> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::Timeout);
        }
        self.session.set_timeout(left.as_millis().clamp(1, u32::MAX as u128) as u32);
        Ok(())
    }

    /// Cuts the connection: every later call on this session fails at once instead of waiting.
    fn cut(&self) {
        let _ = self.tcp.shutdown(Shutdown::Both);
    }

    /// Closes the session politely, bounded by [`CLOSE_TIMEOUT`].
    fn close(self) {
        let Conn { session, sftp, tcp, .. } = self;
        session.set_timeout(CLOSE_TIMEOUT.as_millis() as u32);
        drop(sftp);
        let _ = session.disconnect(None, "idle", None);
        drop(session);
        let _ = tcp.shutdown(Shutdown::Both);
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

#[derive(Default)]
struct PoolState {
    /// Idle sessions, the most recently used last.
    idle: Vec<Conn>,
    /// Sessions open (idle, busy, or being opened).
    live: usize,
    /// Idle sessions last used before this instant are checked before reuse (set when one dropped).
    suspect_before: Option<Instant>,
}

struct Pool {
    id: String,
    /// `user@host:port`, for messages.
    target: String,
    settings: SftpSettings,
    state: Mutex<PoolState>,
    /// Signalled when a slot frees up.
    freed: Condvar,
    stats: PoolStats,
}

/// What one directory holds: files for the listing, directories still to walk.
struct DirListing {
    files: Vec<OriginEntry>,
    dirs: Vec<PathBuf>,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    /// Runs `op` on a pooled session; a dropped session is replaced and `op` retried once, within `deadline`.
    fn run<T>(
        &self,
        rel: &Path,
        deadline: Instant,
        op: impl Fn(&Conn, Instant) -> Result<T, Failure>,
    ) -> Result<T, OriginError> {
        let mut retried = false;
        loop {
            let conn = self.checkout(deadline, retried)?;
            let result = op(&conn, deadline);
            match result {
                Ok(value) => {
                    self.checkin(conn);
                    return Ok(value);
                }
                Err(Failure::NotFound) => {
                    self.checkin(conn);
                    return Err(OriginError::NotFound(rel.to_owned()));
                }
                Err(Failure::Refused(e)) => {
                    self.checkin(conn);
                    return Err(OriginError::Io(e));
                }
                Err(Failure::Timeout) => {
                    self.discard(conn, "timed out");
                    return Err(OriginError::Timeout(self.timeout()));
                }
                Err(Failure::Broken(why)) => {
                    self.discard(conn, &why);
                    // The other idle sessions may have gone the same way: check them before reuse.
                    self.lock().suspect_before = Some(Instant::now());
                    let left = deadline.saturating_duration_since(Instant::now());
                    if !retried && left >= MIN_RETRY_BUDGET {
                        retried = true;
                        self.stats.retries.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(origin = %self.id, error = %why, "SFTP session dropped; retrying on a fresh session");
                        continue;
                    }
                    return Err(OriginError::Unavailable(format!("SFTP session to {} dropped: {why}", self.target)));
                }
            }
        }
    }

    /// A session to use: an idle one (checked first if it idled long or is suspect), or a new one if fewer
    /// than the maximum are open; otherwise waits for one, until `deadline`. `fresh` skips the idle ones.
    fn checkout(&self, deadline: Instant, fresh: bool) -> Result<Conn, OriginError> {
        let mut state = self.lock();
        loop {
            if !fresh && let Some(conn) = state.idle.pop() {
                let suspect = state.suspect_before.is_some_and(|t| conn.last_used <= t);
                drop(state);
                if suspect || conn.last_used.elapsed() > self.settings.pool.check_after_idle {
                    let check_by = deadline.min(Instant::now() + self.settings.connect_timeout);
                    if let Err(e) = self.stat_root(&conn, check_by) {
                        self.discard(conn, &format!("check before reuse failed: {e:?}"));
                        state = self.lock();
                        continue;
                    }
                }
                self.stats.reuses.fetch_add(1, Ordering::Relaxed);
                return Ok(conn);
            }
            if fresh && state.live >= self.settings.pool.max_sessions && !state.idle.is_empty() {
                // Make room for the fresh session: close the longest-idle one.
                let oldest = state.idle.remove(0);
                state.live -= 1;
                oldest.cut();
            }
            if state.live < self.settings.pool.max_sessions {
                state.live += 1;
                drop(state);
                return self.connect(deadline).inspect_err(|_| self.release_slot());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(OriginError::Timeout(self.timeout()));
            }
            state = self.freed.wait_timeout(state, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    fn checkin(&self, mut conn: Conn) {
        if conn.broken.get() {
            self.discard(conn, "a file handle did not close");
            return;
        }
        conn.last_used = Instant::now();
        self.lock().idle.push(conn);
        self.freed.notify_one();
    }

    /// Throws a session away (its socket cut first, so dropping it waits for nothing).
    fn discard(&self, conn: Conn, why: &str) {
        conn.cut();
        drop(conn);
        self.stats.discarded.fetch_add(1, Ordering::Relaxed);
        tracing::info!(origin = %self.id, reason = why, "SFTP session discarded");
        self.release_slot();
    }

    fn release_slot(&self) {
        let mut state = self.lock();
        state.live = state.live.saturating_sub(1);
        drop(state);
        self.freed.notify_one();
    }

    /// Closes the sessions idle for longer than the idle timeout.
    fn close_idle(&self) {
        let idle_timeout = self.settings.pool.idle_timeout;
        let expired: Vec<Conn> = {
            let mut state = self.lock();
            let (expired, kept) =
                std::mem::take(&mut state.idle).into_iter().partition(|c: &Conn| c.last_used.elapsed() >= idle_timeout);
            state.idle = kept;
            state.live -= expired.len();
            expired
        };
        if expired.is_empty() {
            return;
        }
        self.freed.notify_all();
        tracing::debug!(origin = %self.id, sessions = expired.len(), "closing idle SFTP sessions");
        for conn in expired {
            conn.close();
            self.stats.closed_idle.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Opens and logs in one session, within the connect timeout and `deadline`.
    fn connect(&self, deadline: Instant) -> Result<Conn, OriginError> {
        let s = &self.settings;
        let started = Instant::now();
        let deadline = deadline.min(started + s.connect_timeout);
        let timed_out = || OriginError::Timeout(s.connect_timeout.min(s.timeout));
        let unavailable = |what: String| OriginError::Unavailable(format!("SFTP origin `{}`: {what}", self.id));
        if let Err(e) = std::fs::File::open(&s.private_key_file) {
            return Err(unavailable(format!("cannot read private_key_file `{}`: {e}", s.private_key_file.display())));
        }
        let addrs = resolve(&s.host, s.port, deadline)?;
        let tcp = connect_tcp(&addrs, deadline).map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => timed_out(),
            std::io::ErrorKind::ConnectionRefused => {
                unavailable(format!("cannot connect to {}:{}: connection refused", s.host, s.port))
            }
            _ => unavailable(format!("cannot connect to {}:{}: {e}", s.host, s.port)),
        })?;
        let _ = tcp.set_nodelay(true);
        let session_socket = tcp.try_clone().map_err(OriginError::Io)?;
        let fail = |e: OriginError| {
            let _ = tcp.shutdown(Shutdown::Both);
            e
        };
        let mut session = Session::new().map_err(|e| fail(unavailable(format!("cannot start libssh2: {e}"))))?;
        session.set_tcp_stream(session_socket);
        // A known_hosts file may list the host under several key types: ask the server for those first.
        let known =
            match &s.host_key {
                HostKeyCheck::KnownHosts(file) => Some(std::fs::read_to_string(file).map_err(|e| {
                    fail(unavailable(format!("cannot read known_hosts_file `{}`: {e}", file.display())))
                })?),
                HostKeyCheck::Fingerprint(_) => None,
            };
        if let Some(text) = &known {
            let types = known_hosts::key_types_for(text, &s.host, s.port);
            if !types.is_empty()
                && let Ok(supported) = session.supported_algs(MethodType::HostKey)
            {
                let prefs = host_key_preferences(&types, &supported);
                if let Err(e) = session.method_pref(MethodType::HostKey, &prefs) {
                    tracing::debug!(origin = %self.id, error = %e, prefs, "cannot set host key preferences");
                }
            }
        }
        let arm = |session: &Session| -> Result<(), OriginError> {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            session.set_timeout(left.as_millis().clamp(1, u32::MAX as u128) as u32);
            Ok(())
        };
        let ssh_error = |what: &str, e: ssh2::Error| match e.code() {
            ErrorCode::Session(LIBSSH2_ERROR_TIMEOUT) => timed_out(),
            _ => unavailable(format!("{what}: {e}")),
        };
        arm(&session).map_err(fail)?;
        session
            .handshake()
            .map_err(|e| fail(ssh_error(&format!("SSH handshake with {}:{} failed", s.host, s.port), e)))?;

        let (blob, _) =
            session.host_key().ok_or_else(|| fail(unavailable(format!("{}:{} sent no host key", s.host, s.port))))?;
        let fingerprint = sha256_fingerprint(blob);
        match &s.host_key {
            HostKeyCheck::Fingerprint(want) if *want == fingerprint => {}
            HostKeyCheck::Fingerprint(want) => {
                return Err(fail(unavailable(format!(
                    "host key of {}:{} is {fingerprint}, not the configured host_key_fingerprint {want}: refusing to \
                     connect (the server's key changed, or something is in between)",
                    s.host, s.port
                ))));
            }
            HostKeyCheck::KnownHosts(file) => {
                let text = known.as_deref().unwrap_or_default();
                let verdict = known_hosts::check(text, &s.host, s.port, blob);
                let name = known_hosts::lookup_name(&s.host, s.port);
                let problem = match verdict {
                    known_hosts::Verdict::Trusted => None,
                    known_hosts::Verdict::Unknown => Some(format!(
                        "host key of {name} ({fingerprint}) is not in known_hosts_file `{}`: unknown host keys are \
                         rejected; check the fingerprint with the server's owner, then add the key (for example \
                         `ssh-keyscan -p {} {} >> {}`)",
                        file.display(),
                        s.port,
                        s.host,
                        file.display()
                    )),
                    known_hosts::Verdict::Changed { line } => Some(format!(
                        "host key of {name} ({fingerprint}) does not match the one in known_hosts_file `{}` line \
                         {line}: refusing to connect (the server's key changed, or something is in between)",
                        file.display()
                    )),
                    known_hosts::Verdict::Revoked { line } => Some(format!(
                        "host key of {name} ({fingerprint}) is marked @revoked in known_hosts_file `{}` line {line}",
                        file.display()
                    )),
                };
                if let Some(problem) = problem {
                    return Err(fail(unavailable(problem)));
                }
            }
        }

        arm(&session).map_err(fail)?;
        session.userauth_pubkey_file(&s.user, None, &s.private_key_file, None).map_err(|e| {
            fail(ssh_error(
                &format!(
                    "public key login as `{}` at {}:{} with `{}` failed (is its public key in the user's \
                     authorized_keys?)",
                    s.user,
                    s.host,
                    s.port,
                    s.private_key_file.display()
                ),
                e,
            ))
        })?;
        if !session.authenticated() {
            return Err(fail(unavailable(format!("login as `{}` at {}:{} was not accepted", s.user, s.host, s.port))));
        }
        arm(&session).map_err(fail)?;
        let sftp = session
            .sftp()
            .map_err(|e| fail(ssh_error(&format!("cannot start the SFTP subsystem on {}:{}", s.host, s.port), e)))?;
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(origin = %self.id, target = %self.target, took = ?started.elapsed(), "SFTP session opened");
        Ok(Conn { session, sftp, tcp, last_used: Instant::now(), broken: Cell::new(false) })
    }

    fn stat_root(&self, conn: &Conn, deadline: Instant) -> Result<FileStat, Failure> {
        conn.arm(deadline)?;
        conn.sftp.stat(&self.settings.root).map_err(classify)
    }

    /// The health check: the root answers a stat and is a directory.
    fn check_root(&self, deadline: Instant) -> Result<(), OriginError> {
        let root = &self.settings.root;
        let stat = self.run(root, deadline, |conn, deadline| self.stat_root(conn, deadline))?;
        if !stat.is_dir() {
            return Err(OriginError::Unavailable(format!(
                "SFTP origin `{}`: `{}` on {} is not a directory",
                self.id,
                root.display(),
                self.target
            )));
        }
        Ok(())
    }

    fn realpath(&self, path: &Path, deadline: Instant) -> Result<PathBuf, OriginError> {
        self.run(path, deadline, |conn, deadline| {
            conn.arm(deadline)?;
            conn.sftp.realpath(path).map_err(classify)
        })
    }

    /// The remote path of a relative one; None if it could escape the root.
    fn remote(&self, rel: &Path) -> Option<PathBuf> {
        remote_path(&self.settings.root, rel)
    }

    /// Size and mtime of a regular file (a link is followed).
    fn stat_file(&self, rel: &Path, deadline: Instant) -> Result<OriginEntry, OriginError> {
        let full = self.remote(rel).ok_or_else(|| OriginError::NotFound(rel.to_owned()))?;
        let stat = self.run(rel, deadline, |conn, deadline| {
            conn.arm(deadline)?;
            conn.sftp.stat(&full).map_err(classify)
        })?;
        if !stat.is_file() {
            return Err(OriginError::NotFound(rel.to_owned()));
        }
        Ok(entry(rel.to_owned(), &stat))
    }

    /// Up to `len` bytes at `offset`: short at the end of the file, empty past it.
    fn read_range(&self, rel: &Path, offset: u64, len: usize, deadline: Instant) -> Result<Bytes, OriginError> {
        let full = self.remote(rel).ok_or_else(|| OriginError::NotFound(rel.to_owned()))?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        self.run(rel, deadline, |conn, deadline| {
            conn.arm(deadline)?;
            let mut file = conn.sftp.open(&full).map_err(classify)?;
            // A seek only moves libssh2's own offset: no request goes out.
            file.seek(SeekFrom::Start(offset)).map_err(classify_io)?;
            let mut buf = BytesMut::zeroed(len);
            let mut filled = 0;
            let read = loop {
                if filled == len {
                    break Ok(());
                }
                if let Err(e) = conn.arm(deadline) {
                    break Err(e);
                }
                match file.read(&mut buf[filled..]) {
                    Ok(0) => break Ok(()),
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(classify_io(e)),
                }
            };
            if let Err(e) = read {
                // Dropping the handle would try to close it over a session that is gone: cut it first.
                conn.cut();
                return Err(e);
            }
            // Closing the handle is one more round trip; give it a little time even at the very end.
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
            conn.session.set_timeout(left.as_millis() as u32);
            if file.close().is_err() {
                conn.broken.set(true);
            }
            buf.truncate(filled);
            Ok(buf.freeze())
        })
    }

    /// One directory of the walk: its regular files (and links to regular files inside the root), and its
    /// subdirectories to walk next.
    fn list_dir(
        &self,
        root: &Path,
        root_real: &Path,
        rel_dir: &Path,
        deadline: Instant,
    ) -> Result<DirListing, OriginError> {
        let dir = root.join(rel_dir);
        self.run(rel_dir, deadline, |conn, deadline| {
            conn.arm(deadline)?;
            let mut handle = conn.sftp.opendir(&dir).map_err(classify)?;
            let mut names = Vec::new();
            loop {
                conn.arm(deadline)?;
                match handle.readdir() {
                    Ok(item) => names.push(item),
                    Err(e) if e.code() == ErrorCode::Session(LIBSSH2_ERROR_FILE) => break,
                    Err(e) => {
                        conn.cut();
                        return Err(classify(e));
                    }
                }
            }
            drop(handle);
            let mut out = DirListing { files: Vec::new(), dirs: Vec::new() };
            for (name, stat) in names {
                if name == Path::new(".") || name == Path::new("..") {
                    continue;
                }
                if !is_one_name(&name) {
                    tracing::warn!(origin = %self.id, dir = %dir.display(), name = %name.display(), "skipping a directory entry that is not a plain name");
                    continue;
                }
                let rel = rel_dir.join(&name);
                let full = dir.join(&name);
                if stat.is_dir() {
                    out.dirs.push(rel);
                } else if stat.is_file() {
                    out.files.push(entry(rel, &stat));
                } else if stat.file_type().is_symlink() {
                    conn.arm(deadline)?;
                    let target = match conn.sftp.realpath(&full) {
                        Ok(target) => target,
                        Err(e) => match classify(e) {
                            Failure::NotFound | Failure::Refused(_) => {
                                tracing::debug!(origin = %self.id, path = %full.display(), "skipping a dangling link");
                                continue;
                            }
                            other => return Err(other),
                        },
                    };
                    if !target.starts_with(root_real) {
                        tracing::warn!(origin = %self.id, path = %full.display(), target = %target.display(), "skipping a link that leaves the origin root");
                        continue;
                    }
                    conn.arm(deadline)?;
                    match conn.sftp.stat(&full) {
                        Ok(target_stat) if target_stat.is_file() => out.files.push(entry(rel, &target_stat)),
                        Ok(_) => {
                            tracing::debug!(origin = %self.id, path = %full.display(), "skipping a link to a directory or special file")
                        }
                        Err(e) => match classify(e) {
                            Failure::NotFound | Failure::Refused(_) => {}
                            other => return Err(other),
                        },
                    }
                }
            }
            Ok(out)
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for conn in std::mem::take(&mut self.lock().idle) {
            conn.cut();
        }
    }
}

/// Closes idle sessions every quarter of the idle timeout; ends once the pool is gone.
fn spawn_reaper(pool: &Arc<Pool>) {
    let weak: Weak<Pool> = Arc::downgrade(pool);
    let every = (pool.settings.pool.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let spawned = std::thread::Builder::new().name(format!("sftp-idle-{}", pool.id)).spawn(move || {
        loop {
            std::thread::sleep(every);
            let Some(pool) = weak.upgrade() else { return };
            pool.close_idle();
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(origin = %pool.id, error = %e, "cannot start the SFTP idle-session reaper; idle sessions stay open");
    }
}

fn entry(rel: PathBuf, stat: &FileStat) -> OriginEntry {
    let mtime_ns = stat.mtime.map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX / 1_000_000_000) * 1_000_000_000);
    OriginEntry { rel_path: rel, size: stat.size.unwrap_or(0), mtime_ns }
}

/// Whether a name from a directory listing is one plain path component (no `/`, not `.` or `..`, not empty).
fn is_one_name(name: &Path) -> bool {
    let mut parts = name.components();
    matches!((parts.next(), parts.next()), (Some(Component::Normal(_)), None))
        && !name.as_os_str().as_encoded_bytes().contains(&b'/')
}

/// `root/rel` on the server, or None for a relative path that could escape the root.
pub fn remote_path(root: &Path, rel: &Path) -> Option<PathBuf> {
    is_safe_relative(rel).then(|| root.join(rel))
}

/// The OpenSSH fingerprint of a host key blob: `SHA256:` and the unpadded base64 of its SHA-256 digest.
pub fn sha256_fingerprint(key_blob: &[u8]) -> String {
    let digest = openssl::sha::sha256(key_blob);
    format!("SHA256:{}", openssl::base64::encode_block(&digest).trim_end_matches('='))
}

/// Host key algorithms to offer: those for the key types known for this host first, then the rest.
fn host_key_preferences(known_types: &[String], supported: &[&str]) -> String {
    let mut prefs: Vec<&str> = Vec::new();
    for t in known_types {
        let algs: &[&str] = match t.as_str() {
            "ssh-rsa" => &["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
            other => &[other][..],
        };
        for alg in algs {
            if let Some(found) = supported.iter().find(|s| *s == alg)
                && !prefs.contains(found)
            {
                prefs.push(found);
            }
        }
    }
    for alg in supported {
        if !prefs.contains(alg) {
            prefs.push(alg);
        }
    }
    prefs.join(",")
}

/// The addresses of `host`, looked up on a helper thread so the lookup is bounded by `deadline` too.
fn resolve(host: &str, port: u16, deadline: Instant) -> Result<Vec<SocketAddr>, OriginError> {
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let name = host.to_owned();
    std::thread::Builder::new()
        .name("sftp-dns".into())
        .spawn(move || {
            let _ = tx.send((name.as_str(), port).to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
        })
        .map_err(OriginError::Io)?;
    let left = deadline.saturating_duration_since(Instant::now());
    match rx.recv_timeout(left) {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Ok(Ok(_)) => Err(OriginError::Unavailable(format!("DNS: cannot resolve {host}: no addresses"))),
        Ok(Err(e)) => Err(OriginError::Unavailable(format!("DNS: cannot resolve {host}: {e}"))),
        Err(_) => Err(OriginError::Unavailable(format!("DNS: resolving {host} took longer than {left:?}"))),
    }
}

/// A TCP connection to the first address that answers, bounded by `deadline`.
fn connect_tcp(addrs: &[SocketAddr], deadline: Instant) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::TimedOut, "no time left to connect");
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"));
        }
        match TcpStream::connect_timeout(addr, left) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// `Read + Seek` over ranged reads through the pool, with a read-ahead buffer so the tag parser's many
/// small reads become a few requests. Used on blocking threads only.
struct BlockingReader {
    pool: Arc<Pool>,
    rel: PathBuf,
    timeout: Duration,
    size: u64,
    pos: u64,
    buf: Bytes,
    buf_start: u64,
}

impl Read for BlockingReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() || self.pos >= self.size {
            return Ok(0);
        }
        let buffered = self.pos >= self.buf_start && self.pos < self.buf_start + self.buf.len() as u64;
        if !buffered {
            let want = out.len().max(READ_AHEAD).min((self.size - self.pos) as usize);
            let deadline = Instant::now() + self.timeout;
            let bytes = self
                .pool
                .read_range(&self.rel, self.pos, want, deadline)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            if bytes.is_empty() {
                return Ok(0);
            }
            self.buf = bytes;
            self.buf_start = self.pos;
        }
        let at = (self.pos - self.buf_start) as usize;
        let n = out.len().min(self.buf.len() - at);
        out[..n].copy_from_slice(&self.buf[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for BlockingReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(n) => {
                self.pos = n;
                Ok(n)
            }
            None => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start of the file")),
        }
    }
}

/// OpenSSH known_hosts files: which lines name a host, and whether they vouch for a key.
pub mod known_hosts {
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::sign::Signer;

    /// What a known_hosts file says about a host's key.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Verdict {
        /// A line for the host lists this key.
        Trusted,
        /// No line for the host has a key of this type.
        Unknown,
        /// A line for the host has a different key of the same type (1-based line number).
        Changed { line: usize },
        /// The key is marked `@revoked`.
        Revoked { line: usize },
    }

    /// The name OpenSSH looks a host up by: `host` on port 22, `[host]:port` elsewhere.
    pub fn lookup_name(host: &str, port: u16) -> String {
        if port == 22 { host.to_owned() } else { format!("[{host}]:{port}") }
    }

    struct Line<'a> {
        number: usize,
        marker: Option<&'a str>,
        hosts: &'a str,
        key_type: &'a str,
        key: Vec<u8>,
    }

    fn lines(text: &str) -> impl Iterator<Item = Line<'_>> {
        text.lines().enumerate().filter_map(|(i, line)| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let mut fields = line.split_whitespace();
            let first = fields.next()?;
            let (marker, hosts) = if first.starts_with('@') { (Some(first), fields.next()?) } else { (None, first) };
            let key_type = fields.next()?;
            let key = openssl::base64::decode_block(fields.next()?).ok()?;
            Some(Line { number: i + 1, marker, hosts, key_type, key })
        })
    }

    /// The key type named inside a key blob (its first SSH string).
    pub fn blob_key_type(blob: &[u8]) -> Option<&str> {
        let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
        std::str::from_utf8(blob.get(4..4 + len)?).ok()
    }

    /// Checks `key` (the server's host key blob) for `host`:`port` against the file's text.
    pub fn check(text: &str, host: &str, port: u16, key: &[u8]) -> Verdict {
        let name = lookup_name(host, port);
        let key_type = blob_key_type(key).unwrap_or_default();
        let mut trusted = false;
        let mut changed = None;
        for line in lines(text) {
            if !hosts_match(line.hosts, &name) {
                continue;
            }
            match line.marker {
                Some("@revoked") if line.key == key => return Verdict::Revoked { line: line.number },
                Some(_) => {}
                None if line.key == key => trusted = true,
                None if line.key_type == key_type => {
                    changed.get_or_insert(line.number);
                }
                None => {}
            }
        }
        match (trusted, changed) {
            (true, _) => Verdict::Trusted,
            (false, Some(line)) => Verdict::Changed { line },
            (false, None) => Verdict::Unknown,
        }
    }

    /// The key types the file lists for `host`:`port`, in file order.
    pub fn key_types_for(text: &str, host: &str, port: u16) -> Vec<String> {
        let name = lookup_name(host, port);
        let mut out: Vec<String> = Vec::new();
        for line in lines(text) {
            if line.marker.is_none() && hosts_match(line.hosts, &name) && !out.iter().any(|t| t == line.key_type) {
                out.push(line.key_type.to_owned());
            }
        }
        out
    }

    /// Whether a host field (`a,b,!c`, wildcards, or one hashed `|1|salt|hash`) names `name`.
    pub fn hosts_match(field: &str, name: &str) -> bool {
        if let Some(hashed) = field.strip_prefix("|1|") {
            return hashed_matches(hashed, name);
        }
        let name = name.to_ascii_lowercase();
        let mut matched = false;
        for pattern in field.split(',') {
            let (negated, pattern) = match pattern.strip_prefix('!') {
                Some(p) => (true, p),
                None => (false, pattern),
            };
            if glob(pattern.to_ascii_lowercase().as_bytes(), name.as_bytes()) {
                if negated {
                    return false;
                }
                matched = true;
            }
        }
        matched
    }

    fn hashed_matches(salt_and_hash: &str, name: &str) -> bool {
        let Some((salt, hash)) = salt_and_hash.split_once('|') else { return false };
        let (Ok(salt), Ok(hash)) = (openssl::base64::decode_block(salt), openssl::base64::decode_block(hash)) else {
            return false;
        };
        let mac = PKey::hmac(&salt).and_then(|key| {
            let mut signer = Signer::new(MessageDigest::sha1(), &key)?;
            signer.update(name.as_bytes())?;
            signer.sign_to_vec()
        });
        mac.is_ok_and(|mac| mac == hash)
    }

    /// `*` and `?` wildcards, as in OpenSSH's match_pattern.
    fn glob(pattern: &[u8], text: &[u8]) -> bool {
        match (pattern.first(), text.first()) {
            (None, None) => true,
            (Some(b'*'), _) => glob(&pattern[1..], text) || (!text.is_empty() && glob(pattern, &text[1..])),
            (Some(b'?'), Some(_)) => glob(&pattern[1..], &text[1..]),
            (Some(p), Some(t)) if p == t => glob(&pattern[1..], &text[1..]),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn relative_paths_map_under_the_root_and_unsafe_ones_are_refused() {
        let root = Path::new("/srv/music");
        assert_eq!(remote_path(root, Path::new("A/B/01.flac")), Some(PathBuf::from("/srv/music/A/B/01.flac")));
        assert_eq!(remote_path(Path::new("music"), Path::new("x.mp3")), Some(PathBuf::from("music/x.mp3")));
        // Bytes that are not UTF-8 stay as they are.
        let odd = Path::new(std::ffi::OsStr::from_bytes(b"caf\xe9/\xff.flac"));
        assert_eq!(remote_path(root, odd).unwrap().as_os_str().as_bytes(), b"/srv/music/caf\xe9/\xff.flac");
        for bad in ["../etc/passwd", "/etc/passwd", "a/../../b", "", "."] {
            assert_eq!(remote_path(root, Path::new(bad)), None, "{bad:?} must be refused");
        }
        // Names in a directory listing: one plain component, whatever its bytes.
        assert!(is_one_name(Path::new("01 - Song.flac")));
        assert!(is_one_name(Path::new(std::ffi::OsStr::from_bytes(b"\xff\xfe.mp3"))));
        for bad in ["..", ".", "", "a/b", "/etc", "../x"] {
            assert!(!is_one_name(Path::new(bad)), "{bad:?} is not one name");
        }
    }

    const KEY_B64: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const OTHER_B64: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIBvXx0tOk6zF4eX7UoQwYqTjGb3V7R6bVZ3r+0U1gq9z";

    fn blob(b64: &str) -> Vec<u8> {
        openssl::base64::decode_block(b64).unwrap()
    }

    #[test]
    fn known_hosts_lines_match_plain_wildcard_negated_and_hashed_hosts() {
        use known_hosts::{Verdict, check, hosts_match, lookup_name};
        assert_eq!(lookup_name("nas", 22), "nas");
        assert_eq!(lookup_name("nas", 2222), "[nas]:2222");
        assert!(hosts_match("nas,10.0.0.5", "nas"));
        assert!(hosts_match("NAS.example.com", "nas.example.com"));
        assert!(hosts_match("127.0.0.1,[127.0.0.1]:*", "[127.0.0.1]:40123"));
        assert!(hosts_match("*.example.com,!bad.example.com", "nas.example.com"));
        assert!(!hosts_match("*.example.com,!bad.example.com", "bad.example.com"));
        assert!(hosts_match("nas?", "nas1") && !hosts_match("nas?", "nas"));
        // The port matters: a plain name is port 22 only.
        assert!(!hosts_match("nas", "[nas]:2222"));
        // `ssh-keygen -H` of "nas": HMAC-SHA1 of the name under the salt.
        let salt = [7u8; 20];
        let key = openssl::pkey::PKey::hmac(&salt).unwrap();
        let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha1(), &key).unwrap();
        signer.update(b"nas").unwrap();
        let hashed = format!(
            "|1|{}|{}",
            openssl::base64::encode_block(&salt),
            openssl::base64::encode_block(&signer.sign_to_vec().unwrap())
        );
        assert!(hosts_match(&hashed, "nas") && !hosts_match(&hashed, "other"));

        let key = blob(KEY_B64);
        let file = format!("# comment\n\n{hashed} ssh-ed25519 {KEY_B64}\n[127.0.0.1]:* ssh-ed25519 {OTHER_B64} x\n");
        assert_eq!(check(&file, "nas", 22, &key), Verdict::Trusted);
        assert_eq!(check(&file, "nas", 2222, &key), Verdict::Unknown, "another port is another host");
        assert_eq!(check(&file, "elsewhere", 22, &key), Verdict::Unknown);
        assert_eq!(check(&file, "127.0.0.1", 4000, &key), Verdict::Changed { line: 4 });
        let revoked = format!("{file}@revoked * ssh-ed25519 {KEY_B64}\n");
        assert_eq!(check(&revoked, "nas", 22, &key), Verdict::Revoked { line: 5 });
        // A different key type for the host is not a change (the server may have several).
        let rsa_only = "nas ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7\n";
        assert_eq!(check(rsa_only, "nas", 22, &key), Verdict::Unknown);
        assert_eq!(known_hosts::key_types_for(&file, "nas", 22), ["ssh-ed25519"]);
        assert_eq!(known_hosts::blob_key_type(&key), Some("ssh-ed25519"));
    }

    #[test]
    fn fingerprints_read_like_openssh_and_known_key_types_go_first() {
        // `ssh-keygen -lf` prints SHA256: and the unpadded base64 of the blob's digest.
        let fp = sha256_fingerprint(&blob(KEY_B64));
        assert!(musicfs_core::config::is_sha256_fingerprint(&fp), "{fp}");
        assert_ne!(fp, sha256_fingerprint(&blob(OTHER_B64)));
        let supported = ["ecdsa-sha2-nistp256", "ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"];
        assert_eq!(
            host_key_preferences(&["ssh-rsa".into()], &supported),
            "rsa-sha2-512,rsa-sha2-256,ssh-rsa,ecdsa-sha2-nistp256,ssh-ed25519"
        );
        assert_eq!(
            host_key_preferences(&["ssh-ed25519".into()], &supported),
            "ssh-ed25519,ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256,ssh-rsa"
        );
    }

    fn settings(host: &str, port: u16) -> SftpSettings {
        SftpSettings {
            host: host.into(),
            port,
            user: "music".into(),
            // Any readable file: these servers never get as far as a login.
            private_key_file: std::env::current_exe().unwrap(),
            host_key: HostKeyCheck::Fingerprint(format!("SHA256:{}", "A".repeat(43))),
            root: PathBuf::from("/srv/music"),
            timeout: Duration::from_millis(700),
            connect_timeout: Duration::from_millis(500),
            pool: PoolSettings::default(),
        }
    }

    /// A server that accepts connections and never answers (no SSH banner): every operation — list, stat,
    /// read, the blocking reader's open and the health check — gives up within its bound.
    /// Proves L1: 4.2.1
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_sftp_operation_on_a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let held = std::thread::spawn(move || {
            let mut conns = Vec::new();
            for c in listener.incoming().take(64) {
                conns.push(c);
            }
        });
        let origin = Arc::new(SftpOrigin::new("sftp", settings("127.0.0.1", addr.port())));
        let rel = Path::new("a.flac");
        // A hang detector around each operation: the origin's own bound (700 ms) must answer first.
        async fn within<T>(op: impl std::future::Future<Output = Result<T, OriginError>>) -> Result<T, OriginError> {
            let started = Instant::now();
            let result = tokio::time::timeout(Duration::from_secs(5), op).await.expect("the operation hung");
            assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
            result
        }
        assert!(matches!(within(origin.list()).await, Err(OriginError::Timeout(_))));
        assert!(matches!(within(origin.stat(rel)).await, Err(OriginError::Timeout(_))));
        assert!(matches!(within(origin.read_range(rel, 0, 10)).await, Err(OriginError::Timeout(_))));
        assert!(matches!(within(origin.health_check()).await, Err(OriginError::Timeout(_))));
        let o = origin.clone();
        let opened = within(async move {
            tokio::task::spawn_blocking(move || o.open_blocking(Path::new("a.flac")).map(|_| ())).await.unwrap()
        })
        .await;
        assert!(matches!(opened, Err(OriginError::Timeout(_))), "{opened:?}");
        // No session was ever opened, and none is left holding a slot.
        assert_eq!(origin.stats().connects.load(Ordering::Relaxed), 0);
        assert_eq!(origin.open_sessions(), 0);
        drop(held);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_connection_is_unavailable_and_a_dns_failure_says_dns() {
        // A port nobody listens on.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let origin = SftpOrigin::new("sftp", settings("127.0.0.1", port));
        let started = Instant::now();
        match origin.health_check().await {
            Err(OriginError::Unavailable(msg)) => {
                assert!(msg.contains("connection refused") && !msg.contains("DNS"), "{msg}")
            }
            other => panic!("a refused connection should be Unavailable, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(2), "a refused connection took {:?}", started.elapsed());
        assert_eq!(origin.open_sessions(), 0, "a failed connect must give its slot back");

        let origin = SftpOrigin::new("sftp", settings("musicfs-no-such-host.invalid", 22));
        for result in [origin.health_check().await, origin.read_range(Path::new("a"), 0, 1).await.map(|_| ())] {
            match result {
                Err(OriginError::Unavailable(msg)) => {
                    assert!(msg.starts_with("DNS") && msg.contains("musicfs-no-such-host.invalid"), "{msg}")
                }
                other => panic!("a DNS failure should be Unavailable(DNS …), got {other:?}"),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreadable_private_key_is_a_clear_error() {
        let mut s = settings("127.0.0.1", 1);
        s.private_key_file = PathBuf::from("/nonexistent/id_ed25519");
        match SftpOrigin::new("sftp", s).health_check().await {
            Err(OriginError::Unavailable(msg)) => {
                assert!(msg.contains("private_key_file") && msg.contains("/nonexistent/id_ed25519"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
    }
}
