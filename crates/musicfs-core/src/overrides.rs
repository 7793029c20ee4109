//! The config the command line asks for: `musicfs mount` flags laid over a config file, or standing alone
//! (`--origin DIR --cache-dir DIR MOUNT_POINT`), and the cache directory the other subcommands name with
//! `--cache-dir` or `--config`. Kept out of the binary so it can be tested like any other code.

use crate::CacheConfig;
use crate::config::{Config, ConfigError, Origin};
use crate::units::{ByteSize, Seconds};
use std::path::{Path, PathBuf};

/// `musicfs mount`'s flags, as plain values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MountOptions {
    /// The TOML file the other options override.
    pub config_file: Option<PathBuf>,
    /// Local origin directories; they replace the file's origins.
    pub origins: Vec<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub mount_point: Option<PathBuf>,
    pub max_size: Option<ByteSize>,
    pub read_timeout: Option<Seconds>,
    /// Only ever turns `allow_other` on.
    pub allow_other: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    /// The config file is unreadable or invalid, or the result of the overrides is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Without a config file, the command line must name this.
    #[error("missing {0} (or give --config FILE)")]
    Missing(&'static str),
    /// A subcommand that talks to a daemon or its cache was given neither.
    #[error("give --cache-dir DIR or --config FILE")]
    NoCacheDir,
}

/// The config `musicfs mount` runs with: the file's (or the defaults), with every given option laid over it,
/// paths made absolute, and validated again.
pub fn mount_config(options: MountOptions) -> Result<Config, OverrideError> {
    let mut config = match &options.config_file {
        Some(file) => Config::load(file)?,
        None => {
            let (Some(mount_point), Some(cache_dir)) = (options.mount_point.clone(), options.cache_dir.clone()) else {
                let what = if options.mount_point.is_none() { "MOUNT_POINT" } else { "--cache-dir DIR" };
                return Err(OverrideError::Missing(what));
            };
            if options.origins.is_empty() {
                return Err(OverrideError::Missing("--origin DIR"));
            }
            Config::with_defaults(mount_point, cache_dir)
        }
    };
    if !options.origins.is_empty() {
        config.origins = options
            .origins
            .into_iter()
            .enumerate()
            .map(|(i, path)| {
                let id = if i == 0 { "local".into() } else { format!("local{}", i + 1) };
                Origin::local(id, i as u32, absolute(path))
            })
            .collect();
    }
    if let Some(dir) = options.cache_dir {
        config.cache_dir = dir;
    }
    if let Some(mount_point) = options.mount_point {
        config.mount_point = mount_point;
    }
    config.cache_dir = absolute(config.cache_dir);
    config.mount_point = absolute(config.mount_point);
    if let Some(size) = options.max_size {
        config.cache.max_size = size;
    }
    if let Some(timeout) = options.read_timeout {
        config.fuse.read_timeout = timeout;
    }
    config.fuse.allow_other |= options.allow_other;
    let source = options.config_file.unwrap_or_else(|| PathBuf::from("command line"));
    config.validate().map_err(|invalid| ConfigError { file: source, line: None, message: invalid.to_string() })?;
    Ok(config)
}

/// The cache directory and size limit named by `--cache-dir` (with the default limit) or else `--config`.
pub fn cache_target(
    cache_dir: Option<PathBuf>,
    config_file: Option<&Path>,
) -> Result<(PathBuf, ByteSize), OverrideError> {
    match (cache_dir, config_file) {
        (Some(dir), _) => Ok((dir, CacheConfig::default().max_size)),
        (None, Some(file)) => Config::load(file).map(|c| (c.cache_dir, c.cache.max_size)).map_err(Into::into),
        (None, None) => Err(OverrideError::NoCacheDir),
    }
}

fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn alone() -> MountOptions {
        MountOptions {
            origins: vec!["/srv/a".into(), "/srv/b".into()],
            cache_dir: Some("/var/cache/m".into()),
            mount_point: Some("/mnt/m".into()),
            ..MountOptions::default()
        }
    }

    #[test]
    fn flags_alone_make_a_config_with_numbered_local_origins() {
        let config = mount_config(MountOptions { allow_other: true, ..alone() }).unwrap();
        let ids: Vec<(&str, u32)> = config.origins.iter().map(|o| (o.id.as_str(), o.priority)).collect();
        assert_eq!(ids, [("local", 0), ("local2", 1)]);
        assert_eq!(config.origins[1].spec, crate::OriginSpec::Local { path: "/srv/b".into() });
        assert_eq!(
            (config.mount_point.as_path(), config.cache_dir.as_path()),
            (Path::new("/mnt/m"), Path::new("/var/cache/m"))
        );
        assert!(config.fuse.allow_other);
        assert_eq!(config.cache, CacheConfig::default());
    }

    #[test]
    fn each_missing_flag_is_named() {
        for (options, want) in [
            (MountOptions { mount_point: None, ..alone() }, "missing MOUNT_POINT (or give --config FILE)"),
            (MountOptions { cache_dir: None, ..alone() }, "missing --cache-dir DIR (or give --config FILE)"),
            (MountOptions { origins: Vec::new(), ..alone() }, "missing --origin DIR (or give --config FILE)"),
        ] {
            assert_eq!(mount_config(options).unwrap_err().to_string(), want);
        }
        let err = mount_config(MountOptions { max_size: Some(ByteSize(1)), ..alone() }).unwrap_err().to_string();
        assert!(err.starts_with("config error: command line: cache.max_size"), "{err}");
    }

    #[test]
    fn flags_override_the_file_and_relative_paths_become_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("musicfs.toml");
        std::fs::write(
            &file,
            "mount_point = \"/m\"\ncache_dir = \"/c\"\n[[origins]]\nid = \"nas\"\ntype = \"local\"\npath = \"/o\"\n",
        )
        .unwrap();
        let kept = mount_config(MountOptions { config_file: Some(file.clone()), ..MountOptions::default() }).unwrap();
        assert_eq!((kept.origins[0].id.as_str(), kept.mount_point.as_path()), ("nas", Path::new("/m")));
        let changed = mount_config(MountOptions {
            config_file: Some(file.clone()),
            origins: vec!["music".into()],
            mount_point: Some("mnt".into()),
            read_timeout: Some(Seconds(Duration::from_secs(7))),
            ..MountOptions::default()
        })
        .unwrap();
        assert_eq!(changed.origins[0].id, "local");
        assert!(matches!(&changed.origins[0].spec, crate::OriginSpec::Local { path } if path.is_absolute()));
        assert!(changed.mount_point.is_absolute() && changed.mount_point.ends_with("mnt"));
        assert_eq!(changed.read_timeout(), Duration::from_secs(7));
        let err = mount_config(MountOptions {
            config_file: Some(file.clone()),
            max_size: Some(ByteSize(1)),
            ..MountOptions::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.starts_with(&format!("config error: {}: cache.max_size", file.display())), "{err}");
    }

    #[test]
    fn the_cache_target_comes_from_the_flag_or_the_file() {
        assert_eq!(cache_target(Some("/c".into()), None).unwrap().0, Path::new("/c"));
        assert_eq!(cache_target(None, None).unwrap_err().to_string(), "give --cache-dir DIR or --config FILE");
    }
}
