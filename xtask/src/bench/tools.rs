//! Helpers shared by both modes of `cargo xtask bench`: generated test data (a file of random bytes, a sample
//! library), a timed and hashed sequential read, process memory from /proc, and `bindfs` as a child mount that
//! is removed on drop. Nothing here measures against a target or prints a report.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use musicfs_test_utils::daemon::{Daemon, force_unmount, is_fuse_mounted};
use musicfs_test_utils::sample::{self, SampleOptions, SampleTrack};

pub const MIB: usize = 1 << 20;
/// Size of every `read()` call.
pub const READ_SIZE: usize = MIB;
/// Length of each generated track: short, so 100 000 tracks stay small and quick to write.
pub const SAMPLE_SECONDS: f32 = 0.2;
/// Where MusicFS shows a file without readable tags.
pub const UNTAGGED_DIR: &str = "Unknown Artist/Unknown Album";

/// One timed sequential read of a whole file.
pub struct ReadResult {
    pub secs: f64,
    pub gbps: f64,
    pub hash: blake3::Hash,
}

/// Writes `bytes` random bytes to `path` unless a file of that size is already there.
pub fn ensure_random_file(path: &Path, bytes: usize) -> Result<()> {
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
pub fn ensure_library(dir: &Path, tracks: usize) -> Result<Vec<SampleTrack>> {
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

/// Asks the kernel to drop the page-cache pages of every file under `dir`, as after a reboot, so that a scan
/// reads them from the disk. Only these files are touched and no root is needed (`POSIX_FADV_DONTNEED`
/// drops clean pages); directories and inodes stay cached. Returns how many files were evicted.
pub fn evict_from_page_cache(dir: &Path) -> Result<usize> {
    let mut evicted = 0;
    for_each_file(dir, &mut |path| {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: the descriptor is open for the whole call; the advice touches no memory of ours.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        ensure!(rc == 0, "posix_fadvise({}): {}", path.display(), std::io::Error::from_raw_os_error(rc));
        evicted += 1;
        Ok(())
    })?;
    Ok(evicted)
}

/// Reads the whole file into `buf` with 1 MiB `read()` calls; only the reads are timed.
pub fn timed_read(path: &Path, buf: &mut [u8]) -> Result<ReadResult> {
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
pub fn stop(daemon: Daemon, mount_point: &Path) -> Result<()> {
    let log = daemon.log();
    let status = daemon.stop().context("stopping musicfs")?;
    ensure!(status.success(), "musicfs exited with {status} after SIGTERM; log so far:\n{log}");
    ensure!(!is_fuse_mounted(mount_point), "musicfs exited but {} is still mounted", mount_point.display());
    Ok(())
}

/// The number after ` key=` on the last daemon log line containing `marker`.
pub fn log_number(log: &str, marker: &str, key: &str) -> Result<u64> {
    let pattern = format!(" {key}=");
    let value = log.lines().rev().find(|line| line.contains(marker)).and_then(|line| {
        let start = line.find(&pattern)? + pattern.len();
        line[start..].split_whitespace().next()
    });
    let value = value.with_context(|| format!("no `{key}=` on a `{marker}` line; log:\n{log}"))?;
    value.parse().with_context(|| format!("`{key}={value}` on a `{marker}` line is not a number"))
}

/// VmRSS and VmHWM of a process, in MB.
pub fn memory_mb(pid: u32) -> Result<(f64, f64)> {
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
pub fn count_files(dir: &Path) -> Result<usize> {
    let mut count = 0;
    for_each_file(dir, &mut |_| {
        count += 1;
        Ok(())
    })?;
    Ok(count)
}

/// Calls `visit` with the path of every regular file under `dir`, depth first.
fn for_each_file(dir: &Path, visit: &mut dyn FnMut(&Path) -> Result<()>) -> Result<()> {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let kind = entry.and_then(|e| Ok((e.file_type()?, e.path())));
            let (kind, path) = kind.with_context(|| format!("listing {}", dir.display()))?;
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                visit(&path)?;
            }
        }
    }
    Ok(())
}

/// The kernel's readahead for the filesystem mounted at `mount_point`, from its backing device info.
pub fn readahead_kib(mount_point: &Path) -> Option<u64> {
    let dev = std::fs::metadata(mount_point).ok()?.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let text = std::fs::read_to_string(format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb")).ok()?;
    text.trim().parse().ok()
}

/// `bindfs -f -o ro ORIGIN MNT` as a child process, unmounted with `fusermount3 -u` on drop.
/// Running it in the foreground keeps it in our process group, so Ctrl-C makes it unmount too.
pub struct BindfsMount {
    child: Child,
    mount_point: PathBuf,
}

impl BindfsMount {
    pub fn start(origin: &Path, mount_point: &Path) -> Result<BindfsMount> {
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
