//! Real players reading from a real mount: `mpv` plays every sample format from MusicFS to the end.

use musicfs_test_utils::daemon::{Daemon, Scratch};
use musicfs_test_utils::sample::{self, Format, SampleOptions};
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_musicfs");

#[test]
fn mpv_plays_every_format_from_the_mount_to_the_end() {
    let scratch = Scratch::new().unwrap();
    let tracks = sample::generate(&scratch.lib(), &SampleOptions { tracks: 6, hostile: false, seconds: 1.0 }).unwrap();
    let daemon = Daemon::start(Path::new(BIN), &scratch.args()).unwrap();
    let mut formats = Vec::new();
    for track in &tracks {
        let path = scratch.mnt().join(track.expected_tag_path().unwrap());
        let out = Command::new("mpv")
            .args(["--no-config", "--no-video", "--ao=null", "--really-quiet=no", "--msg-level=all=info"])
            .arg(&path)
            .output()
            .expect("mpv is installed (Debian package mpv; .ci/run installs it)");
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "mpv failed on {}: {text}", path.display());
        assert!(text.contains("(End of file)"), "mpv did not reach the end of {}: {text}", path.display());
        formats.push(track.format);
    }
    assert_eq!(formats.len(), Format::ALL.len());
    let status = daemon.stop().unwrap();
    assert!(status.success());
}
