//! `cargo xtask sample-library DIR`: writes a sample music library with
//! [`musicfs_test_utils::sample::generate`] and optionally its JSON manifest.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use musicfs_test_utils::sample::{self, SampleOptions};

/// Options of `cargo xtask sample-library`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write the library into (created if missing).
    pub dir: PathBuf,
    /// Number of ordinary, well-tagged tracks.
    #[arg(long, default_value_t = SampleOptions::default().tracks)]
    pub tracks: usize,
    /// Leave out the hostile files (bad tags, bad names, garbage).
    #[arg(long)]
    pub no_hostile: bool,
    /// Length of every track, in seconds.
    #[arg(long, default_value_t = SampleOptions::default().seconds)]
    pub seconds: f32,
    /// Also write the list of generated files and their tags as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
}

/// Generates the library, writes the manifest if asked, prints one summary line.
pub fn run(args: &Args) -> Result<()> {
    let opts = SampleOptions { tracks: args.tracks, hostile: !args.no_hostile, seconds: args.seconds };
    let started = Instant::now();
    let tracks = sample::generate(&args.dir, &opts)
        .with_context(|| format!("generating a sample library in {}", args.dir.display()))?;
    let elapsed = started.elapsed();

    if let Some(manifest) = &args.manifest {
        let file =
            std::fs::File::create(manifest).with_context(|| format!("creating manifest {}", manifest.display()))?;
        let mut out = BufWriter::new(file);
        serde_json::to_writer_pretty(&mut out, &tracks)
            .with_context(|| format!("writing manifest {}", manifest.display()))?;
        out.write_all(b"\n")
            .and_then(|()| out.flush())
            .with_context(|| format!("writing manifest {}", manifest.display()))?;
    }

    let hostile = tracks.iter().filter(|t| t.hostile.is_some()).count();
    println!(
        "sample-library: wrote {} files ({} ordinary, {hostile} hostile) into {} in {:.2} s",
        tracks.len(),
        tracks.len() - hostile,
        args.dir.display(),
        elapsed.as_secs_f64()
    );
    Ok(())
}
