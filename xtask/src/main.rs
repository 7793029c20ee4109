//! `cargo xtask`: the single entry point for MusicFS's heavy work, the jobs too
//! slow, too big or too tool-hungry for `cargo test` (sample libraries now;
//! benchmarks, CI and resilience runs later).
//!
//! Each subcommand lives in its own module with a clap `Args` struct and a
//! `run(args)` function; adding one means a module, a [`Command`] variant and a
//! match arm in [`main`]. The `cargo xtask` alias is in `.cargo/config.toml`.

// Developer tooling: a panic ends the command with its message; unwrap and expect are fine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bench;
mod demo;
mod fuzz;
mod mutants;
mod resilience;
mod sample_library;
mod system_test;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// MusicFS developer tasks.
#[derive(Debug, Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every layer of the resilience suite this machine can run and write the coverage report.
    Resilience(resilience::Args),
    /// The one-minute tour: sample library → mount → list → play with mpv → unmount.
    Demo(demo::Args),
    /// Boot the real unit under systemd in an nspawn container and run every probe scenario inside.
    SystemTest(system_test::Args),
    /// Write a real, playable, tagged sample music library (with hostile cases) into DIR.
    SampleLibrary(sample_library::Args),
    /// Measure read throughput and library-scale mount time and memory against MusicFS's targets.
    Bench(bench::Args),
    /// Run the property tests of hostile input (names, the tree model) with many cases, in release.
    Fuzz(fuzz::Args),
    /// Run cargo-mutants on the resilience crates and write the mutation score (target/mutants/report.md).
    Mutants(mutants::Args),
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> std::path::PathBuf {
    let xtask = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_owned()
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Demo(args) => demo::run(&args),
        Command::SystemTest(args) => system_test::run_system_test(&args),
        Command::Resilience(args) => resilience::run(&args),
        Command::SampleLibrary(args) => sample_library::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Mutants(args) => mutants::run(&args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
