//! [`Sshd`]: a real OpenSSH `sshd` on 127.0.0.1:<free port> serving SFTP for the current user, with
//! throwaway host and client keys in its own temp dir, for SFTP-origin tests at the network layer (L3).
//!
//! It runs `sshd -D -e -f <own config>` with `Subsystem sftp internal-sftp -d <serve dir>`: no chroot, so
//! absolute paths work everywhere and relative paths start in the served directory. Logins are by public key
//! only, as the current user (root allowed with `PermitRootLogin prohibit-password`). [`Sshd::stop`] kills
//! the server *and* its live sessions (a crash or partition); [`Sshd::start_again`] brings it back on the
//! same port with the same host key, so clients see the same server after the partition heals.
//!
//! Needs `sshd` (Debian: `apt-get install -y openssh-server`) and `ssh-keygen` (openssh-client).

use super::{START_ATTEMPTS, ServerProcess, find_program, free_port, report_start};
use anyhow::{Context, Result, bail};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tempfile::TempDir;

const INSTALL: &str = "install it with `apt-get install -y openssh-server` (Debian/Ubuntu)";
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running (or stopped, between [`Sshd::stop`] and [`Sshd::start_again`]) OpenSSH server.
pub struct Sshd {
    dir: TempDir,
    sshd_bin: PathBuf,
    serve_dir: PathBuf,
    port: u16,
    user: String,
    host_public_key: String,
    process: Option<ServerProcess>,
    /// The only ciphers the server offers (sshd's `Ciphers`), when not its defaults.
    ciphers: Option<String>,
    /// How long the last start took (until the SSH banner arrived).
    pub started_in: Duration,
}

impl Sshd {
    /// Starts sshd serving `serve_dir` over SFTP and returns once it sends its SSH banner.
    pub fn start(serve_dir: impl AsRef<Path>) -> Result<Sshd> {
        Self::start_with_ciphers(serve_dir, None)
    }

    /// [`Sshd::start`], offering only `ciphers` (a comma-separated list, as sshd_config's `Ciphers`).
    pub fn start_with_ciphers(serve_dir: impl AsRef<Path>, ciphers: Option<&str>) -> Result<Sshd> {
        let serve_dir = std::fs::canonicalize(serve_dir.as_ref())
            .with_context(|| format!("served directory {}", serve_dir.as_ref().display()))?;
        if serve_dir.to_string_lossy().contains(char::is_whitespace) {
            bail!("the served directory must not contain whitespace (it goes into sshd_config): {serve_dir:?}");
        }
        let sshd_bin = find_program("sshd").with_context(|| format!("`sshd` not found; {INSTALL}"))?;
        find_program("ssh-keygen")
            .context("`ssh-keygen` not found; install it with `apt-get install -y openssh-client`")?;
        // sshd insists on its privilege-separation directory when started as root.
        if is_root() {
            std::fs::create_dir_all("/run/sshd").context("creating /run/sshd")?;
        }
        let dir = tempfile::Builder::new().prefix("musicfs-sshd-").tempdir().context("creating sshd temp dir")?;
        keygen(&dir.path().join("host_ed25519"))?;
        keygen(&dir.path().join("client_ed25519"))?;
        std::fs::copy(dir.path().join("client_ed25519.pub"), dir.path().join("authorized_keys"))
            .context("writing authorized_keys")?;
        let host_pub = std::fs::read_to_string(dir.path().join("host_ed25519.pub")).context("reading host key")?;
        // "ssh-ed25519 AAAA… comment" -> "ssh-ed25519 AAAA…"
        let host_public_key = host_pub.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        // Any port on loopback: the same key is then accepted when the client goes through a proxy.
        let known = format!("127.0.0.1,localhost,[127.0.0.1]:*,[localhost]:* {host_public_key}\n");
        std::fs::write(dir.path().join("known_hosts"), known).context("writing known_hosts")?;
        let mut sshd = Sshd {
            dir,
            sshd_bin,
            serve_dir,
            port: 0,
            user: current_user()?,
            host_public_key,
            process: None,
            ciphers: ciphers.map(str::to_owned),
            started_in: Duration::ZERO,
        };
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            sshd.port = free_port()?;
            match sshd.launch() {
                Ok(()) => return Ok(sshd),
                Err(err) => last_err = Some(err),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("sshd did not start")))
    }

    /// Writes the config for the current port, starts sshd and waits for its banner.
    fn launch(&mut self) -> Result<()> {
        let config_path = self.dir.path().join("sshd_config");
        let mut config = self.config(true);
        std::fs::write(&config_path, &config).context("writing sshd_config")?;
        // OpenSSH >= 9.8 penalises sources (here: 127.0.0.1) whose connections end without a login, which
        // our readiness probes and fault tests do all the time. Older sshd rejects the option: drop it then.
        let test = Command::new(&self.sshd_bin).arg("-t").arg("-f").arg(&config_path).output();
        if test.as_ref().is_ok_and(|out| String::from_utf8_lossy(&out.stderr).contains("PerSourcePenalties")) {
            config = self.config(false);
            std::fs::write(&config_path, &config).context("writing sshd_config")?;
        }
        let started = Instant::now();
        let mut cmd = Command::new(&self.sshd_bin);
        cmd.arg("-D").arg("-e").arg("-f").arg(&config_path);
        let mut process = ServerProcess::spawn(cmd, &self.dir.path().join("sshd.log"), "sshd")?;
        let addr = self.addr();
        process.wait_until(READY_TIMEOUT, || read_banner(addr))?;
        self.started_in = started.elapsed();
        report_start("sshd", &addr.to_string(), self.started_in);
        self.process = Some(process);
        Ok(())
    }

    fn config(&self, penalties_option: bool) -> String {
        let dir = self.dir.path().display();
        let mut config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nAddressFamily inet\nHostKey {dir}/host_ed25519\n\
             PidFile {dir}/sshd.pid\nAuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PermitRootLogin prohibit-password\nAllowUsers {user}\nPubkeyAuthentication yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUseDNS no\nMaxStartups 200\n\
             MaxSessions 100\nLogLevel VERBOSE\nSubsystem sftp internal-sftp -d {serve}\n",
            port = self.port,
            user = self.user,
            serve = self.serve_dir.display(),
        );
        if penalties_option {
            config.push_str("PerSourcePenalties no\n");
        }
        if let Some(ciphers) = &self.ciphers {
            config.push_str(&format!("Ciphers {ciphers}\n"));
        }
        config
    }

    /// Kills sshd and every session it forked, as a crash or a network partition would; the port is freed.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts sshd again on the same port with the same keys (after [`Sshd::stop`]); a no-op if running.
    pub fn start_again(&mut self) -> Result<()> {
        if self.process.is_some() {
            return Ok(());
        }
        self.launch().with_context(|| format!("restarting sshd on port {}", self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The user to log in as (the current user).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The directory the SFTP session starts in.
    pub fn serve_dir(&self) -> &Path {
        &self.serve_dir
    }

    /// The client's private key (OpenSSH format, no passphrase); its public key is the only authorized one.
    pub fn client_key_path(&self) -> PathBuf {
        self.dir.path().join("client_ed25519")
    }

    /// A known_hosts file accepting this server's host key on any loopback port (so also through proxies).
    pub fn known_hosts_path(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// The host public key as `ssh-ed25519 AAAA…`, for clients that check keys themselves.
    pub fn host_public_key(&self) -> &str {
        &self.host_public_key
    }

    /// The pid of the listening sshd, `None` while stopped.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ServerProcess::pid)
    }

    /// What sshd has logged so far (it logs to stderr with `-e`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// The real `sftp` client in batch mode, set up for this server's user, keys and known_hosts, running the
    /// commands in `batch_file` (`-` for stdin) against 127.0.0.1:`port`: this server's port, or a proxy's.
    pub fn sftp_command(&self, port: u16, batch_file: &Path) -> Command {
        let mut cmd = Command::new("sftp");
        cmd.arg("-F").arg("/dev/null").arg("-i").arg(self.client_key_path()).arg("-P").arg(port.to_string());
        for option in [
            "BatchMode=yes".to_owned(),
            "IdentitiesOnly=yes".to_owned(),
            "StrictHostKeyChecking=yes".to_owned(),
            format!("UserKnownHostsFile={}", self.known_hosts_path().display()),
            "GlobalKnownHostsFile=/dev/null".to_owned(),
            "ConnectTimeout=10".to_owned(),
        ] {
            cmd.arg("-o").arg(option);
        }
        cmd.arg("-b").arg(batch_file).arg(format!("{}@127.0.0.1", self.user));
        cmd
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Succeeds once `addr` accepts a connection and sends an SSH banner.
fn read_banner(addr: SocketAddr) -> Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    while !got.contains(&b'\n') {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    if got.starts_with(b"SSH-") {
        Ok(())
    } else {
        bail!("no SSH banner from {addr}: {:?}", String::from_utf8_lossy(&got))
    }
}

/// `ssh-keygen -t ed25519 -N '' -f path` (a key without passphrase, mode 0600).
fn keygen(path: &Path) -> Result<()> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "musicfs-test", "-f"])
        .arg(path)
        .output()
        .context("running ssh-keygen")?;
    if !out.status.success() {
        bail!("ssh-keygen failed for {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// The current user's login name (`id -un`, which also works where $USER is unset, as in containers).
fn current_user() -> Result<String> {
    let out = Command::new("id").arg("-un").output().context("running `id -un`")?;
    let user = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || user.is_empty() {
        bail!("cannot tell the current user: `id -un` said {:?}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(user)
}
