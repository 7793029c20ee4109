//! `musicfs-probe`: the system layer's scenario driver. It runs inside the machine under test (a NixOS VM
//! or the nspawn container of `cargo xtask system-test`), drives `musicfs.service` through systemctl,
//! reads through the mount and checks every byte against the origin, checks the journal and unit
//! properties, measures recovery, prints one JSON object per scenario and exits non-zero on failure.

// A test driver: a panic fails the scenario, which reports it; unwrap and expect are fine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod faults;
mod machine;
mod player;
mod scenarios;
mod toxiproxy;

use clap::{Parser, ValueEnum};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "musicfs-probe", about = "Break the real musicfs unit on purpose and check it recovers")]
struct Cli {
    /// The scenario to run.
    scenario: Scenario,
    /// The unit under test.
    #[arg(long, global = true, default_value = "musicfs.service")]
    unit: String,
    /// The daemon's config (mount point, cache dir, origin).
    #[arg(long, global = true, default_value = "/etc/musicfs/musicfs.toml")]
    config: String,
    /// `ID=PATH`: the local directory the probe checks origin ID's bytes against and writes new tracks into
    /// (default: the config's path; an S3 origin's local backup_for copy). For servers on other machines.
    #[arg(long = "origin-dir", global = true, value_name = "ID=PATH", value_parser = machine::parse_override)]
    origin_dirs: Vec<(String, String)>,
    /// `ID=COMMAND`: run (sh -c) after a new track of origin ID is written locally, so it reaches the real
    /// server; `{file}` and `{name}` are replaced by the local path and the file name.
    #[arg(long = "upload", global = true, value_name = "ID=COMMAND", value_parser = machine::parse_override)]
    uploads: Vec<(String, String)>,
    /// How many times `soak` kills the daemon (200 for a long run by hand).
    #[arg(long, global = true, default_value_t = machine::DEFAULT_SOAK_KILLS)]
    kills: usize,
}

#[derive(ValueEnum, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// SIGTERM while a reader streams a track: clean exit, mount gone, cache consistent; start again.
    Sigterm,
    /// kill -9 during reads: systemd restarts it, the stale mount is cleaned, reads byte-identical again.
    Kill9,
    /// systemctl restart while a reader streams: the connection is handed over, no read fails, no remount;
    /// systemctl stop then still leaves no mount.
    Restart,
    /// An upgrade while a reader streams: a new build replaces the binary and the unit restarts into it;
    /// the connection is handed over and resumed by the new build, no read fails, no remount.
    Upgrade,
    /// A crash loop past the start limit while a reader waits on the kept mount: systemd closes the stored
    /// connection, the reader gets an error instead of hanging, OnFailure= unmounts, and the next start
    /// serves again.
    CrashLoop,
    /// A frozen daemon (SIGSTOP) and a stalled self-check are restarted by the watchdog.
    Watchdog,
    /// systemctl stop runs `musicfs shutdown`; with the daemon frozen, the kill and ExecStopPost follow.
    Execstop,
    /// The cache filesystem fills (by MusicFS, and by another process): reads go on, status degraded, recovery.
    DiskFull,
    /// Type=notify: `systemctl start` returns only once the mount answers; STATUS= follows the cache and the
    /// origin; STOPPING=1 moves the unit to deactivating while the daemon drains.
    Readiness,
    /// The unit's resource bounds (LimitNOFILE, MemoryHigh/MemoryMax, TasksMax, OOMScoreAdjust) are what
    /// systemd runs it with and what the running daemon has.
    Limits,
    /// Every origin cut while a cached track plays: no read errors on it, EIO within the read timeout for an
    /// uncached one, status and STATUS= offline, then ready and byte-identical after the heal (4.2.3).
    OriginOutage,
    /// Latency below the read timeout on the S3 origin: reads complete, no failover, the origin stays up (N1).
    S3Latency,
    /// The S3 origin cut mid-stream: the stream completes from its backup, which is re-validated after (N2).
    S3CutFailover,
    /// SFTP connections reset mid-read: the read completes on a fresh session, or fails within its bound (N3).
    SftpDrop,
    /// A partition of both remote origins and its heal: no restart, routing back, new tracks listed (N4).
    PartitionHeal,
    /// The S3 endpoint's name stops resolving: degraded for DNS, re-checked soon, ready again (4.2.5).
    Dns,
    /// `systemd-analyze security` of the unit: its exposure score, within the budget, and what it still flags.
    Security,
    /// The daemon runs as its own user with no capability in a sandbox; its mount, made by root, is in
    /// everyone's mount table and another user reads it; kill -9 under the split serves again (issue 16).
    Privilege,
    /// kill -9 at random moments (first scan, ingest with eviction, delta sync) while a reader streams: every
    /// restart serves again, and at the end every track reads byte-identical, the cache verifies sound and the
    /// database passes integrity_check (`--kills N`).
    Soak,
    /// Every scenario in turn.
    All,
}

/// A scenario: runs against the machine, returns its figures or what failed.
type Run = fn(&machine::Machine) -> anyhow::Result<serde_json::Value>;

/// Every scenario by its [`Scenario`] name, in the order `all` runs them.
const SCENARIOS: [(&str, Run); 19] = [
    ("sigterm", scenarios::sigterm),
    ("kill9", scenarios::kill9),
    ("restart", scenarios::restart),
    ("upgrade", scenarios::upgrade),
    ("crash-loop", scenarios::crash_loop),
    ("watchdog", scenarios::watchdog),
    ("execstop", scenarios::execstop),
    ("disk-full", scenarios::disk_full),
    ("readiness", scenarios::readiness),
    ("limits", scenarios::limits),
    ("origin-outage", scenarios::origin_outage),
    ("s3-latency", scenarios::s3_latency),
    ("s3-cut-failover", scenarios::s3_cut_failover),
    ("sftp-drop", scenarios::sftp_drop),
    ("partition-heal", scenarios::partition_heal),
    ("dns", scenarios::dns),
    ("security", scenarios::security),
    ("privilege", scenarios::privilege),
    ("soak", scenarios::soak),
];

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = machine::Overrides {
        origin_dirs: cli.origin_dirs.iter().map(|(id, dir)| (id.clone(), dir.into())).collect(),
        uploads: cli.uploads.clone(),
    };
    let machine = match machine::Machine::new(&cli.unit, &cli.config, &overrides) {
        Ok(mut m) => {
            m.soak_kills = cli.kills;
            m
        }
        Err(e) => {
            println!("{}", serde_json::json!({ "scenario": "setup", "pass": false, "error": format!("{e:#}") }));
            return ExitCode::FAILURE;
        }
    };
    let name = cli.scenario.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default();
    let list: Vec<(&str, Run)> =
        SCENARIOS.iter().copied().filter(|(scenario, _)| cli.scenario == Scenario::All || *scenario == name).collect();
    let mut all_passed = true;
    for (name, run) in list {
        let started = std::time::Instant::now();
        let result = run(&machine);
        let mut json = match result {
            Ok(mut details) => {
                details["pass"] = true.into();
                details
            }
            Err(e) => {
                all_passed = false;
                serde_json::json!({ "pass": false, "error": format!("{e:#}") })
            }
        };
        json["scenario"] = name.into();
        json["seconds"] = ((started.elapsed().as_millis() as f64) / 1000.0).into();
        println!("{json}");
        // Leave the unit serving for whatever runs next.
        let _ = machine.recover();
    }
    if all_passed { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_on_the_command_line_runs_exactly_one_entry_of_the_table() {
        for scenario in Scenario::value_variants().iter().filter(|s| **s != Scenario::All) {
            let name = scenario.to_possible_value().unwrap().get_name().to_owned();
            assert_eq!(SCENARIOS.iter().filter(|(n, _)| *n == name).count(), 1, "{name}");
        }
        assert_eq!(SCENARIOS.len(), Scenario::value_variants().len() - 1, "a table entry no scenario names");
    }

    #[test]
    fn overrides_repeat_and_split_at_the_first_equals_sign() {
        let cli = Cli::try_parse_from([
            "musicfs-probe",
            "dns",
            "--origin-dir",
            "nas=/srv/sftp/music",
            "--upload",
            "bucket=curl -T {file} http://minio:9000/music/{name}?a=b",
            "--upload=nas=scp {file} music@sftp:/srv/music/{name}",
        ])
        .unwrap();
        assert_eq!(cli.origin_dirs, [("nas".to_owned(), "/srv/sftp/music".to_owned())]);
        assert_eq!(cli.uploads[0].1, "curl -T {file} http://minio:9000/music/{name}?a=b");
        assert_eq!(cli.uploads[1].0, "nas");
        assert!(Cli::try_parse_from(["musicfs-probe", "dns", "--upload", "no-equals"]).is_err());
        let plain = Cli::try_parse_from(["musicfs-probe", "all"]).unwrap();
        assert!(plain.origin_dirs.is_empty() && plain.uploads.is_empty());
    }
}
