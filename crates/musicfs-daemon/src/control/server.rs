//! The daemon side of the control socket: binds it (mode 0600, in the runtime directory), reads one
//! [`Command`] line per connection and writes the typed answer, or streams events for `musicfs events`.

use super::protocol::{
    Command, DEFAULT_SEARCH_LIMIT, ErrorAnswer, RebuildAnswer, SearchAnswer, SearchHit, ShutdownAnswer,
};
use crate::signals::Request;
use crate::state::Shared;
use serde::Serialize;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The longest command line read; anything longer is not a command.
const MAX_COMMAND_BYTES: u64 = 4096;
/// How long a client may take to send its command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the socket (replacing a stale one: the cache lock guarantees no other daemon owns it) and serves
/// until cancelled. The socket's lock file (see [`remove_dead_sockets`]) is held for as long as it serves.
pub fn start(
    path: &Path,
    shared: Arc<Shared>,
    requests: mpsc::UnboundedSender<Request>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    // Locked before the socket exists: from then on no other daemon's sweep can take it for dead, not even
    // between its bind and its listen, when a connect is refused as for a dead one.
    let lock = lock_socket(path)?;
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        let removed = remove_dead_sockets(dir);
        if removed > 0 {
            tracing::info!(removed, dir = %dir.display(), "removed control sockets whose daemon is gone");
        }
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let path = path.to_owned();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let (shared, requests, cancel) = (shared.clone(), requests.clone(), cancel.clone());
                        tokio::spawn(async move {
                            if let Err(e) = answer(stream, &shared, &requests, cancel).await {
                                tracing::debug!(error = %e, "control connection failed");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        let _ = std::fs::remove_file(&path);
        drop(lock);
    });
    Ok(())
}

/// The lock file beside a control socket: `control-ID.sock` → `control-ID.lock`.
fn lock_path(socket: &Path) -> std::path::PathBuf {
    socket.with_extension("lock")
}

/// Opens (0600) and locks the socket's lock file; a sweep holds it for microseconds, so a few tries suffice.
fn lock_socket(socket: &Path) -> std::io::Result<std::fs::File> {
    let file = open_lock(socket)?;
    for _ in 0..100 {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(10)),
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("another daemon holds {}", lock_path(socket).display()),
    ))
}

fn open_lock(socket: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(lock_path(socket))
}

/// Only the daemon's own user (and root) may use its control socket: checked on the connection's peer
/// credentials, not only on the socket file's mode, which a packager or an admin may open up.
fn peer_allowed(stream: &UnixStream) -> Result<(), String> {
    let peer = stream.peer_cred().map_err(|e| format!("cannot tell who is asking: {e}"))?;
    // SAFETY: geteuid cannot fail and has no preconditions.
    let me = unsafe { libc::geteuid() };
    if peer.uid() == me || peer.uid() == 0 {
        return Ok(());
    }
    tracing::warn!(uid = peer.uid(), pid = ?peer.pid(), "control connection refused: another user");
    Err(format!("permission denied: uid {} may not control a daemon running as uid {me}", peer.uid()))
}

/// Removes the `control-*.sock` files in `dir` that no daemon listens on any more (a daemon killed with
/// SIGKILL cannot remove its own); returns how many. A socket is dead when its lock file is free (a daemon
/// holds it from before its bind until it exits, and the kernel drops it with the process) and a connect is
/// refused. The lock files stay, one per cache directory ever served: removing one would race a daemon
/// that has just opened it.
pub fn remove_dead_sockets(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("control-") && name.ends_with(".sock")) {
            continue;
        }
        let path = entry.path();
        let Ok(lock) = open_lock(&path) else { continue };
        if lock.try_lock().is_err() {
            continue;
        }
        if let Err(e) = std::os::unix::net::UnixStream::connect(&path)
            && e.kind() == std::io::ErrorKind::ConnectionRefused
            && std::fs::remove_file(&path).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// One answer as its JSON line (without the newline); an error becomes `{"error": …}`.
fn json<T: Serialize, E: std::fmt::Display>(answer: Result<T, E>) -> String {
    let text = match answer {
        Ok(answer) => serde_json::to_string(&answer),
        Err(error) => serde_json::to_string(&ErrorAnswer { error: error.to_string() }),
    };
    text.unwrap_or_else(|e| format!("{{\"error\":\"the answer could not be encoded: {e}\"}}"))
}

async fn answer(
    stream: UnixStream,
    shared: &Shared,
    requests: &mpsc::UnboundedSender<Request>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let allowed = peer_allowed(&stream);
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_COMMAND_BYTES));
    tokio::time::timeout(COMMAND_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request"))??;
    // Refused after the request is read: closing on unread bytes would reset the connection and lose the
    // answer that says why.
    if let Err(refused) = allowed {
        write.write_all(format!("{}\n", json::<(), String>(Err(refused))).as_bytes()).await?;
        return Ok(());
    }
    let command = serde_json::from_str::<Command>(line.trim());
    let reply = match command {
        Ok(Command::Status) => json::<_, String>(Ok(shared.status())),
        Ok(Command::Metrics) => shared.metrics(),
        Ok(Command::Shutdown { drain_timeout_secs }) => {
            let drain = drain_timeout_secs.and_then(|s| Duration::try_from_secs_f64(s).ok());
            let _ = requests.send(Request::Shutdown("musicfs shutdown", drain));
            json::<_, String>(Ok(ShutdownAnswer { shutting_down: true, pid: std::process::id() }))
        }
        Ok(Command::Restart) if !shared.connection_kept => json::<(), _>(Err(
            "no service manager holds the FUSE connection, so a restart would unmount: use `musicfs shutdown` and start again",
        )),
        Ok(Command::Restart) => {
            let _ = requests.send(Request::Restart("musicfs shutdown --restart"));
            json::<_, String>(Ok(ShutdownAnswer { shutting_down: true, pid: std::process::id() }))
        }
        Ok(Command::Sync) => json(sync_now(shared).await),
        Ok(Command::Events) => return stream_events(write, shared, cancel).await,
        Ok(Command::Search { query, limit }) => {
            let hits = shared.search.query(query, limit.unwrap_or(DEFAULT_SEARCH_LIMIT)).await;
            json(hits.map(|hits| {
                SearchAnswer {
                    hits: hits
                        .into_iter()
                        .map(|h| SearchHit { path: h.vpath, score: h.score, track_id: h.track_id })
                        .collect(),
                    mount_point: shared.mount_point.clone(),
                }
            }))
        }
        Ok(Command::SearchRebuild) => {
            json(shared.search.rebuild().await.map(|documents| RebuildAnswer { documents, rebuilt: true }))
        }
        Err(e) => json::<(), _>(Err(e)),
    };
    write.write_all(reply.as_bytes()).await?;
    write.write_all(b"\n").await?;
    write.shutdown().await
}

/// Why `musicfs sync` got no report.
#[derive(Debug, thiserror::Error)]
enum SyncNowError {
    #[error("the library watcher is not running")]
    WatcherNotRunning,
    #[error("the library watcher stopped before answering")]
    WatcherStopped,
    #[error(transparent)]
    Sync(#[from] musicfs_meta::sync::SyncError),
}

async fn sync_now(shared: &Shared) -> Result<super::protocol::SyncReport, SyncNowError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    shared.sync_requests.send(reply).await.map_err(|_| SyncNowError::WatcherNotRunning)?;
    Ok(answer.await.map_err(|_| SyncNowError::WatcherStopped)??)
}

/// `musicfs events`: a lossy consumer (3.3). A client that reads too slowly loses events and is told how
/// many, in a `lost` line.
async fn stream_events(
    mut write: tokio::net::unix::OwnedWriteHalf,
    shared: &Shared,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    use musicfs_core::events::{Delivery, Guarantee};
    let mut events = shared.events.subscribe("musicfs events", Guarantee::Lossy);
    let hello = serde_json::json!({ "event": "subscribed", "capacity": shared.events.capacity() });
    write.write_all(format!("{hello}\n").as_bytes()).await?;
    loop {
        let line = tokio::select! {
            _ = cancel.cancelled() => return write.shutdown().await,
            delivery = events.next() => match delivery {
                Delivery::Event(event) => serde_json::to_string(&event).unwrap_or_default(),
                Delivery::Lost(count) => serde_json::json!({ "event": "lost", "count": count }).to_string(),
                Delivery::Closed => return write.shutdown().await,
            },
        };
        write.write_all(format!("{line}\n").as_bytes()).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sockets_nobody_listens_on_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let live_path = dir.path().join("control-live.sock");
        let _live = std::os::unix::net::UnixListener::bind(&live_path).unwrap();
        // A daemon killed with SIGKILL leaves its socket file behind, with nothing listening.
        let dead_path = dir.path().join("control-dead.sock");
        drop(std::os::unix::net::UnixListener::bind(&dead_path).unwrap());
        let other = dir.path().join("notes.sock");
        drop(std::os::unix::net::UnixListener::bind(&other).unwrap());
        assert_eq!(remove_dead_sockets(dir.path()), 1);
        assert!(!dead_path.exists(), "the dead daemon's socket is still there");
        assert!(live_path.exists(), "a live daemon's socket was removed");
        assert!(other.exists(), "a socket that is not a control socket was removed");
        assert_eq!(remove_dead_sockets(&dir.path().join("missing")), 0);
    }

    /// Between a daemon's bind and its listen a connect is refused as for a dead socket: CI once saw one
    /// daemon's sweep remove another's socket in that instant. The lock the starting daemon holds keeps it.
    #[test]
    fn a_socket_whose_lock_is_held_is_kept_even_when_a_connect_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let starting = dir.path().join("control-starting.sock");
        let lock = lock_socket(&starting).unwrap();
        // Bound, not yet listening: refuses connects.
        drop(std::os::unix::net::UnixListener::bind(&starting).unwrap());
        assert_eq!(remove_dead_sockets(dir.path()), 0);
        assert!(starting.exists(), "the starting daemon's socket was swept");
        drop(lock);
        assert_eq!(remove_dead_sockets(dir.path()), 1);
        assert!(!starting.exists());
        assert!(lock_path(&starting).exists(), "the lock file is kept");
    }
}
