//! `cargo xtask bench` without `--peers`: measures MusicFS against its performance targets and prints the figures.
//!
//! Part 1 reads one file of random bytes sequentially (1 MiB `read()` calls) directly, through
//! `bindfs -o ro`, and through MusicFS cold (ingesting), re-read (kernel page cache) and warm (chunk
//! cache, after a restart), and checks that MusicFS returned the origin's bytes. Part 2 mounts a
//! generated library of `--tracks` tracks twice (first scan, with the library's pages evicted from the
//! page cache; then from the database) and reads the daemon's memory. It prints figures and PASS/BELOW
//! beside each target; it never fails on timing, only on errors and wrong results. Generated data stays in
//! the workdir for the next run; mounts are removed on every exit path (on Ctrl-C the daemons unmount
//! themselves, and the next run clears leftovers).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use musicfs_test_utils::daemon::{Daemon, DaemonArgs};
use musicfs_test_utils::sample::SampleTrack;
use serde_json::{Value, json};

use super::Args;
use super::tools::{
    BindfsMount, MIB, ReadResult, UNTAGGED_DIR, count_files, ensure_library, ensure_random_file, evict_from_page_cache,
    log_number, memory_mb, readahead_kib, stop, timed_read,
};

/// How long the daemon idles before its memory is read.
const IDLE_BEFORE_RSS: Duration = Duration::from_secs(2);
/// The longest the bench waits for the second start's delta sync and search check before it measures anyway.
const STARTUP_WORK_LIMIT: Duration = Duration::from_secs(60);

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

/// Runs the parts that were not skipped with `sizes` (MiB of the read file, tracks of the library) and prints
/// their figures.
pub fn run(args: &Args, (size_mib, tracks): (usize, usize), workdir: &Path, binary: &Path) -> Result<()> {
    let started = Instant::now();
    println!("MusicFS bench: {} (GB = 10^9 bytes, MB = 10^6 bytes, 1 MiB read() calls)", binary.display());

    let mut report = Report::default();
    if !args.skip_read {
        read_bench(size_mib * MIB, &workdir.join("read"), binary, &mut report)?;
    }
    if !args.skip_scale {
        scale_bench(tracks, workdir, binary, &mut report)?;
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
    let daemon_args = DaemonArgs {
        origins: vec![library.clone()],
        cache_dir: Some(cache),
        mount_point: mnt.clone(),
        ..Default::default()
    };

    // A first start meets a library that is not in memory (after a boot, or one never read): its tags come
    // from the disk. The library was just generated or read by the last run, so its pages are dropped first.
    let evicted = evict_from_page_cache(&library)?;
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
    // Idle means after the start's own work: the delta sync and the search index's check (or rebuild, when
    // the first start stopped before it was built). Their peak is VmHWM.
    let startup = Instant::now();
    while !["delta sync done", "search index ready"].iter().all(|line| daemon.log().contains(line))
        && startup.elapsed() < STARTUP_WORK_LIMIT
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let startup_work_secs = startup.elapsed().as_secs_f64() + second_wall_ms / 1e3;
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
    println!(
        "  first scan done at {scan_ms} ms ({evicted} files evicted from the page cache before it); library loaded from the database at {load_ms} ms"
    );
    let sync_state = if delta_sync_done { "done" } else { "still running" };
    println!(
        "  idle {IDLE_BEFORE_RSS:?} after the second start's delta sync and search check ({startup_work_secs:.1} s after it began; delta sync {sync_state}): VmRSS {rss_mb:.1} MB, VmHWM {hwm_mb:.1} MB"
    );
    println!(
        "  listing the mount: {visible} files in {walk_secs:.2} s; then VmRSS {rss_walk_mb:.1} MB, VmHWM {hwm_walk_mb:.1} MB"
    );
    println!("  `musicfs sync` after adding one track: {sync_ms:.0} ms; {invalidations} kernel cache invalidations");
    let checks = [
        Check { name: "first scan", value: scan_ms as f64, unit: " ms", target: 5000.0, at_least: false },
        Check { name: "second mount", value: second_ms as f64, unit: " ms", target: 500.0, at_least: false },
        Check { name: "idle RSS", value: rss_mb, unit: " MB", target: 50.0, at_least: false },
    ];
    checks.iter().for_each(Check::print);
    let figures = json!({
        "first_mount_daemon_ms": first_ms, "first_mount_wall_ms": first_wall_ms, "first_scan_ms": scan_ms,
        "second_mount_daemon_ms": second_ms, "second_mount_wall_ms": second_wall_ms, "idle_rss_mb": rss_mb,
        "idle_hwm_mb": hwm_mb, "second_start_work_secs": startup_work_secs, "rss_after_listing_mb": rss_walk_mb, "listing_secs": walk_secs,
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
