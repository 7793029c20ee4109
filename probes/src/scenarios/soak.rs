//! The kill -9 soak: the unit killed at random moments, round after round, while a reader streams, and at
//! the end nothing lost. The moments rotate through the risky ones: the first scan of an empty cache, the
//! ingest of uncached tracks (the cache filesystem is smaller than the library, so eviction runs beside it),
//! and a delta sync of a track just added. After each kill systemd restarts the daemon and the mount must
//! serve byte-identical files again; at the end every track of every origin (the added ones too) reads
//! byte-identical through the mount, and after a clean stop `musicfs cache verify` finds every chunk sound,
//! the chunk index matching the chunk files and the library database passing SQLite's integrity_check.

use super::secs;
use crate::machine::{Machine, Streamer, now_epoch, pseudo_random};
use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What the unit was doing when it was killed.
#[derive(Clone, Copy, Debug)]
enum Moment {
    FirstScan,
    Ingest,
    DeltaSync,
}

const MOMENTS: [Moment; 3] = [Moment::FirstScan, Moment::Ingest, Moment::DeltaSync];

/// A small xorshift: random moments without a dependency; the seed is printed so a run can be told apart.
struct Dice(u64);

impl Dice {
    fn millis(&mut self, below: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(self.0 % below.max(1))
    }
}

/// Proves L4: 2.7, 2.11, 3.5, 5.7, 6.2
pub fn soak(m: &Machine) -> Result<Value> {
    m.wait_serving(Duration::from_secs(30))?;
    let seed = now_epoch() | 1;
    let mut dice = Dice(seed);
    let stream = Streamer::start(m)?;
    let mut added: Vec<PathBuf> = Vec::new();
    let mut to_serving: Vec<Duration> = Vec::new();
    let mut failed_restarts = 0u64;
    let mut failures: Vec<String> = Vec::new();
    let mut reader_errors = 0u64;
    // Reads fail while the unit is stopped to empty its cache; those are no restart's doing.
    let mut errors_while_stopped = 0u64;
    for round in 0..m.soak_kills {
        let moment = MOMENTS[round % MOMENTS.len()];
        // The start limit counts restarts over 10 s; a soak restarts on purpose, far faster than a crash loop.
        let _ = m.run("systemctl", &["reset-failed", &m.unit]);
        let before = m.restarts();
        let stopped_at = matches!(moment, Moment::FirstScan).then(|| stream.errors.load(Ordering::SeqCst));
        let readers = match moment {
            Moment::FirstScan => {
                m.systemctl(&["stop"])?;
                empty_dir(&m.cache_dir)?;
                m.run("systemctl", &["start", "--no-block", &m.unit])?;
                std::thread::sleep(Duration::from_millis(50) + dice.millis(1500));
                None
            }
            Moment::Ingest => {
                m.drop_kernel_pages()?;
                let readers = read_everything_in_background(m);
                std::thread::sleep(Duration::from_millis(100) + dice.millis(1000));
                Some(readers)
            }
            Moment::DeltaSync => {
                added.push(add_track(m, round)?);
                let sync = std::process::Command::new("musicfs")
                    .args(["sync", "--config", &m.config])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .context("spawning musicfs sync")?;
                std::thread::sleep(dice.millis(400));
                // Killed mid-sync or not, the sync command itself ends (its answer or a reset connection).
                let _ = wait_child(sync, Duration::from_secs(30));
                None
            }
        };
        let killed = Instant::now();
        let main_pid = m.main_pid();
        if main_pid == 0 {
            bail!("round {round} ({moment:?}): no daemon process to kill");
        }
        m.systemctl(&["kill", "-s", "SIGKILL"])?;
        let restarted = m.wait_until(Duration::from_secs(30), "systemd restarting the killed daemon", || {
            m.restarts() > before && m.main_pid() != main_pid && m.main_pid() != 0
        });
        let serving = restarted.and_then(|_| m.wait_serving(Duration::from_secs(90)));
        match serving {
            Ok(_) => to_serving.push(killed.elapsed()),
            Err(e) => {
                failed_restarts += 1;
                failures.push(format!("round {round} ({moment:?}): {e:#}"));
                m.recover().with_context(|| format!("round {round}: the unit did not recover"))?;
            }
        }
        if let Some(readers) = readers {
            reader_errors += readers.join().map_err(|_| anyhow::anyhow!("a reader panicked"))??;
        }
        if let Some(before_stop) = stopped_at {
            errors_while_stopped += stream.errors.load(Ordering::SeqCst) - before_stop;
        }
    }
    let (streamed, stream_errors) = stream.finish().context("the streaming reader saw wrong bytes")?;

    // Every track added during the kills is in the library once a sync has run, and reads right.
    sync_until_ok(m)?;
    let files = m.wait_serving(Duration::from_secs(90)).and_then(|_| m.verify_mount())?;
    m.systemctl(&["stop"])?;
    let (ok, verify) = m.run("musicfs", &["cache", "verify", "--config", &m.config])?;
    m.systemctl(&["start"])?;
    for file in &added {
        let _ = std::fs::remove_file(file);
    }
    sync_until_ok(m)?;
    m.wait_serving(Duration::from_secs(90))?;
    ensure!(ok, "musicfs cache verify failed after the soak: {verify}");
    for line in ["all sound", "chunk index: matches the chunk files", "library database: integrity_check ok"] {
        ensure!(verify.contains(line), "musicfs cache verify after the soak lacks {line:?}: {verify}");
    }
    ensure!(failed_restarts == 0, "{failed_restarts} kills were not followed by a serving mount: {failures:?}");
    let failed_reads = stream_errors - errors_while_stopped + reader_errors;
    ensure!(failed_reads == 0, "2.11: {failed_reads} reads failed across kills of a serving daemon");
    let mut sorted = to_serving.clone();
    sorted.sort();
    Ok(json!({
        "kills": m.soak_kills,
        "seed": seed,
        "failed_restarts": failed_restarts,
        "bad_bytes": 0,
        "files_verified_at_end": files,
        "tracks_added_during_kills": added.len(),
        "kill_to_serving_median_seconds": sorted.get(sorted.len() / 2).map(|d| secs(*d)),
        "kill_to_serving_max_seconds": sorted.last().map(|d| secs(*d)),
        "streamed_bytes": streamed,
        // 2.11: a kill -9 of a serving daemon fails no read (the connection is resumed); the rounds that stop
        // the unit and empty its cache fail reads while no mount exists, by design.
        "read_errors_during_restarts": failed_reads,
        "read_errors_while_stopped_for_a_first_scan": errors_while_stopped,
        "cache_verify": verify.trim(),
    }))
}

/// Removes everything inside `dir` (the cache, with the unit stopped): the next start is a first scan.
fn empty_dir(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) }
            .with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// A new untagged file in the first local origin (by rename: a scan never sees half of it).
fn add_track(m: &Machine, round: usize) -> Result<PathBuf> {
    let bytes = pseudo_random((256 << 10) + round * 512, now_epoch() ^ round as u64);
    let file = m.origin.join(format!("soak-{}-{round}.wav", now_epoch()));
    let tmp = m.origin.join(format!(".soak-{round}.partial"));
    std::fs::write(&tmp, &bytes)?;
    std::fs::rename(&tmp, &file)?;
    Ok(file)
}

/// Reads every file in the mount once in the background, checking each against the origins; wrong bytes
/// are an error, failed reads (the daemon killed under them) are counted.
fn read_everything_in_background(m: &Machine) -> std::thread::JoinHandle<Result<u64>> {
    let mount = m.mount_point.clone();
    let origin = m.origin_hashes();
    std::thread::spawn(move || -> Result<u64> {
        let origin = origin?;
        let mut files = Vec::new();
        crate::machine::walk(&mount, &mut files)?;
        let mut errors = 0;
        for path in files {
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let hash: [u8; 32] = blake3::hash(&bytes).into();
                    ensure!(origin.contains_key(&hash), "{} read bytes that match no origin file", path.display());
                }
                Err(_) => errors += 1,
            }
        }
        Ok(errors)
    })
}

fn wait_child(mut child: std::process::Child, limit: Duration) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!("musicfs sync did not end within {limit:?}")
}

fn sync_until_ok(m: &Machine) -> Result<()> {
    m.wait_until(Duration::from_secs(60), "musicfs sync answering", || {
        m.run("musicfs", &["sync", "--config", &m.config]).is_ok_and(|(ok, _)| ok)
    })
    .map(|_| ())
}
