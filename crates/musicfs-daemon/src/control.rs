//! The control socket: a Unix socket (mode 0600, in the runtime directory) that answers `musicfs status`, `musicfs shutdown`,
//! `musicfs sync` and Prometheus metrics (one JSON request line in, one answer out), and streams
//! `musicfs events` (one JSON line per event, for as long as the client reads).

use crate::signals::Request;
use crate::state::Shared;
use serde::Deserialize;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    Status,
    Metrics,
    Shutdown {
        drain_timeout_secs: Option<f64>,
    },
    /// Run a delta sync now; answers with what it found.
    Sync,
    /// Stream events until the client hangs up.
    Events,
    /// Tracks matching every word of `query`, best first.
    Search {
        query: String,
        limit: Option<usize>,
    },
    /// Rebuild the search index from the database (6.5).
    SearchRebuild,
}

/// The socket of the daemon serving `cache_dir` (one daemon per cache, 3.9): in the runtime directory, named
/// after the cache directory, so that `musicfs status --cache-dir DIR` finds it.
pub fn socket_path(cache_dir: &Path) -> PathBuf {
    let canonical = std::fs::canonicalize(cache_dir).unwrap_or_else(|_| cache_dir.to_owned());
    let id = blake3::hash(canonical.as_os_str().as_encoded_bytes()).to_hex();
    runtime_dir().join(format!("control-{}.sock", &id[..16]))
}

/// `/run/musicfs` for root (the unit's `RuntimeDirectory=`), else `$XDG_RUNTIME_DIR/musicfs`.
pub fn runtime_dir() -> PathBuf {
    // SAFETY: getuid cannot fail and has no preconditions.
    let uid = unsafe { libc::getuid() };
    match std::env::var_os("XDG_RUNTIME_DIR") {
        _ if uid == 0 => PathBuf::from("/run/musicfs"),
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("musicfs"),
        _ => std::env::temp_dir().join(format!("musicfs-{uid}")),
    }
}

/// Binds the socket (replacing a stale one: the cache lock guarantees no other daemon owns it) and serves
/// until cancelled.
pub fn start(
    path: &Path,
    shared: Arc<Shared>,
    requests: mpsc::UnboundedSender<Request>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let _ = std::fs::remove_file(path);
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
    });
    Ok(())
}

async fn answer(
    stream: UnixStream,
    shared: &Shared,
    requests: &mpsc::UnboundedSender<Request>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(4096));
    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request"))??;
    let reply = match serde_json::from_str::<Command>(line.trim()) {
        Ok(Command::Status) => serde_json::to_string(&shared.status()).unwrap_or_default(),
        Ok(Command::Metrics) => shared.metrics(),
        Ok(Command::Shutdown { drain_timeout_secs }) => {
            let drain = drain_timeout_secs.and_then(|s| Duration::try_from_secs_f64(s).ok());
            let _ = requests.send(Request::Shutdown("musicfs shutdown", drain));
            format!("{{\"shutting_down\":true,\"pid\":{}}}", std::process::id())
        }
        Ok(Command::Sync) => sync_now(shared).await.unwrap_or_else(|e| serde_json::json!({ "error": e }).to_string()),
        Ok(Command::Events) => return stream_events(write, shared, cancel).await,
        Ok(Command::Search { query, limit }) => match shared.search.query(query, limit.unwrap_or(20)).await {
            Ok(hits) => {
                let hits: Vec<_> = hits
                    .iter()
                    .map(|h| serde_json::json!({ "track_id": h.track_id, "path": h.vpath, "score": h.score }))
                    .collect();
                serde_json::json!({ "mount_point": shared.mount_point, "hits": hits }).to_string()
            }
            Err(e) => serde_json::json!({ "error": e }).to_string(),
        },
        Ok(Command::SearchRebuild) => match shared.search.rebuild().await {
            Ok(documents) => serde_json::json!({ "rebuilt": true, "documents": documents }).to_string(),
            Err(e) => serde_json::json!({ "error": e }).to_string(),
        },
        Err(e) => serde_json::json!({ "error": e.to_string() }).to_string(),
    };
    write.write_all(reply.as_bytes()).await?;
    write.write_all(b"\n").await?;
    write.shutdown().await
}

async fn sync_now(shared: &Shared) -> Result<String, String> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    shared.sync_requests.send(reply).await.map_err(|_| "the library watcher is not running".to_owned())?;
    let report = answer.await.map_err(|_| "the library watcher stopped before answering".to_owned())??;
    Ok(report.to_string())
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

/// The client side: sends one command and returns the answer, waiting for it at most `timeout`.
pub fn request(path: &Path, command: &str, timeout: Duration) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(path)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(command.as_bytes())?;
    stream.write_all(b"\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// The client side of a stream: sends `command`, then copies each line of the answer to `out` as it comes,
/// until the daemon hangs up.
pub fn follow(path: &Path, command: &str, mut out: impl std::io::Write) -> std::io::Result<()> {
    use std::io::{BufRead, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(path)?;
    stream.write_all(command.as_bytes())?;
    stream.write_all(b"\n")?;
    for line in std::io::BufReader::new(stream).lines() {
        writeln!(out, "{}", line?)?;
        out.flush()?;
    }
    Ok(())
}
