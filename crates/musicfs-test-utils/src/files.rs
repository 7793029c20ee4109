//! Small file helpers shared by tests: walking a mount, timing a read, finding chunk files, writing a config.

use anyhow::Result;
use std::path::{Path, PathBuf};

/// Reads a whole file, timed.
pub fn timed_read(path: &Path) -> (std::io::Result<Vec<u8>>, std::time::Duration) {
    let started = std::time::Instant::now();
    let result = std::fs::read(path);
    (result, started.elapsed())
}

/// Every regular file under `root`, sorted.
pub fn walk_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The chunk files of a cache directory (not the index, not temp files).
pub fn chunk_files(cache_dir: &Path) -> Result<Vec<PathBuf>> {
    let root = cache_dir.join("chunks/v1");
    if !root.exists() {
        return Ok(Vec::new());
    }
    Ok(walk_files(&root)?
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.len() == 64) && !p.starts_with(root.join("tmp")))
        .collect())
}

/// Total bytes of the chunk files of a cache directory. A running daemon may evict a file between the
/// listing and its stat; such a file counts as gone.
pub fn chunk_bytes(cache_dir: &Path) -> Result<u64> {
    let mut total = 0;
    for path in chunk_files(cache_dir)? {
        match std::fs::metadata(path) {
            Ok(meta) => total += meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(total)
}

/// Writes a config file with one local origin and the given extra TOML appended (e.g. a `[cache]` table).
pub fn write_config(path: &Path, mount_point: &Path, cache_dir: &Path, origin: &Path, extra: &str) -> Result<()> {
    let text = format!(
        "mount_point = {mp:?}\ncache_dir = {cd:?}\n\n[[origins]]\nid = \"lib\"\ntype = \"local\"\npath = {o:?}\n\n{extra}\n",
        mp = mount_point.display().to_string(),
        cd = cache_dir.display().to_string(),
        o = origin.display().to_string(),
    );
    std::fs::write(path, text)?;
    Ok(())
}

/// Deterministic pseudo-random bytes (xorshift), for big test files without a rand dependency.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}
