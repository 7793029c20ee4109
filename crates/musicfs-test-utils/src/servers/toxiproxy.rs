//! [`Toxiproxy`]: a Toxiproxy-API server on 127.0.0.1:<free port>, to put latency, cuts and partitions
//! between MusicFS and its origins at the network layer (L3). Tests speak to it only through
//! `noxious-client` ([`Toxiproxy::client`]).
//!
//! Which server: the real `toxiproxy-server` when it is on PATH (`MUSICFS_TOXIPROXY=lite` forces the other
//! choice), otherwise `toxiproxy-lite` (this workspace's Toxiproxy-compatible server) run in-process on its own
//! tokio runtime thread. In-process is the robust default: no binary to build or find (Cargo only offers
//! `CARGO_BIN_EXE_*` for the test's own package), the port is bound before the launcher returns (no port
//! race), and dropping the launcher shuts the runtime down, which closes the API, every proxy listener and
//! every proxied connection.
//!
//! Differences to keep in mind: noxious-client sends a toxic's direction as `direction`, which real
//! Toxiproxy ignores (it reads `stream`), so upstream toxics only work against toxiproxy-lite; and
//! toxiproxy-lite has no `reset_peer` toxic (the API types it takes from noxious lack it).

use super::{START_ATTEMPTS, ServerProcess, find_program, free_port, report_start, tcp_accepts};
use anyhow::{Context, Result, anyhow};
use noxious_client::{Client, Proxy, StreamDirection, Toxic, ToxicKind};
use std::net::SocketAddr;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Which Toxiproxy server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToxiproxyKind {
    /// The real `toxiproxy-server` binary, as a child process.
    External,
    /// `toxiproxy-lite` on a tokio runtime in a thread of the test process.
    Lite,
}

enum Running {
    External { process: ServerProcess, _dir: tempfile::TempDir },
    Lite { shutdown: Option<oneshot::Sender<()>>, thread: Option<JoinHandle<()>> },
}

/// A running Toxiproxy-API server; dropping it stops the server with all its proxies and connections.
pub struct Toxiproxy {
    kind: ToxiproxyKind,
    port: u16,
    running: Running,
    /// How long the server took to start (until the API accepted connections).
    pub started_in: Duration,
}

impl Toxiproxy {
    /// Starts `toxiproxy-server` if on PATH, else toxiproxy-lite in-process (see the module docs).
    pub fn start() -> Result<Toxiproxy> {
        let forced_lite = std::env::var("MUSICFS_TOXIPROXY").is_ok_and(|v| v == "lite");
        match find_program("toxiproxy-server") {
            Some(program) if !forced_lite => Toxiproxy::start_external(&program),
            _ => Toxiproxy::start_lite(),
        }
    }

    /// Runs toxiproxy-lite on a fresh multi-threaded tokio runtime in a dedicated thread.
    pub fn start_lite() -> Result<Toxiproxy> {
        let started = Instant::now();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the Toxiproxy API port")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true).context("making the API listener non-blocking")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("toxiproxy-lite")
            .enable_all()
            .build()
            .context("building the toxiproxy-lite runtime")?;
        let (shutdown, stop) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("toxiproxy-lite".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let serve = async {
                        let listener = tokio::net::TcpListener::from_std(listener)?;
                        toxiproxy_lite::serve(listener).await
                    };
                    tokio::select! {
                        result = serve => {
                            if let Err(err) = result {
                                eprintln!("[servers] toxiproxy-lite failed: {err:#}");
                            }
                        }
                        _ = stop => {}
                    }
                });
                // Dropping the runtime ends every proxy task and closes every socket they hold.
                runtime.shutdown_timeout(Duration::from_secs(2));
            })
            .context("spawning the toxiproxy-lite thread")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let running = Running::Lite { shutdown: Some(shutdown), thread: Some(thread) };
        // From here on, dropping `toxiproxy` (also on the error path) stops the thread.
        let mut toxiproxy = Toxiproxy { kind: ToxiproxyKind::Lite, port, running, started_in: Duration::ZERO };
        tcp_accepts(addr).context("the toxiproxy-lite API does not accept connections")?;
        toxiproxy.started_in = started.elapsed();
        report_start("Toxiproxy (toxiproxy-lite, in-process)", &addr.to_string(), toxiproxy.started_in);
        Ok(toxiproxy)
    }

    /// Runs `toxiproxy-server -host 127.0.0.1 -port P` as a child process.
    pub fn start_external(program: &std::path::Path) -> Result<Toxiproxy> {
        let dir = tempfile::Builder::new().prefix("musicfs-toxiproxy-").tempdir().context("creating temp dir")?;
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let started = Instant::now();
            let mut cmd = Command::new(program);
            cmd.args(["-host", "127.0.0.1", "-port", &port.to_string()]);
            let mut process = ServerProcess::spawn(cmd, &dir.path().join("toxiproxy.log"), "toxiproxy-server")?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match process.wait_until(Duration::from_secs(20), || tcp_accepts(addr)) {
                Ok(()) => {
                    let started_in = started.elapsed();
                    report_start("Toxiproxy (toxiproxy-server)", &addr.to_string(), started_in);
                    let running = Running::External { process, _dir: dir };
                    return Ok(Toxiproxy { kind: ToxiproxyKind::External, port, running, started_in });
                }
                Err(err) => last_err = Some(err),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("toxiproxy-server did not start")))
    }

    pub fn kind(&self) -> ToxiproxyKind {
        self.kind
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`, the API base URL.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A noxious-client for the API (its calls are async: use it inside a tokio runtime).
    pub fn client(&self) -> Client {
        Client::new(&self.api_url())
    }

    /// Creates proxy `name` listening on a free loopback port and forwarding to `upstream`; returns the
    /// proxy as the server reports it (so its `listen` is the real address, kept across disable/enable)
    /// and the address to connect to.
    pub async fn create_proxy(&self, name: &str, upstream: SocketAddr) -> Result<(Proxy, SocketAddr)> {
        let client = self.client();
        client
            .create_proxy(name, "127.0.0.1:0", &upstream.to_string())
            .await
            .map_err(|err| anyhow!("creating proxy {name} -> {upstream}: {err}"))?;
        let proxy = client.proxy(name).await.map_err(|err| anyhow!("reading back proxy {name}: {err}"))?;
        let listen = proxy.config.listen.parse().with_context(|| format!("proxy listen {:?}", proxy.config.listen))?;
        Ok((proxy, listen))
    }
}

/// A toxic on the data coming back from the server (downstream), on every connection.
fn downstream(name: &str, kind: ToxicKind) -> Toxic {
    Toxic { kind, name: name.to_owned(), toxicity: 1.0, direction: StreamDirection::Downstream }
}

/// Delays the server's answers by `ms` milliseconds.
pub fn latency(name: &str, ms: u64) -> Toxic {
    downstream(name, ToxicKind::Latency { latency: ms, jitter: 0 })
}

/// Limits the server's answers to `kb_per_s` KB a second.
pub fn bandwidth(name: &str, kb_per_s: u64) -> Toxic {
    downstream(name, ToxicKind::Bandwidth { rate: kb_per_s })
}

/// The server goes silent: no more data, and the connection is never closed.
pub fn silence(name: &str) -> Toxic {
    downstream(name, ToxicKind::Timeout { timeout: 0 })
}

impl Drop for Toxiproxy {
    fn drop(&mut self) {
        match &mut self.running {
            Running::External { process, .. } => process.kill(),
            Running::Lite { shutdown, thread } => {
                if let Some(shutdown) = shutdown.take() {
                    let _ = shutdown.send(());
                }
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
        }
    }
}
