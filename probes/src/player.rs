//! A real player on the mount: mpv plays a track to its end through the daemon, the way a listener's player
//! would, with no sound device (the null output, as fast as it decodes). Whatever mpv warns about (a read
//! error, a frame it could not decode, a file it could not open) fails the play.

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
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "mpv"])
        .args(["--no-config", "--no-video", "--ao=null", "--ao-null-untimed", "--msg-level=all=warn"])
        .env("HOME", "/tmp")
        .arg(path)
        .output()
        .context("running mpv as nobody through setpriv (are both installed in the machine under test?)")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    Ok(Played {
        exit_code: out.status.code().unwrap_or(-1),
        warnings: text.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect(),
        took: started.elapsed(),
    })
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
