//! The system scenarios. Each breaks or inspects the real unit one way, checks what the failure modes
//! require, and returns the figures it measured; any failed check is an error naming what went wrong.

use crate::machine::{Machine, MountState, Streamer, now_epoch};
use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

mod network;
mod soak;
mod unit;
pub use network::{dns, origin_outage, partition_heal, s3_cut_failover, s3_latency, sftp_drop};
pub use soak::soak;
pub use unit::{limits, privilege, readiness, security};

fn secs(d: Duration) -> f64 {
    (d.as_millis() as f64) / 1000.0
}

/// Proves L4: 2.1, 2.3
pub fn sigterm(m: &Machine) -> Result<Value> {
    let since = now_epoch();
    m.wait_serving(Duration::from_secs(30))?;
    let stream = Streamer::start(m)?;
    std::thread::sleep(Duration::from_millis(500));
    m.systemctl(&["kill", "-s", "SIGTERM"])?;
    let stop = m.wait_until(Duration::from_secs(20), "the daemon exiting after SIGTERM", || m.is_stopped())?;
    let (streamed, _) = stream.finish()?;
    ensure!(streamed > 0, "the reader got no bytes before the stop");
    ensure!(m.prop("ExecMainStatus") == "0", "exit status {} (want 0)", m.prop("ExecMainStatus"));
    ensure!(m.mount_state() == MountState::Absent, "mount left behind: {:?}", m.mount_state());
    let journal = m.journal_since(since);
    ensure!(journal.contains("2.3 stopped cleanly"), "no clean-shutdown line in the journal:\n{journal}");
    let (ok, verify) = m.run("musicfs", &["cache", "verify", "--config", &m.config])?;
    ensure!(ok && verify.contains("all sound"), "cache not consistent after the stop: {verify}");
    m.systemctl(&["start"])?;
    let serving = m.wait_serving(Duration::from_secs(60))?;
    Ok(
        json!({ "sigterm_to_exit_seconds": secs(stop), "restart_to_serving_seconds": secs(serving), "streamed_bytes": streamed }),
    )
}

/// How long the track mpv plays through a restart is, and how far into it the restart comes.
const LIVE_TRACK_SECONDS: u32 = 6;
const BREAK_AFTER: Duration = Duration::from_secs(2);

/// Runs `scenario` with a reader streaming and mpv playing a fresh track (a WAV written into the origin and
/// synced in, removed and synced out afterwards) in real time, [`BREAK_AFTER`] into
/// both; then mpv must play to the end without a warning, in real time (a player that lost its file ends
/// early: "wav: Packet corrupt" after 4.6 s of 6 when the connection was not resumed). Returns what the
/// scenario returned and how long mpv played.
fn with_live_player<T>(m: &Machine, what: &str, scenario: impl FnOnce(Streamer) -> Result<T>) -> Result<(T, f64)> {
    m.wait_serving(Duration::from_secs(30))?;
    let origin = m.origin.join(format!("probe-live-{}.wav", now_epoch()));
    let bytes = crate::player::write_wav(&origin, LIVE_TRACK_SECONDS)?;
    let outcome = (|| {
        let (ok, synced) = m.run("musicfs", &["sync", "--config", &m.config])?;
        ensure!(ok, "musicfs sync failed: {synced}");
        let in_mount = crate::player::find_in_mount(&m.mount_point, &bytes)
            .with_context(|| format!("{} is not in the mount after a sync", origin.display()))?;
        m.drop_kernel_pages()?;
        let stream = Streamer::start(m)?;
        let mut player = crate::player::LivePlayer::start(&in_mount)?;
        std::thread::sleep(BREAK_AFTER);
        ensure!(player.playing(), "mpv ended before {what}: it would not happen under it");
        let result = scenario(stream)?;
        let mpv = player.finish(Duration::from_secs(60))?;
        let played = mpv.took;
        ensure!(
            mpv.clean(),
            "2.11: mpv playing {} through {what}: exit {}, {:?}",
            in_mount.display(),
            mpv.exit_code,
            mpv.warnings
        );
        ensure!(
            played >= Duration::from_secs(LIVE_TRACK_SECONDS.into()) - Duration::from_millis(500),
            "mpv ended after {played:?}: it did not play the {LIVE_TRACK_SECONDS} s track through {what}"
        );
        Ok((result, secs(played)))
    })();
    std::fs::remove_file(&origin)?;
    m.run("musicfs", &["sync", "--config", &m.config])?;
    outcome
}

/// kill -9 while a reader streams and mpv plays a track in real time: systemd restarts the unit, the new
/// daemon resumes the stored connection, no read fails and mpv plays to the end without a warning.
/// Proves L4: 2.7, 2.11
pub fn kill9(m: &Machine) -> Result<Value> {
    let (mut figures, played) = with_live_player(m, "kill -9", |stream| {
        let since = now_epoch();
        let before = m.restarts();
        let pid = m.main_pid();
        let longest = stream.longest_wait_us.clone();
        let killed = Instant::now();
        m.systemctl(&["kill", "-s", "SIGKILL"])?;
        m.wait_until(Duration::from_secs(30), "systemd restarting the killed daemon", || {
            m.restarts() > before && m.main_pid() != pid
        })?;
        let serving = m.wait_serving(Duration::from_secs(60))?;
        let to_serving = killed.elapsed();
        // Let the reader get past the restart before counting.
        std::thread::sleep(Duration::from_millis(500));
        let (streamed, errors) = stream.finish()?;
        ensure!(m.mount_state() == MountState::Serving, "the mount is {:?} after the restart", m.mount_state());
        let journal = m.journal_since(since);
        ensure!(
            journal.contains("2.11 resumed the FUSE connection"),
            "the new daemon did not resume the connection:\n{journal}"
        );
        ensure!(errors == 0, "2.11: {errors} reads failed across kill -9 (the connection should have been resumed)");
        Ok(json!({
            "kill_to_serving_seconds": secs(to_serving),
            "after_restart_wait_seconds": secs(serving),
            "restarts": m.restarts() - before,
            "streamed_bytes": streamed,
            "read_errors_during_restart": errors,
            "longest_read_wait_seconds": longest.load(std::sync::atomic::Ordering::SeqCst) as f64 / 1e6,
        }))
    })?;
    figures["mpv_played_through_seconds"] = json!(played);
    Ok(figures)
}

/// What a `systemctl restart` while a reader streams and mpv plays measured.
struct Restarted {
    command: Duration,
    serving: Duration,
    streamed: u64,
    /// Reads that failed across the restart (the check requires 0; reported as counted).
    errors: u64,
    longest_read_wait: f64,
    /// How long mpv played the track the restart came in the middle of.
    mpv_played: f64,
}

/// `systemctl restart` while a reader streams and mpv plays: the old daemon hands the connection over, the
/// new one resumes it, nothing remounts, no read fails and mpv plays on (2.11). `what` names the restart in
/// the errors.
fn restart_while_streaming(m: &Machine, what: &str) -> Result<Restarted> {
    let (mut r, played) = with_live_player(m, what, |stream| {
        let since = now_epoch();
        let pid = m.main_pid();
        let longest = stream.longest_wait_us.clone();
        let asked = Instant::now();
        let restarted = m.systemctl(&["restart"]);
        let command = asked.elapsed();
        let serving = restarted.and_then(|_| m.wait_serving(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(500));
        let (streamed, errors) = stream.finish()?;
        let serving = serving?;
        ensure!(m.main_pid() != pid, "{what} left the same daemon running");
        let journal = m.journal_since(since);
        ensure!(journal.contains("2.11 handed over"), "the old daemon did not hand the connection over:\n{journal}");
        ensure!(journal.contains("2.11 resumed the FUSE connection"), "the new daemon did not resume it:\n{journal}");
        ensure!(!journal.contains("Mounting "), "{what} remounted:\n{journal}");
        ensure!(errors == 0, "2.11: {errors} reads failed across {what}");
        ensure!(m.mount_state() == MountState::Serving, "the mount is {:?} after {what}", m.mount_state());
        let longest_read_wait = longest.load(std::sync::atomic::Ordering::SeqCst) as f64 / 1e6;
        Ok(Restarted { command, serving, streamed, errors, longest_read_wait, mpv_played: 0.0 })
    })?;
    r.mpv_played = played;
    Ok(r)
}

/// Proves L4: 2.11
pub fn restart(m: &Machine) -> Result<Value> {
    let r = restart_while_streaming(m, "systemctl restart")?;
    // A real stop still leaves no mount, and a start after it mounts anew.
    m.systemctl(&["stop"])?;
    ensure!(m.mount_state() == MountState::Absent, "systemctl stop left the mount: {:?}", m.mount_state());
    m.systemctl(&["start"])?;
    m.wait_serving(Duration::from_secs(60))?;
    Ok(json!({
        "restart_command_seconds": secs(r.command),
        "after_restart_wait_seconds": secs(r.serving),
        "streamed_bytes": r.streamed,
        "read_errors_during_restart": r.errors,
        "longest_read_wait_seconds": r.longest_read_wait,
        "mpv_played_through_seconds": r.mpv_played,
    }))
}

/// The unit's daemon binary, from its ExecStart= (`{ path=/usr/local/bin/musicfs ; argv[]=… }`).
fn unit_binary(m: &Machine) -> Result<std::path::PathBuf> {
    let exec = m.prop("ExecStart");
    let path = exec.split("path=").nth(1).and_then(|rest| rest.split([' ', ';']).next()).unwrap_or("");
    ensure!(!path.is_empty(), "no binary in ExecStart: {exec}");
    Ok(path.into())
}

/// Replaces `bin` the way a package manager does: the new file written beside it, then renamed over it.
fn replace_file(bin: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let staged = bin.with_file_name(".musicfs.probe-upgrade");
    std::fs::write(&staged, bytes)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&staged, bin)?;
    Ok(())
}

/// An upgrade while a reader streams: a new build is installed over the binary and the unit restarted; the
/// new binary resumes the same connection. The new build is this one with bytes appended (an ELF file
/// runs the same with a tail): a different file on disk, which the restarted daemon must be running. What
/// it cannot show is a change of control protocol between versions (see the README).
/// Proves L4: 2.11
pub fn upgrade(m: &Machine) -> Result<Value> {
    m.wait_serving(Duration::from_secs(30))?;
    let bin = unit_binary(m)?;
    let original = std::fs::read(&bin)?;
    let mut next = original.clone();
    next.extend_from_slice(b"\0musicfs-probe upgrade: a different build\n");
    replace_file(&bin, &next)?;
    let restarted = restart_while_streaming(m, "the upgrade");
    let running = std::fs::read(format!("/proc/{}/exe", m.main_pid())).unwrap_or_default();
    // The original back on disk, whatever happened; the daemon runs the upgraded copy until its next start.
    replace_file(&bin, &original)?;
    let r = restarted?;
    ensure!(running == next, "the restarted daemon does not run the upgraded binary");
    Ok(json!({
        "upgrade_restart_seconds": secs(r.command),
        "after_restart_wait_seconds": secs(r.serving),
        "streamed_bytes": r.streamed,
        "read_errors_during_upgrade": r.errors,
        "longest_read_wait_seconds": r.longest_read_wait,
        "mpv_played_through_seconds": r.mpv_played,
    }))
}

/// Proves L4: 2.11
pub fn crash_loop(m: &Machine) -> Result<Value> {
    m.wait_serving(Duration::from_secs(30))?;
    let stream = Streamer::start(m)?;
    std::thread::sleep(Duration::from_millis(300));
    // Every start fails from now on (its config is gone), while the killed daemon's connection is kept.
    m.dropin("probe", "[Service]\nEnvironment=MUSICFS_CONFIG=/etc/musicfs/missing.toml\n")?;
    let since = now_epoch();
    let killed = Instant::now();
    m.systemctl(&["kill", "-s", "SIGKILL"])?;
    m.wait_until(Duration::from_secs(60), "the unit failing at its start limit", || m.prop("ActiveState") == "failed")?;
    let to_failed = killed.elapsed();
    // systemd closes the stored connection with the failed unit: the waiting reader gets an error, no hang.
    let errors_at_failure = stream.errors.load(std::sync::atomic::Ordering::SeqCst);
    let failed_at = Instant::now();
    m.wait_until(Duration::from_secs(10), "the waiting reader released with an error", || {
        stream.errors.load(std::sync::atomic::Ordering::SeqCst) > errors_at_failure
    })?;
    let released = failed_at.elapsed();
    // OnFailure= (musicfs-unmount.service) takes the dead mount down: no mount is left behind.
    m.wait_until(Duration::from_secs(10), "the mount gone after the start limit", || {
        m.mount_state() == MountState::Absent
    })?;
    let unmounted = failed_at.elapsed();
    let left = m.mount_state();
    let (_, journal) = m.run(
        "journalctl",
        &["-u", "musicfs-unmount.service", "--since", &format!("@{since}"), "-o", "cat", "--no-pager"],
    )?;
    ensure!(
        journal.contains("musicfs.service stopped") && journal.contains("unmounted"),
        "musicfs-unmount.service did not say it unmounted:\n{journal}"
    );
    // Mended, the next start mounts anew and serves.
    m.remove_dropin("probe")?;
    m.run("systemctl", &["reset-failed", &m.unit])?;
    m.systemctl(&["start"])?;
    let serving = m.wait_serving(Duration::from_secs(60))?;
    let (streamed, _) = stream.finish()?;
    Ok(json!({
        "kill_to_failed_seconds": secs(to_failed),
        "failed_to_reader_released_seconds": secs(released),
        "failed_to_unmounted_seconds": secs(unmounted),
        "mount_after_start_limit": format!("{left:?}"),
        "restart_to_serving_seconds": secs(serving),
        "streamed_bytes": streamed,
    }))
}

/// Proves L4: 3.1
pub fn watchdog(m: &Machine) -> Result<Value> {
    m.wait_serving(Duration::from_secs(30))?;
    let limit = parse_systemd_span(&m.prop("WatchdogUSec"));
    ensure!(!limit.is_zero(), "the unit has no WatchdogSec");
    // A frozen daemon stops petting the watchdog.
    let since = now_epoch();
    let before = m.restarts();
    let frozen = Instant::now();
    m.systemctl(&["kill", "-s", "SIGSTOP"])?;
    m.wait_until(limit * 3 + Duration::from_secs(20), "a watchdog restart of the frozen daemon", || {
        m.restarts() > before
    })?;
    let serving = m.wait_serving(Duration::from_secs(60))?;
    let freeze_to_serving = frozen.elapsed();
    let journal = m.journal_since(since);
    ensure!(journal.contains("Watchdog timeout"), "systemd did not report a watchdog timeout:\n{journal}");

    // A daemon that runs but fails its self-check (failpoint build) stops petting it too.
    let since = now_epoch();
    let before = m.restarts();
    m.dropin("probe", "[Service]\nEnvironment=FAILPOINTS=daemon::watchdog::selfcheck_stall=3*off->return\n")?;
    m.systemctl(&["restart"])?;
    m.wait_until(limit * 4 + Duration::from_secs(30), "a watchdog restart after the self-check stalls", || {
        m.restarts() > before
    })?;
    let journal_stall = m.journal_since(since);
    ensure!(
        journal_stall.contains("3.1 self-check did not finish in time"),
        "the daemon did not log the stalled self-check:\n{journal_stall}"
    );
    ensure!(journal_stall.contains("Watchdog timeout"), "no watchdog timeout after the stall:\n{journal_stall}");
    m.remove_dropin("probe")?;
    m.systemctl(&["restart"])?;
    m.wait_serving(Duration::from_secs(60))?;
    Ok(
        json!({ "watchdog_seconds": secs(limit), "freeze_to_serving_seconds": secs(freeze_to_serving), "restart_wait_seconds": secs(serving) }),
    )
}

/// Proves L4: 3.7
pub fn execstop(m: &Machine) -> Result<Value> {
    m.wait_serving(Duration::from_secs(30))?;
    let since = now_epoch();
    let asked = Instant::now();
    m.systemctl(&["stop"])?;
    let clean_stop = asked.elapsed();
    let journal = m.journal_since(since);
    ensure!(
        journal.contains("reason=\"musicfs shutdown\""),
        "ExecStop did not go through `musicfs shutdown`:\n{journal}"
    );
    ensure!(journal.contains("2.3 stopped cleanly"), "no clean shutdown:\n{journal}");
    ensure!(
        m.prop("ExecMainStatus") == "0" && m.mount_state() == MountState::Absent,
        "unclean stop: status {}, mount {:?}",
        m.prop("ExecMainStatus"),
        m.mount_state()
    );

    // Frozen: ExecStop cannot get an answer, the stop times out, the kill follows, ExecStopPost unmounts.
    m.systemctl(&["start"])?;
    m.wait_serving(Duration::from_secs(60))?;
    let since = now_epoch();
    m.systemctl(&["kill", "-s", "SIGSTOP"])?;
    let asked = Instant::now();
    let _ = m.run("systemctl", &["stop", &m.unit]);
    let frozen_stop = asked.elapsed();
    ensure!(m.is_stopped(), "the frozen unit did not stop");
    let state = m.mount_state();
    ensure!(state != MountState::Dead, "a dead mount was left behind");
    let journal = m.journal_since(since);
    // systemd steps in when ExecStop times out: SIGTERM (with SIGCONT, so the daemon may still stop cleanly)
    // and, if that times out too, SIGKILL. Either way its timeout, not the daemon, ended the wait.
    ensure!(
        journal.contains("Stopping timed out") || journal.to_lowercase().contains("kill"),
        "systemd did not step in against the frozen daemon:\n{journal}"
    );
    let _ = m.run("systemctl", &["reset-failed", &m.unit]);
    m.systemctl(&["start"])?;
    let serving = m.wait_serving(Duration::from_secs(60))?;
    Ok(
        json!({ "clean_stop_seconds": secs(clean_stop), "frozen_stop_seconds": secs(frozen_stop), "mount_after_frozen_stop": format!("{state:?}"), "restart_to_serving_seconds": secs(serving) }),
    )
}

/// systemd prints time spans like `3s`, `1min 30s`, `500ms`.
fn parse_systemd_span(text: &str) -> Duration {
    text.split_whitespace()
        .map(|part| {
            let split = part.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(part.len());
            let (number, unit) = part.split_at(split);
            let n: f64 = number.parse().unwrap_or(0.0);
            let secs = match unit {
                "us" => n / 1e6,
                "ms" => n / 1e3,
                "s" | "" => n,
                "min" => n * 60.0,
                "h" => n * 3600.0,
                _ => 0.0,
            };
            Duration::from_secs_f64(secs)
        })
        .sum()
}

fn cache_fs_size(m: &Machine) -> Result<u64> {
    let (ok, text) = m.run("df", &["--output=size", "-B1", &m.cache_dir.to_string_lossy()])?;
    ensure!(ok, "df failed: {text}");
    Ok(text.lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or(0))
}

/// Proves L4: 2.8, 6.6
pub fn disk_full(m: &Machine) -> Result<Value> {
    m.wait_serving(Duration::from_secs(30))?;
    let size = cache_fs_size(m)?;
    ensure!(
        size > 0 && size <= 256 << 20,
        "the cache directory must be on a small filesystem for this scenario ({size} bytes)"
    );
    let origin_bytes: u64 = m.origin_hashes()?.values().map(|p| std::fs::metadata(p).map_or(0, |x| x.len())).sum();
    ensure!(origin_bytes > size, "the library ({origin_bytes} B) must be larger than the cache filesystem ({size} B)");
    let (pid, restarts) = (m.main_pid(), m.restarts());
    let since = now_epoch();

    // 1. MusicFS fills its own disk: everything still reads right; the watermarks keep room.
    let files = m.verify_mount()?;
    let fill_one = m.status()?;

    // 2. Another process fills the disk: reads still right, from the origin; status degraded. While the
    //    cache is what fills the disk it evicts down to 80 % and keeps caching (2.8), so the filler takes
    //    each freed share in turn, until it holds most of the disk and the cache gives its space back.
    let filler = m.cache_dir.join("filler.bin");
    let _ = m.run("fallocate", &["-l", &size.to_string(), &filler.to_string_lossy()]);
    let mut degraded = m.status()?;
    for _ in 0..10 {
        let of = format!("of={}", filler.display());
        let _ = m.run("dd", &["if=/dev/zero", &of, "bs=1M", "oflag=append", "conv=notrunc"]);
        let _ = m.run("systemctl", &["kill", "-s", "SIGHUP", &m.unit]);
        m.verify_mount()?;
        degraded = m.status()?;
        if degraded["state"] == "degraded" {
            break;
        }
    }
    m.verify_mount()?;
    ensure!(degraded["state"] == "degraded", "status does not say degraded with a full cache disk: {degraded}");

    // 3. Space returns: caching resumes. The reads must reach the daemon, not the kernel's page cache (which
    //    the daemon lets keep pages across opens), or nothing would ask for a chunk to be cached.
    std::fs::remove_file(&filler)?;
    let written_before = m.status()?["chunks_written"].as_u64().unwrap_or(0);
    let recovered = Instant::now();
    m.wait_until(Duration::from_secs(30), "caching to resume after space returned", || {
        let _ = m.drop_kernel_pages();
        let _ = m.verify_mount();
        m.status().is_ok_and(|s| s["state"] == "ready" && s["chunks_written"].as_u64().unwrap_or(0) > written_before)
    })?;
    ensure!(m.main_pid() == pid && m.restarts() == restarts, "the daemon was restarted during disk-full");
    let journal = m.journal_since(since);
    ensure!(
        !journal.contains("2.2 panic") && !journal.contains("No space left on device (os error 28) count"),
        "errors in the journal:\n{journal}"
    );
    if journal.contains("2.8 cache writes stopped") && !journal.contains("2.8 cache writes work again") {
        bail!("caching stopped and the journal does not show it resuming:\n{journal}");
    }
    Ok(json!({
        "cache_fs_bytes": size,
        "library_bytes": origin_bytes,
        "files_verified": files,
        "cache_bytes_after_own_fill": fill_one["cache_bytes"],
        "degraded_reason": degraded["cache_write_failure"],
        "resume_seconds": secs(recovered.elapsed()),
    }))
}
