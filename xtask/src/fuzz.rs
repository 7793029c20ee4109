//! `cargo xtask fuzz`: the property tests that take hostile input (tags → path components, and the tree
//! across add / change / remove / restart) run with many more cases than CI gives them, in a release
//! build. They are proptest generators, not coverage-guided fuzzing: cargo-fuzz and bolero's libFuzzer
//! engine need a nightly compiler, which this project does not require. A failure prints proptest's
//! smallest failing input; make it a unit test beside the code it broke.

use anyhow::{Result, ensure};
use std::process::Command;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Cases per property (CI runs 512 and 64).
    #[arg(long, default_value_t = 20_000)]
    pub cases: u64,
}

/// Each property test target, by package and test file.
const TARGETS: [(&str, &str); 2] = [("musicfs-meta", "names_model"), ("musicfs-meta", "tree_model")];

pub fn run(args: &Args) -> Result<()> {
    for (package, test) in TARGETS {
        let started = Instant::now();
        println!("== {package} {test}: {} cases", args.cases);
        let status = Command::new(env!("CARGO"))
            .current_dir(crate::workspace_root())
            // Plain cargo test: nextest's per-test timeout would cut a long run short.
            .args(["test", "--release", "-p", package, "--test", test])
            .env("PROPTEST_CASES", args.cases.to_string())
            .status()?;
        ensure!(status.success(), "{package} {test} failed: the smallest failing input is printed above");
        println!("   {} cases in {:.1} s", args.cases, started.elapsed().as_secs_f64());
    }
    Ok(())
}
