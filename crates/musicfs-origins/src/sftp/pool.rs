//! The session pool: at most `PoolSettings::max_sessions` sessions, the most recently used first, checked
//! before reuse after idling or after a sibling dropped, closed by a reaper thread once idle too long.
//! `Pool::run` runs one operation on a session and retries it once on a fresh session when its session
//! drops. Health checks run on a session of their own, outside the pool ([`Lane::Health`]). Also the
//! operations themselves (stat, ranged read, one directory of a listing), each bounded by its deadline.

use super::{
    Failure, LIBSSH2_ERROR_FILE, PoolStats, SftpSettings, classify, classify_io, entry, is_one_name, remote_path,
};
use crate::{OriginEntry, OriginError};
use bytes::{Bytes, BytesMut};
use musicfs_core::sync_util::lock_or_recover;
use ssh2::{ErrorCode, FileStat, Session, Sftp};
use std::cell::{Cell, RefCell};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// Bound on closing one session politely (an idle one, by the reaper).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a session keeps a file open for the next read of it. Short, so that a file replaced on the
/// server is opened afresh soon (an open handle reads the old one), and a removed one does not keep its space.
const FILE_KEPT: Duration = Duration::from_secs(5);
/// A retry on a fresh session is only worth starting with at least this much time left.
const MIN_RETRY_BUDGET: Duration = Duration::from_millis(50);

/// One logged-in session with its SFTP channel.
pub(super) struct Conn {
    /// The file the last read on this session opened, kept open for the next read of the same file (an
    /// ingest reads block after block; each open and close is a round trip), for [`FILE_KEPT`] at most.
    pub(super) open_file: RefCell<Option<OpenFile>>,
    pub(super) session: Session,
    pub(super) sftp: Sftp,
    /// The session's socket, to cut it at once when the session is thrown away.
    pub(super) tcp: TcpStream,
    pub(super) last_used: Instant,
    /// Set by an operation that succeeded but left the session in doubt (a handle that would not close).
    pub(super) broken: Cell<bool>,
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
        let Conn { open_file, session, sftp, tcp, .. } = self;
        session.set_timeout(CLOSE_TIMEOUT.as_millis() as u32);
        drop(open_file);
        drop(sftp);
        let _ = session.disconnect(None, "idle", None);
        drop(session);
        let _ = tcp.shutdown(Shutdown::Both);
    }
}

/// A remote file a session holds open, which path it is and since when.
pub(super) struct OpenFile {
    path: PathBuf,
    opened: Instant,
    file: ssh2::File,
}

#[derive(Default)]
pub(super) struct PoolState {
    /// Idle sessions, the most recently used last.
    idle: Vec<Conn>,
    /// Sessions open (idle, busy, or being opened).
    pub(super) live: usize,
    /// Idle sessions last used before this instant are checked before reuse (set when one dropped).
    suspect_before: Option<Instant>,
}

/// Which sessions an operation runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    /// The pool's, shared by reads, stats and listings, at most `max_sessions`.
    Pool,
    /// The health checks' own session, outside the pool and its limit. A check asks whether the server
    /// answers now: behind a busy pool it would wait for a read to end and call a slow link down (N1), and
    /// with the pool's sessions closed when idle it would log in anew each round, about eight round trips.
    Health,
}

pub(super) struct Pool {
    pub(super) id: String,
    /// `user@host:port`, for messages.
    pub(super) target: String,
    pub(super) settings: SftpSettings,
    pub(super) state: Mutex<PoolState>,
    /// Signalled when a slot frees up.
    pub(super) freed: Condvar,
    /// The health checks' session between checks ([`Lane::Health`]).
    pub(super) health: Mutex<Option<Conn>>,
    pub(super) stats: PoolStats,
}

/// What one directory holds: files for the listing, directories still to walk.
pub(super) struct DirListing {
    pub(super) files: Vec<OriginEntry>,
    pub(super) dirs: Vec<PathBuf>,
}

impl Pool {
    pub(super) fn lock(&self) -> MutexGuard<'_, PoolState> {
        lock_or_recover(&self.state)
    }

    fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    /// The most sessions open at once.
    pub(super) fn max_sessions(&self) -> usize {
        self.settings.pool.max_sessions
    }

    /// Runs `op` on a pooled session; a dropped session is replaced and `op` retried once, within `deadline`.
    fn run<T>(
        &self,
        rel: &Path,
        deadline: Instant,
        op: impl Fn(&Conn, Instant) -> Result<T, Failure>,
    ) -> Result<T, OriginError> {
        self.run_on(Lane::Pool, rel, deadline, op)
    }

    /// Runs `op` on a session of `lane`; a dropped session is replaced and `op` retried once, within `deadline`.
    fn run_on<T>(
        &self,
        lane: Lane,
        rel: &Path,
        deadline: Instant,
        op: impl Fn(&Conn, Instant) -> Result<T, Failure>,
    ) -> Result<T, OriginError> {
        let mut retried = false;
        loop {
            let conn = match lane {
                Lane::Pool => self.checkout(deadline, retried)?,
                Lane::Health => self.health_session(deadline, retried)?,
            };
            let result = op(&conn, deadline);
            match result {
                Ok(value) => {
                    self.checkin(lane, conn);
                    return Ok(value);
                }
                Err(Failure::NotFound) => {
                    self.checkin(lane, conn);
                    return Err(OriginError::NotFound(rel.to_owned()));
                }
                Err(Failure::Refused(e)) => {
                    self.checkin(lane, conn);
                    return Err(OriginError::Io(e));
                }
                Err(Failure::Timeout) => {
                    self.discard(lane, conn, "timed out");
                    return Err(OriginError::Timeout(self.timeout()));
                }
                Err(Failure::Broken(why)) => {
                    self.discard(lane, conn, &why);
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
                        self.discard(Lane::Pool, conn, &format!("check before reuse failed: {e:?}"));
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

    /// The health checks' session: the one kept from the last check (unless `fresh`), or a new one. Two
    /// checks at once each get one; the second to end closes its own.
    fn health_session(&self, deadline: Instant, fresh: bool) -> Result<Conn, OriginError> {
        match lock_or_recover(&self.health).take() {
            Some(conn) if !fresh => {
                self.stats.reuses.fetch_add(1, Ordering::Relaxed);
                Ok(conn)
            }
            _ => self.connect(deadline),
        }
    }

    fn checkin(&self, lane: Lane, mut conn: Conn) {
        if conn.broken.get() {
            self.discard(lane, conn, "a file handle did not close");
            return;
        }
        conn.last_used = Instant::now();
        match lane {
            Lane::Pool => {
                self.lock().idle.push(conn);
                self.freed.notify_one();
            }
            Lane::Health => {
                let mut kept = lock_or_recover(&self.health);
                match kept.as_ref() {
                    None => *kept = Some(conn),
                    Some(_) => conn.cut(),
                }
            }
        }
    }

    /// Throws a session away (its socket cut first, so dropping it waits for nothing).
    fn discard(&self, lane: Lane, conn: Conn, why: &str) {
        conn.cut();
        drop(conn);
        self.stats.discarded.fetch_add(1, Ordering::Relaxed);
        tracing::info!(origin = %self.id, reason = why, "SFTP session discarded");
        if lane == Lane::Pool {
            self.release_slot();
        }
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

    fn stat_root(&self, conn: &Conn, deadline: Instant) -> Result<FileStat, Failure> {
        conn.arm(deadline)?;
        conn.sftp.stat(&self.settings.root).map_err(classify)
    }

    /// The health check, on its own session: the root answers a stat and is a directory.
    pub(super) fn check_root(&self, deadline: Instant) -> Result<(), OriginError> {
        let root = &self.settings.root;
        let stat = self.run_on(Lane::Health, root, deadline, |conn, deadline| self.stat_root(conn, deadline))?;
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

    pub(super) fn realpath(&self, path: &Path, deadline: Instant) -> Result<PathBuf, OriginError> {
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
    pub(super) fn stat_file(&self, rel: &Path, deadline: Instant) -> Result<OriginEntry, OriginError> {
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
    pub(super) fn read_range(
        &self,
        rel: &Path,
        offset: u64,
        len: usize,
        deadline: Instant,
    ) -> Result<Bytes, OriginError> {
        let full = self.remote(rel).ok_or_else(|| OriginError::NotFound(rel.to_owned()))?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        self.run(rel, deadline, |conn, deadline| {
            conn.arm(deadline)?;
            let kept = conn.open_file.borrow_mut().take();
            let mut open = match kept {
                Some(open) if open.path == full && open.opened.elapsed() < FILE_KEPT => open,
                other => {
                    if let Some(mut old) = other {
                        // Closing the handle is a round trip; one that will not close leaves the session in doubt.
                        if old.file.close().is_err() {
                            conn.broken.set(true);
                        }
                        conn.arm(deadline)?;
                    }
                    OpenFile {
                        path: full.clone(),
                        opened: Instant::now(),
                        file: conn.sftp.open(&full).map_err(classify)?,
                    }
                }
            };
            let file = &mut open.file;
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
                // libssh2 sends read requests for four times the buffer it is given, ahead of the reader
                // (sftp_read's max_read_ahead), and a seek throws away what they bring. A quarter of what is
                // left asks for the range and no more: a 128 KiB read moved 512 KiB before.
                let left = len - filled;
                let ask = if filled == 0 { left.div_ceil(4) } else { (left / 4).max(1) };
                match file.read(&mut buf[filled..filled + ask]) {
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
            // Kept open for the next block; closed when the session reads another file, or closes.
            *conn.open_file.borrow_mut() = Some(open);
            buf.truncate(filled);
            Ok(buf.freeze())
        })
    }

    /// One directory of the walk: its regular files (and links to regular files inside the root), and its
    /// subdirectories to walk next.
    pub(super) fn list_dir(
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
pub(super) fn spawn_reaper(pool: &Arc<Pool>) {
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
