//! Damaged files moved aside for a post-mortem (`meta.corrupt-PID`, `index.redb.corrupt-PID`): only the
//! newest few are kept, so a crash loop over a damaged disk cannot fill the cache directory with copies of
//! the library database.

use std::path::Path;

/// How many moved-aside copies of one file are kept.
pub const KEPT: usize = 3;

/// Removes the files in `dir` whose name starts with `prefix`, all but the newest [`KEPT`] (by modification
/// time, then name); returns how many it removed.
pub fn prune(dir: &Path, prefix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut aside: Vec<(std::time::SystemTime, std::path::PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    aside.sort();
    let excess = aside.len().saturating_sub(KEPT);
    aside.iter().take(excess).filter(|(_, path)| std::fs::remove_file(path).is_ok()).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn only_the_newest_three_copies_stay_and_other_files_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let start = SystemTime::now() - Duration::from_secs(100);
        for i in 0..5u64 {
            let path = dir.path().join(format!("meta.corrupt-{}", 90 - i));
            std::fs::write(&path, b"damaged").unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(start + Duration::from_secs(i)).unwrap();
        }
        std::fs::write(dir.path().join("meta.db"), b"live").unwrap();
        assert_eq!(prune(dir.path(), "meta.corrupt-"), 2);
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        // The two oldest (written first: PIDs 90 and 89) are gone.
        assert_eq!(left, ["meta.corrupt-86", "meta.corrupt-87", "meta.corrupt-88", "meta.db"]);
        assert_eq!(prune(dir.path(), "meta.corrupt-"), 0);
    }
}
