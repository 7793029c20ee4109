//! `cargo xtask system-test`: the system layer on a machine without Nix. Builds (and caches) a Debian rootfs
//! with debootstrap, installs the freshly built `musicfs` and `musicfs-probe`, the unit from `dist/`, a config
//! and a sample library, boots it with systemd as PID 1 under `systemd-nspawn`, runs every probe scenario
//! inside, collects their JSON into `target/system-test/results.json` (the L4 rows of the resilience
//! report) and powers the container off. `--shell` leaves it running with a shell inside instead. The
//! machine's network origins (S3, SFTP, Toxiproxy in front of both) are set up by [`servers`].

mod servers;

use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Boot the container and open a shell inside it instead of running the scenarios.
    #[arg(long)]
    pub shell: bool,
    /// Only these scenarios (default: all).
    #[arg(long, default_value = "all")]
    pub scenario: String,
    /// Kills in the soak scenario (the probe's default, 6, unless given; 200 for a long run).
    #[arg(long)]
    pub kills: Option<usize>,
    /// Where debootstrapped root filesystems are cached between runs.
    #[arg(long, default_value = "/var/cache/musicfs-system-test")]
    pub rootfs_cache: PathBuf,
}

/// Packages of the machine under test; changing this list builds a new rootfs.
// ca-certificates: the S3 client loads the system's CA roots even for an http:// endpoint, and cannot start without.
// mpv: the origin-outage scenario plays a cached track with a real player (4.2.3).
const PACKAGES: &str = "systemd,systemd-sysv,dbus,fuse3,util-linux,coreutils,openssh-server,ca-certificates,mpv";
const SUITE: &str = "bookworm";
/// The cache filesystem is this small so that disk-full is real; the library is larger.
const CACHE_FS_MIB: u64 = 64;

fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{what} failed ({}):\n{text}", out.status);
    Ok(text)
}

fn rootfs(cache: &Path) -> Result<PathBuf> {
    let key = blake3::hash(format!("{SUITE} {PACKAGES}").as_bytes()).to_hex();
    let dir = cache.join(format!("rootfs-{}", &key[..12]));
    if dir.join("usr/lib/systemd/systemd").exists() {
        println!("   rootfs cached at {}", dir.display());
        return Ok(dir);
    }
    std::fs::create_dir_all(cache)?;
    let tmp = cache.join(format!("rootfs-{}.partial", &key[..12]));
    let _ = std::fs::remove_dir_all(&tmp);
    let started = Instant::now();
    println!("   debootstrap {SUITE} ({PACKAGES}) into {} …", tmp.display());
    run(
        Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={PACKAGES}"), SUITE])
            .arg(&tmp)
            .arg("http://deb.debian.org/debian"),
        "debootstrap",
    )?;
    std::fs::rename(&tmp, &dir)?;
    println!("   rootfs built in {:.0} s", started.elapsed().as_secs_f64());
    Ok(dir)
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Copies the just-built binaries out of `target/debug` at once: another cargo run in the same workspace (a
/// plain `cargo build`) may replace them there with a build without failpoints, which the scenarios need.
fn keep_binaries(built: &Path, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    for bin in ["musicfs", "musicfs-probe", "toxiproxy-lite"] {
        std::fs::copy(built.join(bin), dir.join(bin)).with_context(|| format!("copying {bin}"))?;
    }
    // With the `failpoints` feature the failpoint names are strings in the binary; without it they are not.
    let musicfs = std::fs::read(dir.join("musicfs"))?;
    let needle = b"daemon::watchdog::selfcheck_stall";
    ensure!(
        musicfs.windows(needle.len()).any(|w| w == needle),
        "{} has no failpoints: another cargo build replaced it after ours; run again",
        built.join("musicfs").display()
    );
    Ok(dir.to_owned())
}

/// Installs binaries, unit, config, test timings and a sample library into the machine's root.
fn install(root: &Path, workspace: &Path, target: &Path) -> Result<usize> {
    for bin in ["musicfs", "musicfs-probe"] {
        let dest = root.join("usr/local/bin").join(bin);
        std::fs::create_dir_all(dest.parent().context("bin dir")?)?;
        std::fs::copy(target.join(bin), &dest).with_context(|| format!("installing {bin}"))?;
    }
    for unit in ["musicfs.service", "musicfs-unmount.service"] {
        std::fs::copy(workspace.join("dist").join(unit), root.join("etc/systemd/system").join(unit))?;
    }
    write(
        &root.join("etc/systemd/system/musicfs.service.d/10-system-test.conf"),
        "# Short timings so the scenarios finish in seconds; the origin servers start first; secrets from a\n\
         # root-only environment file.\n[Service]\nWatchdogSec=3s\nTimeoutStopSec=6s\n\
         Environment=RUST_LOG=info\nEnvironmentFile=/etc/musicfs/secrets.env\n[Unit]\nRequiresMountsFor=/var/cache/musicfs\n\
         Wants=musicfs-s3.service ssh.service toxiproxy.service\nAfter=musicfs-s3.service ssh.service toxiproxy.service\n",
    )?;
    write(
        &root.join("etc/systemd/system/var-cache-musicfs.mount"),
        &format!(
            "# A small cache filesystem: disk-full is real here.\n[Mount]\nWhat=tmpfs\nWhere=/var/cache/musicfs\nType=tmpfs\nOptions=size={CACHE_FS_MIB}M,mode=0755\n"
        ),
    )?;
    write(
        &root.join("etc/musicfs/musicfs.toml"),
        &("mount_point = \"/mnt/music\"\ncache_dir = \"/var/cache/musicfs\"\n\n[[origins]]\nid = \"disk\"\ntype = \"local\"\npath = \"/srv/music\"\n\n[fuse]\nread_timeout = \"10s\"\nallow_other = true\n\n\
         [health]\ninterval = \"2s\"\n\n[library]\nsync_interval = \"10s\"\n"
            .to_owned()
            + &servers::origins_toml()),
    )?;
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants)?;
    let link = wants.join("musicfs.service");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/etc/systemd/system/musicfs.service", &link)?;
    let library = root.join("srv/music");
    let tracks = musicfs_test_utils::sample::generate(
        &library,
        &musicfs_test_utils::sample::SampleOptions { tracks: 6, hostile: false, seconds: 1.0 },
    )?;
    for i in 0..6u64 {
        let data = musicfs_test_utils::files::pseudo_random_bytes(16 << 20, 100 + i);
        std::fs::write(library.join(format!("big{i}.wav")), data)?;
    }
    // The daemon's user, as a package would create it.
    let sysusers = root.join("usr/lib/sysusers.d/musicfs.conf");
    std::fs::create_dir_all(sysusers.parent().context("sysusers dir")?)?;
    std::fs::copy(workspace.join("dist/musicfs.sysusers"), &sysusers)?;
    run(
        Command::new("chroot").arg(root).args(["systemd-sysusers", "/usr/lib/sysusers.d/musicfs.conf"]),
        "systemd-sysusers",
    )?;
    servers::install(root, target)?;
    Ok(tracks.len() + 6)
}

struct Container {
    nspawn: Child,
    init_pid: u32,
}

impl Container {
    fn boot(root: &Path, log: &Path) -> Result<Container> {
        let console = std::fs::File::create(log)?;
        let nspawn = Command::new("systemd-nspawn")
            .args([
                "--boot",
                "--register=no",
                "--keep-unit",
                "--bind=/dev/fuse",
                // Its own network namespace: the origin servers' fixed ports are the container's alone, and
                // no fault the probe injects can touch the host.
                "--private-network",
                // nspawn drops CAP_SYS_RESOURCE, and without it the container's systemd quietly runs the unit
                // with the host's open-file limit and without its negative OOMScoreAdjust (5.8: the limits
                // scenario). Given back here where the host has it (a sandbox without it keeps the clamp).
                "--capability=CAP_SYS_RESOURCE",
                "--machine=musicfs-st",
                "--quiet",
                "--directory",
            ])
            .arg(root)
            .stdin(Stdio::null())
            .stdout(console.try_clone()?)
            .stderr(console)
            .spawn()
            .context("starting systemd-nspawn")?;
        let mut container = Container { nspawn, init_pid: 0 };
        let deadline = Instant::now() + Duration::from_secs(30);
        while container.init_pid == 0 {
            if let Some(status) = container.nspawn.try_wait()? {
                bail!(
                    "systemd-nspawn exited with {status}; console:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            let children = run(Command::new("pgrep").args(["-P", &container.nspawn.id().to_string()]), "pgrep")
                .unwrap_or_default();
            container.init_pid = children.lines().next().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
            ensure!(Instant::now() < deadline, "the container's init did not appear");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(container)
    }

    fn exec(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.init_pid.to_string(), "-a", "--"]).args(args);
        cmd
    }

    fn poweroff(mut self) {
        let _ = self.exec(&["systemctl", "poweroff", "--no-block"]).output();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

pub fn run_system_test(args: &Args) -> Result<()> {
    let started = Instant::now();
    // SAFETY: geteuid has no preconditions.
    ensure!(unsafe { libc::geteuid() } == 0, "the system layer boots a container: run as root");
    for tool in ["debootstrap", "systemd-nspawn", "nsenter"] {
        ensure!(
            Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output()?.status.success(),
            "`{tool}` not found: apt-get install -y debootstrap systemd-container util-linux (or run .ci/run)"
        );
    }
    let workspace = crate::workspace_root();
    println!("== building musicfs and musicfs-probe (with failpoints)");
    run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "build",
                "--quiet",
                "--all-features",
                "-p",
                "musicfs",
                "-p",
                "musicfs-probe",
                "-p",
                "toxiproxy-lite",
            ])
            .current_dir(&workspace),
        "cargo build",
    )?;
    let out = workspace.join("target/system-test");
    let bins = keep_binaries(&workspace.join("target/debug"), &out.join("bin"))?;
    println!("== root filesystem");
    let base = rootfs(&args.rootfs_cache)?;
    let machine_root = out.join("rootfs");
    let _ = std::fs::remove_dir_all(&machine_root);
    std::fs::create_dir_all(&out)?;
    run(Command::new("cp").args(["-a", "--reflink=auto"]).arg(&base).arg(&machine_root), "copying the rootfs")?;
    let files = install(&machine_root, &workspace, &bins)?;
    println!("   installed musicfs, the unit from dist/, a config and {files} library files");

    println!("== booting with systemd-nspawn");
    let booted = Instant::now();
    let container = Container::boot(&machine_root, &out.join("console.log"))?;
    let state = container.exec(&["systemctl", "is-system-running", "--wait"]).output()?;
    let state = String::from_utf8_lossy(&state.stdout).trim().to_owned();
    println!("   systemd is {state} after {:.1} s (init pid {})", booted.elapsed().as_secs_f64(), container.init_pid);
    if state != "running" {
        let failed = container.exec(&["systemctl", "--failed", "--no-pager"]).output()?;
        println!("{}", String::from_utf8_lossy(&failed.stdout));
    }
    if args.shell {
        println!("   a shell inside the machine; `exit` powers it off. The probe: musicfs-probe all");
        let _ = container.exec(&["bash", "-l"]).status();
        container.poweroff();
        return Ok(());
    }

    println!("== musicfs-probe {}", args.scenario);
    let kills = args.kills.map(|n| n.to_string());
    let mut probe_args = vec!["/usr/local/bin/musicfs-probe", args.scenario.as_str()];
    if let Some(kills) = &kills {
        probe_args.extend(["--kills", kills.as_str()]);
    }
    let probe = container.exec(&probe_args).output()?;
    let journal = container.exec(&["journalctl", "-u", "musicfs", "-o", "short-monotonic", "--no-pager"]).output()?;
    std::fs::write(out.join("musicfs-journal.log"), &journal.stdout)?;
    container.poweroff();

    let mut results = Vec::new();
    let mut failed = 0;
    for line in String::from_utf8_lossy(&probe.stdout).lines() {
        let Ok(mut value) = serde_json::from_str::<serde_json::Value>(line) else {
            println!("   probe: {line}");
            continue;
        };
        let scenario = value["scenario"].as_str().unwrap_or("?").to_owned();
        value["test"] = scenario.replace('-', "_").into();
        let pass = value["pass"].as_bool() == Some(true);
        failed += usize::from(!pass);
        println!(
            "   {:<10} {}  {:.1} s  {}",
            scenario,
            if pass { "PASS" } else { "FAIL" },
            value["seconds"].as_f64().unwrap_or(0.0),
            value
        );
        results.push(value);
    }
    if !probe.stderr.is_empty() {
        println!("   probe stderr:\n{}", String::from_utf8_lossy(&probe.stderr));
    }
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&results)?)?;
    println!(
        "== {} scenarios, {} failed; wall time {:.0} s (journal: {})",
        results.len(),
        failed,
        started.elapsed().as_secs_f64(),
        out.join("musicfs-journal.log").display()
    );
    ensure!(!results.is_empty(), "the probe produced no results");
    ensure!(failed == 0 && probe.status.success(), "{failed} scenario(s) failed");
    Ok(())
}
