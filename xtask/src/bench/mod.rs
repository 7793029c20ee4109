//! `cargo xtask bench`: measures MusicFS and prints the figures; it never fails on timing, only on errors and
//! wrong bytes. Two modes share the options and the generated data in the workdir:
//!
//! * the default, [`targets`]: MusicFS alone against its own performance targets (sequential read against
//!   `bindfs` and direct reads, library-scale mount time and memory), PASS/BELOW beside each target;
//! * `--peers`, [`peers`]: MusicFS side by side with the filesystems people would pick instead, on the same
//!   files and the same loopback servers (local: `bindfs`, direct reads; SFTP: `sshfs`, `rclone mount`;
//!   S3: `s3fs`, `rclone mount`), as ratios in `target/bench/report.md` and `report.html`.
//!
//! [`tools`] holds what both modes use: generated data, timed hashed reads, `/proc` memory, a `bindfs` mount.

mod data;
mod peers;
mod probe;
mod report;
mod systems;
mod targets;
mod tools;

use std::path::PathBuf;

use anyhow::{Context, Result};
use musicfs_test_utils::daemon::{force_unmount, is_fuse_mounted};

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Compare MusicFS with bindfs, sshfs, rclone mount and s3fs on the same files and servers, and write
    /// target/bench/report.md and report.html (instead of the default target check).
    #[arg(long)]
    pub peers: bool,
    /// Size of the file read sequentially, in MiB [default: 512, with --peers 256].
    #[arg(long)]
    pub size_mib: Option<usize>,
    /// Number of tracks of the generated library [default: 100000, with --peers 20000].
    #[arg(long)]
    pub tracks: Option<usize>,
    /// With --peers: how many times each system is measured, in alternation; every figure is the median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub pairs: u32,
    /// With --peers: measure only the groups of these origins (repeat or separate by commas) [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub origin: Vec<systems::Origin>,
    /// Skip part 2 (library scale) of the target check.
    #[arg(long)]
    pub skip_scale: bool,
    /// Skip part 1 (sequential read) of the target check.
    #[arg(long)]
    pub skip_read: bool,
    /// Working directory, kept between runs for the generated data [default: <workspace>/target/bench].
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Use this musicfs binary instead of running `cargo build --release -p musicfs`.
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Also write the figures as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Prepares the workdir and the binary, then runs the chosen mode.
pub fn run(args: &Args) -> Result<()> {
    let root = &crate::workspace_root();
    let workdir = args.workdir.clone().unwrap_or_else(|| root.join("target/bench"));
    std::fs::create_dir_all(&workdir).with_context(|| format!("creating {}", workdir.display()))?;
    let workdir = workdir.canonicalize().with_context(|| format!("resolving {}", workdir.display()))?;
    clear_leftover_mounts(&workdir);
    let binary = match &args.binary {
        Some(binary) => std::path::absolute(binary).context("resolving --binary")?,
        None => crate::demo::build_musicfs(root, true)?,
    };
    if args.peers {
        let options = peers::Options {
            size_mib: args.size_mib.unwrap_or(256),
            tracks: args.tracks.unwrap_or(20_000),
            pairs: args.pairs as usize,
            origins: args.origin.clone(),
            workdir,
            binary,
            json: args.json.clone(),
        };
        peers::run(&options)
    } else {
        let sizes = (args.size_mib.unwrap_or(512), args.tracks.unwrap_or(100_000));
        targets::run(args, sizes, &workdir, &binary)
    }
}

/// Unmounts whatever an interrupted earlier run left mounted under the workdir.
fn clear_leftover_mounts(workdir: &std::path::Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let prefix = format!("{}/", workdir.display());
    for line in mountinfo.lines() {
        let Some(point) = line.split(' ').nth(4).map(|p| p.replace("\\040", " ")) else { continue };
        let point = PathBuf::from(point);
        if point.starts_with(&prefix) && is_fuse_mounted(&point) {
            println!("clearing a mount left by an earlier run: {}", point.display());
            force_unmount(&point);
        }
    }
}
