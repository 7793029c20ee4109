//! The MusicFS configuration file (TOML): its shape, defaults, and errors that name the file, line and key.
//!
//! Unknown keys are errors, not silence: a typo such as `max_sise` must never fall back to a default.

use crate::units::{ByteSize, Seconds};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the library appears.
    pub mount_point: PathBuf,
    /// Holds the chunk cache, its index, the metadata database and the lock file.
    pub cache_dir: PathBuf,
    /// Where the music comes from; lower `priority` is preferred.
    pub origins: Vec<OriginConfig>,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub library: LibraryConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub fuse: FuseConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default)]
    pub events: EventsConfig,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OriginConfig {
    /// A short stable name; it is stored with every track, so renaming it means a rescan.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: OriginKind,
    #[serde(default)]
    pub priority: u32,
    /// Root directory of a `local` origin (a local disk, or an NFS/SMB mount).
    pub path: PathBuf,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OriginKind {
    Local,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Upper bound for chunk bytes on disk; least recently used chunks are evicted beyond it.
    pub max_size: ByteSize,
    /// Content-defined chunking sizes (FastCDC).
    pub chunk_min: ByteSize,
    pub chunk_avg: ByteSize,
    pub chunk_max: ByteSize,
    /// Verified chunks kept in memory to serve many small FUSE reads from one chunk.
    pub memory: ByteSize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_size: ByteSize(10 << 30),
            chunk_min: ByteSize(256 << 10),
            chunk_avg: ByteSize(1 << 20),
            chunk_max: ByteSize(4 << 20),
            memory: ByteSize(64 << 20),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LibraryConfig {
    /// How often the origins are compared with the database to pick up added, changed and removed files
    /// (a delta sync also runs once after every start).
    pub sync_interval: Seconds,
}

impl Default for LibraryConfig {
    fn default() -> Self {
        Self { sync_interval: Seconds(Duration::from_secs(15 * 60)) }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Events each consumer may have queued (library changes, origin states). A lossless consumer that is
    /// this far behind holds the publisher up; a lossy one loses events, counted (3.3).
    pub capacity: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self { capacity: 1024 }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// How often origins are checked.
    pub interval: Seconds,
    /// Bound on one health check of one origin.
    pub timeout: Seconds,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self { interval: Seconds(Duration::from_secs(30)), timeout: Seconds(Duration::from_secs(5)) }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FuseConfig {
    /// Bound on one FUSE read: after it the reader gets EIO instead of a hang.
    pub read_timeout: Seconds,
    /// Threads reading requests from /dev/fuse (reads themselves run on the async runtime).
    pub threads: usize,
    /// Let users other than the one running the daemon see the mount (needs `user_allow_other` for non-root).
    pub allow_other: bool,
}

impl Default for FuseConfig {
    fn default() -> Self {
        Self { read_timeout: Seconds(Duration::from_secs(30)), threads: 2, allow_other: false }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// A tracing filter: `info`, `debug`, `musicfs_cas=debug,info`, …; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self { level: "info".into() }
    }
}

/// A configuration problem, printed as one line: `FILE:LINE: message` (or `FILE: message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "config error: {}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "config error: {}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `file` is only used in error messages.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text.as_bytes()[..span.start.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1);
            ConfigError { file: file.to_owned(), line, message: e.message().trim().replace('\n', " ") }
        })?;
        config.validate().map_err(|message| ConfigError { file: file.to_owned(), line: None, message })?;
        Ok(config)
    }

    /// Checks what the types cannot: relations between values. The message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.origins.is_empty() {
            return Err("origins: at least one [[origins]] entry is required".into());
        }
        let mut seen = std::collections::HashSet::new();
        for origin in &self.origins {
            if origin.id.is_empty() || !origin.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(format!("origins.id: `{}` must be non-empty ASCII letters, digits, - or _", origin.id));
            }
            if !seen.insert(origin.id.as_str()) {
                return Err(format!("origins.id: `{}` is used twice", origin.id));
            }
            if !origin.path.is_absolute() {
                return Err(format!(
                    "origins.path: `{}` (origin `{}`) must be absolute",
                    origin.path.display(),
                    origin.id
                ));
            }
        }
        if !self.mount_point.is_absolute() {
            return Err(format!("mount_point: `{}` must be absolute", self.mount_point.display()));
        }
        if !self.cache_dir.is_absolute() {
            return Err(format!("cache_dir: `{}` must be absolute", self.cache_dir.display()));
        }
        let c = &self.cache;
        // FastCDC's own bounds.
        if !(64..=1 << 20).contains(&c.chunk_min.0) {
            return Err(format!("cache.chunk_min: {} is outside 64 B ..= 1 MiB", c.chunk_min));
        }
        if !(256..=4 << 20).contains(&c.chunk_avg.0) {
            return Err(format!("cache.chunk_avg: {} is outside 256 B ..= 4 MiB", c.chunk_avg));
        }
        if !(1 << 10..=16 << 20).contains(&c.chunk_max.0) {
            return Err(format!("cache.chunk_max: {} is outside 1 KiB ..= 16 MiB", c.chunk_max));
        }
        if !(c.chunk_min <= c.chunk_avg && c.chunk_avg <= c.chunk_max) {
            return Err("cache.chunk_min/chunk_avg/chunk_max: need chunk_min <= chunk_avg <= chunk_max".into());
        }
        if c.max_size < c.chunk_max {
            return Err(format!(
                "cache.max_size: {} is smaller than one chunk (chunk_max {})",
                c.max_size, c.chunk_max
            ));
        }
        if self.fuse.threads == 0 || self.fuse.threads > 64 {
            return Err("fuse.threads: must be 1..=64".into());
        }
        if self.fuse.read_timeout.0.is_zero() {
            return Err("fuse.read_timeout: must be more than 0".into());
        }
        if !(1..=1_000_000).contains(&self.events.capacity) {
            return Err("events.capacity: must be between 1 and 1000000".into());
        }
        if self.library.sync_interval.0 < Duration::from_secs(1) {
            return Err("library.sync_interval: must be at least 1s".into());
        }
        if self.health.timeout.0.is_zero() {
            return Err("health.timeout: must be more than 0".into());
        }
        Ok(())
    }

    /// The read timeout as a plain Duration.
    pub fn read_timeout(&self) -> Duration {
        self.fuse.read_timeout.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
mount_point = "/mnt/music"
cache_dir = "/var/cache/musicfs"

[[origins]]
id = "nas"
type = "local"
priority = 1
path = "/srv/music"

[cache]
max_size = "2GiB"
chunk_avg = "512KiB"

[fuse]
read_timeout = "10s"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/musicfs.toml"))
    }

    #[test]
    fn a_full_config_parses_with_defaults_filled_in() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.origins[0].id, "nas");
        assert_eq!(config.origins[0].kind, OriginKind::Local);
        assert_eq!(config.cache.max_size, ByteSize(2 << 30));
        assert_eq!(config.cache.chunk_avg, ByteSize(512 << 10));
        assert_eq!(config.cache.chunk_min, CacheConfig::default().chunk_min);
        assert_eq!(config.read_timeout(), Duration::from_secs(10));
        assert_eq!(config.logging.level, "info");
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_key_file_and_line() {
        let text = GOOD.replace("max_size", "max_sise");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("/etc/musicfs.toml:12:"), "{err}");
        assert!(err.contains("max_sise"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    #[test]
    fn a_missing_key_is_an_error_naming_it() {
        let text = GOOD.replace("cache_dir = \"/var/cache/musicfs\"", "");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("cache_dir"), "{err}");
        assert!(err.starts_with("config error: /etc/musicfs.toml"), "{err}");
    }

    #[test]
    fn a_bad_value_names_the_key() {
        let err = parse(&GOOD.replace("\"2GiB\"", "\"2 parsecs\"")).unwrap_err().to_string();
        assert!(err.contains("parsecs"), "{err}");
        let err = parse(&GOOD.replace("type = \"local\"", "type = \"ftp\"")).unwrap_err().to_string();
        assert!(err.contains("ftp"), "{err}");
        let err = parse(&GOOD.replace("chunk_avg = \"512KiB\"", "chunk_avg = \"64MiB\"")).unwrap_err().to_string();
        assert!(err.contains("chunk_avg"), "{err}");
        let err = parse(&GOOD.replace("/srv/music", "srv/music")).unwrap_err().to_string();
        assert!(err.contains("origins.path"), "{err}");
    }

    /// Proves L1: 3.3
    #[test]
    fn the_event_queue_capacity_is_configurable_and_checked() {
        assert_eq!(parse(GOOD).unwrap().events.capacity, 1024);
        let config = parse(&format!("{GOOD}\n[events]\ncapacity = 16\n")).unwrap();
        assert_eq!(config.events.capacity, 16);
        let err = parse(&format!("{GOOD}\n[events]\ncapacity = 0\n")).unwrap_err().to_string();
        assert!(err.contains("events.capacity"), "{err}");
    }

    #[test]
    fn a_config_without_origins_is_rejected() {
        let err = parse("mount_point = \"/m\"\ncache_dir = \"/c\"\norigins = []\n").unwrap_err().to_string();
        assert!(err.contains("origins"), "{err}");
    }

    #[test]
    fn a_missing_file_is_one_clear_line() {
        let err = Config::load(Path::new("/nonexistent/musicfs.toml")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/musicfs.toml") && err.contains("cannot read"), "{err}");
    }
}
