//! `cargo xtask fuzz`: the property tests that take hostile input run with many more cases than CI gives
//! them, in a release build: tags → path components and the tree across add / change / remove / restart
//! (musicfs-meta), config files (musicfs-core), S3 keys and SFTP names (musicfs-origins), damaged manifests
//! (musicfs-cas). They are proptest generators, not coverage-guided fuzzing: cargo-fuzz and bolero's
//! libFuzzer engine need a nightly compiler, which this project does not require. A failure prints
//! proptest's smallest failing input; make it a unit test beside the code it broke.

use anyhow::{Result, ensure};
use std::process::Command;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Cases per property (CI runs 512 and 64).
    #[arg(long, default_value_t = 20_000)]
    pub cases: u64,
}

/// Each property test target, by package and test file, and the share of `--cases` it runs (a damaged
/// manifest costs an ingest per case).
const TARGETS: [(&str, &str, u64); 5] = [
    ("musicfs-meta", "names_model", 1),
    ("musicfs-meta", "tree_model", 1),
    ("musicfs-core", "config_fuzz", 1),
    ("musicfs-origins", "names_fuzz", 1),
    ("musicfs-cas", "manifest_fuzz", 50),
];

pub fn run(args: &Args) -> Result<()> {
    for (package, test, share) in TARGETS {
        let started = Instant::now();
        let cases = (args.cases / share).max(1);
        println!("== {package} {test}: {cases} cases");
        let status = Command::new(env!("CARGO"))
            .current_dir(crate::workspace_root())
            // Plain cargo test: nextest's per-test timeout would cut a long run short.
            .args(["test", "--release", "-p", package, "--test", test])
            .env("PROPTEST_CASES", cases.to_string())
            .status()?;
        ensure!(status.success(), "{package} {test} failed: the smallest failing input is printed above");
        println!("   {cases} cases in {:.1} s", started.elapsed().as_secs_f64());
    }
    Ok(())
}
