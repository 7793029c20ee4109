//! A real player on the mount: mpv plays a track to its end through the daemon, the way a listener's player
//! would, with no sound device: as fast as it decodes ([`play_to_end`]), or in real time while the daemon is
//! broken under it ([`LivePlayer`], on a long track [`write_wav`] puts in the origin). Whatever mpv warns about
//! (a read error, a frame it could not decode, a file it could not open) fails the play.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What mpv said and did playing one track.
pub struct Played {
    /// mpv's exit status (0: played to the end; 2: could not open or play it).
    pub exit_code: i32,
    /// Lines mpv printed at warning level or above.
    pub warnings: Vec<String>,
    pub took: Duration,
}

impl Played {
    pub fn clean(&self) -> bool {
        self.exit_code == 0 && self.warnings.is_empty()
    }
}

/// Plays `path` to its end with mpv; an error only when mpv cannot be run at all. mpv runs as `nobody`, a
/// user other than root and the daemon's own, as a player's user (mpd) would: the mount lets it in through
/// `allow_other` (issue 16).
pub fn play_to_end(path: &Path) -> Result<Played> {
    let started = Instant::now();
    let out = mpv(path, &["--ao-null-untimed"]).output().context(MPV_MISSING)?;
    Ok(played(&out, started))
}

/// mpv playing a track in real time, as a listener hears it: it reads about a second ahead of what it plays
/// (no stream cache), so its reads go on through the whole track. [`LivePlayer::finish`] waits for the end.
pub struct LivePlayer {
    child: std::process::Child,
    started: Instant,
}

impl LivePlayer {
    pub fn start(path: &Path) -> Result<LivePlayer> {
        let mut cmd = mpv(path, &["--cache=no", "--demuxer-readahead-secs=1"]);
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        Ok(LivePlayer { child: cmd.spawn().context(MPV_MISSING)?, started: Instant::now() })
    }

    /// Whether mpv is still playing.
    pub fn playing(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for mpv to end, killing it after `limit`.
    pub fn finish(mut self, limit: Duration) -> Result<Played> {
        while self.playing() && self.started.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.playing() {
            let _ = self.child.kill();
        }
        let out = self.child.wait_with_output()?;
        Ok(played(&out, self.started))
    }
}

const MPV_MISSING: &str = "running mpv as nobody through setpriv (are both installed in the machine under test?)";

/// mpv as `nobody`, no config, no video, the null audio output, warnings and errors only; `extra` options.
fn mpv(path: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "mpv"])
        .args(["--no-config", "--no-video", "--ao=null", "--msg-level=all=warn"])
        .args(extra)
        .env("HOME", "/tmp")
        .arg(path);
    cmd
}

fn played(out: &std::process::Output, started: Instant) -> Played {
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    Played {
        exit_code: out.status.code().unwrap_or(-1),
        warnings: text.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect(),
        took: started.elapsed(),
    }
}

/// A `seconds`-long WAV file (a 440 Hz tone, 44.1 kHz, 16-bit stereo PCM), written beside `path` and renamed
/// to it, so a scan never sees half of it. Returns its bytes.
pub fn write_wav(path: &Path, seconds: u32) -> Result<Vec<u8>> {
    const RATE: u32 = 44_100;
    let frames = RATE * seconds;
    let data_len = frames * 4;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    // PCM, 2 channels, the rate, bytes per second, bytes per frame, bits per sample.
    for (value, width) in [(16u32, 4), (1, 2), (2, 2), (RATE, 4), (RATE * 4, 4), (4, 2), (16, 2)] {
        out.extend_from_slice(&value.to_le_bytes()[..width]);
    }
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for frame in 0..frames {
        let sample = ((frame as f64 * 440.0 * std::f64::consts::TAU / RATE as f64).sin() * 8000.0) as i16;
        out.extend_from_slice(&sample.to_le_bytes());
        out.extend_from_slice(&sample.to_le_bytes());
    }
    let name = path.file_name().context("a WAV path with a file name")?.to_string_lossy();
    let staged = path.with_file_name(format!(".{name}.partial"));
    std::fs::write(&staged, &out).with_context(|| format!("writing {}", staged.display()))?;
    std::fs::rename(&staged, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(out)
}

/// A file in the library `origin` that mpv can decode (a generated sample track, not the noise files), and
/// its bytes.
pub fn playable_track(origin: &Path) -> Result<(PathBuf, Vec<u8>)> {
    let playable = |p: &Path| p.extension().and_then(|e| e.to_str()).is_some_and(|e| PLAYABLE.contains(&e));
    let mut tracks: Vec<PathBuf> = files_under(origin)?.into_iter().filter(|p| playable(p)).collect();
    tracks.sort();
    let track = tracks.into_iter().next().with_context(|| format!("no playable track in {}", origin.display()))?;
    let bytes = std::fs::read(&track)?;
    Ok((track, bytes))
}

/// Formats the generated sample tracks come in that mpv decodes.
const PLAYABLE: [&str; 4] = ["flac", "mp3", "ogg", "opus"];

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let (mut dirs, mut files) = (vec![dir.to_path_buf()], Vec::new());
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let meta = entry.metadata()?;
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if meta.is_file() {
                files.push(entry.path());
            }
        }
    }
    Ok(files)
}

/// Where the file with exactly these bytes is in the mount (tagged tracks are under their artist and album).
pub fn find_in_mount(mount: &Path, bytes: &[u8]) -> Result<PathBuf> {
    for path in files_under(mount)? {
        if std::fs::metadata(&path)?.len() == bytes.len() as u64 && std::fs::read(&path)? == bytes {
            return Ok(path);
        }
    }
    anyhow::bail!("no file in {} has the track's bytes", mount.display())
}
