//! The suite's bookkeeping, read from the repository itself: the failure-mode catalogue
//! (`docs/failure-modes.toml`), which tests prove which modes at which layer (`/// Proves L<n>: <ids>` lines
//! in test doc comments), and the failpoints used in code, documented in `docs/FAILPOINTS.md` and
//! configured by tests. The tidy test and `cargo xtask resilience` both read it from here.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub const LAYERS: [&str; 4] = ["L1", "L2", "L3", "L4"];

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Mode {
    pub id: String,
    pub title: String,
    pub layers: Vec<String>,
    /// What MusicFS must do when this failure happens. Defaults to empty so that the tidy test, not the
    /// parser, reports a mode that lacks it.
    #[serde(default)]
    pub behaviour: String,
}

#[derive(Deserialize)]
struct Catalogue {
    mode: Vec<Mode>,
}

pub fn load_catalogue(root: &Path) -> Result<Vec<Mode>> {
    let path = root.join("docs/failure-modes.toml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let catalogue: Catalogue = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(catalogue.mode)
}

/// One test's claim: this test function proves these modes at this layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    pub test_fn: String,
    pub file: PathBuf,
    pub line: usize,
    pub layer: String,
    pub ids: Vec<String>,
}

/// Rust files that may hold tests: `tests/`, `crates/*/src`, `crates/*/tests`, `probes/`, `xtask/`.
pub fn test_sources(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.join("tests"), root.join("probes"), root.join("xtask")];
    if let Ok(crates) = std::fs::read_dir(root.join("crates")) {
        dirs.extend(crates.flatten().map(|c| c.path()));
    }
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Parses `/// Proves L<n>: a, b` lines and the test function each belongs to.
pub fn scan_proofs(root: &Path) -> Result<Vec<Proof>> {
    let mut proofs = Vec::new();
    for file in test_sources(root)? {
        let text = std::fs::read_to_string(&file)?;
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(rest) = line.trim().strip_prefix("/// Proves ") else { continue };
            let Some((layer, ids)) = rest.split_once(':') else {
                bail!("{}:{}: expected `/// Proves L<n>: <ids>`", file.display(), i + 1);
            };
            // The item the doc comment belongs to: the first line after it that is not doc or attribute.
            let item = lines[i + 1..]
                .iter()
                .map(|l| l.trim())
                .find(|l| !(l.starts_with("///") || l.starts_with("#[") || l.starts_with("//") || l.is_empty()))
                .unwrap_or("");
            let mut decl = item;
            for prefix in ["pub(crate) ", "pub ", "async ", "unsafe "] {
                decl = decl.strip_prefix(prefix).unwrap_or(decl);
            }
            let test_fn = decl
                .strip_prefix("fn ")
                .and_then(|after| after.split(['(', '<']).next())
                .map(str::to_owned)
                .with_context(|| {
                    format!("{}:{}: a Proves line must document a test function, found `{item}`", file.display(), i + 1)
                })?;
            proofs.push(Proof {
                test_fn,
                file: file.strip_prefix(root).unwrap_or(&file).to_owned(),
                line: i + 1,
                layer: layer.trim().to_owned(),
                ids: ids.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect(),
            });
        }
    }
    Ok(proofs)
}

/// Failpoint names in the product's library code (`fail_point!("…"` and `fail::eval("…"`); test tooling
/// (this crate) is not product code.
pub fn failpoints_in_code(root: &Path) -> Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for file in test_sources(root)? {
        let rel = file.strip_prefix(root).unwrap_or(&file);
        let product = rel.starts_with("crates") && !rel.starts_with("crates/musicfs-test-utils");
        if !(product && rel.components().nth(2).is_some_and(|c| c.as_os_str() == "src")) {
            continue;
        }
        let text = std::fs::read_to_string(&file)?;
        for marker in ["fail_point!(\"", "fail::eval(\""] {
            for piece in text.split(marker).skip(1) {
                if let Some(name) = piece.split('"').next() {
                    names.insert(name.to_owned());
                }
            }
        }
    }
    Ok(names)
}

/// Failpoint names listed in the first column of the table in `docs/FAILPOINTS.md`.
pub fn failpoints_documented(root: &Path) -> Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(root.join("docs/FAILPOINTS.md")).context("reading docs/FAILPOINTS.md")?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect())
}

/// Test files (not library code) that mention a failpoint name in a string.
pub fn failpoint_users(root: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let needle = format!("\"{name}");
    let mut users = Vec::new();
    for file in test_sources(root)? {
        let rel = file.strip_prefix(root).unwrap_or(&file).to_owned();
        let in_tests =
            rel.starts_with("tests") || rel.starts_with("probes") || rel.components().any(|c| c.as_os_str() == "tests");
        if in_tests && std::fs::read_to_string(&file)?.contains(&needle) {
            users.push(rel);
        }
    }
    Ok(users)
}
