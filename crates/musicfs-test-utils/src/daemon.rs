//! `Daemon`: runs the real `musicfs` binary against a real FUSE mount for process-level tests, and cleans up
//! whatever happens: on drop it kills the daemon and lazily unmounts, so a failing test leaves no mount.

use anyhow::{Context, Result, bail};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How the daemon is started: a config file, or the quick form (`--origin`, `--cache-dir`, mount point).
#[derive(Clone, Debug, Default)]
pub struct DaemonArgs {
    pub origins: Vec<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub mount_point: PathBuf,
    pub config: Option<PathBuf>,
    pub extra: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Descriptors passed as systemd passes its fd store: at 3, 4, … with `LISTEN_FDS`, `LISTEN_FDNAMES` and
    /// `LISTEN_PID` (see [`crate::fdstore::FdStore`]).
    pub listen_fds: Vec<(String, std::sync::Arc<std::os::fd::OwnedFd>)>,
    /// Run the daemon as this user and group id, with no capability and no way to gain one (setpriv), as
    /// the sandboxed unit runs it.
    pub run_as: Option<u32>,
}

pub struct Daemon {
    child: Option<Child>,
    pub mount_point: PathBuf,
    log_path: PathBuf,
    pub started_in: Duration,
    /// Set by `kill9`: the test wants the stale mount to stay.
    leave_mount: bool,
}

/// The filesystem type mounted exactly at `path`, from /proc/self/mountinfo.
pub fn mount_type(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let target = path.to_str()?.replace(' ', "\\040");
    text.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        (fields.get(4)? == &target).then(|| fields.get(sep + 1).map(|s| (*s).to_owned()))?
    })
}

pub fn is_fuse_mounted(path: &Path) -> bool {
    mount_type(path).is_some_and(|t| t.starts_with("fuse"))
}

/// The FUSE connection mounted at `path`: its number under /sys/fs/fuse/connections, which is the mount's
/// device number, read from mountinfo so that nothing touches the mount itself.
pub fn connection_id(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let target = path.to_str()?.replace(' ', "\\040");
    let device = text.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        (fields.get(4) == Some(&target.as_str())).then(|| fields.get(2).map(|d| (*d).to_owned()))?
    })?;
    let (major, minor) = device.split_once(':')?;
    // The kernel's dev_t: major in the top 12 bits.
    Some((major.parse::<u32>().ok()? << 20) | minor.parse::<u32>().ok()?)
}

/// Aborts the FUSE connection mounted at `path` (`/sys/fs/fuse/connections/N/abort`): every request waiting
/// on it fails with ENOTCONN. Needs root; a no-op otherwise.
pub fn abort_connection(path: &Path) {
    if let Some(id) = connection_id(path) {
        let _ = std::fs::write(format!("/sys/fs/fuse/connections/{id}/abort"), "1");
    }
}

/// Aborts the connection at `path` if the guard still stands after `limit`: a test that keeps a FUSE
/// connection in its own process must not hang on it past its timeout (its readers could never be killed).
pub fn abort_connection_after(path: &Path, limit: Duration) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (path, flag) = (path.to_owned(), done.clone());
    std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("aborting the FUSE connection at {} after {limit:?}", path.display());
        abort_connection(&path);
    });
    done
}

/// Lazily unmounts `path` with fusermount3 (works for the user who mounted it), then umount as a fallback.
pub fn force_unmount(path: &Path) {
    let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(path).stderr(Stdio::null()).status();
    if is_fuse_mounted(path) {
        let _ = Command::new("umount").arg("-l").arg(path).stderr(Stdio::null()).status();
    }
}

impl Daemon {
    /// Starts `musicfs mount …` and waits until the mount answers (or the daemon exits, which is an error
    /// carrying its log).
    pub fn start(binary: &Path, args: &DaemonArgs) -> Result<Daemon> {
        let log_dir = args.cache_dir.clone().unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&log_dir)?;
        let log_path = log_dir.join(format!("daemon-{}.log", unique()));
        let log = std::fs::File::create(&log_path)?;
        if let Some(id) = args.run_as {
            // It lies in the cache directory, which the daemon checks is all its own (6.7).
            std::os::unix::fs::chown(&log_path, Some(id), Some(id))?;
        }
        let mut cmd = if args.listen_fds.is_empty() && args.run_as.is_none() {
            Command::new(binary)
        } else {
            // LISTEN_PID must be the daemon's own pid: a shell learns its pid and execs the daemon in its place
            // (setpriv, too, execs it in its own).
            let drop_privileges = match args.run_as {
                Some(id) => format!(
                    "setpriv --reuid={id} --regid={id} --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs "
                ),
                None => String::new(),
            };
            let mut sh = Command::new("sh");
            let script = format!("LISTEN_PID=$$ exec {drop_privileges}\"$0\" \"$@\"");
            sh.args(["-c", &script, &binary.display().to_string()]);
            if !args.listen_fds.is_empty() {
                sh.env("LISTEN_FDS", args.listen_fds.len().to_string());
                let names: Vec<&str> = args.listen_fds.iter().map(|(n, _)| n.as_str()).collect();
                sh.env("LISTEN_FDNAMES", names.join(":"));
                pass_fds(&mut sh, args.listen_fds.iter().map(|(_, fd)| fd.as_raw_fd()).collect());
            }
            sh
        };
        cmd.arg("mount");
        if let Some(config) = &args.config {
            cmd.arg("--config").arg(config);
        }
        for origin in &args.origins {
            cmd.arg("--origin").arg(origin);
        }
        if let Some(cache) = &args.cache_dir {
            cmd.arg("--cache-dir").arg(cache);
        }
        cmd.args(&args.extra).arg(&args.mount_point);
        // The daemon's own log filter (its config's level, which holds back the S3 client's line per retried
        // request: 4.2.3), unless MUSICFS_TEST_LOG asks for another. A RUST_LOG in the test's environment
        // would replace that filter, so it is not passed on.
        match std::env::var("MUSICFS_TEST_LOG") {
            Ok(filter) => cmd.env("RUST_LOG", filter),
            Err(_) => cmd.env_remove("RUST_LOG"),
        };
        for (k, v) in &args.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let started = Instant::now();
        let child = cmd.spawn().with_context(|| format!("spawning {}", binary.display()))?;
        let mut daemon = Daemon {
            child: Some(child),
            mount_point: args.mount_point.clone(),
            log_path,
            started_in: Duration::ZERO,
            leave_mount: false,
        };
        let deadline = started + Duration::from_secs(60);
        loop {
            if let Some(status) = daemon.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("musicfs exited with {status} before mounting; log:\n{}", daemon.log());
            }
            if daemon.log().contains("mounted and serving") && is_fuse_mounted(&args.mount_point) {
                daemon.started_in = started.elapsed();
                return Ok(daemon);
            }
            if Instant::now() > deadline {
                bail!("musicfs did not mount within 60 s; log:\n{}", daemon.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the daemon has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(pid as i32, signal);
            }
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn stop(mut self) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(20))
    }

    /// Sends SIGTERM and checks that the daemon exited 0 and took its mount with it.
    pub fn stop_cleanly(self) {
        let mount_point = self.mount_point.clone();
        let status = self.stop().expect("stop");
        assert!(status.success(), "SIGTERM must give exit 0, got {status}");
        assert!(!is_fuse_mounted(&mount_point), "the mount must be gone after SIGTERM");
    }

    /// Waits for the daemon to exit by itself.
    pub fn wait(&mut self, limit: Duration) -> Result<ExitStatus> {
        let Some(child) = self.child.as_mut() else { bail!("daemon already reaped") };
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("musicfs did not exit within {limit:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a daemon that left for a restart (2.11) and returns its exit status; its mount is meant to
    /// stay, so dropping the handle leaves it.
    pub fn wait_keeping_mount(mut self, limit: Duration) -> Result<ExitStatus> {
        self.leave_mount = true;
        self.wait(limit)
    }

    /// kill -9: no cleanup at all, the mount stays behind (2.7).
    /// The dead mount is left in place on purpose; [`Scratch`] removes it at the end of the test.
    pub fn kill9(mut self) -> Result<()> {
        self.signal(libc::SIGKILL);
        self.wait(Duration::from_secs(10))?;
        self.leave_mount = true;
        Ok(())
    }
}

/// Puts `fds` at 3, 4, … in the child, inheritable.
fn pass_fds(cmd: &mut Command, fds: Vec<RawFd>) {
    // SAFETY: between fork and exec only dup2 and fcntl run, both async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            for (i, &fd) in fds.iter().enumerate() {
                let target = 3 + i as RawFd;
                if fd == target {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Runs the CLI `binary ARGS --cache-dir CACHE` (status, sync, search, shutdown, …) against the daemon that
/// owns `cache`: (success, stdout, stderr).
pub fn run_cli(binary: &Path, args: &[&str], cache: &Path) -> (bool, String, String) {
    let out = Command::new(binary).args(args).arg("--cache-dir").arg(cache).output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.leave_mount && is_fuse_mounted(&self.mount_point) {
            force_unmount(&self.mount_point);
        }
    }
}

/// A scratch area for one test: `lib/` (the origin), `cache/`, `mnt/`.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Result<Scratch> {
        let dir = tempfile::Builder::new().prefix("musicfs-test-").tempdir()?;
        for sub in ["lib", "cache", "mnt"] {
            std::fs::create_dir_all(dir.path().join(sub))?;
        }
        Ok(Scratch { dir })
    }
    pub fn lib(&self) -> PathBuf {
        self.dir.path().join("lib")
    }
    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }
    pub fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
    /// Quick-form arguments for this scratch area.
    pub fn args(&self) -> DaemonArgs {
        DaemonArgs {
            origins: vec![self.lib()],
            cache_dir: Some(self.cache()),
            mount_point: self.mnt(),
            ..Default::default()
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Never let tempdir removal walk into a mount, nor a reader wait forever on a connection that a
        // test's own fd store keeps alive with no daemon behind it (2.11).
        if is_fuse_mounted(&self.mnt()) {
            abort_connection(&self.mnt());
            force_unmount(&self.mnt());
        }
    }
}
