//! Tidy: the suite's bookkeeping cannot drift. Every failure mode in docs/failure-modes.toml states its
//! required behaviour, every `Proves` line names known failure modes and a real layer, proving test names
//! are unique (the report joins on them), and every failpoint is used in code, documented in
//! docs/FAILPOINTS.md and configured by at least one test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

use musicfs_test_utils::coverage::{self, LAYERS};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_proof_names_known_modes_and_a_real_layer() {
    let modes: BTreeSet<String> = coverage::load_catalogue(root()).unwrap().into_iter().map(|m| m.id).collect();
    assert!(modes.len() >= 44, "docs/failure-modes.toml lists all 44 failure modes (2.1 … 6.7, N1–N4)");
    let proofs = coverage::scan_proofs(root()).unwrap();
    assert!(!proofs.is_empty());
    let mut problems = Vec::new();
    for p in &proofs {
        if !LAYERS.contains(&p.layer.as_str()) {
            problems.push(format!("{}:{}: unknown layer `{}`", p.file.display(), p.line, p.layer));
        }
        if p.ids.is_empty() {
            problems.push(format!("{}:{}: a Proves line without ids", p.file.display(), p.line));
        }
        for id in &p.ids {
            if !modes.contains(id) {
                problems.push(format!("{}:{}: unknown failure mode `{id}`", p.file.display(), p.line));
            }
        }
    }
    let mut seen: HashMap<&str, &Path> = HashMap::new();
    for p in &proofs {
        if let Some(other) = seen.insert(&p.test_fn, &p.file) {
            problems.push(format!(
                "test `{}` proves modes in both {} and {}",
                p.test_fn,
                other.display(),
                p.file.display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_mode_states_its_behaviour() {
    let modes = coverage::load_catalogue(root()).unwrap();
    let missing: Vec<&str> = modes.iter().filter(|m| m.behaviour.trim().is_empty()).map(|m| m.id.as_str()).collect();
    assert!(missing.is_empty(), "modes without a `behaviour` in docs/failure-modes.toml: {}", missing.join(", "));
}

#[test]
fn every_failpoint_is_documented_and_used_by_a_test() {
    let in_code = coverage::failpoints_in_code(root()).unwrap();
    let documented = coverage::failpoints_documented(root()).unwrap();
    assert!(!in_code.is_empty());
    let mut problems = Vec::new();
    for name in in_code.difference(&documented) {
        problems.push(format!("failpoint `{name}` is in the code but not in docs/FAILPOINTS.md"));
    }
    for name in documented.difference(&in_code) {
        problems.push(format!("failpoint `{name}` is documented but not in the code"));
    }
    for name in &in_code {
        if !name.contains("::") || name.split("::").count() != 3 {
            problems.push(format!("failpoint `{name}` is not named area::op::effect"));
        }
        if coverage::failpoint_users(root(), name).unwrap().is_empty() {
            problems.push(format!("failpoint `{name}` is never configured by a test"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every Rust file opens with a module doc (`//!`) saying what it is for: a newcomer reads that first.
#[test]
fn every_source_file_says_what_it_is_for() {
    let mut files = coverage::test_sources(root()).unwrap();
    files.extend(rust_files(&root().join("src")));
    assert!(files.len() > 50, "found only {} Rust files", files.len());
    let undocumented: Vec<String> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().trim_start().starts_with("//!"))
        .map(|f| f.strip_prefix(root()).unwrap_or(f).display().to_string())
        .collect();
    assert!(undocumented.is_empty(), "files without a `//!` module doc:\n{}", undocumented.join("\n"));
}

/// A crate whose code holds failpoints (or `cfg(feature = "failpoints")`) has a `failpoints` feature, and the
/// root package's `failpoints` feature reaches it: otherwise a failpoints build silently leaves its failpoints
/// out, and a test that configures one passes without the fault ever happening.
#[test]
fn every_crate_with_failpoints_is_reached_by_the_root_failpoints_feature() {
    let manifest = |dir: &Path| -> toml::Table {
        toml::from_str(&std::fs::read_to_string(dir.join("Cargo.toml")).unwrap()).unwrap()
    };
    // Crate name → (its directory, its features).
    let mut crates: HashMap<String, (std::path::PathBuf, toml::Table)> = HashMap::new();
    let mut dirs: Vec<std::path::PathBuf> =
        std::fs::read_dir(root().join("crates")).unwrap().flatten().map(|e| e.path()).collect();
    dirs.push(root().join("probes"));
    for dir in dirs {
        let m = manifest(&dir);
        let name = m["package"]["name"].as_str().unwrap().to_owned();
        let features = m.get("features").and_then(|f| f.as_table()).cloned().unwrap_or_default();
        crates.insert(name, (dir, features));
    }
    let root_features = manifest(root()).get("features").and_then(|f| f.as_table()).cloned().unwrap_or_default();
    // Every `crate/failpoints` the root's `failpoints` feature turns on, directly or through other crates.
    let mut reached = BTreeSet::new();
    let mut queue: Vec<String> = root_features
        .get("failpoints")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    while let Some(item) = queue.pop() {
        let Some((krate, feature)) = item.split_once('/') else { continue };
        if !reached.insert(format!("{krate}/{feature}")) {
            continue;
        }
        if let Some(next) = crates.get(krate).and_then(|(_, f)| f.get(feature)).and_then(|v| v.as_array()) {
            queue.extend(next.iter().filter_map(|v| v.as_str().map(str::to_owned)));
        }
    }
    let mut problems = Vec::new();
    for (name, (dir, features)) in &crates {
        if name == "musicfs-test-utils" {
            continue;
        }
        let uses_failpoints = rust_files(&dir.join("src")).iter().any(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.contains("fail_point!(") || text.contains("fail::eval(") || text.contains("feature = \"failpoints\"")
        });
        if !uses_failpoints {
            continue;
        }
        if !features.contains_key("failpoints") {
            problems.push(format!("{name} uses failpoints but has no `failpoints` feature"));
        } else if !reached.contains(&format!("{name}/failpoints")) {
            problems.push(format!("{name}/failpoints is not reached from the root package's `failpoints` feature"));
        }
    }
    problems.sort();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The `.rs` files under `dir`, at any depth.
fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let (mut out, mut dirs) = (Vec::new(), vec![dir.to_owned()]);
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out
}

/// Inside each crate, imports between its modules (one per file) run one way: no module uses one that uses
/// it back, directly or around a longer circle. A circle means neither side can be read, tested or changed
/// alone. Test code (`tests.rs`, `*_tests.rs`, anything after `#[cfg(test)]`) does not count.
#[test]
fn modules_inside_a_crate_import_one_way() {
    let mut problems = Vec::new();
    let mut crate_dirs: Vec<std::path::PathBuf> =
        std::fs::read_dir(root().join("crates")).unwrap().flatten().map(|e| e.path().join("src")).collect();
    crate_dirs.extend([root().join("src"), root().join("probes/src"), root().join("xtask/src")]);
    for src in crate_dirs {
        let graph = module_imports(&src);
        for cycle in import_cycles(&graph) {
            problems.push(format!("{}: {}", src.strip_prefix(root()).unwrap().display(), cycle.join(" → ")));
        }
    }
    problems.sort();
    assert!(problems.is_empty(), "import circles between modules:\n{}", problems.join("\n"));
}

/// Module (`a`, `a::b`: one per file) → the modules it names as `crate::…` outside test code.
fn module_imports(src: &Path) -> std::collections::BTreeMap<String, BTreeSet<String>> {
    let mut texts: Vec<(String, String)> = Vec::new();
    for file in rust_files(src) {
        let rel = file.strip_prefix(src).unwrap();
        let name = rel.file_name().unwrap().to_string_lossy().into_owned();
        if name == "tests.rs" || name.ends_with("_tests.rs") || rel.components().any(|c| c.as_os_str() == "tests") {
            continue;
        }
        let mut parts: Vec<String> =
            rel.components().map(|c| c.as_os_str().to_string_lossy().trim_end_matches(".rs").to_owned()).collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        if parts == ["lib"] || parts == ["main"] {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        texts.push((parts.join("::"), text.split("#[cfg(test)]").next().unwrap_or("").to_owned()));
    }
    let modules: BTreeSet<String> = texts.iter().map(|(m, _)| m.clone()).collect();
    let mut graph: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for (module, code) in &texts {
        let uses = graph.entry(module.clone()).or_default();
        for line in code.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
            // `crate::a::b::Item`, and the groups of `use crate::{a, b::c}`.
            for piece in line.split("crate::").skip(1) {
                let paths: Vec<&str> = match piece.strip_prefix('{') {
                    Some(group) => group.split('}').next().unwrap_or("").split(',').collect(),
                    None => vec![piece],
                };
                for path in paths {
                    let segments: Vec<String> = path
                        .trim()
                        .split("::")
                        .map(|s| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect())
                        .take_while(|s: &String| !s.is_empty())
                        .collect();
                    // The longest prefix that is a module of this crate.
                    let target = (1..=segments.len())
                        .rev()
                        .map(|n| segments[..n].join("::"))
                        .find(|candidate| modules.contains(candidate));
                    if let Some(target) = target
                        && &target != module
                        && !module.starts_with(&format!("{target}::"))
                    {
                        uses.insert(target);
                    }
                }
            }
        }
    }
    graph
}

/// Every circle in the graph, each once, as a path that ends where it starts.
fn import_cycles(graph: &std::collections::BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut cycles: Vec<Vec<String>> = Vec::new();
    let mut seen_sets: BTreeSet<Vec<String>> = BTreeSet::new();
    for start in graph.keys() {
        // Depth-first search for paths from `start` back to `start` through larger names only, so each
        // circle is found once, from its smallest module.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if next == start {
                    let mut key = path.clone();
                    key.sort();
                    if seen_sets.insert(key) {
                        let mut cycle = path.clone();
                        cycle.push(start.clone());
                        cycles.push(cycle);
                    }
                } else if next > start && !path.contains(next) && path.len() < 8 {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    cycles
}
