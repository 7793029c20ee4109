//! `cargo xtask mutants`: how many of the bugs cargo-mutants plants in the resilience code the L1 tests
//! catch. It runs cargo-mutants on the chosen crates (default: musicfs-cas, musicfs-origins, musicfs-meta
//! and musicfs-daemon; `--file` narrows it to some files), each mutant tested by its crate's own tests, then
//! writes `target/mutants/report.md`: caught, missed, timeouts and unviable per run, the score (caught of
//! caught + missed + timeouts), and every missed mutant's location, which says what test is missing. The
//! resilience report links it. Slow on two cores (tens of seconds a mutant): not part of CI.

use anyhow::{Context, Result, ensure};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Crates to mutate.
    #[arg(long = "package", default_values_t = ["musicfs-cas".to_owned(), "musicfs-origins".to_owned(), "musicfs-meta".to_owned(), "musicfs-daemon".to_owned()])]
    pub packages: Vec<String>,
    /// Only mutants in files matching these globs (cargo-mutants' `--file`), e.g. `crates/musicfs-cas/src/origin_read.rs`.
    #[arg(long = "file")]
    pub files: Vec<String>,
}

/// What one run found, from the lists cargo-mutants writes.
#[derive(Debug, Default)]
struct Counts {
    caught: usize,
    missed: Vec<String>,
    timeout: usize,
    unviable: usize,
}

pub fn run(args: &Args) -> Result<()> {
    let root = crate::workspace_root();
    let out = root.join("target/mutants");
    std::fs::create_dir_all(&out)?;
    let started = Instant::now();
    let mut command = Command::new(env!("CARGO"));
    command.current_dir(&root).args(["mutants", "--no-shuffle", "--output"]).arg(&out);
    for package in &args.packages {
        command.args(["--package", package]);
    }
    for file in &args.files {
        command.args(["--file", file]);
    }
    println!("== cargo mutants on {} {}", args.packages.join(", "), args.files.join(" "));
    let status = command.status().context("running cargo mutants (cargo install --locked cargo-mutants)")?;
    // cargo-mutants exits 2 when mutants were missed and 3 on timeouts: both are results, not failures.
    ensure!(matches!(status.code(), Some(0 | 2 | 3)), "cargo mutants failed: {status}");
    let counts = read_counts(&out.join("mutants.out"))?;
    let report = render(args, &counts, started.elapsed().as_secs_f64());
    std::fs::write(out.join("report.md"), &report)?;
    print!("{report}");
    Ok(())
}

fn read_counts(dir: &Path) -> Result<Counts> {
    let lines = |name: &str| -> Result<Vec<String>> {
        let path = dir.join(name);
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect())
    };
    Ok(Counts {
        caught: lines("caught.txt")?.len(),
        missed: lines("missed.txt")?,
        timeout: lines("timeout.txt")?.len(),
        unviable: lines("unviable.txt")?.len(),
    })
}

fn render(args: &Args, c: &Counts, seconds: f64) -> String {
    let tested = c.caught + c.missed.len() + c.timeout;
    let score = if tested == 0 { 0.0 } else { 100.0 * (c.caught + c.timeout) as f64 / tested as f64 };
    let mut md = format!(
        "# Mutation score\n\n`cargo xtask mutants` on {}{}, in {:.0} s.\n\n\
         | caught | missed | timeout | unviable | score |\n|---|---|---|---|---|\n| {} | {} | {} | {} | {:.1} % |\n\n\
         A timeout counts as caught (the mutant hung a test). The score's goal on resilience code is 85 %.\n",
        args.packages.join(", "),
        if args.files.is_empty() { String::new() } else { format!(" ({})", args.files.join(", ")) },
        seconds,
        c.caught,
        c.missed.len(),
        c.timeout,
        c.unviable,
        score
    );
    if !c.missed.is_empty() {
        md += "\n## Missed: each wants a test\n\n";
        for m in &c.missed {
            md += &format!("- `{m}`\n");
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_score_counts_timeouts_as_caught_and_lists_what_was_missed() {
        let args = Args { packages: vec!["musicfs-cas".into()], files: vec![] };
        let counts = Counts {
            caught: 7,
            missed: vec!["src/a.rs:3:5: replace f -> bool with true".into()],
            timeout: 1,
            unviable: 4,
        };
        let md = render(&args, &counts, 12.0);
        assert!(md.contains("| 7 | 1 | 1 | 4 | 88.9 % |"), "{md}");
        assert!(md.contains("- `src/a.rs:3:5: replace f -> bool with true`"), "{md}");
    }
}
