//! The MusicFS configuration file (TOML): its shape, defaults, and errors that name the file, line and key.
//!
//! Unknown keys are errors, not silence: a typo such as `max_sise` must never fall back to a default.
//! The file is read into [`ConfigFile`] and checked into a [`Config`]; origins become typed [`Origin`]s on
//! the way (see [`origin`]).

pub mod origin;
mod paths;
pub use paths::normalise;

use crate::units::{ByteSize, Seconds};
use origin::OriginConfig;
pub use origin::{
    DEFAULT_S3_READS_IN_FLIGHT, DEFAULT_S3_REGION, DEFAULT_SFTP_PORT, HostKey, MAX_S3_READS_IN_FLIGHT, Origin,
    OriginKind, OriginSpec, Secret, SecretError, SecretSource, is_sha256_fingerprint,
};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A value the config may not have: the key, and what is wrong with it. Shown as `key: problem`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct Invalid {
    pub key: String,
    pub problem: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Invalid {
        Invalid { key: key.into(), problem: problem.into() }
    }
}

/// A checked configuration: what the daemon runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Where the library appears.
    pub mount_point: PathBuf,
    /// Holds the chunk cache, its index, the metadata database and the lock file.
    pub cache_dir: PathBuf,
    /// Where the music comes from; lower `priority` is preferred.
    pub origins: Vec<Origin>,
    pub cache: CacheConfig,
    pub library: LibraryConfig,
    pub health: HealthConfig,
    pub fuse: FuseConfig,
    pub logging: LoggingConfig,
    pub events: EventsConfig,
}

/// The file as written, before its origins are parsed and its values checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    mount_point: PathBuf,
    cache_dir: PathBuf,
    origins: Vec<OriginConfig>,
    #[serde(default)]
    cache: CacheConfig,
    #[serde(default)]
    library: LibraryConfig,
    #[serde(default)]
    health: HealthConfig,
    #[serde(default)]
    fuse: FuseConfig,
    #[serde(default)]
    logging: LoggingConfig,
    #[serde(default)]
    events: EventsConfig,
}

impl ConfigFile {
    /// Parses every origin (each id checked first, as [`Config::validate`] would), then checks the whole.
    fn check(self) -> Result<Config, Invalid> {
        let mut origins = Vec::with_capacity(self.origins.len());
        let mut seen = std::collections::HashSet::new();
        for origin in self.origins {
            check_id(origin.id(), &mut seen)?;
            origins.push(origin.parse()?);
        }
        let config = Config {
            mount_point: self.mount_point,
            cache_dir: self.cache_dir,
            origins,
            cache: self.cache,
            library: self.library,
            health: self.health,
            fuse: self.fuse,
            logging: self.logging,
            events: self.events,
        };
        config.validate()?;
        Ok(config)
    }
}

/// An origin id is non-empty ASCII letters, digits, `-` or `_`, and used once.
fn check_id(id: &str, seen: &mut std::collections::HashSet<String>) -> Result<(), Invalid> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(Invalid::new("origins.id", format!("`{id}` must be non-empty ASCII letters, digits, - or _")));
    }
    if !seen.insert(id.to_owned()) {
        return Err(Invalid::new("origins.id", format!("`{id}` is used twice")));
    }
    Ok(())
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Upper bound for chunk bytes on disk; least recently used chunks are evicted beyond it.
    pub max_size: ByteSize,
    /// Content-defined chunking sizes (FastCDC). The minimum, unless set, is three quarters of the average
    /// ([`CacheConfig::chunk_min`]).
    pub chunk_min: Option<ByteSize>,
    pub chunk_avg: ByteSize,
    pub chunk_max: ByteSize,
    /// Verified chunks kept in memory to serve many small FUSE reads from one chunk.
    pub memory: ByteSize,
}

impl CacheConfig {
    /// The smallest chunk: as set, else three quarters of the average (at most 1 MiB, FastCDC's bound). The
    /// chunker skips the first `min` bytes of each chunk, and fewer, larger chunks mean fewer chunk files and
    /// fsyncs: with a quarter of the average (256 KiB), as before, a cold read cost 14 % more CPU.
    pub fn chunk_min(&self) -> ByteSize {
        self.chunk_min.unwrap_or(ByteSize((self.chunk_avg.0 / 4 * 3).min(1 << 20)))
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_size: ByteSize(10 << 30),
            chunk_min: None,
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
    /// The longest one origin's listing may take in a delta sync. An origin that does not finish in time
    /// (a hung NFS server, a stalled connection) is treated as unreachable for that sync, so the watcher
    /// never goes stale behind it (4.2.4).
    pub list_timeout: Seconds,
}

impl Default for LibraryConfig {
    fn default() -> Self {
        Self {
            sync_interval: Seconds(Duration::from_secs(15 * 60)),
            list_timeout: Seconds(Duration::from_secs(5 * 60)),
        }
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
    /// A config with no origins yet and every section at its defaults.
    pub fn with_defaults(mount_point: PathBuf, cache_dir: PathBuf) -> Config {
        Config {
            mount_point,
            cache_dir,
            origins: Vec::new(),
            cache: CacheConfig::default(),
            library: LibraryConfig::default(),
            health: HealthConfig::default(),
            fuse: FuseConfig::default(),
            logging: LoggingConfig::default(),
            events: EventsConfig::default(),
        }
    }

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
        let file_config: ConfigFile = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text.as_bytes()[..span.start.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1);
            ConfigError { file: file.to_owned(), line, message: e.message().trim().replace('\n', " ") }
        })?;
        file_config.check().map_err(|invalid| ConfigError {
            file: file.to_owned(),
            line: None,
            message: invalid.to_string(),
        })
    }

    /// Checks what the types cannot: relations between values. The message names the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.origins.is_empty() {
            return Err(Invalid::new("origins", "at least one [[origins]] entry is required"));
        }
        let mut seen = std::collections::HashSet::new();
        for origin in &self.origins {
            check_id(&origin.id, &mut seen)?;
        }
        let mut backed_up = std::collections::HashSet::new();
        for origin in &self.origins {
            let Some(primary) = &origin.backup_for else { continue };
            match self.origins.iter().find(|o| &o.id == primary) {
                None => {
                    return Err(Invalid::new(
                        "origins.backup_for",
                        format!("origin `{}` backs up `{primary}`, which is not configured", origin.id),
                    ));
                }
                Some(p) if p.id == origin.id => {
                    return Err(Invalid::new(
                        "origins.backup_for",
                        format!("origin `{primary}` cannot back up itself"),
                    ));
                }
                Some(p) if p.backup_for.is_some() => {
                    return Err(Invalid::new(
                        "origins.backup_for",
                        format!("`{primary}` is itself a backup; origin `{}` must back up a library origin", origin.id),
                    ));
                }
                Some(_) if !backed_up.insert(primary.as_str()) => {
                    return Err(Invalid::new(
                        "origins.backup_for",
                        format!("`{primary}` has more than one backup; give it one"),
                    ));
                }
                Some(_) => {}
            }
        }
        if self.origins.iter().all(|o| o.backup_for.is_some()) {
            return Err(Invalid::new("origins", "every origin is a backup; at least one must form the library"));
        }
        if !self.mount_point.is_absolute() {
            return Err(Invalid::new("mount_point", format!("`{}` must be absolute", self.mount_point.display())));
        }
        if !self.cache_dir.is_absolute() {
            return Err(Invalid::new("cache_dir", format!("`{}` must be absolute", self.cache_dir.display())));
        }
        paths::check_overlaps(self)?;
        let c = &self.cache;
        // FastCDC's own bounds.
        if !(64..=1 << 20).contains(&c.chunk_min().0) {
            return Err(Invalid::new("cache.chunk_min", format!("{} is outside 64 B ..= 1 MiB", c.chunk_min())));
        }
        if !(256..=4 << 20).contains(&c.chunk_avg.0) {
            return Err(Invalid::new("cache.chunk_avg", format!("{} is outside 256 B ..= 4 MiB", c.chunk_avg)));
        }
        if !(1 << 10..=16 << 20).contains(&c.chunk_max.0) {
            return Err(Invalid::new("cache.chunk_max", format!("{} is outside 1 KiB ..= 16 MiB", c.chunk_max)));
        }
        if !(c.chunk_min() <= c.chunk_avg && c.chunk_avg <= c.chunk_max) {
            return Err(Invalid::new(
                "cache.chunk_min/chunk_avg/chunk_max",
                "need chunk_min <= chunk_avg <= chunk_max",
            ));
        }
        if c.max_size < c.chunk_max {
            return Err(Invalid::new(
                "cache.max_size",
                format!("{} is smaller than one chunk (chunk_max {})", c.max_size, c.chunk_max),
            ));
        }
        if self.fuse.threads == 0 || self.fuse.threads > 64 {
            return Err(Invalid::new("fuse.threads", "must be 1..=64"));
        }
        if self.fuse.read_timeout.0.is_zero() {
            return Err(Invalid::new("fuse.read_timeout", "must be more than 0"));
        }
        if !(1..=1_000_000).contains(&self.events.capacity) {
            return Err(Invalid::new("events.capacity", "must be between 1 and 1000000"));
        }
        if self.library.sync_interval.0 < Duration::from_secs(1) {
            return Err(Invalid::new("library.sync_interval", "must be at least 1s"));
        }
        if self.library.list_timeout.0.is_zero() {
            return Err(Invalid::new("library.list_timeout", "must be more than 0"));
        }
        if self.health.timeout.0.is_zero() {
            return Err(Invalid::new("health.timeout", "must be more than 0"));
        }
        Ok(())
    }

    /// The read timeout as a plain Duration.
    pub fn read_timeout(&self) -> Duration {
        self.fuse.read_timeout.0
    }
}

#[cfg(test)]
mod tests;
