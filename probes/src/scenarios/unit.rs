//! What the unit promises systemd, checked under real systemd: readiness and status (2.10) and the resource
//! limits it sets (5.8).

use super::secs;
use crate::machine::{Machine, MountState, now_epoch};
use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// systemd's own log level, raised to debug while a scenario runs so that the journal records every message
/// the daemon sends on the notify socket and every state change of the unit; put back on drop.
struct SystemdDebugLog<'a> {
    m: &'a Machine,
    before: String,
}

impl<'a> SystemdDebugLog<'a> {
    fn raise(m: &'a Machine) -> Result<SystemdDebugLog<'a>> {
        let (ok, before) = m.run("systemd-analyze", &["log-level"])?;
        ensure!(ok, "systemd-analyze log-level failed: {before}");
        let (ok, text) = m.run("systemd-analyze", &["log-level", "debug"])?;
        ensure!(ok, "systemd-analyze log-level debug failed: {text}");
        Ok(SystemdDebugLog { m, before: before.trim().to_owned() })
    }
}

impl Drop for SystemdDebugLog<'_> {
    fn drop(&mut self) {
        let _ = self.m.run("systemd-analyze", &["log-level", &self.before]);
    }
}

/// The origin directory moved aside (the origin is gone, as an unplugged disk is); moved back on drop.
struct OriginAway<'a> {
    m: &'a Machine,
    aside: std::path::PathBuf,
}

impl<'a> OriginAway<'a> {
    fn take(m: &'a Machine) -> Result<OriginAway<'a>> {
        let aside = m.origin.with_extension("away");
        std::fs::rename(&m.origin, &aside)?;
        Ok(OriginAway { m, aside })
    }
}

impl Drop for OriginAway<'_> {
    fn drop(&mut self) {
        if self.aside.exists() {
            let _ = std::fs::rename(&self.aside, &self.m.origin);
        }
    }
}

/// The cache figure of a STATUS= line (`…; cache 1.2 MiB of 10.0 GiB; …` → `1.2 MiB`).
fn status_cache_figure(status: &str) -> Option<&str> {
    let after = &status[status.find("cache ")? + "cache ".len()..];
    Some(after.split(" of ").next().unwrap_or(after).split(';').next().unwrap_or(after))
}

/// Lines of systemd's debug log about messages it received on the unit's notify socket.
fn notifications(journal: &str) -> Vec<&str> {
    journal.lines().filter(|l| l.contains("notification message from PID")).collect()
}

/// How long the probe holds up the first scan, so that a READY=1 sent before the mount answers would let
/// `systemctl start` return seconds early.
const SCAN_HELD: Duration = Duration::from_secs(3);

/// Proves L4: 2.10
pub fn readiness(m: &Machine) -> Result<Value> {
    m.wait_serving(Duration::from_secs(30))?;
    ensure!(m.prop("Type") == "notify", "the unit is Type={} (want notify)", m.prop("Type"));
    let _debug = SystemdDebugLog::raise(m)?;

    // 1. READY=1 only once the mount answers. A first start on an empty cache scans the library before it
    //    mounts, and the scan is held up by a failpoint: `systemctl start` (which waits for READY=1 with
    //    Type=notify) must take at least that long, and the mount must list the library the moment it returns.
    m.systemctl(&["stop"])?;
    for entry in std::fs::read_dir(&m.cache_dir)? {
        let path = entry?.path();
        if path.is_dir() { std::fs::remove_dir_all(&path)? } else { std::fs::remove_file(&path)? }
    }
    let hold = format!("{}", SCAN_HELD.as_millis());
    m.dropin("probe", &format!("[Service]\nEnvironment=FAILPOINTS=meta::sync::after_batch=sleep({hold})\n"))?;
    let since = now_epoch();
    let asked = Instant::now();
    m.systemctl(&["start"])?;
    let start_took = asked.elapsed();
    let listed = m.mount_file_count();
    let mount = m.mount_state();
    let status_at_ready = m.prop("StatusText");
    m.remove_dropin("probe")?;
    let expected = m.origin_file_count()?;
    let listed =
        listed.map_err(|e| anyhow::anyhow!("the mount did not answer right after `systemctl start`: {e:#}"))?;
    ensure!(
        mount == MountState::Serving && listed == expected,
        "right after `systemctl start` the mount is {mount:?} and lists {listed} of {expected} files"
    );
    ensure!(
        start_took >= SCAN_HELD,
        "`systemctl start` returned after {start_took:?}, before the held scan ({SCAN_HELD:?}) could have finished"
    );
    let journal = m.journal_since(since);
    let pid = m.main_pid();
    let ready = notifications(&journal)
        .into_iter()
        .find(|l| l.contains("READY=1"))
        .with_context(|| format!("systemd logged no READY=1 from the daemon:\n{journal}"))?
        .to_owned();
    // systemd 252 writes `from PID 74 (READY=1, …)`, later ones `from PID 74: READY=1, …`.
    ensure!(
        ready.contains(&format!("PID {pid} ")) || ready.contains(&format!("PID {pid}:")),
        "READY=1 came from another process than the main PID {pid}: {ready}"
    );

    // 2. STATUS= kept current: the tracks at once; the cache after reads; an origin going away and back.
    ensure!(
        status_at_ready.contains(&format!("{expected} tracks")),
        "StatusText at READY does not give the {expected} tracks: {status_at_ready:?}"
    );
    let cache_before = status_cache_figure(&status_at_ready)
        .with_context(|| format!("StatusText has no cache figure: {status_at_ready:?}"))?
        .to_owned();
    m.verify_mount()?;
    let reads_done = Instant::now();
    let mut status_after_reads = String::new();
    m.wait_until(Duration::from_secs(30), "StatusText showing the cache filled by the reads", || {
        status_after_reads = m.prop("StatusText");
        status_cache_figure(&status_after_reads).is_some_and(|c| c != cache_before)
    })
    .with_context(|| format!("StatusText still {:?}", m.prop("StatusText")))?;
    let cache_status_seconds = secs(reads_done.elapsed());
    let status_cache_bytes = m.status()?["cache_bytes"].as_u64().unwrap_or(0);
    ensure!(status_cache_bytes > 0, "the reads cached nothing, yet StatusText changed: {status_after_reads:?}");

    let away = OriginAway::take(m)?;
    let gone = Instant::now();
    let mut status_origin_down = String::new();
    m.wait_until(Duration::from_secs(60), "StatusText naming the origin that went away", || {
        status_origin_down = m.prop("StatusText");
        status_origin_down.contains("down") && status_origin_down.contains(&m.origin_id)
    })
    .with_context(|| format!("StatusText still {:?}", m.prop("StatusText")))?;
    let origin_down_seconds = secs(gone.elapsed());
    drop(away);
    let back = Instant::now();
    let mut status_origin_back = String::new();
    m.wait_until(Duration::from_secs(60), "StatusText no longer naming the origin once it is back", || {
        status_origin_back = m.prop("StatusText");
        !status_origin_back.contains("down") && status_origin_back.contains(&format!("{expected} tracks"))
    })
    .with_context(|| format!("StatusText still {:?}", m.prop("StatusText")))?;
    let origin_back_seconds = secs(back.elapsed());

    // 3. STOPPING=1 at shutdown. After `systemctl kill -s SIGTERM` systemd itself is stopping nothing: only
    //    the daemon's STOPPING=1 moves the unit from running to stop-sigterm (deactivating) while the daemon
    //    is still draining. Without it the unit would stay running until the exit, then run ExecStop.
    let since = now_epoch();
    let pid = m.main_pid();
    m.systemctl(&["kill", "-s", "SIGTERM"])?;
    let mut seen_deactivating_alive = false;
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    m.wait_until(Duration::from_secs(20), "the daemon exiting after SIGTERM", || {
        let active = m.prop("ActiveState");
        let alive = proc_dir.exists();
        seen_deactivating_alive |= active == "deactivating" && alive;
        !alive
    })?;
    // The unit's way down is over once it is stopped, or (had the stop failed) a new daemon runs.
    let _ = m.wait_until(Duration::from_secs(20), "the unit settling", || {
        let now = m.main_pid();
        m.is_stopped() || (now != 0 && now != pid)
    });
    let journal = m.journal_since(since);
    let stopping = notifications(&journal).into_iter().find(|l| l.contains("STOPPING=1")).map(str::to_owned);
    let stopping = stopping.with_context(|| format!("systemd logged no STOPPING=1 after SIGTERM:\n{journal}"))?;
    ensure!(
        journal.contains("Changed running -> stop-sigterm"),
        "STOPPING=1 did not move the unit from running to stop-sigterm:\n{journal}"
    );
    m.wait_until(Duration::from_secs(20), "the unit stopping after SIGTERM", || m.is_stopped())?;
    ensure!(m.prop("ExecMainStatus") == "0", "exit status {} after SIGTERM", m.prop("ExecMainStatus"));

    // The usual way down, `systemctl stop` (ExecStop): STOPPING=1 arrives there too.
    m.systemctl(&["start"])?;
    m.wait_serving(Duration::from_secs(60))?;
    let since = now_epoch();
    m.systemctl(&["stop"])?;
    let journal = m.journal_since(since);
    ensure!(
        notifications(&journal).iter().any(|l| l.contains("STOPPING=1")),
        "systemd logged no STOPPING=1 during `systemctl stop`:\n{journal}"
    );
    m.systemctl(&["start"])?;
    m.wait_serving(Duration::from_secs(60))?;
    Ok(json!({
        "start_with_held_scan_seconds": secs(start_took),
        "files_listed_right_after_start": listed,
        "status_at_ready": status_at_ready,
        "status_after_reads": status_after_reads,
        "status_after_reads_seconds": cache_status_seconds,
        "status_origin_down": status_origin_down,
        "status_origin_down_seconds": origin_down_seconds,
        "status_origin_back": status_origin_back,
        "status_origin_back_seconds": origin_back_seconds,
        "ready_notification": ready,
        "stopping_notification": stopping,
        "deactivating_seen_while_daemon_alive": seen_deactivating_alive,
    }))
}

/// The `[Service]` settings of the unit as systemd loaded it (`systemctl cat`: the unit file and its
/// drop-ins, in order; a later assignment wins).
fn unit_service_settings(m: &Machine) -> Result<std::collections::BTreeMap<String, String>> {
    let (ok, text) = m.run("systemctl", &["cat", &m.unit])?;
    ensure!(ok, "systemctl cat {} failed: {text}", m.unit);
    let mut section = String::new();
    let mut settings = std::collections::BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
        } else if section == "[Service]"
            && !line.starts_with('#')
            && let Some((key, value)) = line.split_once('=')
        {
            settings.insert(key.trim().to_owned(), value.trim().to_owned());
        }
    }
    Ok(settings)
}

/// A systemd size (`768M`, `1G`, `4096`; base 1024) in bytes; None for `infinity`, percentages and nonsense.
fn systemd_bytes(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return None,
    };
    number.parse::<u64>().ok().map(|n| n << shift)
}

/// Soft and hard "Max open files" of a process.
fn open_files_limits(pid: u64) -> Result<(String, String)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits.lines().find(|l| l.starts_with("Max open files")).context("no Max open files line")?;
    let fields: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    ensure!(fields.len() >= 2, "odd limits line: {line}");
    Ok((fields[0].to_owned(), fields[1].to_owned()))
}

/// The kernel's value for a cgroup limit of the unit, when this machine gives systemd that controller:
/// cgroup v2 (`memory.max`, `memory.high`, `pids.max` in the unit's group) or a writable v1 hierarchy.
fn cgroup_limit(control_group: &str, v2_file: &str, v1: Option<(&str, &str)>) -> Option<String> {
    let mut candidates = vec![format!("/sys/fs/cgroup{control_group}/{v2_file}")];
    if let Some((controller, file)) = v1 {
        candidates.push(format!("/sys/fs/cgroup/{controller}{control_group}/{file}"));
    }
    candidates.iter().find_map(|p| std::fs::read_to_string(p).ok()).map(|t| t.trim().to_owned())
}

/// What this machine lets its systemd grant a service: whether PID 1 holds CAP_SYS_RESOURCE (needed to raise
/// a hard rlimit or lower oom_score_adj), PID 1's own open-files hard limit and its oom_score_adj.
fn machine_ceiling() -> Result<(bool, u64, i64)> {
    let status = std::fs::read_to_string("/proc/1/status")?;
    let cap_eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).context("no CapEff in /proc/1/status")?;
    let cap_sys_resource = u64::from_str_radix(cap_eff.trim(), 16)? & (1 << 24) != 0;
    let (_, hard) = open_files_limits(1)?;
    let oom: i64 = std::fs::read_to_string("/proc/1/oom_score_adj")?.trim().parse()?;
    Ok((cap_sys_resource, hard.parse().unwrap_or(u64::MAX), oom))
}

/// A field of /proc/PID/status (`VmRSS`, `Threads`), as its first number.
fn proc_status_number(pid: u64, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with(&format!("{field}:")))?.to_owned();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Resource bounds a runtime drop-in sets for the second half of `limits`: different from the unit's and
/// within what any machine lets systemd grant (a lower open-files limit, a higher OOM score), so that
/// every one of them must reach the daemon exactly, even where the unit's own cannot.
const PROBE_LIMITS: &str =
    "[Service]\nLimitNOFILE=4096:8192\nMemoryHigh=700M\nMemoryMax=900M\nTasksMax=1000\nOOMScoreAdjust=300\n";

/// Proves L4: 5.8
pub fn limits(m: &Machine) -> Result<Value> {
    m.wait_serving(Duration::from_secs(30))?;
    let shipped = check_limits(m)?;
    // The same path with values this machine can grant whatever its capabilities: unit → systemd → process.
    m.dropin("probe", PROBE_LIMITS)?;
    m.systemctl(&["restart"])?;
    m.wait_serving(Duration::from_secs(60))?;
    let overridden = check_limits(m)?;
    ensure!(
        overridden["machine_prevents"].as_array().is_some_and(|a| a.is_empty()),
        "this machine did not grant the drop-in's limits: {overridden}"
    );
    m.remove_dropin("probe")?;
    m.systemctl(&["restart"])?;
    m.wait_serving(Duration::from_secs(60))?;
    Ok(json!({ "unit": shipped, "probe_dropin": overridden }))
}

/// Checks the bounds the unit sets (fragment and drop-ins), what systemd loaded, what the running daemon has
/// and, where this machine gives systemd the controllers, what the kernel enforces; returns all of them.
fn check_limits(m: &Machine) -> Result<Value> {
    let unit = unit_service_settings(m)?;
    let declared = |key: &str| -> Result<String> {
        let value =
            unit.get(key).with_context(|| format!("the unit does not set {key}= (systemctl cat {})", m.unit))?;
        ensure!(!value.is_empty() && value != "infinity", "the unit sets {key}={value:?}, which bounds nothing");
        Ok(value.clone())
    };
    let (nofile, memory_high, memory_max, tasks_max, oom) = (
        declared("LimitNOFILE")?,
        declared("MemoryHigh")?,
        declared("MemoryMax")?,
        declared("TasksMax")?,
        declared("OOMScoreAdjust")?,
    );

    // What systemd loaded matches the unit.
    let (nofile_soft, nofile_hard) = match nofile.split_once(':') {
        Some((soft, hard)) => (soft.to_owned(), hard.to_owned()),
        None => (nofile.clone(), nofile.clone()),
    };
    let same = |prop: &str, want: &str| -> Result<()> {
        let got = m.prop(prop);
        ensure!(got == want, "systemd runs the unit with {prop}={got}, the unit says {want}");
        Ok(())
    };
    same("LimitNOFILE", &nofile_hard)?;
    same("LimitNOFILESoft", &nofile_soft)?;
    same("OOMScoreAdjust", &oom)?;
    let mut expected_bytes = std::collections::BTreeMap::new();
    for (prop, value) in [("MemoryHigh", &memory_high), ("MemoryMax", &memory_max), ("TasksMax", &tasks_max)] {
        let got = m.prop(prop);
        ensure!(!got.is_empty() && got != "infinity", "systemd runs the unit with {prop}={got:?}");
        // Sizes compare exactly; a percentage is resolved by systemd against this machine, so only bounded.
        let want = if prop == "TasksMax" { value.parse::<u64>().ok() } else { systemd_bytes(value) };
        if let Some(want) = want {
            ensure!(got == want.to_string(), "systemd runs the unit with {prop}={got}, the unit says {value}");
        }
        expected_bytes.insert(prop, got);
    }

    // The running daemon really has them. systemd applies rlimits and the OOM score in the process and
    // quietly settles for the closest it may: a machine whose PID 1 lacks CAP_SYS_RESOURCE (a container in
    // a sandbox without it) gets no hard limit above its own and no lower oom_score_adj. Then the daemon
    // must have exactly that closest value, and the figures say the unit's own could not be applied here.
    let pid = m.main_pid();
    ensure!(pid > 0, "the unit has no main process");
    let (may_raise, pid1_nofile, pid1_oom) = machine_ceiling()?;
    let number = |text: &str| text.parse::<u64>().unwrap_or(u64::MAX);
    let want_hard = if may_raise { number(&nofile_hard) } else { number(&nofile_hard).min(pid1_nofile) };
    let want_soft = number(&nofile_soft).min(want_hard);
    let oom_declared: i64 = oom.parse().with_context(|| format!("OOMScoreAdjust={oom} is not a number"))?;
    let want_oom = if may_raise || oom_declared >= pid1_oom { oom_declared } else { pid1_oom };
    let (soft, hard) = open_files_limits(pid)?;
    ensure!(
        number(&soft) == want_soft && number(&hard) == want_hard,
        "the daemon runs with {soft}/{hard} open files (soft/hard), the unit says {nofile_soft}/{nofile_hard}{}",
        if want_hard < number(&nofile_hard) {
            format!(" and this machine allows {want_soft}/{want_hard}")
        } else {
            String::new()
        }
    );
    let oom_now = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))?.trim().to_owned();
    ensure!(
        oom_now == want_oom.to_string(),
        "the daemon's oom_score_adj is {oom_now}, the unit says {oom}{}",
        if want_oom != oom_declared { format!(" and this machine allows {want_oom}") } else { String::new() }
    );
    let mut not_applied = Vec::new();
    if want_hard < number(&nofile_hard) {
        not_applied.push(format!("LimitNOFILE capped at {want_hard} (PID 1 has no CAP_SYS_RESOURCE)"));
    }
    if want_oom != oom_declared {
        not_applied.push(format!("OOMScoreAdjust left at {want_oom} (PID 1 has no CAP_SYS_RESOURCE)"));
    }

    // The kernel enforces the cgroup limits where systemd has the controllers (cgroup v2, a VM); in an
    // nspawn container on a cgroup v1 host the controllers are read-only and systemd only records them.
    let group = m.prop("ControlGroup");
    let mut enforced = serde_json::Map::new();
    for (prop, v2, v1) in [
        ("MemoryMax", "memory.max", Some(("memory", "memory.limit_in_bytes"))),
        ("MemoryHigh", "memory.high", None),
        ("TasksMax", "pids.max", Some(("pids", "pids.max"))),
    ] {
        match cgroup_limit(&group, v2, v1) {
            Some(kernel) => {
                ensure!(
                    kernel == expected_bytes[prop],
                    "the kernel holds {prop} of {group} at {kernel}, systemd says {}",
                    expected_bytes[prop]
                );
                enforced.insert(prop.into(), kernel.into());
            }
            None => {
                enforced.insert(prop.into(), "no controller in this machine: not enforced here".into());
            }
        }
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    Ok(json!({
        "LimitNOFILE": nofile,
        "MemoryHigh": memory_high,
        "MemoryMax": memory_max,
        "TasksMax": tasks_max,
        "OOMScoreAdjust": oom,
        "process_open_files_limit": format!("{soft}/{hard}"),
        "process_oom_score_adj": oom_now,
        "kernel_cgroup_limits": enforced,
        "machine_prevents": not_applied,
        "daemon_rss_kib": proc_status_number(pid, "VmRSS"),
        "daemon_threads": proc_status_number(pid, "Threads"),
        "daemon_open_fds": fds,
    }))
}

/// The most `systemd-analyze security` may score the unit (0 is locked down, 10 fully exposed). The daemon
/// runs unprivileged in a sandbox while root mounts outside it (issue 16): 1.3 with systemd 252 (4.2 when the
/// daemon mounted by itself and could use no mount namespace). What is left is the network it needs, the
/// host's root directory and its users.
const EXPOSURE_BUDGET: f64 = 2.0;

/// The unit's exposure as systemd measures it, and the directives it still flags: a hardening line dropped
/// from the unit raises the score past the budget.
pub fn security(m: &Machine) -> Result<Value> {
    let unit = m.unit.as_str();
    let (ok, text) = m.run("systemd-analyze", &["security", "--no-pager", unit])?;
    ensure!(ok, "systemd-analyze security {unit} failed: {text}");
    let score = exposure_score(&text, unit).with_context(|| format!("no overall exposure level in:\n{text}"))?;
    let flagged: Vec<String> = text
        .lines()
        .filter(|l| l.trim_start().starts_with('✗'))
        .filter_map(|l| l.trim_start().trim_start_matches('✗').split_whitespace().next().map(str::to_owned))
        .collect();
    ensure!(
        score <= EXPOSURE_BUDGET,
        "exposure {score} is above the budget {EXPOSURE_BUDGET}; still flagged: {flagged:?}"
    );
    Ok(json!({ "exposure": score, "budget": EXPOSURE_BUDGET, "flagged": flagged }))
}

/// Issue 16 under real systemd: the daemon runs as a user of its own with no capability, in a mount namespace
/// of its own, while its mount sits in PID 1's (everyone's) owned by that user; another user (`nobody`, as a
/// player's user would) reads a track through `allow_other`, byte for byte; and a kill -9 under the split
/// serves again, the mount helper leaving the kept connection alone.
pub fn privilege(m: &Machine) -> Result<Value> {
    m.wait_serving(Duration::from_secs(30))?;
    let pid = m.main_pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |key: &str| -> Vec<String> {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap_or_default();
        line.split_whitespace().skip(1).map(str::to_owned).collect()
    };
    let uids = field("Uid:");
    ensure!(!uids.is_empty() && uids.iter().all(|u| u != "0"), "the daemon runs as root: Uid {uids:?}");
    for key in ["CapEff:", "CapPrm:", "CapAmb:", "CapBnd:"] {
        ensure!(field(key) == ["0000000000000000"], "the daemon holds capabilities: {key} {:?}", field(key));
    }
    let own_ns = std::fs::read_link(format!("/proc/{pid}/ns/mnt"))?;
    ensure!(own_ns != std::fs::read_link("/proc/1/ns/mnt")?, "the daemon shares PID 1's mount namespace: no sandbox");
    let target = format!(" {} ", m.mount_point.display());
    let hosts_view = std::fs::read_to_string("/proc/1/mountinfo")?;
    let line = hosts_view.lines().find(|l| l.contains(&target)).context("the mount is not in PID 1's mount table")?;
    ensure!(
        line.contains("fuse.musicfs") && line.contains(&format!("user_id={}", uids[0])),
        "the mount is not a musicfs mount owned by the daemon's user: {line}"
    );

    let (track, bytes) = crate::player::playable_track(&m.origin)?;
    let in_mount = crate::player::find_in_mount(&m.mount_point, &bytes)?;
    let path = in_mount.to_str().context("a track path that is not UTF-8")?;
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat", path])
        .output()?;
    ensure!(out.status.success(), "nobody cannot read {path}: {}", String::from_utf8_lossy(&out.stderr));
    ensure!(out.stdout == bytes, "nobody read other bytes than {} holds", track.display());

    let since = now_epoch();
    let killed = Instant::now();
    m.systemctl(&["kill", "-s", "SIGKILL"])?;
    m.wait_until(Duration::from_secs(30), "a new daemon", || m.main_pid() != pid && m.main_pid() != 0)?;
    let serving = m.wait_serving(Duration::from_secs(30))?;
    let kill_to_serving = killed.elapsed();
    let journal = m.journal_since(since);
    ensure!(
        journal.contains("mount left alone"),
        "the mount helper did not leave the kept connection alone:\n{journal}"
    );
    ensure!(journal.contains("2.11 resumed"), "the new daemon did not resume the kept connection:\n{journal}");
    let new_uid = std::fs::read_to_string(format!("/proc/{}/status", m.main_pid()))?
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .map(|l| l.split_whitespace().nth(1).unwrap_or_default().to_owned())
        .unwrap_or_default();
    ensure!(new_uid == uids[0], "the restarted daemon runs as {new_uid}, not {}", uids[0]);
    Ok(json!({
        "daemon_uid": uids[0],
        "capabilities": "none",
        "second_user_read_bytes": bytes.len(),
        "kill_to_serving_seconds": kill_to_serving.as_secs_f64(),
        "serving_wait_seconds": serving.as_secs_f64(),
    }))
}

/// The number in "Overall exposure level for UNIT: 4.2 OK".
fn exposure_score(text: &str, unit: &str) -> Option<f64> {
    let marker = format!("Overall exposure level for {unit}:");
    let line = text.lines().find(|l| l.contains(&marker))?;
    line.split(&marker).nth(1)?.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_overall_exposure_is_read_from_systemd_analyze() {
        let text = "✗ PrivateTmp=  Service has access to other software's temporary files  0.2\n\
                    \n→ Overall exposure level for musicfs.service: 4.4 OK 🙂\n";
        assert_eq!(super::exposure_score(text, "musicfs.service"), Some(4.4));
        assert_eq!(super::exposure_score("nothing", "musicfs.service"), None);
    }
}
