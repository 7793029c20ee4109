//! The measurements `cargo xtask bench --peers` takes on one system, the same way for every system: on the read
//! set, a cold sequential read (page cache dropped after the mount answered), a cached one (the second read in
//! the same mount), the time to the first 64 KiB of a file not read before, and random 4 KiB reads of another
//! such file; on the library, `find -type f` (cold) and then `ls -lR`. Every byte read is checked against the
//! origin with BLAKE3: wrong bytes are a [`WrongBytes`] error, never a figure.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::data::{Data, FIRST_BYTE, FIRST_BYTES, RANDOM, SEQUENTIAL};
use super::report::{Figures, Metric};
use super::systems::System;
use super::tools::timed_read;

/// Random reads per run.
const RANDOM_READS: usize = 100;
/// Size and alignment of each random read.
const RANDOM_READ_SIZE: usize = 4096;
/// How long `find` or `ls -lR` over the library may take before the system's library figures are given up.
const TREE_TIMEOUT: Duration = Duration::from_secs(120);

/// A system returned bytes that differ from the origin's.
#[derive(Debug)]
pub struct WrongBytes(pub String);

impl std::fmt::Display for WrongBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WRONG BYTES: {}", self.0)
    }
}

impl std::error::Error for WrongBytes {}

/// Empties the kernel's page, dentry and inode caches (needs root).
pub fn drop_caches() -> Result<()> {
    // SAFETY: sync(2) takes no arguments and touches no memory.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").context("dropping the page cache (needs root)")
}

/// The read-set figures of `system`, whose files show under `root` (a mount point, or the origin directory
/// for direct reads). Round `round` picks the random offsets, the same for every system in that round.
/// `cpu` says how much CPU time the system's processes have used so far (seconds; None for direct reads).
pub fn read_figures(
    system: System,
    root: &Path,
    data: &Data,
    buf: &mut [u8],
    round: usize,
    cpu: &dyn Fn() -> Option<f64>,
) -> Result<Figures> {
    let mut figures = Figures::new();
    drop_caches()?;
    let sequential = system.path_of(root, SEQUENTIAL);
    for (metric, what) in [(Metric::Cold, "cold"), (Metric::Cached, "cached")] {
        let cpu_before = cpu();
        let read = timed_read(&sequential, buf).with_context(|| format!("{what} sequential read"))?;
        if let (Metric::Cold, Some(before), Some(after)) = (metric, cpu_before, cpu()) {
            figures.insert(Metric::ColdCpu, after - before);
        }
        if read.hash != data.sequential_hash {
            let why = format!(
                "{what} read of {}: BLAKE3 {} != origin {}",
                sequential.display(),
                read.hash,
                data.sequential_hash
            );
            return Err(WrongBytes(why).into());
        }
        figures.insert(metric, read.gbps);
    }
    figures.insert(Metric::FirstByte, first_byte_ms(&system.path_of(root, FIRST_BYTE), data)?);
    let (p50, p99) = random_reads_ms(&system.path_of(root, RANDOM), &data.read_set.dir.join(RANDOM), round)?;
    figures.insert(Metric::RandomP50, p50);
    figures.insert(Metric::RandomP99, p99);
    Ok(figures)
}

/// The sequential file read through a new mount of `system` over the cache an earlier mount filled, without
/// dropping the page cache: MusicFS serves it from its chunk store, a peer without a disk cache from its origin
/// again (GB/s; the bytes checked).
pub fn warm_read(system: System, root: &Path, data: &Data, buf: &mut [u8]) -> Result<f64> {
    let read = timed_read(&system.path_of(root, SEQUENTIAL), buf).context("warm sequential read")?;
    if read.hash != data.sequential_hash {
        let why = format!("warm read of {SEQUENTIAL}: BLAKE3 {} != origin {}", read.hash, data.sequential_hash);
        return Err(WrongBytes(why).into());
    }
    Ok(read.gbps)
}

/// Open plus the first [`FIRST_BYTES`] of `path`, in ms.
fn first_byte_ms(path: &Path, data: &Data) -> Result<f64> {
    let mut first = vec![0u8; FIRST_BYTES];
    let clock = Instant::now();
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    file.read_exact(&mut first).with_context(|| format!("reading the first bytes of {}", path.display()))?;
    let ms = clock.elapsed().as_secs_f64() * 1e3;
    let hash = blake3::hash(&first);
    if hash != data.first_bytes_hash {
        let why = format!(
            "first {FIRST_BYTES} bytes of {}: BLAKE3 {hash} != origin {}",
            path.display(),
            data.first_bytes_hash
        );
        return Err(WrongBytes(why).into());
    }
    Ok(ms)
}

/// [`RANDOM_READS`] reads of [`RANDOM_READ_SIZE`] at aligned pseudo-random offsets of `path` (one open file):
/// (p50, p99) in ms. Each read is then checked against the same range of `origin`.
fn random_reads_ms(path: &Path, origin: &Path, round: usize) -> Result<(f64, f64)> {
    let size = std::fs::metadata(origin).with_context(|| format!("reading {}", origin.display()))?.len();
    let blocks = size / RANDOM_READ_SIZE as u64;
    ensure!(blocks > 0, "{} is smaller than one random read", origin.display());
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (round as u64 + 1);
    let offsets: Vec<u64> = (0..RANDOM_READS)
        .map(|_| {
            // xorshift64: the same offsets for every system of a round, other offsets in the next round.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % blocks) * RANDOM_READ_SIZE as u64
        })
        .collect();
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut got = vec![0u8; RANDOM_READS * RANDOM_READ_SIZE];
    let mut times = Vec::with_capacity(RANDOM_READS);
    for (block, &offset) in got.chunks_mut(RANDOM_READ_SIZE).zip(&offsets) {
        let clock = Instant::now();
        file.read_exact_at(block, offset).with_context(|| format!("reading {} at {offset}", path.display()))?;
        times.push(clock.elapsed().as_secs_f64() * 1e3);
    }
    let origin = File::open(origin).with_context(|| format!("opening {}", origin.display()))?;
    let mut want = vec![0u8; RANDOM_READ_SIZE];
    for (block, &offset) in got.chunks(RANDOM_READ_SIZE).zip(&offsets) {
        origin.read_exact_at(&mut want, offset).context("reading the origin")?;
        let (hash, expected) = (blake3::hash(block), blake3::hash(&want));
        if hash != expected {
            let why = format!(
                "{RANDOM_READ_SIZE} bytes at {offset} of {}: BLAKE3 {hash} != origin {expected}",
                path.display()
            );
            return Err(WrongBytes(why).into());
        }
    }
    times.sort_by(f64::total_cmp);
    Ok((percentile(&times, 50.0), percentile(&times, 99.0)))
}

/// The nearest-rank percentile of sorted `values`.
fn percentile(values: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// `find ROOT -type f` right after dropping the caches, then `ls -lR ROOT`: seconds each. `find` must list
/// `tracks` files; each command is stopped after [`TREE_TIMEOUT`].
pub fn tree_figures(root: &Path, tracks: usize) -> Result<Figures> {
    let mut figures = Figures::new();
    drop_caches()?;
    let listing = root.parent().unwrap_or(root).join("find.out");
    let out = File::create(&listing).with_context(|| format!("creating {}", listing.display()))?;
    let mut find = Command::new("find");
    find.arg(root).args(["-type", "f"]).stdout(out);
    figures.insert(Metric::Find, run_bounded(find, "find -type f")?);
    let listed = std::fs::read(&listing).context("reading find's output")?;
    let listed = listed.split(|&b| b == b'\n').filter(|line| !line.is_empty()).count();
    ensure!(listed == tracks, "find lists {listed} files under {}, the library has {tracks}", root.display());
    let mut list = Command::new("ls");
    list.arg("-lR").arg(root).stdout(Stdio::null());
    figures.insert(Metric::ListLong, run_bounded(list, "ls -lR")?);
    Ok(figures)
}

/// Runs `cmd` to success within [`TREE_TIMEOUT`]: its wall time in seconds. Killed when it takes longer.
fn run_bounded(mut cmd: Command, what: &str) -> Result<f64> {
    let clock = Instant::now();
    let mut child = cmd.stdin(Stdio::null()).spawn().with_context(|| format!("running {what}"))?;
    loop {
        if let Some(status) = child.try_wait().with_context(|| format!("waiting for {what}"))? {
            ensure!(status.success(), "{what} failed: {status}");
            return Ok(clock.elapsed().as_secs_f64());
        }
        if clock.elapsed() > TREE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {} s", TREE_TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
