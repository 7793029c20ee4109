//! The control socket: a Unix socket (mode 0600) that answers `musicfs status`, `musicfs shutdown` and
//! Prometheus metrics. One JSON request line in, one answer out.

use crate::signals::Request;
use crate::state::Shared;
use serde::Deserialize;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Command {
    Status,
    Metrics,
    Shutdown { drain_timeout_secs: Option<f64> },
}

/// The socket path for a cache directory (also where `musicfs status --cache-dir` looks).
pub fn socket_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("control.sock")
}

/// Binds the socket (replacing a stale one: the cache lock guarantees no other daemon owns it) and serves
/// until cancelled.
pub fn start(
    path: &Path,
    shared: Arc<Shared>,
    requests: mpsc::UnboundedSender<Request>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
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
                        let (shared, requests) = (shared.clone(), requests.clone());
                        tokio::spawn(async move {
                            if let Err(e) = answer(stream, &shared, &requests).await {
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

async fn answer(stream: UnixStream, shared: &Shared, requests: &mpsc::UnboundedSender<Request>) -> std::io::Result<()> {
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
        Err(e) => format!("{{\"error\":{:?}}}", e.to_string()),
    };
    write.write_all(reply.as_bytes()).await?;
    write.write_all(b"\n").await?;
    write.shutdown().await
}

/// The client side: sends one command and returns the answer.
pub fn request(path: &Path, command: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(command.as_bytes())?;
    stream.write_all(b"\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}
