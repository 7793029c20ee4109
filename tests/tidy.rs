//! Tidy: the suite's bookkeeping cannot drift. Every failure mode in docs/failure-modes.toml states its
//! required behaviour, every `Proves` line names known failure modes and a real layer, proving test names
//! are unique (the report joins on them), and every failpoint is used in code, documented in
//! docs/FAILPOINTS.md and configured by at least one test.

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
