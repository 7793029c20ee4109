//! Paths that must not overlap: the mount point, the cache directory and each local origin's `path`.
//!
//! A mount inside an origin makes every sync index the mount's own files (the library grows by itself each
//! time); an origin inside the mount is read through the daemon's own mount; a cache inside the mount or an
//! origin is indexed or served as music; the mount on the cache hides the cache behind itself. Each is one
//! config error naming both keys. Paths are compared resolved: symlinks followed as far as the path exists
//! (the rest normalised by its components), so `/srv/music-link/mnt` is caught when the link points at the
//! origin.

use super::{Config, Invalid, OriginSpec};
use std::path::{Component, Path, PathBuf};

/// Checks that no two of the mount point, the cache directory and the local origins overlap.
pub(super) fn check_overlaps(config: &Config) -> Result<(), Invalid> {
    let mount = resolve_mount_point(&config.mount_point);
    let cache = resolve(&config.cache_dir);
    let show = |p: &Path| format!("`{}`", p.display());
    if mount == cache {
        return Err(Invalid::new(
            "mount_point, cache_dir",
            format!("both are {}: the mount would hide the cache; give the cache a directory of its own", show(&mount)),
        ));
    }
    if cache.starts_with(&mount) {
        return Err(Invalid::new(
            "cache_dir, mount_point",
            format!("the cache {} is inside the mount {}: it would be hidden by it", show(&cache), show(&mount)),
        ));
    }
    if mount.starts_with(&cache) {
        return Err(Invalid::new(
            "mount_point, cache_dir",
            format!(
                "the mount {} is inside the cache {}, which is private to the daemon's user: nobody else could reach it",
                show(&mount),
                show(&cache)
            ),
        ));
    }
    for origin in &config.origins {
        let OriginSpec::Local { path } = &origin.spec else { continue };
        let path = resolve(path);
        let key = format!("origins.path (origin `{}`)", origin.id);
        if mount.starts_with(&path) {
            return Err(Invalid::new(
                format!("mount_point, {key}"),
                format!(
                    "the mount {} is inside the origin {}: every sync would index the mount's own files again",
                    show(&mount),
                    show(&path)
                ),
            ));
        }
        if path.starts_with(&mount) {
            return Err(Invalid::new(
                format!("{key}, mount_point"),
                format!(
                    "the origin {} is inside the mount {}: it would be read through the daemon's own mount",
                    show(&path),
                    show(&mount)
                ),
            ));
        }
        if cache.starts_with(&path) {
            return Err(Invalid::new(
                format!("cache_dir, {key}"),
                format!(
                    "the cache {} is inside the origin {}: its files would be indexed as music",
                    show(&cache),
                    show(&path)
                ),
            ));
        }
    }
    Ok(())
}

/// The mount point resolved through its parent only: a mount left by a daemon that is restarting (2.11)
/// answers nothing until the new daemon serves it, so looking at the mount point itself would hang the
/// very start that is to serve it.
fn resolve_mount_point(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => resolve(parent).join(name),
        _ => resolve(path),
    }
}

/// `path` with symlinks resolved as far as it exists, then `.` and `..` applied to the rest.
pub(crate) fn resolve(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    let base = loop {
        if let Ok(real) = existing.canonicalize() {
            break real;
        }
        match (existing.file_name().map(|n| n.to_owned()), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            // Nothing of it exists (or it ends in `..`): compare it as written.
            _ => return normalise(path),
        }
    };
    normalise(&rest.iter().rev().fold(base, |p, name| p.join(name)))
}

/// `path` with `.` and `..` folded away by name alone, never asking the filesystem (a hung mount would
/// block a stat); also what a local origin's scan compares with the MusicFS mounts it must not enter.
pub fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Origin;

    fn config(mount: &Path, cache: &Path, origin: &Path) -> Config {
        let mut c = Config::with_defaults(mount.to_owned(), cache.to_owned());
        c.origins = vec![Origin::local("disk", 0, origin.to_owned())];
        c
    }

    fn refused(mount: &Path, cache: &Path, origin: &Path) -> String {
        check_overlaps(&config(mount, cache, origin)).expect_err("an overlap was accepted").to_string()
    }

    #[test]
    fn separate_paths_pass_and_each_overlap_is_one_error_naming_both_keys() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(check_overlaps(&config(&d.join("mnt"), &d.join("cache"), &d.join("music"))), Ok(()));
        // Siblings sharing a prefix are not inside each other.
        assert_eq!(check_overlaps(&config(&d.join("music-mnt"), &d.join("cache"), &d.join("music"))), Ok(()));

        let e = refused(&d.join("music/mnt"), &d.join("cache"), &d.join("music"));
        assert!(e.starts_with("mount_point, origins.path (origin `disk`): the mount") && e.contains("index"), "{e}");
        let e = refused(&d.join("mnt"), &d.join("cache"), &d.join("mnt/music"));
        assert!(e.starts_with("origins.path (origin `disk`), mount_point: the origin"), "{e}");
        let e = refused(&d.join("mnt"), &d.join("music/.cache"), &d.join("music"));
        assert!(e.starts_with("cache_dir, origins.path (origin `disk`): the cache"), "{e}");
        let e = refused(&d.join("mnt"), &d.join("mnt/cache"), &d.join("music"));
        assert!(e.starts_with("cache_dir, mount_point: the cache"), "{e}");
        let e = refused(&d.join("same"), &d.join("same"), &d.join("music"));
        assert!(e.starts_with("mount_point, cache_dir: both are"), "{e}");
        let e = refused(&d.join("cache/mnt"), &d.join("cache"), &d.join("music"));
        assert!(e.starts_with("mount_point, cache_dir: the mount"), "{e}");
        // The same directory spelled with `..`, and the origin itself as the mount.
        let e = refused(&d.join("music/../music/mnt"), &d.join("cache"), &d.join("music"));
        assert!(e.starts_with("mount_point, origins.path"), "{e}");
        let e = refused(&d.join("music"), &d.join("cache"), &d.join("music"));
        assert!(e.starts_with("mount_point, origins.path"), "{e}");
    }

    #[test]
    fn symlinks_are_followed_before_comparing() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("music")).unwrap();
        std::os::unix::fs::symlink(d.join("music"), d.join("link")).unwrap();
        let e = refused(&d.join("link/mnt"), &d.join("cache"), &d.join("music"));
        assert!(e.starts_with("mount_point, origins.path"), "{e}");
        let e = refused(&d.join("mnt"), &d.join("link/.cache"), &d.join("music"));
        assert!(e.starts_with("cache_dir, origins.path"), "{e}");
    }
}
