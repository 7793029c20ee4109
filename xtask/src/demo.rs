//! `cargo xtask demo`: MusicFS in one minute. Generates a sample library (with hostile tags), mounts it with
//! the real daemon, lists the tag-built tree, plays a track with mpv from the mount, and unmounts.

use anyhow::{Context, Result, bail};
use musicfs_test_utils::daemon::{Daemon, DaemonArgs};
use musicfs_test_utils::files::walk_files;
use musicfs_test_utils::sample::{self, SampleOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the demo library, cache and mount point go (recreated each run).
    #[arg(long, default_value = "target/demo")]
    pub workdir: PathBuf,
    /// Ordinary tracks in the sample library.
    #[arg(long, default_value_t = 16)]
    pub tracks: usize,
}

fn require(tool: &str, package: &str) -> Result<()> {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output()?.status.success();
    if !found {
        bail!("`{tool}` not found: install it with `sudo apt-get install -y {package}` (or run `bash .ci/run` once)");
    }
    Ok(())
}

/// Builds the daemon in the workspace at `root` and returns the path of the binary.
pub fn build_musicfs(root: &Path, release: bool) -> Result<PathBuf> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["build", "--quiet", "-p", "musicfs"]).current_dir(root);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().context("running cargo build -p musicfs")?;
    if !status.success() {
        bail!("cargo build -p musicfs failed ({status})");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir));
    Ok(target.join(if release { "release" } else { "debug" }).join("musicfs"))
}

pub fn run(args: &Args) -> Result<()> {
    for (tool, package) in [("fusermount3", "fuse3"), ("ffmpeg", "ffmpeg"), ("mpv", "mpv")] {
        require(tool, package)?;
    }
    let binary = build_musicfs(&crate::workspace_root(), false)?;
    let work = std::path::absolute(&args.workdir)?;
    if work.join("mnt").exists() {
        musicfs_test_utils::daemon::force_unmount(&work.join("mnt"));
    }
    let _ = std::fs::remove_dir_all(&work);
    let (lib, cache, mnt) = (work.join("lib"), work.join("cache"), work.join("mnt"));
    let tracks = sample::generate(&lib, &SampleOptions { tracks: args.tracks, hostile: true, seconds: 2.0 })?;
    println!("1. generated {} files in {} (names say nothing; tags say everything)", tracks.len(), lib.display());

    let daemon = Daemon::start(
        &binary,
        &DaemonArgs {
            origins: vec![lib.clone()],
            cache_dir: Some(cache.clone()),
            mount_point: mnt.clone(),
            ..Default::default()
        },
    )?;
    println!("2. mounted at {} in {:?}:\n", mnt.display(), daemon.started_in);
    for path in walk_files(&mnt)? {
        println!("   {}", display(path.strip_prefix(&mnt).unwrap_or(&path)));
    }

    let track =
        tracks.iter().find_map(|t| t.expected_tag_path()).context("the sample library has an ordinary track")?;
    let path = mnt.join(&track);
    println!("\n3. playing {} with mpv from the mount", display(&track));
    let out = Command::new("mpv").args(["--no-config", "--no-video", "--ao=null"]).arg(&path).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains("End of file") {
        bail!("mpv did not play to the end ({}):\n{text}{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    println!("   mpv: {}", text.lines().last().unwrap_or("").trim());

    let status = daemon.stop()?;
    println!(
        "\n4. SIGTERM: daemon exited with {status}; mount gone: {}",
        !musicfs_test_utils::daemon::is_fuse_mounted(&mnt)
    );
    println!("   the cache in {} keeps what was played; mount again and it plays without the origin.", cache.display());
    Ok(())
}

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
