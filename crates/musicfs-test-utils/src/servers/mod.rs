//! Launchers for the real servers the network layer (L3) of the resilience suite talks to: OpenSSH `sshd`
//! for SFTP ([`sshd::Sshd`]), an S3 server ([`s3::S3Server`], MinIO or s3s-fs) and a Toxiproxy-API server
//! ([`toxiproxy::Toxiproxy`]) to put faults between them and MusicFS. Each starts on a free loopback port,
//! returns only once the server really answers, prints how long that took, and is torn down on drop
//! (processes killed, temp dirs removed). Tests start their own servers; nothing is assumed running, and a
//! missing tool is an error naming the command that installs it.
//!
//! Free ports come from binding 127.0.0.1:0, reading the port the kernel chose and releasing it before the
//! server binds it. Another process can take the port in that short window (a small, accepted race); the
//! launchers notice the server failing to come up and retry on a new port a few times.

pub mod relay;
pub mod s3;
pub mod sshd;
pub mod toxiproxy;

// The client crates, re-exported so tests of packages that depend only on this crate (the root package's
// `tests/integration`) use the very versions the launchers use.
pub use {noxious_client, object_store, tokio};

use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The runtime tests drive async clients from (origins, Toxiproxy's API) with `block_on`: two workers, so a
/// client's background tasks (a session pool's reaper, a connection's driver) run while a test waits.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// How often a launcher tries a new port when the server does not come up (see the module docs).
pub(crate) const START_ATTEMPTS: usize = 3;

/// A loopback port that was free a moment ago (see the module docs for the race).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr().context("reading the port the kernel picked")?.port())
}

/// Finds `name` on PATH, then in the sbin directories (sshd lives in /usr/sbin, often not on a user's PATH)
/// and in cargo's bin directory (where `cargo install` puts s3s-fs).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/local/bin"].map(PathBuf::from));
    if let Some(cargo_home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(cargo_home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|dir| dir.join(name)).find(|path| path.is_file())
}

/// A server child process whose output goes to a log file; dropping it kills the process and everything it
/// forked (sshd's per-connection processes included), then reaps it.
pub(crate) struct ServerProcess {
    child: Child,
    log_path: PathBuf,
    what: String,
}

impl ServerProcess {
    /// Spawns `cmd` with stdin closed and stdout+stderr appended to `log_path`.
    pub(crate) fn spawn(mut cmd: Command, log_path: &Path, what: &str) -> Result<ServerProcess> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = cmd.spawn().with_context(|| format!("spawning {what}: {cmd:?}"))?;
        Ok(ServerProcess { child, log_path: log_path.to_owned(), what: what.to_owned() })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server has written so far.
    pub(crate) fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log_path) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// Fails (with the log) if the server has already exited.
    pub(crate) fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => bail!("{} exited with {status}; its log:\n{}", self.what, self.log()),
            Ok(None) => Ok(()),
            Err(err) => bail!("waiting for {}: {err}", self.what),
        }
    }

    /// Polls `ready` every 20 ms until it succeeds, the server exits, or `timeout` passes.
    pub(crate) fn wait_until(&mut self, timeout: Duration, mut ready: impl FnMut() -> Result<()>) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            let attempt = ready();
            match attempt {
                Ok(()) => return Ok(()),
                Err(err) if Instant::now() > deadline => {
                    bail!("{} not ready after {timeout:?}: {err:#}; its log:\n{}", self.what, self.log())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Kills the server and all its descendants with SIGKILL and reaps it.
    pub(crate) fn kill(&mut self) {
        kill_tree(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends SIGKILL to `pid` and every process descended from it (found through /proc, parents first so that
/// nothing is re-forked meanwhile).
pub(crate) fn kill_tree(pid: u32) {
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(children_of(parent));
        i += 1;
    }
    for pid in tree {
        // SAFETY: kill(2) on a process we started or one of its descendants; no memory is touched.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// The pids whose parent is `parent`, from /proc/<pid>/stat.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The command name may contain spaces and parentheses: the fields we want follow the last ')'.
            let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
            after.split_whitespace().nth(1).and_then(|ppid| ppid.parse::<u32>().ok()) == Some(parent)
        })
        .collect()
}

/// Succeeds if `addr` accepts a TCP connection.
pub(crate) fn tcp_accepts(addr: SocketAddr) -> Result<()> {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).with_context(|| format!("connecting to {addr}"))?;
    Ok(())
}

/// Runs `future` to completion on a private tokio runtime in a helper thread, so that synchronous helpers
/// work from plain tests and from inside async tests alike (blocking the caller's thread meanwhile).
pub(crate) fn block_on<T: Send>(future: impl Future<Output = Result<T>> + Send) -> Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("building a tokio runtime")?;
                runtime.block_on(future)
            })
            .join()
            .unwrap_or_else(|_| bail!("the helper thread panicked"))
    })
}

/// Logs how long a server took to start, so slow machines show up in test output.
pub(crate) fn report_start(what: &str, addr: &str, took: Duration) {
    eprintln!("[servers] {what} ready on {addr} in {:.1} ms", took.as_secs_f64() * 1000.0);
}
