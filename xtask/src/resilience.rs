//! `cargo xtask resilience`: runs every layer of the resilience suite this machine can run, then writes the
//! coverage report — one row per failure mode of docs/failure-modes.toml, with the layers it requires, the
//! tests that prove it and their results — as Markdown and a self-contained HTML page under
//! `target/resilience/`, linking the side-by-side benchmark's `target/bench/report.html` when it exists. Modes
//! without tests show as missing, never hidden. Exits non-zero when a test fails.

use anyhow::{Context, Result, bail};
use musicfs_test_utils::coverage::{self, LAYERS, Mode, Proof};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only these layers (comma-separated, e.g. L1,L2); the others are reported as not run.
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<String>>,
    /// Where the report goes.
    #[arg(long, default_value = "target/resilience")]
    pub out: PathBuf,
}

/// Which test binaries make up each layer run by nextest. L4 comes from `cargo xtask system-test`.
fn layer_filter(layer: &str) -> Option<&'static str> {
    match layer {
        "L1" => Some("not (binary(process) | binary(e2e) | binary(integration))"),
        "L2" => Some("binary(process) | binary(e2e)"),
        "L3" => Some("binary(integration)"),
        _ => None,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
}

#[derive(Clone, Debug)]
pub struct TestResult {
    pub outcome: Outcome,
    pub seconds: f64,
}

/// Test function name (last path segment) → result, from a nextest JUnit file.
pub fn parse_junit(xml: &str) -> HashMap<String, TestResult> {
    let mut out = HashMap::new();
    for piece in xml.split("<testcase ").skip(1) {
        let attr = |name: &str| {
            let key = format!("{name}=\"");
            piece.split(&key).nth(1).and_then(|rest| rest.split('"').next()).map(str::to_owned)
        };
        let Some(name) = attr("name") else { continue };
        let body = piece.split("</testcase>").next().unwrap_or(piece);
        let failed = body.contains("<failure") || body.contains("<error");
        let seconds = attr("time").and_then(|t| t.parse().ok()).unwrap_or(0.0);
        let test_fn = name.rsplit("::").next().unwrap_or(&name).to_owned();
        out.insert(test_fn, TestResult { outcome: if failed { Outcome::Fail } else { Outcome::Pass }, seconds });
    }
    out
}

struct LayerRun {
    layer: &'static str,
    wall: Option<Duration>,
    results: HashMap<String, TestResult>,
    note: String,
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run_layer(root: &Path, layer: &'static str, filter: &str) -> Result<LayerRun> {
    let junit = root.join("target/nextest/resilience/junit.xml");
    let _ = std::fs::remove_file(&junit);
    println!("\n== {layer}: cargo nextest run -E '{filter}'");
    let started = Instant::now();
    let status = cargo()
        .args([
            "nextest",
            "run",
            "--workspace",
            "--all-features",
            "--profile",
            "resilience",
            "--no-fail-fast",
            "-E",
            filter,
        ])
        .current_dir(root)
        .status()
        .context("running cargo nextest (install it with `cargo install cargo-nextest`)")?;
    let wall = started.elapsed();
    let xml = std::fs::read_to_string(&junit).unwrap_or_default();
    let results = parse_junit(&xml);
    let note = if results.is_empty() && !status.success() {
        format!("nextest failed to run ({status})")
    } else {
        String::new()
    };
    Ok(LayerRun { layer, wall: Some(wall), results, note })
}

/// L4: boots the real unit under systemd (nspawn) when this machine can, then reads the probe's results.
fn run_system_layer(root: &Path) -> LayerRun {
    println!("\n== L4: cargo xtask system-test");
    let started = Instant::now();
    let _ = std::fs::remove_file(root.join("target/system-test/results.json"));
    let outcome = crate::system_test::run_system_test(&crate::system_test::Args {
        shell: false,
        scenario: "all".into(),
        kills: None,
        rootfs_cache: "/var/cache/musicfs-system-test".into(),
    });
    let mut run = system_results(root);
    run.wall = Some(started.elapsed());
    if let Err(e) = outcome {
        run.note = format!("{} — {e:#}", run.note);
    }
    run
}

/// System-layer results written by `cargo xtask system-test`: scenario → pass, seconds, ids.
fn system_results(root: &Path) -> LayerRun {
    let path = root.join("target/system-test/results.json");
    let mut results = HashMap::new();
    let note = match std::fs::read_to_string(&path) {
        Ok(text) => match serde_json::from_str::<Vec<serde_json::Value>>(&text) {
            Ok(rows) => {
                for row in rows {
                    let Some(name) = row["test"].as_str() else { continue };
                    let outcome = if row["pass"].as_bool() == Some(true) { Outcome::Pass } else { Outcome::Fail };
                    results.insert(
                        name.to_owned(),
                        TestResult { outcome, seconds: row["seconds"].as_f64().unwrap_or(0.0) },
                    );
                }
                format!("from {}", path.display())
            }
            Err(e) => format!("unreadable {}: {e}", path.display()),
        },
        Err(_) => "not run: `cargo xtask system-test` writes these results".into(),
    };
    LayerRun { layer: "L4", wall: None, results, note }
}

#[derive(Debug)]
struct Cell {
    status: &'static str,
    tests: Vec<(String, Option<TestResult>)>,
}

fn cell(proofs: &[&Proof], runs: &BTreeMap<&str, LayerRun>, layer: &str) -> Cell {
    let tests: Vec<(String, Option<TestResult>)> = proofs
        .iter()
        .filter(|p| p.layer == layer)
        .map(|p| (p.test_fn.clone(), runs.get(layer).and_then(|r| r.results.get(&p.test_fn).cloned())))
        .collect();
    let status = if tests.is_empty() {
        "missing"
    } else if tests.iter().any(|(_, r)| matches!(r, Some(TestResult { outcome: Outcome::Fail, .. }))) {
        "fail"
    } else if tests.iter().any(|(_, r)| r.is_none()) {
        "not run"
    } else {
        "pass"
    };
    Cell { status, tests }
}

pub fn run(args: &Args) -> Result<()> {
    let root = crate::workspace_root();
    let modes = coverage::load_catalogue(&root)?;
    let proofs = coverage::scan_proofs(&root)?;
    let wanted: Vec<String> = args.layers.clone().unwrap_or_else(|| LAYERS.iter().map(|l| l.to_string()).collect());

    println!("== building every test binary once (not counted in the layer times)");
    let status =
        cargo().args(["nextest", "run", "--workspace", "--all-features", "--no-run"]).current_dir(&root).status()?;
    if !status.success() {
        bail!("the test build failed");
    }
    let mut runs: BTreeMap<&str, LayerRun> = BTreeMap::new();
    for layer in LAYERS {
        let run = match layer_filter(layer) {
            Some(filter) if wanted.iter().any(|w| w == layer) => run_layer(&root, layer, filter)?,
            Some(_) => LayerRun { layer, wall: None, results: HashMap::new(), note: "skipped (--layers)".into() },
            None if wanted.iter().any(|w| w == layer) => run_system_layer(&root),
            None => system_results(&root),
        };
        runs.insert(layer, run);
    }

    let mut rows = Vec::new();
    let mut proven = 0;
    for mode in &modes {
        let mine: Vec<&Proof> = proofs.iter().filter(|p| p.ids.contains(&mode.id)).collect();
        let cells: Vec<(String, Cell)> = LAYERS.iter().map(|l| (l.to_string(), cell(&mine, &runs, l))).collect();
        let ok = mode.layers.iter().all(|l| cells.iter().any(|(cl, c)| cl == l && c.status == "pass"));
        proven += usize::from(ok);
        rows.push((mode, cells, ok));
    }
    let failures: Vec<String> = runs
        .values()
        .flat_map(|r| {
            r.results.iter().filter(|(_, t)| t.outcome == Outcome::Fail).map(|(n, _)| format!("{} {n}", r.layer))
        })
        .collect();

    let out = root.join(&args.out);
    std::fs::create_dir_all(&out)?;
    let (mut md, mut page) =
        (markdown(&rows, &runs, proven, modes.len(), &failures), html(&rows, &runs, proven, modes.len(), &failures));
    if let Some(link) = bench_report_link(&root, &out) {
        md += &format!("\nPerformance side by side with sshfs, rclone, s3fs and bindfs: [{link}]({link})\n");
        let paragraph = format!(
            "<p>Performance side by side with sshfs, rclone, s3fs and bindfs: <a href=\"{0}\">{0}</a></p>",
            esc(&link)
        );
        page = page.replace("</body>", &format!("{paragraph}</body>"));
    }
    if let Some(line) = exposure_line(&root) {
        md += &format!("\n{line}\n");
        page = page.replace("</body>", &format!("<p>{}</p></body>", esc(&line)));
    }
    if root.join("target/mutants/report.md").is_file() {
        let link = if out.parent() == Some(root.join("target").as_path()) {
            "../mutants/report.md".to_owned()
        } else {
            root.join("target/mutants/report.md").display().to_string()
        };
        md += &format!("\nMutation score of the resilience crates (cargo xtask mutants): [{link}]({link})\n");
        let paragraph = format!("<p>Mutation score (cargo xtask mutants): <a href=\"{0}\">{0}</a></p>", esc(&link));
        page = page.replace("</body>", &format!("{paragraph}</body>"));
    }
    std::fs::write(out.join("report.md"), &md)?;
    std::fs::write(out.join("report.html"), page)?;

    println!("\n== layer times (wall, after the build)");
    for run in runs.values() {
        let passed = run.results.values().filter(|r| r.outcome == Outcome::Pass).count();
        let failed = run.results.len() - passed;
        match run.wall {
            Some(wall) => println!(
                "   {}: {:>6.1} s   {passed} passed, {failed} failed {}",
                run.layer,
                wall.as_secs_f64(),
                run.note
            ),
            None => println!("   {}:      -     {passed} passed, {failed} failed   {}", run.layer, run.note),
        }
    }
    println!("   report: {}  and  {}", out.join("report.md").display(), out.join("report.html").display());
    println!("proven: {proven}/{} failure modes", modes.len());
    if !failures.is_empty() {
        bail!("{} test(s) failed: {}", failures.len(), failures.join(", "));
    }
    Ok(())
}

/// The unit's exposure as the system layer's `security` scenario measured it on the live unit (issue 16),
/// with what systemd still flags; None before `cargo xtask system-test` has run.
fn exposure_line(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join("target/system-test/results.json")).ok()?;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&text).ok()?;
    let security = rows.iter().find(|row| row["scenario"] == "security")?;
    let flagged: Vec<&str> = security["flagged"].as_array()?.iter().filter_map(|f| f.as_str()).collect();
    Some(format!(
        "Unit exposure (systemd-analyze security on the live unit, system layer): {} (budget {}); still flagged: {}",
        security["exposure"],
        security["budget"],
        flagged.join(", ")
    ))
}

/// A link from the report in `out` to the one `cargo xtask bench --peers` wrote, if it has: relative when both
/// are in the workspace's target directory, else absolute.
fn bench_report_link(root: &Path, out: &Path) -> Option<String> {
    let bench = root.join("target/bench/report.html");
    if !bench.is_file() {
        return None;
    }
    let target = root.join("target");
    Some(if out.parent() == Some(target.as_path()) {
        "../bench/report.html".into()
    } else {
        bench.display().to_string()
    })
}

type Row<'a> = (&'a Mode, Vec<(String, Cell)>, bool);

fn symbol(status: &str) -> &'static str {
    match status {
        "pass" => "✅ pass",
        "fail" => "❌ FAIL",
        "not run" => "⏸ not run",
        _ => "— missing",
    }
}

fn markdown(
    rows: &[Row<'_>],
    runs: &BTreeMap<&str, LayerRun>,
    proven: usize,
    total: usize,
    failures: &[String],
) -> String {
    let mut s = String::from("# MusicFS resilience report\n\n");
    s += &format!(
        "**proven: {proven}/{total} failure modes** — a mode is proven when every layer it requires has passing tests.\n\n"
    );
    s += "| layer | wall time | passed | failed | note |\n|---|---|---|---|---|\n";
    for run in runs.values() {
        let passed = run.results.values().filter(|r| r.outcome == Outcome::Pass).count();
        let wall = run.wall.map_or("-".into(), |w| format!("{:.1} s", w.as_secs_f64()));
        s += &format!("| {} | {wall} | {passed} | {} | {} |\n", run.layer, run.results.len() - passed, run.note);
    }
    if !failures.is_empty() {
        s += &format!("\n**Failed tests:** {}\n", failures.join(", "));
    }
    s += "\n| ID | failure mode | requires | L1 | L2 | L3 | L4 | proven |\n|---|---|---|---|---|---|---|---|\n";
    for (mode, cells, ok) in rows {
        let mut line = format!("| {} | {} | {} |", mode.id, mode.title, mode.layers.join("+"));
        for (layer, c) in cells {
            let required = mode.layers.contains(layer);
            if c.tests.is_empty() && !required {
                line += " |";
                continue;
            }
            let tests: Vec<String> = c
                .tests
                .iter()
                .map(|(t, r)| match r {
                    Some(r) => format!("`{t}` {:.2}s", r.seconds),
                    None => format!("`{t}`"),
                })
                .collect();
            line += &format!(
                " {}{} |",
                symbol(c.status),
                if tests.is_empty() { String::new() } else { format!("<br>{}", tests.join("<br>")) }
            );
        }
        line += &format!(" {} |\n", if *ok { "yes" } else { "no" });
        s += &line;
    }
    s
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn html(rows: &[Row<'_>], runs: &BTreeMap<&str, LayerRun>, proven: usize, total: usize, failures: &[String]) -> String {
    let mut body =
        format!("<h1>MusicFS resilience report</h1><p class=big>proven: <b>{proven}/{total}</b> failure modes</p>");
    body += "<table><tr><th>layer</th><th>wall time</th><th>passed</th><th>failed</th><th>note</th></tr>";
    for run in runs.values() {
        let passed = run.results.values().filter(|r| r.outcome == Outcome::Pass).count();
        let wall = run.wall.map_or("-".into(), |w| format!("{:.1} s", w.as_secs_f64()));
        body += &format!(
            "<tr><td>{}</td><td>{wall}</td><td>{passed}</td><td>{}</td><td>{}</td></tr>",
            run.layer,
            run.results.len() - passed,
            esc(&run.note)
        );
    }
    body += "</table>";
    if !failures.is_empty() {
        body += &format!("<p class=fail>Failed: {}</p>", esc(&failures.join(", ")));
    }
    body += "<table><tr><th>ID</th><th>failure mode</th><th>requires</th><th>L1</th><th>L2</th><th>L3</th><th>L4</th><th>proven</th></tr>";
    for (mode, cells, ok) in rows {
        body += &format!(
            "<tr class={}><td>{}</td><td>{}</td><td>{}</td>",
            if *ok { "ok" } else { "no" },
            esc(&mode.id),
            esc(&mode.title),
            mode.layers.join("+")
        );
        for (layer, c) in cells {
            let required = mode.layers.contains(layer);
            let class = if c.tests.is_empty() && !required { "na".to_owned() } else { c.status.replace(' ', "") };
            let tests: String = c
                .tests
                .iter()
                .map(|(t, r)| {
                    format!(
                        "<div class=t>{}{}</div>",
                        esc(t),
                        r.as_ref().map_or(String::new(), |r| format!(" <i>{:.2}s</i>", r.seconds))
                    )
                })
                .collect();
            let label = if class == "na" { String::new() } else { c.status.to_owned() };
            body += &format!("<td class={class}><b>{label}</b>{tests}</td>");
        }
        body += &format!("<td>{}</td></tr>", if *ok { "yes" } else { "no" });
    }
    body += "</table>";
    format!(
        "<!doctype html><html><head><meta charset=utf-8><title>MusicFS resilience report</title><style>\
body{{font:14px system-ui,sans-serif;margin:2em}} table{{border-collapse:collapse;margin:1em 0}} \
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}} .pass{{background:#e3f6e3}} \
.fail{{background:#fbdada}} .missing{{background:#fff4d6}} .notrun{{background:#eee}} .na{{background:#fafafa}} \
.t{{font:11px monospace;color:#444}} .big{{font-size:18px}} .fail b,.fail{{color:#900}} tr.ok td:first-child{{font-weight:bold}}\
</style></head><body>{body}</body></html>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_results_are_read_per_test_function() {
        let xml = r#"<testsuite name="musicfs::process"><testcase name="filesystem::ok_test" classname="x" time="0.50"></testcase>
<testcase name="store::tests::bad_test" classname="y" time="1.25"><failure message="boom">x</failure></testcase></testsuite>"#;
        let results = parse_junit(xml);
        assert_eq!(results["ok_test"].outcome, Outcome::Pass);
        assert_eq!(results["bad_test"].outcome, Outcome::Fail);
        assert!((results["bad_test"].seconds - 1.25).abs() < 1e-9);
    }

    #[test]
    fn the_exposure_the_security_scenario_measured_is_reported() {
        let root = std::env::temp_dir().join(format!("musicfs-exposure-{}", std::process::id()));
        let results = root.join("target/system-test");
        std::fs::create_dir_all(&results).unwrap();
        assert_eq!(exposure_line(&root), None, "no results yet");
        let rows = r#"[{"scenario":"sigterm","pass":true},
            {"scenario":"security","pass":true,"exposure":1.3,"budget":2.0,"flagged":["PrivateNetwork=","IPAddressDeny="]}]"#;
        std::fs::write(results.join("results.json"), rows).unwrap();
        let line = exposure_line(&root).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        assert!(line.contains(": 1.3 (budget 2.0); still flagged: PrivateNetwork=, IPAddressDeny="), "{line}");
    }
}
