//! `cargo xtask bench`: measures MusicFS against its performance targets and prints the figures.
//!
//! Part 1 reads one file of random bytes sequentially (1 MiB `read()` calls) directly, through
//! `bindfs -o ro`, and through MusicFS cold (ingesting), re-read (kernel page cache) and warm (chunk
//! cache, after a restart), and checks that MusicFS returned the origin's bytes. Part 2 mounts a
//! generated library of `--tracks` tracks twice (first scan, then from the database) and reads the
//! daemon's memory. It prints figures and PASS/BELOW beside each target; it never fails on timing,
//! only on errors and wrong results. Generated data stays in the workdir for the next run; mounts are
//! removed on every exit path (on Ctrl-C the daemons unmount themselves, and the next run clears leftovers).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use musicfs_test_utils::daemon::{Daemon, DaemonArgs, force_unmount, is_fuse_mounted};
use musicfs_test_utils::sample::{self, SampleOptions, SampleTrack};
use serde_json::{Value, json};

const MIB: usize = 1 << 20;
/// Size of every `read()` call.
const READ_SIZE: usize = MIB;
/// Length of each generated track: short, so 100 000 tracks stay small and quick to write.
const SAMPLE_SECONDS: f32 = 0.2;
/// Where MusicFS shows a file without readable tags.
const UNTAGGED_DIR: &str = "Unknown Artist/Unknown Album";
/// How long the daemon idles before its memory is read.
const IDLE_BEFORE_RSS: Duration = Duration::from_secs(2);

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Size of the file read in part 1, in MiB.
    #[arg(long, default_value_t = 512)]
    pub size_mib: usize,
    /// Number of tracks of the library mounted in part 2.
    #[arg(long, default_value_t = 100_000)]
    pub tracks: usize,
    /// Skip part 2 (library scale).
    #[arg(long)]
    pub skip_scale: bool,
    /// Skip part 1 (sequential read).
    #[arg(long)]
    pub skip_read: bool,
    /// Working directory, kept between runs for the generated data [default: <workspace>/target/bench].
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Use this musicfs binary instead of running `cargo build --release -p musicfs`.
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Also write the figures as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// One figure compared with its target.
struct Check {
    name: &'static str,
    value: f64,
    unit: &'static str,
    target: f64,
    /// True when the value must be at least the target, false when at most.
    at_least: bool,
}

impl Check {
    fn met(&self) -> bool {
        if self.at_least { self.value >= self.target } else { self.value <= self.target }
    }

    fn print(&self) {
        let (sign, verdict) = (if self.at_least { "≥" } else { "≤" }, if self.met() { "PASS" } else { "BELOW" });
        let (value, target) =
            (format!("{:.2}{}", self.value, self.unit), format!("{sign} {:.1}{}", self.target, self.unit));
        println!("  {:<24} {value:>10}   target {target:<11} {verdict}", self.name);
    }
}

/// Everything measured, for the summary and the JSON file.
#[derive(Default)]
struct Report {
    figures: serde_json::Map<String, Value>,
    checks: Vec<Check>,
}

/// One timed sequential read of a whole file.
struct ReadResult {
    secs: f64,
    gbps: f64,
    hash: blake3::Hash,
}

/// Runs the benchmark parts that were not skipped and prints their figures.
pub fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    let root = &crate::workspace_root();
    let workdir = args.workdir.clone().unwrap_or_else(|| root.join("target/bench"));
    std::fs::create_dir_all(&workdir).with_context(|| format!("creating {}", workdir.display()))?;
    let workdir = workdir.canonicalize().with_context(|| format!("resolving {}", workdir.display()))?;
    for mount_point in ["read/mnt-bindfs", "read/mnt-musicfs", "scale/mnt"].map(|p| workdir.join(p)) {
        if is_fuse_mounted(&mount_point) {
            println!("clearing a mount left by an earlier run: {}", mount_point.display());
            force_unmount(&mount_point);
        }
    }
    let binary = match &args.binary {
        Some(binary) => binary.clone(),
        None => crate::demo::build_musicfs(root, true)?,
    };
    println!("MusicFS bench: {} (GB = 10^9 bytes, MB = 10^6 bytes, 1 MiB read() calls)", binary.display());

    let mut report = Report::default();
    if !args.skip_read {
        read_bench(args.size_mib * MIB, &workdir.join("read"), &binary, &mut report)?;
    }
    if !args.skip_scale {
        scale_bench(args.tracks, &workdir, &binary, &mut report)?;
    }

    let met = report.checks.iter().filter(|c| c.met()).count();
    let figures: Vec<String> = report.checks.iter().map(|c| format!("{} {:.2}{}", c.name, c.value, c.unit)).collect();
    let total = started.elapsed().as_secs_f64();
    println!("\nbench: {met}/{} targets met ({}) in {total:.1} s", report.checks.len(), figures.join(", "));

    if let Some(path) = &args.json {
        let checks: Vec<Value> = report.checks.iter().map(|c| {
            json!({ "name": c.name, "value": c.value, "unit": c.unit, "target": c.target, "at_least": c.at_least, "met": c.met() })
        }).collect();
        let doc = json!({ "figures": report.figures, "checks": checks, "total_secs": total });
        let text = serde_json::to_string_pretty(&doc).context("serialising the figures")? + "\n";
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Part 1: sequential read of one `bytes`-long file of random bytes.
fn read_bench(bytes: usize, dir: &Path, binary: &Path, report: &mut Report) -> Result<()> {
    let origin = dir.join("origin");
    let origin_file = origin.join("big.wav");
    ensure_random_file(&origin_file, bytes)?;
    println!("\nPart 1: sequential read of {} MiB ({})", bytes / MIB, origin_file.display());
    // Every read lands in this one buffer, touched first so page faults stay out of the timings,
    // and is hashed after the clock stops.
    let mut buf = vec![0u8; bytes];
    buf.fill(1);

    let expected = timed_read(&origin_file, &mut buf)?.hash; // warm-up: puts the origin in page cache
    let direct = timed_read(&origin_file, &mut buf)?;

    let bindfs_mnt = dir.join("mnt-bindfs");
    let (bindfs, bindfs_again, bindfs_readahead) = {
        let _mount = BindfsMount::start(&origin, &bindfs_mnt)?;
        let path = bindfs_mnt.join("big.wav");
        (timed_read(&path, &mut buf)?, timed_read(&path, &mut buf)?, readahead_kib(&bindfs_mnt))
    };
    ensure!(bindfs.hash == expected && bindfs_again.hash == expected, "bindfs returned different bytes");

    let cache = dir.join("cache");
    let musicfs_mnt = dir.join("mnt-musicfs");
    if cache.exists() {
        std::fs::remove_dir_all(&cache).with_context(|| format!("removing {}", cache.display()))?;
    }
    let daemon_args = DaemonArgs {
        origins: vec![origin.clone()],
        cache_dir: Some(cache.clone()),
        mount_point: musicfs_mnt.clone(),
        ..Default::default()
    };
    let through = musicfs_mnt.join(UNTAGGED_DIR).join("big.wav");
    // A timed read through MusicFS that must return the origin's bytes.
    let mut read_through = |daemon: &Daemon, what: &str| -> Result<ReadResult> {
        let log = || format!("{what} read through musicfs; log:\n{}", daemon.log());
        let result = timed_read(&through, &mut buf).with_context(log)?;
        ensure!(result.hash == expected, "WRONG BYTES: hash {} != origin {expected}; {}", result.hash, log());
        Ok(result)
    };
    let daemon = Daemon::start(binary, &daemon_args).context("starting musicfs on a fresh cache")?;
    let cold = read_through(&daemon, "cold")?;
    let reread = read_through(&daemon, "re-read")?;
    let musicfs_readahead = readahead_kib(&musicfs_mnt);
    stop(daemon, &musicfs_mnt)?;
    let daemon = Daemon::start(binary, &daemon_args).context("restarting musicfs on its cache")?;
    let chunks = log_number(&daemon.log(), "chunk store opened", "chunks")?;
    let warm = read_through(&daemon, "warm")?;
    stop(daemon, &musicfs_mnt)?;

    let rows = [
        ("direct", "origin file, page cache", &direct),
        ("bindfs", "bindfs -o ro, 1st read", &bindfs),
        ("bindfs_second", "bindfs -o ro, 2nd read", &bindfs_again),
        ("musicfs_cold", "musicfs cold (ingest)", &cold),
        ("musicfs_reread", "musicfs re-read", &reread),
        ("musicfs_warm", "musicfs warm (restart)", &warm),
    ];
    println!("  {:<28} {:>8} {:>9}", "read", "GB/s", "seconds");
    for (key, label, result) in rows {
        println!("  {label:<28} {:>8.2} {:>9.3}", result.gbps, result.secs);
        report.figures.insert(format!("{key}_gbps"), json!(result.gbps));
    }
    println!("  musicfs bytes equal the origin's (BLAKE3) on the cold, re-read and warm reads");
    println!("  warm start found {chunks} chunks in the chunk store; those chunk files were just written,");
    println!("  so the warm read is probably served from the host's page cache, not the disk");
    let show = |kib: Option<u64>| kib.map_or_else(|| "?".into(), |k| format!("{k} KiB"));
    let (bindfs_ra, musicfs_ra) = (show(bindfs_readahead), show(musicfs_readahead));
    println!("  kernel readahead, the most a READ request asks for: bindfs {bindfs_ra}, musicfs {musicfs_ra}");
    let ratio = |a: &ReadResult, b: &ReadResult| a.gbps / b.gbps;
    let checks = [
        Check { name: "warm / bindfs", value: ratio(&warm, &bindfs), unit: "x", target: 1.0, at_least: true },
        Check { name: "re-read / direct", value: ratio(&reread, &direct), unit: "x", target: 0.8, at_least: true },
        Check { name: "cold / bindfs", value: ratio(&cold, &bindfs), unit: "x", target: 0.5, at_least: true },
    ];
    checks.iter().for_each(Check::print);
    report.figures.insert("read_size_mib".into(), json!(bytes / MIB));
    report.checks.extend(checks);
    Ok(())
}

/// Part 2: mount a library of `tracks` tracks on a fresh cache, then again on the same cache.
fn scale_bench(tracks: usize, workdir: &Path, binary: &Path, report: &mut Report) -> Result<()> {
    println!("\nPart 2: library of {tracks} tracks");
    let library = workdir.join(format!("library-{tracks}"));
    let files = ensure_library(&library, tracks)?;
    let cache = workdir.join("scale/cache");
    let mnt = workdir.join("scale/mnt");
    if cache.exists() {
        std::fs::remove_dir_all(&cache).with_context(|| format!("removing {}", cache.display()))?;
    }
    let daemon_args =
        DaemonArgs { origins: vec![library], cache_dir: Some(cache), mount_point: mnt.clone(), ..Default::default() };

    let clock = Instant::now();
    let daemon = Daemon::start(binary, &daemon_args).context("starting musicfs on a fresh cache")?;
    let first_wall_ms = clock.elapsed().as_secs_f64() * 1e3;
    let log = daemon.log();
    let first_ms = log_number(&log, "mounted and serving", "elapsed_ms")?;
    let scan_ms = log_number(&log, "first scan done", "elapsed_ms")?;
    let served = log_number(&log, "mounted and serving", "tracks")?;
    stop(daemon, &mnt)?;

    let clock = Instant::now();
    let daemon = Daemon::start(binary, &daemon_args).context("restarting musicfs on its cache")?;
    let second_wall_ms = clock.elapsed().as_secs_f64() * 1e3;
    let second_ms = log_number(&daemon.log(), "mounted and serving", "elapsed_ms")?;
    let load_ms = log_number(&daemon.log(), "loaded library from the database", "elapsed_ms")?;
    std::thread::sleep(IDLE_BEFORE_RSS);
    let pid = daemon.pid().context("the daemon has no pid")?;
    let (rss_mb, hwm_mb) = memory_mb(pid)?;
    let delta_sync_done = daemon.log().contains("delta sync done");
    let clock = Instant::now();
    let visible =
        count_files(&mnt).with_context(|| format!("listing {}; daemon log:\n{}", mnt.display(), daemon.log()))?;
    let walk_secs = clock.elapsed().as_secs_f64();
    let (rss_walk_mb, hwm_walk_mb) = memory_mb(pid)?;
    let (sync_ms, invalidations) = sync_one_new_track(binary, &daemon_args, &files)?;
    stop(daemon, &mnt)?;

    println!("  {:<34} {:>10} {:>10}", "mount", "daemon ms", "wall ms");
    println!("  {:<34} {first_ms:>10} {first_wall_ms:>10.0}", "first start (scan, fresh cache)");
    println!("  {:<34} {second_ms:>10} {second_wall_ms:>10.0}", "second start (from the database)");
    println!("  first scan done at {scan_ms} ms; library loaded from the database at {load_ms} ms");
    let sync_state = if delta_sync_done { "done" } else { "still running" };
    println!(
        "  idle {IDLE_BEFORE_RSS:?} after the second mount (delta sync {sync_state}): VmRSS {rss_mb:.1} MB, VmHWM {hwm_mb:.1} MB"
    );
    println!(
        "  listing the mount: {visible} files in {walk_secs:.2} s; then VmRSS {rss_walk_mb:.1} MB, VmHWM {hwm_walk_mb:.1} MB"
    );
    println!("  `musicfs sync` after adding one track: {sync_ms:.0} ms; {invalidations} kernel cache invalidations");
    let checks = [
        Check { name: "second mount", value: second_ms as f64, unit: " ms", target: 500.0, at_least: false },
        Check { name: "idle RSS", value: rss_mb, unit: " MB", target: 50.0, at_least: false },
    ];
    checks.iter().for_each(Check::print);
    let figures = json!({
        "first_mount_daemon_ms": first_ms, "first_mount_wall_ms": first_wall_ms, "first_scan_ms": scan_ms,
        "second_mount_daemon_ms": second_ms, "second_mount_wall_ms": second_wall_ms, "idle_rss_mb": rss_mb,
        "idle_hwm_mb": hwm_mb, "rss_after_listing_mb": rss_walk_mb, "listing_secs": walk_secs,
        "files_generated": files.len(), "files_visible": visible, "delta_sync_done_at_rss": delta_sync_done,
        "sync_one_new_track_ms": sync_ms, "sync_kernel_invalidations": invalidations,
    });
    report.figures.extend(figures.as_object().cloned().unwrap_or_default());
    report.checks.extend(checks);
    ensure!(served == files.len() as u64, "musicfs served {served} tracks, {} were generated", files.len());
    ensure!(visible == files.len(), "the mount lists {visible} files, {} were generated", files.len());
    Ok(())
}

/// Adds a copy of the first track under a new name, runs `musicfs sync` and times it: the whole delta sync of
/// the library (listing, diff against the database, tree rebuild, kernel cache invalidation). The copy is
/// removed again, so the library stays as generated.
fn sync_one_new_track(binary: &Path, args: &DaemonArgs, files: &[SampleTrack]) -> Result<(f64, u64)> {
    let (origin, cache) = (&args.origins[0], args.cache_dir.as_deref().context("no cache dir")?);
    let first = files.first().context("empty library")?;
    let extra = origin.join("bench-sync-extra.flac");
    std::fs::copy(origin.join(&first.rel_path), &extra)?;
    let musicfs = |what: &[&str]| Command::new(binary).args(what).arg("--cache-dir").arg(cache).output();
    let clock = Instant::now();
    let out = musicfs(&["sync"]);
    let sync_ms = clock.elapsed().as_secs_f64() * 1e3;
    let _ = std::fs::remove_file(&extra);
    let out = out?;
    ensure!(out.status.success(), "musicfs sync failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(report["added"] == 1, "musicfs sync did not see the new track: {report}");
    let status: Value = serde_json::from_slice(&musicfs(&["status", "--json"])?.stdout).unwrap_or_default();
    Ok((sync_ms, status["events"]["kernel_invalidations"].as_u64().unwrap_or(0)))
}

/// Writes `bytes` random bytes to `path` unless a file of that size is already there.
fn ensure_random_file(path: &Path, bytes: usize) -> Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == bytes as u64) {
        return Ok(());
    }
    let dir = path.parent().context("the origin file has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let partial = path.with_extension("partial");
    let mut random = File::open("/dev/urandom").context("opening /dev/urandom")?.take(bytes as u64);
    let mut out = File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    std::io::copy(&mut random, &mut out).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("renaming {} into place", partial.display()))
}

/// Generates the library unless an earlier run completed it, and returns its files.
fn ensure_library(dir: &Path, tracks: usize) -> Result<Vec<SampleTrack>> {
    let marker = dir.with_extension("done");
    if marker.exists() {
        println!("  reusing the library in {}", dir.display());
        return Ok((0..tracks).map(sample::ordinary_track).collect());
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing the incomplete {}", dir.display()))?;
    }
    let clock = Instant::now();
    let options = SampleOptions { tracks, hostile: false, seconds: SAMPLE_SECONDS };
    let files = sample::generate(dir, &options).with_context(|| format!("generating {}", dir.display()))?;
    std::fs::write(&marker, format!("{tracks} tracks of {SAMPLE_SECONDS} s\n"))
        .with_context(|| format!("writing {}", marker.display()))?;
    println!("  generated {} files in {} in {:.1} s", files.len(), dir.display(), clock.elapsed().as_secs_f64());
    Ok(files)
}

/// Reads the whole file into `buf` with 1 MiB `read()` calls; only the reads are timed.
fn timed_read(path: &Path, buf: &mut [u8]) -> Result<ReadResult> {
    let clock = Instant::now();
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut filled = 0;
    while filled < buf.len() {
        let end = (filled + READ_SIZE).min(buf.len());
        let n = file.read(&mut buf[filled..end]).with_context(|| format!("reading {} at {filled}", path.display()))?;
        ensure!(n > 0, "{} ended after {filled} of {} bytes", path.display(), buf.len());
        filled += n;
    }
    let mut past_end = [0u8; 1];
    ensure!(file.read(&mut past_end)? == 0, "{} is longer than {} bytes", path.display(), buf.len());
    let secs = clock.elapsed().as_secs_f64();
    Ok(ReadResult { secs, gbps: buf.len() as f64 / 1e9 / secs, hash: blake3::hash(buf) })
}

/// Stops the daemon with SIGTERM; it must exit 0 and leave no mount behind.
fn stop(daemon: Daemon, mount_point: &Path) -> Result<()> {
    let log = daemon.log();
    let status = daemon.stop().context("stopping musicfs")?;
    ensure!(status.success(), "musicfs exited with {status} after SIGTERM; log so far:\n{log}");
    ensure!(!is_fuse_mounted(mount_point), "musicfs exited but {} is still mounted", mount_point.display());
    Ok(())
}

/// The number after ` key=` on the last daemon log line containing `marker`.
fn log_number(log: &str, marker: &str, key: &str) -> Result<u64> {
    let pattern = format!(" {key}=");
    let value = log.lines().rev().find(|line| line.contains(marker)).and_then(|line| {
        let start = line.find(&pattern)? + pattern.len();
        line[start..].split_whitespace().next()
    });
    let value = value.with_context(|| format!("no `{key}=` on a `{marker}` line; log:\n{log}"))?;
    value.parse().with_context(|| format!("`{key}={value}` on a `{marker}` line is not a number"))
}

/// VmRSS and VmHWM of a process, in MB.
fn memory_mb(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/PID/status")?;
    let field = |name: &str| -> Result<f64> {
        let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name} for {pid}"))?;
        let kib: f64 =
            line[name.len()..].trim().trim_end_matches("kB").trim().parse().context("parsing /proc status")?;
        Ok(kib * 1024.0 / 1e6)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Number of regular files under `dir`, listed recursively without following links.
fn count_files(dir: &Path) -> Result<usize> {
    let mut count = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let kind = entry.and_then(|e| Ok((e.file_type()?, e.path())));
            let (kind, path) = kind.with_context(|| format!("listing {}", dir.display()))?;
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                count += 1;
            }
        }
    }
    Ok(count)
}

/// The kernel's readahead for the filesystem mounted at `mount_point`, from its backing device info.
fn readahead_kib(mount_point: &Path) -> Option<u64> {
    let dev = std::fs::metadata(mount_point).ok()?.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let text = std::fs::read_to_string(format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb")).ok()?;
    text.trim().parse().ok()
}

/// `bindfs -f -o ro ORIGIN MNT` as a child process, unmounted with `fusermount3 -u` on drop.
/// Running it in the foreground keeps it in our process group, so Ctrl-C makes it unmount too.
struct BindfsMount {
    child: Child,
    mount_point: PathBuf,
}

impl BindfsMount {
    fn start(origin: &Path, mount_point: &Path) -> Result<BindfsMount> {
        std::fs::create_dir_all(mount_point).with_context(|| format!("creating {}", mount_point.display()))?;
        let child = Command::new("bindfs")
            .args(["-f", "-o", "ro"])
            .arg(origin)
            .arg(mount_point)
            .stdin(Stdio::null())
            .spawn()
            .context("spawning bindfs (is it installed?)")?;
        let mut mount = BindfsMount { child, mount_point: mount_point.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_fuse_mounted(mount_point) {
            if let Some(status) = mount.child.try_wait().context("waiting for bindfs")? {
                bail!("bindfs exited with {status} before mounting {}", mount_point.display());
            }
            ensure!(Instant::now() < deadline, "bindfs did not mount {} within 10 s", mount_point.display());
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(mount)
    }
}

impl Drop for BindfsMount {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3").arg("-u").arg(&self.mount_point).status();
        if is_fuse_mounted(&self.mount_point) {
            force_unmount(&self.mount_point);
        }
        // bindfs exits by itself once unmounted; it is killed only if it has not after 5 s.
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
