//! Real players reading from a real mount (Layer 2): `mpv` and VLC's `cvlc` play every sample format from
//! MusicFS to the end, and three players (mpv, cvlc, ffmpeg) decode the same uncached track at once.
//! VLC refuses to run as root, so as root it runs as `nobody` against a mount made with `--allow-other`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

use musicfs_test_utils::daemon::{Daemon, Scratch};
use musicfs_test_utils::sample::{self, Format, SampleOptions, SampleTrack};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_musicfs");

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

struct Library {
    scratch: Scratch,
    tracks: Vec<SampleTrack>,
    daemon: Daemon,
}

fn mounted_library(tracks: usize) -> Library {
    let scratch = Scratch::new().unwrap();
    // Other users (VLC as nobody) must be able to reach the mount point.
    std::fs::set_permissions(scratch.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tracks = sample::generate(&scratch.lib(), &SampleOptions { tracks, hostile: false, seconds: 1.0 }).unwrap();
    let mut args = scratch.args();
    if is_root() {
        args.extra.push("--allow-other".into());
    }
    let daemon = Daemon::start(Path::new(BIN), &args).unwrap();
    Library { scratch, tracks, daemon }
}

fn player(program: &str, args: &[&str], file: &Path) -> Command {
    let mut cmd = if program == "cvlc" && is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--reset-env", "cvlc"]);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args).arg(file);
    cmd
}

fn mpv(file: &Path) -> Command {
    // Untimed: decode every byte as fast as possible instead of in real time.
    player("mpv", &["--no-config", "--no-video", "--ao=null", "--ao-null-untimed", "--msg-level=all=info"], file)
}

fn cvlc(file: &Path) -> Command {
    player("cvlc", &["-vv", "--play-and-exit", "--aout=dummy", "--no-video", "--no-interact"], file)
}

fn ffmpeg(file: &Path) -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-v", "info", "-i"]).arg(file).args(["-f", "null", "-"]);
    cmd
}

/// Runs a player to its end; panics with its output unless it exited 0 and said it reached the end.
fn played_to_end(name: &str, mut cmd: Command, end_marker: &str, file: &Path) {
    let out: Output = cmd.output().unwrap_or_else(|e| panic!("{name} could not start ({e}); .ci/run installs it"));
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name} failed on {}: {}\n{text}", file.display(), out.status);
    assert!(text.contains(end_marker), "{name} did not reach the end of {}:\n{text}", file.display());
}

fn in_mount(lib: &Library, track: &SampleTrack) -> PathBuf {
    lib.scratch.mnt().join(track.expected_tag_path().unwrap())
}

#[test]
fn mpv_plays_every_format_from_the_mount_to_the_end() {
    let lib = mounted_library(6);
    let formats: Vec<Format> = lib.tracks.iter().map(|t| t.format).collect();
    assert_eq!(formats.len(), Format::ALL.len());
    for track in &lib.tracks {
        let file = in_mount(&lib, track);
        played_to_end("mpv", mpv(&file), "(End of file)", &file);
    }
    assert!(lib.daemon.stop().unwrap().success());
}

#[test]
fn vlc_plays_every_format_from_the_mount_to_the_end() {
    let lib = mounted_library(6);
    for track in &lib.tracks {
        let file = in_mount(&lib, track);
        played_to_end("cvlc", cvlc(&file), "EOF reached", &file);
    }
    assert!(lib.daemon.stop().unwrap().success());
}

#[test]
fn three_players_decode_the_same_uncached_track_at_once() {
    let lib = mounted_library(6);
    for track in lib.tracks.iter().filter(|t| matches!(t.format, Format::Flac | Format::Mp3 | Format::OggVorbis)) {
        let file = in_mount(&lib, track);
        let runs = [
            ("mpv", mpv(&file), "(End of file)"),
            ("cvlc", cvlc(&file), "EOF reached"),
            ("ffmpeg", ffmpeg(&file), "muxing overhead"),
        ];
        let handles: Vec<_> = runs
            .into_iter()
            .map(|(name, cmd, marker)| {
                let file = file.clone();
                std::thread::spawn(move || played_to_end(name, cmd, marker, &file))
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let origin = std::fs::read(lib.scratch.lib().join(&track.rel_path)).unwrap();
        assert!(
            std::fs::read(&file).unwrap() == origin,
            "the track reads byte-identical after the concurrent first reads"
        );
    }
    assert!(lib.daemon.stop().unwrap().success());
}
