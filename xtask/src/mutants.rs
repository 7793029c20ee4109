//! `cargo xtask mutants`: how many of the bugs cargo-mutants plants in the resilience code the L1 tests
//! catch. It runs cargo-mutants on the chosen crates (default: musicfs-cas, musicfs-origins, musicfs-meta
//! and musicfs-daemon; `--file` narrows it to some files), each mutant tested by the L1 tests: its crate's
//! own and the in-process suites `tests/resilience` and `tests/failpoints`, every feature on. Then it
//! writes `target/mutants/report.md`: caught, missed, timeouts and unviable per crate, the score (caught
//! and timeouts of all tested), and every missed mutant's location, which says what test is missing. The
//! resilience report links it.
//!
//! All of it is about 2 000 mutants at tens of seconds each on two cores, so a run can be one shard of
//! each crate's mutants (`--shard k/n`, cargo-mutants' round-robin split). Each run keeps its results in
//! `target/mutants/runs/<crate>-<shard>/`, and the report sums every run there by mutant name, the newest
//! result winning, and says how many of all the mutants it covers and at which commits.
//!
//! Mutants are tested in a worktree of the committed HEAD (`target/mutants/tree`) with its own target
//! directory kept between runs, so a shard costs one incremental build rather than a copy and a full one,
//! and the files being edited in the checkout are never touched. Not part of CI.

use anyhow::{Context, Result, ensure};
use std::collections::BTreeMap;
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
    /// Run one shard of the mutants, e.g. `3/8`; the report sums every shard run so far.
    #[arg(long)]
    pub shard: Option<String>,
}

pub fn run(args: &Args) -> Result<()> {
    let root = crate::workspace_root();
    let base = root.join("target/mutants");
    let tree = base.join("tree");
    let commit = git(&root, &["rev-parse", "HEAD"])?;
    prepare_tree(&root, &tree, &commit)?;

    let suffix = match (&args.shard, args.files.is_empty()) {
        (Some(shard), _) => format!("shard-{}", shard.replace('/', "-of-")),
        (None, true) => "all".to_owned(),
        (None, false) => {
            format!("files-{}", blake3::hash(args.files.join(" ").as_bytes()).to_hex().get(..8).unwrap_or(""))
        }
    };
    for package in &args.packages {
        run_package(&base, &tree, &commit, package, &suffix, args)?;
    }

    let runs = read_runs(&base.join("runs"))?;
    let total = count_all_mutants(&tree, &args.packages)?;
    let report = render(&runs, total);
    std::fs::write(base.join("report.md"), &report)?;
    print!("{report}");
    Ok(())
}

/// One cargo-mutants run over `package`'s mutants, tested by the L1 tests: the crate's own and the
/// workspace's in-process suites (`tests/resilience`, `tests/failpoints`), which prove most of what the
/// crate does against faults. Not the L2/L3 suites: they start the binary and servers, minutes a mutant.
fn run_package(base: &Path, tree: &Path, commit: &str, package: &str, suffix: &str, args: &Args) -> Result<()> {
    let name = format!("{package}-{suffix}");
    let out = base.join("runs").join(&name);
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("commit"), format!("{commit}\n"))?;
    let filter = format!("package({package}) | binary(resilience) | binary(failpoints)");
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(tree)
        .env("CARGO_TARGET_DIR", base.join("target"))
        .args(["mutants", "--in-place", "--no-shuffle", "--all-features", "--test-tool", "nextest"])
        .args(["--package", package, "--test-package", package, "--test-package", "musicfs"])
        .args(["--cargo-test-arg=-E", &format!("--cargo-test-arg={filter}")])
        // A mutant that hangs is killed after four minutes at least: the machine is shared, and a test starved
        // of CPU for a minute is not a hang (a timeout counts as caught).
        .args(["--minimum-test-timeout", "240", "--output"])
        .arg(&out);
    for file in &args.files {
        command.args(["--file", file]);
    }
    if let Some(shard) = &args.shard {
        command.args(["--shard", shard]);
    }
    println!(
        "== cargo mutants on {package} {} ({name}, commit {})",
        args.files.join(" "),
        commit.get(..12).unwrap_or(commit)
    );
    let started = Instant::now();
    let status = command.status().context("running cargo mutants (cargo install --locked cargo-mutants)")?;
    // cargo-mutants exits 2 when mutants were missed and 3 on timeouts: both are results, not failures.
    ensure!(matches!(status.code(), Some(0 | 2 | 3)), "cargo mutants on {package} failed: {status}");
    println!("== {name} took {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("git").current_dir(dir).args(args).output().context("running git")?;
    ensure!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A clean worktree at `commit`: added the first time, then moved and scrubbed (a run cut off mid-mutant
/// may have left a file mutated).
fn prepare_tree(root: &Path, tree: &Path, commit: &str) -> Result<()> {
    if !tree.join(".git").exists() {
        let _ = git(root, &["worktree", "prune"]);
        git(root, &["worktree", "add", "--detach", &tree.to_string_lossy(), commit])?;
    }
    git(tree, &["checkout", "--force", "--detach", commit])?;
    git(tree, &["clean", "-fdq"])?;
    Ok(())
}

/// How many mutants the packages hold in all (`cargo mutants --list`), the report's denominator.
fn count_all_mutants(tree: &Path, packages: &[String]) -> Result<usize> {
    let mut command = Command::new(env!("CARGO"));
    command.current_dir(tree).args(["mutants", "--list"]);
    for package in packages {
        command.args(["--package", package]);
    }
    let output = command.output().context("cargo mutants --list")?;
    ensure!(output.status.success(), "cargo mutants --list: {}", String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8_lossy(&output.stdout).lines().filter(|l| !l.trim().is_empty()).count())
}

/// One mutant's result: its crate, its outcome, and the commit it was tested at.
#[derive(Debug, Clone, PartialEq)]
struct Tested {
    package: String,
    outcome: Outcome,
    commit: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Caught,
    Missed,
    Timeout,
    Unviable,
}

/// Every mutant tested by any run, by name; where two runs tested one mutant, the later run's result.
fn read_runs(dir: &Path) -> Result<BTreeMap<String, Tested>> {
    let mut runs: Vec<(std::time::SystemTime, std::path::PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path().join("mutants.out/outcomes.json");
        if let Ok(meta) = std::fs::metadata(&path) {
            runs.push((meta.modified()?, path));
        }
    }
    runs.sort();
    let mut all = BTreeMap::new();
    for (_, path) in runs {
        let commit_file = path.parent().and_then(Path::parent).map(|p| p.join("commit"));
        let commit = commit_file.and_then(|f| std::fs::read_to_string(f).ok()).unwrap_or_default();
        let text = std::fs::read_to_string(&path)?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        all.extend(parse_outcomes(&json, commit.trim()));
    }
    Ok(all)
}

/// The mutants in one cargo-mutants `outcomes.json` (the baseline and unfinished entries left out).
fn parse_outcomes(json: &serde_json::Value, commit: &str) -> Vec<(String, Tested)> {
    let outcomes = json["outcomes"].as_array().map(Vec::as_slice).unwrap_or_default();
    outcomes
        .iter()
        .filter_map(|o| {
            let mutant = &o["scenario"]["Mutant"];
            let outcome = match o["summary"].as_str()? {
                "CaughtMutant" => Outcome::Caught,
                "MissedMutant" => Outcome::Missed,
                "Timeout" => Outcome::Timeout,
                "Unviable" => Outcome::Unviable,
                _ => return None,
            };
            let result = Tested {
                package: mutant["package"].as_str()?.to_owned(),
                outcome,
                commit: commit.get(..12).unwrap_or(commit).to_owned(),
            };
            Some((mutant["name"].as_str()?.to_owned(), result))
        })
        .collect()
}

fn render(all: &BTreeMap<String, Tested>, total: usize) -> String {
    #[derive(Default)]
    struct Row {
        caught: usize,
        missed: usize,
        timeout: usize,
        unviable: usize,
    }
    let mut rows: BTreeMap<&str, Row> = BTreeMap::new();
    for r in all.values() {
        for key in [r.package.as_str(), "all"] {
            let row = rows.entry(key).or_default();
            match r.outcome {
                Outcome::Caught => row.caught += 1,
                Outcome::Missed => row.missed += 1,
                Outcome::Timeout => row.timeout += 1,
                Outcome::Unviable => row.unviable += 1,
            }
        }
    }
    let commits: std::collections::BTreeSet<&str> = all.values().map(|r| r.commit.as_str()).collect();
    let mut md = format!(
        "# Mutation score\n\n`cargo xtask mutants`: {} of the {total} mutants of the resilience crates tested so far \
         (commits {}).\n\n| crate | caught | missed | timeout | unviable | score |\n|---|---|---|---|---|---|\n",
        all.len(),
        commits.into_iter().collect::<Vec<_>>().join(", ")
    );
    for (name, row) in rows.iter().filter(|(k, _)| **k != "all").chain(rows.get_key_value("all")) {
        let tested = row.caught + row.missed + row.timeout;
        let score = if tested == 0 { 0.0 } else { 100.0 * (row.caught + row.timeout) as f64 / tested as f64 };
        md += &format!(
            "| {name} | {} | {} | {} | {} | {score:.1} % |\n",
            row.caught, row.missed, row.timeout, row.unviable
        );
    }
    md += "\nA timeout counts as caught (the mutant hung a test); unviable mutants do not build and are not \
           counted. The score's goal on resilience code is 85 %.\n";
    let list = |outcome: Outcome| all.iter().filter(move |(_, r)| r.outcome == outcome).map(|(name, _)| name);
    if list(Outcome::Missed).next().is_some() {
        md += "\n## Missed: each wants a test\n\n";
        for name in list(Outcome::Missed) {
            md += &format!("- `{name}`\n");
        }
    }
    if list(Outcome::Timeout).next().is_some() {
        md += "\n## Timed out (counted as caught; worth a second look on a quiet machine)\n\n";
        for name in list(Outcome::Timeout) {
            md += &format!("- `{name}`\n");
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(name: &str, package: &str, summary: &str) -> serde_json::Value {
        serde_json::json!({"scenario": {"Mutant": {"name": name, "package": package}}, "summary": summary})
    }

    #[test]
    fn the_score_counts_timeouts_as_caught_per_crate_and_lists_what_was_missed() {
        let mut outcomes = vec![serde_json::json!({"scenario": "Baseline", "summary": "Success"})];
        for i in 0..7 {
            outcomes.push(outcome(&format!("src/c.rs:{i}:1: replace"), "musicfs-cas", "CaughtMutant"));
        }
        outcomes.push(outcome("src/a.rs:3:5: replace f -> bool with true", "musicfs-cas", "MissedMutant"));
        outcomes.push(outcome("src/t.rs:1:1: replace g", "musicfs-meta", "Timeout"));
        outcomes.push(outcome("src/u.rs:1:1: replace h", "musicfs-meta", "Unviable"));
        let json = serde_json::json!({ "outcomes": outcomes });
        let all: BTreeMap<_, _> = parse_outcomes(&json, "0123456789abcdef").into_iter().collect();
        assert_eq!(all.len(), 10, "the baseline is not a mutant");
        let md = render(&all, 40);
        assert!(md.contains("10 of the 40 mutants"), "{md}");
        assert!(md.contains("| musicfs-cas | 7 | 1 | 0 | 0 | 87.5 % |"), "{md}");
        assert!(md.contains("| musicfs-meta | 0 | 0 | 1 | 1 | 100.0 % |"), "{md}");
        assert!(md.contains("| all | 7 | 1 | 1 | 1 | 88.9 % |"), "{md}");
        assert!(md.contains("commits 0123456789ab"), "{md}");
        assert!(md.contains("- `src/a.rs:3:5: replace f -> bool with true`"), "{md}");
        assert!(md.contains("- `src/t.rs:1:1: replace g`"), "{md}");
    }

    #[test]
    fn a_later_run_of_the_same_mutant_replaces_the_earlier_result() {
        let first = serde_json::json!({ "outcomes": [outcome("m", "musicfs-cas", "MissedMutant")] });
        let second = serde_json::json!({ "outcomes": [outcome("m", "musicfs-cas", "CaughtMutant")] });
        let mut all = BTreeMap::new();
        all.extend(parse_outcomes(&first, "a"));
        all.extend(parse_outcomes(&second, "b"));
        assert_eq!(all.len(), 1);
        assert_eq!(all["m"].outcome, Outcome::Caught);
        assert_eq!(all["m"].commit, "b");
    }
}
