//! The client side of the control socket, used by the `musicfs` command line (and by anyone who wants to ask
//! a running daemon something): one method per [`Command`], each returning the typed answer or a
//! [`ControlError`] that says whether no daemon answered, the daemon answered an error, or the answer made no
//! sense.

use super::protocol::{Command, ErrorAnswer, RebuildAnswer, SearchAnswer, ShutdownAnswer, Status, SyncReport};
use serde::de::DeserializeOwned;
use std::io::{BufRead, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long `status`, `metrics`, `search` and `shutdown` wait for the daemon's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `sync` and `search rebuild` wait: on a large library they may take much longer.
pub const LONG_ANSWER_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long [`wait_for_exit`] waits beyond the drain timeout for the rest of an ordered shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing listens on the socket, or the connection broke before a whole answer came.
    #[error("no running daemon answers on {} ({source})", socket.display())]
    NoDaemon { socket: PathBuf, source: std::io::Error },
    /// The daemon answered `{"error": …}`.
    #[error("the daemon could not do it: {message}")]
    Daemon { message: String },
    /// The answer is not what the protocol says.
    #[error("unexpected answer from the daemon: {answer}")]
    BadAnswer { answer: String, source: serde_json::Error },
    /// Writing a streamed answer to our own output failed (a closed pipe, for one).
    #[error("cannot write the daemon's answer: {0}")]
    Output(#[source] std::io::Error),
}

/// A connection-less handle on one daemon's control socket: every call opens its own connection.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// The client of the daemon serving `cache_dir`.
    pub fn for_cache(cache_dir: &Path) -> Client {
        Client { socket: super::socket_path(cache_dir) }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn status(&self) -> Result<Status, ControlError> {
        parse(&self.request(&Command::Status, ANSWER_TIMEOUT)?)
    }

    /// Prometheus text, as the daemon sent it.
    pub fn metrics(&self) -> Result<String, ControlError> {
        let answer = self.request(&Command::Metrics, ANSWER_TIMEOUT)?;
        match serde_json::from_str::<ErrorAnswer>(&answer) {
            Ok(ErrorAnswer { error }) => Err(ControlError::Daemon { message: error }),
            Err(_) => Ok(answer),
        }
    }

    /// Asks for an ordered shutdown, draining reads for at most `drain` (the daemon's default when `None`).
    /// Returns once the daemon has accepted, not once it has exited: see [`wait_for_exit`].
    pub fn shutdown(&self, drain: Option<Duration>) -> Result<ShutdownAnswer, ControlError> {
        let command = Command::Shutdown { drain_timeout_secs: drain.map(|d| d.as_secs_f64()) };
        parse(&self.request(&command, ANSWER_TIMEOUT)?)
    }

    /// Asks for a restart that keeps the mount (2.11); returns once the daemon has accepted.
    pub fn restart(&self) -> Result<ShutdownAnswer, ControlError> {
        parse(&self.request(&Command::Restart, ANSWER_TIMEOUT)?)
    }

    /// Runs a delta sync now and returns what it found.
    pub fn sync(&self) -> Result<SyncReport, ControlError> {
        parse(&self.request(&Command::Sync, LONG_ANSWER_TIMEOUT)?)
    }

    pub fn search(&self, query: String, limit: usize) -> Result<SearchAnswer, ControlError> {
        let command = Command::Search { query, limit: Some(limit) };
        parse(&self.request(&command, ANSWER_TIMEOUT)?)
    }

    pub fn search_rebuild(&self) -> Result<RebuildAnswer, ControlError> {
        parse(&self.request(&Command::SearchRebuild, LONG_ANSWER_TIMEOUT)?)
    }

    /// Copies the daemon's event stream to `out`, one JSON line per event, until the daemon hangs up.
    pub fn follow_events(&self, mut out: impl Write) -> Result<(), ControlError> {
        let stream = self.send(&Command::Events)?;
        for line in std::io::BufReader::new(stream).lines() {
            let line = line.map_err(|source| self.no_daemon(source))?;
            writeln!(out, "{line}").map_err(ControlError::Output)?;
            out.flush().map_err(ControlError::Output)?;
        }
        Ok(())
    }

    /// Connects and sends `command` as one line.
    fn send(&self, command: &Command) -> Result<UnixStream, ControlError> {
        let line = serde_json::to_string(command).unwrap_or_default();
        let mut stream = UnixStream::connect(&self.socket).map_err(|source| self.no_daemon(source))?;
        stream.write_all(format!("{line}\n").as_bytes()).map_err(|source| self.no_daemon(source))?;
        Ok(stream)
    }

    /// Sends `command` and returns the whole answer, waiting for it at most `timeout`.
    fn request(&self, command: &Command, timeout: Duration) -> Result<String, ControlError> {
        let mut stream = self.send(command)?;
        let mut answer = String::new();
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.read_to_string(&mut answer))
            .map_err(|source| self.no_daemon(source))?;
        Ok(answer)
    }

    fn no_daemon(&self, source: std::io::Error) -> ControlError {
        ControlError::NoDaemon { socket: self.socket.clone(), source }
    }
}

/// Reads an answer: `{"error": …}` becomes [`ControlError::Daemon`], anything else must be a `T`.
fn parse<T: DeserializeOwned>(answer: &str) -> Result<T, ControlError> {
    if let Ok(ErrorAnswer { error }) = serde_json::from_str::<ErrorAnswer>(answer) {
        return Err(ControlError::Daemon { message: error });
    }
    serde_json::from_str(answer).map_err(|source| ControlError::BadAnswer { answer: answer.trim().to_owned(), source })
}

/// The daemon did not exit in time after a shutdown request.
#[derive(Debug, thiserror::Error)]
#[error("daemon {pid} still running after {waited:?}")]
pub struct StillRunning {
    pub pid: u32,
    pub waited: Duration,
}

/// Waits until process `pid` has exited (gone, or a zombie waiting for its parent), at most `limit`: what
/// `musicfs shutdown` does after the daemon accepted, so that systemd's ExecStop returns when it is done.
pub fn wait_for_exit(pid: u32, limit: Duration) -> Result<(), StillRunning> {
    let deadline = Instant::now() + limit;
    while is_running(pid) {
        if Instant::now() > deadline {
            return Err(StillRunning { pid, waited: limit });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Running: `/proc/PID/stat` exists and its state is not `Z`.
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_answer_is_a_daemon_error_and_garbage_a_bad_answer() {
        let err = parse::<SyncReport>("{\"error\":\"the library watcher is not running\"}\n").unwrap_err();
        assert!(matches!(&err, ControlError::Daemon { message } if message.contains("watcher")), "{err}");
        let err = parse::<SyncReport>("{\"added\":\"many\"}").unwrap_err();
        assert!(matches!(err, ControlError::BadAnswer { .. }), "{err}");
        let ok = parse::<ShutdownAnswer>("{\"shutting_down\":true,\"pid\":7}\n").unwrap();
        assert_eq!(ok.pid, 7);
    }

    #[test]
    fn no_socket_is_no_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let client = Client { socket: dir.path().join("none.sock") };
        let err = client.status().unwrap_err();
        assert!(matches!(err, ControlError::NoDaemon { .. }) && err.to_string().contains("no running daemon"));
    }

    #[test]
    fn waiting_for_exit_sees_a_process_end() {
        let mut child = std::process::Command::new("sleep").arg("0.2").spawn().unwrap();
        let pid = child.id();
        assert!(wait_for_exit(pid, Duration::from_millis(10)).is_err(), "still sleeping");
        // Reaped by another thread, as the daemon's parent (systemd) would.
        let reaper = std::thread::spawn(move || child.wait());
        wait_for_exit(pid, Duration::from_secs(10)).unwrap();
        reaper.join().unwrap().unwrap();
    }
}
