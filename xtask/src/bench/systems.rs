//! The systems `cargo xtask bench --peers` compares, and how each is mounted: MusicFS over a local, SFTP or S3
//! origin, and its peers `bindfs -o ro`, `sshfs`, `rclone mount` (sftp and s3 backends, `--vfs-cache-mode
//! full`) and `s3fs`, each in the foreground as a child process with its own fresh mount point and cache
//! directory under the workdir. A [`Mounted`] is unmounted on every exit path: [`Mounted::stop`] sends SIGTERM
//! (every one of these programs unmounts on it) and checks MusicFS's exit; dropping it does the same without
//! the checks and lazily unmounts whatever is left. Running in the foreground keeps the children in our
//! process group, so Ctrl-C makes them unmount too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use musicfs_test_utils::daemon::{force_unmount, is_fuse_mounted};
use musicfs_test_utils::servers::find_program;

use super::data::{Data, DataSet, Servers};
use super::tools::UNTAGGED_DIR;

/// How long a mount may take to answer (MusicFS scans the whole library before it mounts).
const MOUNT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a program may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Where a group of systems reads the files from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Origin {
    Local,
    Sftp,
    S3,
}

/// One of the compared systems.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    MusicFs(Origin),
    /// Reads of the origin directory itself, no FUSE at all.
    Direct,
    Bindfs,
    Sshfs,
    RcloneSftp,
    S3fs,
    RcloneS3,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::MusicFs(_) => "MusicFS",
            System::Direct => "direct",
            System::Bindfs => "bindfs -o ro",
            System::Sshfs => "sshfs",
            System::RcloneSftp => "rclone sftp",
            System::S3fs => "s3fs",
            System::RcloneS3 => "rclone s3",
        }
    }

    /// A name for its directories under the workdir.
    fn slug(self) -> &'static str {
        match self {
            System::MusicFs(Origin::Local) => "musicfs-local",
            System::MusicFs(Origin::Sftp) => "musicfs-sftp",
            System::MusicFs(Origin::S3) => "musicfs-s3",
            System::Direct => "direct",
            System::Bindfs => "bindfs",
            System::Sshfs => "sshfs",
            System::RcloneSftp => "rclone-sftp",
            System::S3fs => "s3fs",
            System::RcloneS3 => "rclone-s3",
        }
    }

    /// The program it runs and the Debian package that has it (MusicFS and direct reads need none).
    fn program(self) -> Option<(&'static str, &'static str)> {
        match self {
            System::MusicFs(_) | System::Direct => None,
            System::Bindfs => Some(("bindfs", "bindfs")),
            System::Sshfs => Some(("sshfs", "sshfs")),
            System::RcloneSftp | System::RcloneS3 => Some(("rclone", "rclone")),
            System::S3fs => Some(("s3fs", "s3fs")),
        }
    }

    /// Where `name` of `set` shows to a reader of this system mounted at `mount_point` (for direct reads,
    /// `mount_point` is the origin directory itself).
    pub fn path_of(self, mount_point: &Path, name: &str) -> PathBuf {
        match self {
            // A file without tags shows under MusicFS's "unknown" directory.
            System::MusicFs(_) => mount_point.join(UNTAGGED_DIR).join(name),
            _ => mount_point.join(name),
        }
    }
}

/// A mounted system, running as our child; see the module docs for how it goes away.
pub struct Mounted {
    child: Child,
    system: System,
    pub mount_point: PathBuf,
    log_path: PathBuf,
    /// From starting the command until the mount point answered a directory listing.
    pub mount_secs: f64,
}

/// Mounts `system` over `set` with an empty cache in `slot` (recreated) and waits until the mount answers.
pub fn mount(system: System, set: &DataSet, data: &Data, servers: &Servers, binary: &Path) -> Result<Mounted> {
    mount_over(system, set, data, servers, binary, false)
}

/// Mounts `system` over `set` again, keeping the cache (and the config) its last [`mount`] left: what a restart
/// finds. Peers without a disk cache start as they always do.
pub fn remount(system: System, set: &DataSet, data: &Data, servers: &Servers, binary: &Path) -> Result<Mounted> {
    mount_over(system, set, data, servers, binary, true)
}

fn mount_over(
    system: System,
    set: &DataSet,
    data: &Data,
    servers: &Servers,
    binary: &Path,
    keep_cache: bool,
) -> Result<Mounted> {
    ensure!(system != System::Direct, "direct reads are not mounted");
    if let Some((program, package)) = system.program() {
        find_program(program)
            .with_context(|| format!("`{program}` is not installed (apt-get install -y {package})"))?;
    }
    let slot = data.workdir.join("peers").join(format!("{}-{}", system.slug(), set.bucket));
    let (mount_point, cache) = (slot.join("mnt"), slot.join("cache"));
    if is_fuse_mounted(&mount_point) {
        force_unmount(&mount_point);
    }
    if slot.exists() && !keep_cache {
        std::fs::remove_dir_all(&slot).with_context(|| format!("removing {}", slot.display()))?;
    }
    for dir in [&mount_point, &cache] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut cmd = command(system, set, servers, binary, &slot, &mount_point, &cache)?;
    // Loopback only: never through a proxy the environment may name.
    cmd.env("NO_PROXY", "127.0.0.1,localhost").env("no_proxy", "127.0.0.1,localhost");
    let log_path = slot.join(if keep_cache { "log.remount" } else { "log" });
    let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    let clock = Instant::now();
    let child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    let mut mounted = Mounted { child, system, mount_point, log_path, mount_secs: 0.0 };
    loop {
        if let Some(status) = mounted.child.try_wait().context("waiting for the mount")? {
            bail!("{} exited with {status} before mounting; its log:\n{}", system.name(), mounted.log());
        }
        if is_fuse_mounted(&mounted.mount_point) && std::fs::read_dir(&mounted.mount_point).is_ok() {
            mounted.mount_secs = clock.elapsed().as_secs_f64();
            return Ok(mounted);
        }
        ensure!(clock.elapsed() < MOUNT_TIMEOUT, "{} did not mount within {MOUNT_TIMEOUT:?}", system.name());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The command line that mounts `system` over `set` at `mount_point`, with its config files written to `slot`.
fn command(
    system: System,
    set: &DataSet,
    servers: &Servers,
    binary: &Path,
    slot: &Path,
    mount_point: &Path,
    cache: &Path,
) -> Result<Command> {
    let dir = set.dir.display().to_string();
    let cmd = match system {
        System::Direct => bail!("direct reads are not mounted"),
        System::MusicFs(origin) => {
            let origin_table = match origin {
                Origin::Local => format!("id = \"local\"\ntype = \"local\"\npath = {dir:?}\n"),
                Origin::Sftp => {
                    let sshd = servers.sshd()?;
                    format!(
                        "id = \"nas\"\ntype = \"sftp\"\nhost = \"127.0.0.1\"\nport = {}\nuser = {:?}\n\
                         private_key_file = {:?}\nknown_hosts_file = {:?}\npath = {dir:?}\n",
                        sshd.port(),
                        sshd.user(),
                        sshd.client_key_path().display().to_string(),
                        sshd.known_hosts_path().display().to_string(),
                    )
                }
                Origin::S3 => {
                    let s3 = servers.s3()?;
                    let secret = slot.join("s3.secret");
                    std::fs::write(&secret, format!("{}\n", s3.secret_key())).context("writing the S3 secret")?;
                    format!(
                        "id = \"bucket\"\ntype = \"s3\"\nendpoint = {:?}\nbucket = {:?}\n\
                         region = {:?}\naccess_key = {:?}\nsecret_key_file = {:?}\n",
                        s3.endpoint(),
                        set.bucket,
                        s3.region(),
                        s3.access_key(),
                        secret.display().to_string(),
                    )
                }
            };
            let config = slot.join("musicfs.toml");
            let text = format!(
                "mount_point = {:?}\ncache_dir = {:?}\n\n[[origins]]\n{origin_table}",
                mount_point.display().to_string(),
                cache.display().to_string()
            );
            std::fs::write(&config, text).context("writing musicfs.toml")?;
            let mut cmd = Command::new(binary);
            cmd.arg("mount").arg("--config").arg(config).env_remove("RUST_LOG");
            // To see where a run's time goes: its log stays in the slot until the next run of that system.
            if let Ok(filter) = std::env::var("MUSICFS_BENCH_LOG") {
                cmd.env("RUST_LOG", filter);
            }
            cmd
        }
        System::Bindfs => {
            let mut cmd = Command::new("bindfs");
            cmd.args(["-f", "-o", "ro"]).arg(&set.dir).arg(mount_point);
            cmd
        }
        System::Sshfs => {
            let sshd = servers.sshd()?;
            let options = format!(
                "ro,port={},IdentityFile={},IdentitiesOnly=yes,UserKnownHostsFile={},GlobalKnownHostsFile=/dev/null,\
                 StrictHostKeyChecking=yes,BatchMode=yes",
                sshd.port(),
                sshd.client_key_path().display(),
                sshd.known_hosts_path().display()
            );
            let mut cmd = Command::new("sshfs");
            cmd.args(["-f", "-F", "/dev/null", "-o", &options]).arg(format!("{}@127.0.0.1:{dir}", sshd.user()));
            cmd.arg(mount_point);
            cmd
        }
        System::RcloneSftp | System::RcloneS3 => {
            let (conf, remote) = rclone_config(system, set, servers, slot)?;
            let mut cmd = Command::new("rclone");
            cmd.arg("mount").arg("--config").arg(conf).arg(remote).arg(mount_point);
            cmd.args(["--read-only", "--vfs-cache-mode", "full", "--cache-dir"]).arg(cache);
            // rclone's S3 backend fails to start when AWS_CA_BUNDLE is set (measurements.md).
            cmd.env_remove("AWS_CA_BUNDLE");
            cmd
        }
        System::S3fs => {
            let s3 = servers.s3()?;
            let passwd = slot.join("passwd-s3fs");
            std::fs::write(&passwd, format!("{}:{}\n", s3.access_key(), s3.secret_key()))
                .context("writing the s3fs password file")?;
            // s3fs refuses a password file that others can read.
            std::fs::set_permissions(&passwd, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            let options = format!(
                "ro,passwd_file={},url={},endpoint={},use_path_request_style",
                passwd.display(),
                s3.endpoint(),
                s3.region()
            );
            let mut cmd = Command::new("s3fs");
            cmd.arg(set.bucket).arg(mount_point).args(["-f", "-o", &options]);
            cmd
        }
    };
    Ok(cmd)
}

/// Writes an rclone.conf with one remote for `system` into `slot`: (the file, `remote:path` of `set`).
fn rclone_config(system: System, set: &DataSet, servers: &Servers, slot: &Path) -> Result<(PathBuf, String)> {
    let text = if system == System::RcloneSftp {
        let sshd = servers.sshd()?;
        // rclone's known_hosts reader matches `[host]:port` literally (no wildcard ports, unlike OpenSSH).
        let known_hosts = slot.join("known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{} {}\n", sshd.port(), sshd.host_public_key()))
            .context("writing rclone's known_hosts")?;
        format!(
            "[remote]\ntype = sftp\nhost = 127.0.0.1\nport = {}\nuser = {}\nkey_file = {}\nknown_hosts_file = {}\n\
             shell_type = none\nmd5sum_command = none\nsha1sum_command = none\n",
            sshd.port(),
            sshd.user(),
            sshd.client_key_path().display(),
            known_hosts.display()
        )
    } else {
        let s3 = servers.s3()?;
        format!(
            "[remote]\ntype = s3\nprovider = Other\nenv_auth = false\naccess_key_id = {}\nsecret_access_key = {}\n\
             region = {}\nendpoint = {}\nforce_path_style = true\n",
            s3.access_key(),
            s3.secret_key(),
            s3.region(),
            s3.endpoint()
        )
    };
    let conf = slot.join("rclone.conf");
    std::fs::write(&conf, text).context("writing rclone.conf")?;
    let remote = match system {
        System::RcloneSftp => format!("remote:{}", set.dir.display()),
        _ => format!("remote:{}", set.bucket),
    };
    Ok((conf, remote))
}

impl Mounted {
    /// What the program has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// VmRSS of the program and every process it started (sshfs runs `ssh`), in MB.
    pub fn rss_mb(&self) -> Result<f64> {
        let mut total_kib = 0.0;
        for pid in process_tree(self.child.id()) {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let line = status.lines().find(|l| l.starts_with("VmRSS:"));
            let kib = line.and_then(|l| l["VmRSS:".len()..].trim().trim_end_matches("kB").trim().parse::<f64>().ok());
            total_kib += kib.unwrap_or(0.0);
        }
        ensure!(total_kib > 0.0, "no VmRSS for {} (pid {})", self.system.name(), self.child.id());
        Ok(total_kib * 1024.0 / 1e6)
    }

    /// User plus system CPU time used so far by the program and every process it started, in seconds
    /// (`/proc/PID/stat`; a process that has exited no longer counts).
    pub fn cpu_secs(&self) -> Option<f64> {
        // SAFETY: sysconf has no memory effects.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let mut total = 0u64;
        for pid in process_tree(self.child.id()) {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // utime and stime are fields 14 and 15; after the command name's last ')' they are the 12th and 13th.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            total += fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        }
        (ticks > 0.0).then(|| total as f64 / ticks)
    }

    /// Unmounts with SIGTERM; MusicFS must exit 0 and leave no mount behind.
    pub fn stop(mut self) -> Result<()> {
        let status = self.shut_down();
        if matches!(self.system, System::MusicFs(_)) {
            let status = status.with_context(|| format!("MusicFS did not exit after SIGTERM; log:\n{}", self.log()))?;
            ensure!(status.success(), "MusicFS exited with {status} after SIGTERM; log:\n{}", self.log());
        }
        ensure!(!is_fuse_mounted(&self.mount_point), "{} is still mounted", self.mount_point.display());
        Ok(())
    }

    /// SIGTERM, a bounded wait, then a lazy unmount and SIGKILL for whatever is left. `None` if the program
    /// had to be killed.
    fn shut_down(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            force_unmount(&self.mount_point);
            return Some(status);
        }
        // SAFETY: kill(2) on our own child's pid; no memory is touched.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut status = None;
        while status.is_none() && Instant::now() < deadline {
            status = self.child.try_wait().ok().flatten();
            if status.is_none() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if is_fuse_mounted(&self.mount_point) {
            force_unmount(&self.mount_point);
        }
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        status
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) || is_fuse_mounted(&self.mount_point) {
            self.shut_down();
        }
    }
}

/// `pid` and its descendants, from the parent pids in /proc.
fn process_tree(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|p| {
                    let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
                    // The command name may hold spaces and parentheses: the fields we want follow the last ')'.
                    let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
                    Some((p, ppid))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    tree
}
