//! The network scenarios: the unit reads S3 (through the `s3` proxy) and SFTP (through the `sftp` proxy)
//! origins, and the probe slows, cuts and partitions them with Toxiproxy, takes local directories away and
//! breaks name resolution. Each checks every byte it reads, measures the longest stall a reader saw, and
//! leaves every fault undone (also when it fails: `Faults` undoes them on drop).

use crate::faults::{self, Faults, restore};
use crate::machine::{Machine, now_epoch, pseudo_random};
use crate::player;
use crate::toxiproxy;
use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The S3 origin's id and bucket directory, and the SFTP origin's id (the system test's config).
const S3_ORIGIN: &str = "bucket";
const SFTP_ORIGIN: &str = "nas";
/// The daemon's bound on one read (`fuse.read_timeout` in the system test's config).
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// `library.sync_interval` and `health.interval` in the system test's config.
const SYNC_INTERVAL: Duration = Duration::from_secs(10);
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
const PIECE: usize = 64 * 1024;
/// A latency spike well below the daemon's hedge floor (300 ms, `HEDGE_FLOOR` in musicfs-cas): no read may
/// go to the backup (N1).
const BELOW_HEDGE_MS: u64 = 100;
/// One above the hedge floor and far below the read timeout: reads may be hedged, none may fail (N1, N2).
const ABOVE_HEDGE_MS: u64 = 400;

fn secs(d: Duration) -> f64 {
    (d.as_millis() as f64) / 1000.0
}

/// The local directory of a library origin.
fn origin_dir<'a>(m: &'a Machine, id: &str) -> Result<&'a Path> {
    m.library.iter().find(|(o, _)| o == id).map(|(_, d)| d.as_path()).with_context(|| format!("no origin `{id}`"))
}

/// A new file on an origin, known to the library (after `musicfs sync`) and not cached yet.
struct NewTrack {
    mount_path: PathBuf,
    bytes: Vec<u8>,
}

/// Writes a new untagged file of `len` pseudo-random bytes into the origin's local directory (whole, by
/// rename: a server never serves half of it), then runs the origin's upload command if it has one (a
/// remote server in the VM test); returns where the mount will show it.
fn put_file(m: &Machine, origin: &str, name: &str, len: usize) -> Result<NewTrack> {
    let dir = origin_dir(m, origin)?;
    let bytes = pseudo_random(len, now_epoch() ^ (len as u64));
    let tmp = dir.parent().context("origin dir has a parent")?.join(format!(".{name}.partial"));
    std::fs::write(&tmp, &bytes)?;
    let file = dir.join(name);
    std::fs::rename(&tmp, &file)?;
    m.upload(origin, &file)?;
    let stem = Path::new(name).file_stem().context("file name")?.to_string_lossy().into_owned();
    let mount_path = m.mount_point.join("Unknown Artist/Unknown Album").join(format!("{stem}.wav"));
    Ok(NewTrack { mount_path, bytes })
}

fn sync(m: &Machine) -> Result<String> {
    let (ok, text) = m.run("musicfs", &["sync", "--config", &m.config])?;
    ensure!(ok, "musicfs sync failed: {text}");
    Ok(text)
}

/// A new track on an origin, synced into the library.
fn new_track(m: &Machine, origin: &str, name: &str, len: usize) -> Result<NewTrack> {
    let track = put_file(m, origin, name, len)?;
    sync(m)?;
    ensure!(track.mount_path.exists(), "{} did not appear after musicfs sync", track.mount_path.display());
    Ok(track)
}

/// What a reader saw reading a whole track piece by piece.
#[derive(Debug, Default)]
struct Reading {
    bytes: u64,
    errors: u64,
    last_error: Option<String>,
    longest_stall: Duration,
    /// How long the slowest failed read took to fail.
    slowest_error: Duration,
}

/// Reads the whole track in 64 KiB pieces, checking each against `expected`; a failed piece is counted and
/// read again (a player retries). Gives up after `limit`.
fn read_track(path: &Path, expected: &[u8], limit: Duration, progress: Option<&AtomicU64>) -> Result<Reading> {
    let started = Instant::now();
    let mut seen = Reading::default();
    let mut buf = vec![0u8; PIECE];
    let mut offset = 0usize;
    while offset < expected.len() {
        ensure!(
            started.elapsed() < limit,
            "read {offset} of {} bytes of {} within {limit:?} ({} failed reads, the last: {:?})",
            expected.len(),
            path.display(),
            seen.errors,
            seen.last_error
        );
        let asked = Instant::now();
        let result = std::fs::File::open(path).and_then(|f| f.read_at(&mut buf, offset as u64));
        let took = asked.elapsed();
        seen.longest_stall = seen.longest_stall.max(took);
        match result {
            Ok(0) => bail!("{} ended at {offset} of {} bytes", path.display(), expected.len()),
            Ok(n) => {
                ensure!(buf[..n] == expected[offset..offset + n], "wrong bytes at {offset} of {}", path.display());
                offset += n;
                seen.bytes += n as u64;
                if let Some(done) = progress {
                    done.store(offset as u64, Ordering::SeqCst);
                }
            }
            Err(e) => {
                seen.errors += 1;
                seen.last_error = Some(e.to_string());
                seen.slowest_error = seen.slowest_error.max(took);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Ok(seen)
}

/// Reads a track on a thread; the counter follows the bytes read so far.
fn read_in_background(
    path: PathBuf,
    expected: Vec<u8>,
    limit: Duration,
) -> (Arc<AtomicU64>, std::thread::JoinHandle<Result<Reading>>) {
    let done = Arc::new(AtomicU64::new(0));
    let counter = done.clone();
    (done, std::thread::spawn(move || read_track(&path, &expected, limit, Some(&counter))))
}

/// Slows a proxy's downstream to `rate_kb` KB/s for every connection: the toxic, then the live (pooled)
/// connections cut, so the next request opens a new, slowed one.
fn slow_down(proxy: &str, rate_kb: u64) -> Result<()> {
    toxiproxy::add_bandwidth(proxy, "slow", rate_kb)?;
    toxiproxy::set_enabled(proxy, false)?;
    toxiproxy::set_enabled(proxy, true)
}

/// A reader of a new, throttled track, caught mid-stream: the moment to cut.
struct MidStream {
    track: NewTrack,
    cut_at: u64,
    reader: std::thread::JoinHandle<Result<Reading>>,
}

/// Starts reading a new 16 MiB track of `origin` through its proxy, throttled to `rate_kb` KB/s, and returns
/// once the reader is between a quarter and three quarters of it. The rate must let one 8 MiB ingest block
/// arrive within the origin's bound (half of 90 % of `fuse.read_timeout` when it has a backup: 4.5 s here),
/// or the block times out and comes from the backup before any cut.
fn mid_stream(m: &Machine, origin: &str, proxy: &str, rate_kb: u64, prefix: &str) -> Result<MidStream> {
    const LEN: usize = 16 << 20;
    let track = new_track(m, origin, &format!("{prefix}-{}.wav", now_epoch()), LEN)?;
    slow_down(proxy, rate_kb)?;
    let (done, reader) = read_in_background(track.mount_path.clone(), track.bytes.clone(), Duration::from_secs(90));
    let took = m.wait_until(Duration::from_secs(30), "the stream reaching a quarter of the track", || {
        done.load(Ordering::SeqCst) >= LEN as u64 / 4
    })?;
    let cut_at = done.load(Ordering::SeqCst);
    ensure!(
        cut_at < LEN as u64 * 3 / 4,
        "the stream had {cut_at} of {LEN} bytes after {took:?}, before the cut; proxy: {}",
        toxiproxy::describe(proxy)
    );
    Ok(MidStream { track, cut_at, reader })
}

fn origin_status(status: &Value, id: &str) -> Value {
    status["origins"].as_array().into_iter().flatten().find(|o| o["id"] == id).cloned().unwrap_or(Value::Null)
}

fn wait_state(m: &Machine, state: &str, limit: Duration) -> Result<Duration> {
    m.wait_until(limit, &format!("musicfs status saying {state}"), || m.status().is_ok_and(|s| s["state"] == state))
}

/// Proves L4: 4.2.3
pub fn origin_outage(m: &Machine) -> Result<Value> {
    m.wait_serving(Duration::from_secs(30))?;
    let _undo = Faults;
    let uncached = new_track(m, SFTP_ORIGIN, &format!("outage-{}.wav", now_epoch()), 1 << 20)?;
    // A cached track (wait_serving read every file): the largest of the local origin.
    let cached = std::fs::read_dir(&m.origin)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .max_by_key(|p| std::fs::metadata(p).map_or(0, |x| x.len()))
        .context("the local origin is empty")?;
    let cached_bytes = std::fs::read(&cached)?;
    let cached_in_mount = m.mount_point.join("Unknown Artist/Unknown Album").join(cached.file_name().context("name")?);
    // Played once now, through the daemon (not the kernel's page cache, which wait_serving filled), so it
    // is the most recently used in the small cache; then a moment for its chunks to be written.
    m.drop_kernel_pages()?;
    read_track(&cached_in_mount, &cached_bytes, Duration::from_secs(60), None)?;
    // A real track for mpv, read once through the daemon so that it is cached too.
    let (song, song_bytes) = player::playable_track(&m.origin)?;
    let song_in_mount = player::find_in_mount(&m.mount_point, &song_bytes)?;
    m.drop_kernel_pages()?;
    read_track(&song_in_mount, &song_bytes, Duration::from_secs(60), None)?;
    std::thread::sleep(Duration::from_secs(2));
    let (pid, restarts) = (m.main_pid(), m.restarts());

    // Every origin away: the proxies cut, the local directories (the origin and the S3 copy) moved aside.
    toxiproxy::set_enabled("s3", false)?;
    toxiproxy::set_enabled("sftp", false)?;
    for (_, dir) in &m.library {
        if (dir.starts_with("/srv/music") || dir.starts_with("/srv/s3")) && faults::movable(dir) {
            std::fs::rename(dir, dir.with_extension("away"))?;
        }
    }
    let cut = Instant::now();
    let to_offline = wait_state(m, "offline", HEALTH_INTERVAL * 5 + Duration::from_secs(10))?;
    m.wait_until(Duration::from_secs(15), "STATUS= saying offline", || m.prop("StatusText").starts_with("offline"))?;
    m.drop_kernel_pages()?;
    let played = read_track(&cached_in_mount, &cached_bytes, Duration::from_secs(60), None)?;
    ensure!(played.errors == 0, "{} read errors playing a cached track while every origin was away", played.errors);
    // And mpv plays a cached track to its end, as a listener's player would.
    let mpv = player::play_to_end(&song_in_mount)?;
    ensure!(
        mpv.clean(),
        "4.2.3: mpv playing {} with every origin away: exit {}, {:?}",
        song.display(),
        mpv.exit_code,
        mpv.warnings
    );
    let asked = Instant::now();
    let failed = std::fs::read(&uncached.mount_path);
    let failed_after = asked.elapsed();
    ensure!(failed.is_err(), "an uncached track read while every origin was away");
    ensure!(failed_after <= READ_TIMEOUT + Duration::from_secs(2), "the failed read took {failed_after:?}");
    let journal = m.journal_since(now_epoch().saturating_sub(cut.elapsed().as_secs() + 2));
    let failure_lines = journal.lines().filter(|l| l.contains("4.2.3 origin reads failing")).count();

    let healed = Instant::now();
    restore()?;
    let to_ready = wait_state(m, "ready", Duration::from_secs(30))?;
    let after = std::fs::read(&uncached.mount_path)?;
    ensure!(after == uncached.bytes, "the uncached track is not byte-identical after the heal");
    ensure!(m.main_pid() == pid && m.restarts() == restarts, "the daemon was restarted during the outage");
    Ok(json!({
        "cut_to_offline_seconds": secs(to_offline),
        "cached_track_bytes": played.bytes,
        "cached_track_read_errors": played.errors,
        "cached_track_longest_stall_seconds": secs(played.longest_stall),
        "mpv_track": song.file_name().map(|n| n.to_string_lossy().into_owned()),
        "mpv_exit_code": mpv.exit_code,
        "mpv_warnings": mpv.warnings.len(),
        "mpv_seconds": secs(mpv.took),
        "uncached_read_failed_after_seconds": secs(failed_after),
        "origin_failure_log_lines": failure_lines,
        "heal_to_ready_seconds": secs(to_ready),
        "heal_to_identical_read_seconds": secs(healed.elapsed()),
    }))
}

/// Proves L4: N1
///
/// Two spikes, both below the read timeout. One below the hedge floor (N2: the least a read waits for its
/// origin before a backup is asked too): reads slow down, and not one goes to the backup. One above it:
/// reads may be hedged to the backup copy, and none fails, the origin is never marked down and the library
/// stays ready. Once the latency goes, reads go to the origin first again (no origin marked slow).
pub fn s3_latency(m: &Machine) -> Result<Value> {
    m.wait_serving(Duration::from_secs(30))?;
    let _undo = Faults;
    let stamp = now_epoch();
    // Different lengths: the same bytes would be one set of chunks, cached by the first read.
    let below = put_file(m, S3_ORIGIN, &format!("latency-{stamp}-below.wav"), 4 << 20)?;
    let above = put_file(m, S3_ORIGIN, &format!("latency-{stamp}-above.wav"), (4 << 20) + 4096)?;
    sync(m)?;
    let backup_reads = |m: &Machine| -> Result<u64> { Ok(m.status()?["backup_reads"].as_u64().unwrap_or(0)) };
    let steady = |status: &Value, what: &str| -> Result<()> {
        ensure!(origin_status(status, S3_ORIGIN)["healthy"] == true, "{what} made the S3 origin unhealthy: {status}");
        ensure!(status["state"] == "ready", "the library is not ready under {what}: {status}");
        Ok(())
    };

    let before = backup_reads(m)?;
    toxiproxy::add_latency("s3", "n1-below", BELOW_HEDGE_MS)?;
    let started = Instant::now();
    let read_below = read_track(&below.mount_path, &below.bytes, Duration::from_secs(60), None)?;
    let took_below = started.elapsed();
    let status = m.status()?;
    ensure!(read_below.errors == 0, "{} read errors under {BELOW_HEDGE_MS} ms of latency", read_below.errors);
    ensure!(
        backup_reads(m)? == before,
        "{BELOW_HEDGE_MS} ms of latency, below the hedge floor, made reads go to the backup: {status}"
    );
    steady(&status, "latency below the hedge floor")?;
    toxiproxy::reset()?;

    let before = backup_reads(m)?;
    toxiproxy::add_latency("s3", "n1-above", ABOVE_HEDGE_MS)?;
    let started = Instant::now();
    let read_above = read_track(&above.mount_path, &above.bytes, Duration::from_secs(60), None)?;
    let took_above = started.elapsed();
    let status = m.status()?;
    ensure!(read_above.errors == 0, "{} read errors under {ABOVE_HEDGE_MS} ms of latency", read_above.errors);
    steady(&status, "latency above the hedge floor")?;
    let hedged = backup_reads(m)? - before;
    toxiproxy::reset()?;

    // A track added now, so no read-ahead of the ones above has cached it under the latency.
    let healed = Instant::now();
    let after = new_track(m, S3_ORIGIN, &format!("latency-{stamp}-after.wav"), (4 << 20) + 8192)?;
    let read_after = read_track(&after.mount_path, &after.bytes, Duration::from_secs(60), None)?;
    ensure!(read_after.errors == 0, "{} read errors after the latency went", read_after.errors);
    // The probe sent while the latency lasted answers within it; the mark goes with that answer.
    let cleared = m.wait_until(READ_TIMEOUT, "the S3 origin's slow mark to clear after the latency went", || {
        m.status().is_ok_and(|s| s["slow_origins"].as_array().is_some_and(|a| a.is_empty()))
    })?;
    steady(&m.status()?, "the end of the latency")?;
    Ok(json!({
        "below_hedge_latency_ms": BELOW_HEDGE_MS,
        "below_hedge_read_seconds": secs(took_below),
        "below_hedge_longest_stall_seconds": secs(read_below.longest_stall),
        "above_hedge_latency_ms": ABOVE_HEDGE_MS,
        "above_hedge_read_seconds": secs(took_above),
        "above_hedge_longest_stall_seconds": secs(read_above.longest_stall),
        "above_hedge_backup_reads": hedged,
        "heal_to_slow_mark_cleared_seconds": secs(healed.elapsed()),
        "slow_mark_cleared_after_read_seconds": secs(cleared),
        "read_errors": read_below.errors + read_above.errors + read_after.errors,
    }))
}

/// Proves L4: N2, 4.2.6
pub fn s3_cut_failover(m: &Machine) -> Result<Value> {
    m.wait_serving(Duration::from_secs(30))?;
    let _undo = Faults;
    let since = now_epoch();
    let MidStream { track, cut_at, reader } = mid_stream(m, S3_ORIGIN, "s3", 4000, "failover")?;
    toxiproxy::set_enabled("s3", false)?;
    let read = reader.join().map_err(|_| anyhow::anyhow!("the reader panicked"))??;
    let status = m.status()?;
    ensure!(read.errors == 0, "{} read errors: the stream did not complete from the backup", read.errors);
    let served = status["served_from_backup"].as_u64().unwrap_or(0);
    ensure!(served > 0, "no track is flagged as served from the backup: {status}");
    let journal = m.journal_since(since);
    ensure!(journal.contains("4.2.6 served from the backup origin"), "no failover in the journal:\n{journal}");

    restore()?;
    let revalidated = m.wait_until(Duration::from_secs(30), "the served tracks re-validated", || {
        m.status().is_ok_and(|s| s["served_from_backup"].as_u64() == Some(0) && s["state"] == "ready")
    })?;
    m.drop_kernel_pages()?;
    ensure!(std::fs::read(&track.mount_path)? == track.bytes, "the track is not byte-identical after the heal");
    Ok(json!({
        "track_bytes": read.bytes,
        "cut_at_byte": cut_at,
        "longest_stall_seconds": secs(read.longest_stall),
        "read_errors": read.errors,
        "served_from_backup": served,
        "heal_to_revalidated_seconds": secs(revalidated),
    }))
}

/// Proves L4: N3
pub fn sftp_drop(m: &Machine) -> Result<Value> {
    m.wait_serving(Duration::from_secs(30))?;
    let _undo = Faults;
    let MidStream { track: _, cut_at, reader } = mid_stream(m, SFTP_ORIGIN, "sftp", 2000, "drop")?;
    // Every live connection reset; new ones are accepted again at once.
    toxiproxy::set_enabled("sftp", false)?;
    std::thread::sleep(Duration::from_millis(100));
    toxiproxy::set_enabled("sftp", true)?;
    let read = reader.join().map_err(|_| anyhow::anyhow!("the reader panicked"))??;
    ensure!(
        read.slowest_error <= READ_TIMEOUT + Duration::from_secs(2),
        "a read failed only after {:?}, past its bound",
        read.slowest_error
    );
    ensure!(m.status()?["state"] == "ready", "the library is not ready after the drop");
    Ok(json!({
        "track_bytes": read.bytes,
        "cut_at_byte": cut_at,
        "longest_stall_seconds": secs(read.longest_stall),
        "read_errors": read.errors,
        "slowest_failed_read_seconds": secs(read.slowest_error),
    }))
}

/// Proves L4: N4
pub fn partition_heal(m: &Machine) -> Result<Value> {
    m.wait_serving(Duration::from_secs(30))?;
    let _undo = Faults;
    let (pid, restarts) = (m.main_pid(), m.restarts());
    toxiproxy::set_enabled("s3", false)?;
    toxiproxy::set_enabled("sftp", false)?;
    let to_degraded = wait_state(m, "degraded", HEALTH_INTERVAL * 5 + Duration::from_secs(10))?;
    let status = m.status()?;
    for id in [S3_ORIGIN, SFTP_ORIGIN] {
        ensure!(origin_status(&status, id)["healthy"] == false, "origin {id} not down in the partition: {status}");
    }
    // Uploaded while the daemon cannot see the server.
    let track = put_file(m, S3_ORIGIN, &format!("partition-{}.wav", now_epoch()), 1 << 20)?;
    std::thread::sleep(HEALTH_INTERVAL * 2);

    let healed = Instant::now();
    toxiproxy::set_enabled("s3", true)?;
    toxiproxy::set_enabled("sftp", true)?;
    let to_ready = wait_state(m, "ready", Duration::from_secs(30))?;
    m.wait_until(SYNC_INTERVAL + Duration::from_secs(10), "the track uploaded in the partition", || {
        track.mount_path.exists()
    })?;
    let listed_after = healed.elapsed();
    ensure!(std::fs::read(&track.mount_path)? == track.bytes, "the new track is not byte-identical");
    ensure!(m.main_pid() == pid && m.restarts() == restarts, "the partition cost a restart");
    Ok(json!({
        "partition_to_degraded_seconds": secs(to_degraded),
        "heal_to_ready_seconds": secs(to_ready),
        "heal_to_new_track_seconds": secs(listed_after),
        "restarts": m.restarts() - restarts,
    }))
}

/// Proves L4: 4.2.5
pub fn dns(m: &Machine) -> Result<Value> {
    m.wait_serving(Duration::from_secs(30))?;
    let _undo = Faults;
    faults::break_name()?;
    // Live connections were resolved before; the next one must resolve the name again.
    toxiproxy::set_enabled("s3", false)?;
    toxiproxy::set_enabled("s3", true)?;
    let to_dns =
        m.wait_until(HEALTH_INTERVAL * 5 + Duration::from_secs(10), "the S3 origin reported as a DNS failure", || {
            m.status().is_ok_and(|s| origin_status(&s, S3_ORIGIN)["dns_failure"] == true)
        })?;
    let status = m.status()?;
    ensure!(status["state"] == "degraded", "a DNS failure of one origin is not degraded: {status}");
    restore()?;
    let to_ready = wait_state(m, "ready", Duration::from_secs(30))?;
    Ok(json!({
        "break_to_dns_failure_seconds": secs(to_dns),
        "heal_to_ready_seconds": secs(to_ready),
        "reason": origin_status(&status, S3_ORIGIN)["last_error"],
    }))
}
