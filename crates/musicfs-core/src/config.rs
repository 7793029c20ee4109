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
    /// Makes this origin a copy of another (same layout, any type): never listed into the library, read from
    /// when that origin does not answer. Files served from it are flagged and re-validated against the
    /// original when it returns (4.2.6).
    pub backup_for: Option<String>,
    /// `local`: the root directory (a local disk, or an NFS/SMB mount), absolute. `sftp`: the root directory on
    /// the server, absolute or relative to the directory the server starts SFTP sessions in (usually home).
    pub path: Option<PathBuf>,
    /// `s3`: the server, `https://host[:port]` (or `http://` for a server on a trusted network).
    pub endpoint: Option<String>,
    /// `s3`: the bucket.
    pub bucket: Option<String>,
    /// `s3`: only keys under this prefix (`music` or `music/flac`) form the library; default the whole bucket.
    pub prefix: Option<String>,
    /// `s3`: the region to sign requests for (default `us-east-1`, which MinIO and most servers accept).
    pub region: Option<String>,
    /// `s3`: the access key id.
    pub access_key: Option<String>,
    /// `s3`: the secret key inline (prefer `secret_key_file` or `secret_key_env`).
    pub secret_key: Option<Secret>,
    /// `s3`: a file holding the secret key (one line; surrounding whitespace is ignored).
    pub secret_key_file: Option<PathBuf>,
    /// `s3`: an environment variable holding the secret key.
    pub secret_key_env: Option<String>,
    /// `sftp`: the server's host name or address.
    pub host: Option<String>,
    /// `sftp`: the SSH port (default 22).
    pub port: Option<u16>,
    /// `sftp`: the user to log in as.
    pub user: Option<String>,
    /// `sftp`: the private key to log in with (absolute path; OpenSSH or PEM format, without a passphrase).
    pub private_key_file: Option<PathBuf>,
    /// `sftp`: a known_hosts file (OpenSSH format) that must list the server's host key.
    pub known_hosts_file: Option<PathBuf>,
    /// `sftp`: the server's host key fingerprint as `ssh-keygen -lf` prints it (`SHA256:…`), instead of a
    /// known_hosts file. With neither, the origin is refused: unknown host keys are never accepted.
    pub host_key_fingerprint: Option<String>,
}

/// A secret from the config file: never shown by `Debug`, so a logged config does not leak it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The region S3 requests are signed for when the config names none.
pub const DEFAULT_S3_REGION: &str = "us-east-1";
/// The SSH port of an SFTP origin when the config names none.
pub const DEFAULT_SFTP_PORT: u16 = 22;

impl OriginConfig {
    /// A `local` origin at `path`.
    pub fn local(id: impl Into<String>, priority: u32, path: PathBuf) -> Self {
        OriginConfig {
            id: id.into(),
            kind: OriginKind::Local,
            priority,
            backup_for: None,
            path: Some(path),
            endpoint: None,
            bucket: None,
            prefix: None,
            region: None,
            access_key: None,
            secret_key: None,
            secret_key_file: None,
            secret_key_env: None,
            host: None,
            port: None,
            user: None,
            private_key_file: None,
            known_hosts_file: None,
            host_key_fingerprint: None,
        }
    }

    /// The S3 secret key, from the config, its file or its environment variable (read now, at start).
    pub fn secret(&self) -> Result<String, String> {
        let id = &self.id;
        if let Some(secret) = &self.secret_key {
            return Ok(secret.0.clone());
        }
        if let Some(file) = &self.secret_key_file {
            let text = std::fs::read_to_string(file).map_err(|e| {
                format!("origins.secret_key_file: cannot read `{}` (origin `{id}`): {e}", file.display())
            })?;
            let secret = text.trim();
            if secret.is_empty() {
                return Err(format!("origins.secret_key_file: `{}` (origin `{id}`) is empty", file.display()));
            }
            return Ok(secret.to_owned());
        }
        if let Some(var) = &self.secret_key_env {
            return match std::env::var(var) {
                Ok(secret) if !secret.trim().is_empty() => Ok(secret.trim().to_owned()),
                _ => Err(format!("origins.secret_key_env: `{var}` (origin `{id}`) is not set or empty")),
            };
        }
        Err(format!("origins: origin `{id}` has no secret key"))
    }

    /// Checks the fields of one origin against its type.
    fn validate(&self) -> Result<(), String> {
        let id = &self.id;
        let kind = self.kind.name();
        // Every type-specific key, with the types it belongs to.
        let typed: [(&str, bool, &[OriginKind]); 15] = [
            ("path", self.path.is_some(), &[OriginKind::Local, OriginKind::Sftp]),
            ("endpoint", self.endpoint.is_some(), &[OriginKind::S3]),
            ("bucket", self.bucket.is_some(), &[OriginKind::S3]),
            ("prefix", self.prefix.is_some(), &[OriginKind::S3]),
            ("region", self.region.is_some(), &[OriginKind::S3]),
            ("access_key", self.access_key.is_some(), &[OriginKind::S3]),
            ("secret_key", self.secret_key.is_some(), &[OriginKind::S3]),
            ("secret_key_file", self.secret_key_file.is_some(), &[OriginKind::S3]),
            ("secret_key_env", self.secret_key_env.is_some(), &[OriginKind::S3]),
            ("host", self.host.is_some(), &[OriginKind::Sftp]),
            ("port", self.port.is_some(), &[OriginKind::Sftp]),
            ("user", self.user.is_some(), &[OriginKind::Sftp]),
            ("private_key_file", self.private_key_file.is_some(), &[OriginKind::Sftp]),
            ("known_hosts_file", self.known_hosts_file.is_some(), &[OriginKind::Sftp]),
            ("host_key_fingerprint", self.host_key_fingerprint.is_some(), &[OriginKind::Sftp]),
        ];
        for (key, set, kinds) in typed {
            if set && !kinds.contains(&self.kind) {
                let types: Vec<String> = kinds.iter().map(|k| format!("`type = \"{}\"`", k.name())).collect();
                let hint = if key == "path" && self.kind == OriginKind::S3 { "; use bucket and prefix" } else { "" };
                return Err(format!(
                    "origins.{key}: only for {} origins (origin `{id}` is {kind}{hint})",
                    types.join(" or ")
                ));
            }
        }
        match self.kind {
            OriginKind::Local => {
                let Some(path) = &self.path else {
                    return Err(format!("origins.path: required for local origin `{id}`"));
                };
                if !path.is_absolute() {
                    return Err(format!("origins.path: `{}` (origin `{id}`) must be absolute", path.display()));
                }
            }
            OriginKind::S3 => {
                let endpoint = self.endpoint.as_deref().unwrap_or_default();
                if endpoint.is_empty() {
                    return Err(format!("origins.endpoint: required for s3 origin `{id}`"));
                }
                let host = endpoint.strip_prefix("https://").or_else(|| endpoint.strip_prefix("http://"));
                if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
                    return Err(format!(
                        "origins.endpoint: `{endpoint}` (origin `{id}`) must be http://HOST[:PORT] or https://HOST[:PORT]"
                    ));
                }
                let bucket = self.bucket.as_deref().unwrap_or_default();
                if bucket.is_empty() {
                    return Err(format!("origins.bucket: required for s3 origin `{id}`"));
                }
                if bucket.contains('/') || bucket.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(format!("origins.bucket: `{bucket}` (origin `{id}`) is not a bucket name"));
                }
                if let Some(prefix) = &self.prefix {
                    let trimmed = prefix.trim_matches('/');
                    if trimmed.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..")
                        || prefix.chars().any(char::is_control)
                    {
                        return Err(format!(
                            "origins.prefix: `{prefix}` (origin `{id}`) must be key segments like `music` or `music/flac`, without `.`, `..` or `//`"
                        ));
                    }
                }
                if self.region.as_deref().is_some_and(str::is_empty) {
                    return Err(format!("origins.region: empty for s3 origin `{id}`"));
                }
                if self.access_key.as_deref().unwrap_or_default().is_empty() {
                    return Err(format!("origins.access_key: required for s3 origin `{id}`"));
                }
                let secrets =
                    [self.secret_key.is_some(), self.secret_key_file.is_some(), self.secret_key_env.is_some()];
                match secrets.iter().filter(|s| **s).count() {
                    0 => {
                        return Err(format!(
                            "origins.secret_key_file: s3 origin `{id}` needs one of secret_key_file, secret_key_env or secret_key"
                        ));
                    }
                    1 => {}
                    _ => {
                        return Err(format!(
                            "origins.secret_key: s3 origin `{id}` has more than one of secret_key, secret_key_file and secret_key_env"
                        ));
                    }
                }
                if let Some(file) = &self.secret_key_file
                    && !file.is_absolute()
                {
                    return Err(format!(
                        "origins.secret_key_file: `{}` (origin `{id}`) must be absolute",
                        file.display()
                    ));
                }
                if self.secret_key.as_ref().is_some_and(|s| s.0.is_empty()) {
                    return Err(format!("origins.secret_key: empty for s3 origin `{id}`"));
                }
                if self.secret_key_env.as_deref().is_some_and(str::is_empty) {
                    return Err(format!("origins.secret_key_env: empty for s3 origin `{id}`"));
                }
            }
            OriginKind::Sftp => self.validate_sftp()?,
        }
        Ok(())
    }

    fn validate_sftp(&self) -> Result<(), String> {
        let id = &self.id;
        let host = self.host.as_deref().unwrap_or_default();
        if host.is_empty() {
            return Err(format!("origins.host: required for sftp origin `{id}`"));
        }
        if host.contains(['/', '@']) || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "origins.host: `{host}` (origin `{id}`) must be a host name or address only (the user goes in `user`, the port in `port`)"
            ));
        }
        if self.port == Some(0) {
            return Err(format!("origins.port: 0 is not a port (origin `{id}`)"));
        }
        let user = self.user.as_deref().unwrap_or_default();
        if user.is_empty() {
            return Err(format!("origins.user: required for sftp origin `{id}`"));
        }
        if user.chars().any(|c| c.is_whitespace() || c.is_control() || c == '@') {
            return Err(format!("origins.user: `{user}` (origin `{id}`) is not a user name"));
        }
        let Some(key) = &self.private_key_file else {
            return Err(format!(
                "origins.private_key_file: required for sftp origin `{id}` (logins are by public key)"
            ));
        };
        if !key.is_absolute() {
            return Err(format!("origins.private_key_file: `{}` (origin `{id}`) must be absolute", key.display()));
        }
        match (&self.known_hosts_file, &self.host_key_fingerprint) {
            (None, None) => {
                return Err(format!(
                    "origins.known_hosts_file: sftp origin `{id}` needs known_hosts_file or host_key_fingerprint: \
                     the server's host key must be known, unknown host keys are rejected"
                ));
            }
            (Some(_), Some(_)) => {
                return Err(format!(
                    "origins.host_key_fingerprint: sftp origin `{id}` has both known_hosts_file and host_key_fingerprint; give one"
                ));
            }
            (Some(file), None) if !file.is_absolute() => {
                return Err(format!("origins.known_hosts_file: `{}` (origin `{id}`) must be absolute", file.display()));
            }
            (None, Some(fingerprint)) if !is_sha256_fingerprint(fingerprint) => {
                return Err(format!(
                    "origins.host_key_fingerprint: `{fingerprint}` (origin `{id}`) must be `SHA256:` and 43 base64 characters, \
                     as `ssh-keygen -lf <host key>.pub` prints it"
                ));
            }
            _ => {}
        }
        match &self.path {
            None => {
                return Err(format!(
                    "origins.path: required for sftp origin `{id}` (the music directory on the server)"
                ));
            }
            Some(path) if path.as_os_str().is_empty() => {
                return Err(format!("origins.path: empty for sftp origin `{id}`"));
            }
            Some(_) => {}
        }
        Ok(())
    }
}

/// `SHA256:` and the 43 unpadded base64 characters of a SHA-256 digest, as OpenSSH prints fingerprints.
pub fn is_sha256_fingerprint(text: &str) -> bool {
    text.strip_prefix("SHA256:")
        .is_some_and(|b64| b64.len() == 43 && b64.chars().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/'))
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OriginKind {
    Local,
    S3,
    Sftp,
}

impl OriginKind {
    /// The name used for `type` in the config file.
    pub fn name(self) -> &'static str {
        match self {
            OriginKind::Local => "local",
            OriginKind::S3 => "s3",
            OriginKind::Sftp => "sftp",
        }
    }
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
            origin.validate()?;
        }
        let mut backed_up = std::collections::HashSet::new();
        for origin in &self.origins {
            let Some(primary) = &origin.backup_for else { continue };
            match self.origins.iter().find(|o| &o.id == primary) {
                None => {
                    return Err(format!(
                        "origins.backup_for: origin `{}` backs up `{primary}`, which is not configured",
                        origin.id
                    ));
                }
                Some(p) if p.id == origin.id => {
                    return Err(format!("origins.backup_for: origin `{primary}` cannot back up itself"));
                }
                Some(p) if p.backup_for.is_some() => {
                    return Err(format!(
                        "origins.backup_for: `{primary}` is itself a backup; origin `{}` must back up a library origin",
                        origin.id
                    ));
                }
                Some(_) if !backed_up.insert(primary.as_str()) => {
                    return Err(format!("origins.backup_for: `{primary}` has more than one backup; give it one"));
                }
                Some(_) => {}
            }
        }
        if self.origins.iter().all(|o| o.backup_for.is_some()) {
            return Err("origins: every origin is a backup; at least one must form the library".into());
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
        if self.library.list_timeout.0.is_zero() {
            return Err("library.list_timeout: must be more than 0".into());
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
    fn the_listing_bound_defaults_to_five_minutes_and_is_checked() {
        assert_eq!(parse(GOOD).unwrap().library.list_timeout.0, Duration::from_secs(300));
        let config = parse(&format!("{GOOD}\n[library]\nlist_timeout = \"90s\"\n")).unwrap();
        assert_eq!(config.library.list_timeout.0, Duration::from_secs(90));
        let err = parse(&format!("{GOOD}\n[library]\nlist_timeout = \"0s\"\n")).unwrap_err().to_string();
        assert!(err.contains("library.list_timeout"), "{err}");
    }

    /// Proves L1: 4.2.6
    #[test]
    fn a_backup_origin_must_name_one_library_origin() {
        let backup = |of: &str| {
            format!("{GOOD}\n[[origins]]\nid = \"mirror\"\ntype = \"local\"\npath = \"/m\"\nbackup_for = \"{of}\"\n")
        };
        let config = parse(&backup("nas")).unwrap();
        assert_eq!(config.origins.iter().find(|o| o.id == "mirror").unwrap().backup_for.as_deref(), Some("nas"));
        for (of, why) in [("nowhere", "not configured"), ("mirror", "itself")] {
            let err = parse(&backup(of)).unwrap_err().to_string();
            assert!(err.contains("origins.backup_for") && err.contains(why), "{err}");
        }
        let two = format!(
            "{}[[origins]]\nid = \"mirror2\"\ntype = \"local\"\npath = \"/m2\"\nbackup_for = \"nas\"\n",
            backup("nas")
        );
        assert!(parse(&two).unwrap_err().to_string().contains("more than one backup"));
        let chained = format!(
            "{}[[origins]]\nid = \"mirror2\"\ntype = \"local\"\npath = \"/m2\"\nbackup_for = \"mirror\"\n",
            backup("nas")
        );
        assert!(parse(&chained).unwrap_err().to_string().contains("itself a backup"));
    }

    #[test]
    fn a_config_without_origins_is_rejected() {
        let err = parse("mount_point = \"/m\"\ncache_dir = \"/c\"\norigins = []\n").unwrap_err().to_string();
        assert!(err.contains("origins"), "{err}");
    }

    const S3: &str = r#"
mount_point = "/mnt/music"
cache_dir = "/var/cache/musicfs"

[[origins]]
id = "bucket"
type = "s3"
endpoint = "https://s3.example.com"
bucket = "music"
prefix = "library/flac"
access_key = "AKIAEXAMPLE"
secret_key_file = "/etc/musicfs/s3-secret"
"#;

    #[test]
    fn an_s3_origin_parses_with_its_fields_and_default_region() {
        let config = parse(S3).unwrap();
        let o = &config.origins[0];
        assert_eq!(o.kind, OriginKind::S3);
        assert_eq!(o.endpoint.as_deref(), Some("https://s3.example.com"));
        assert_eq!(o.bucket.as_deref(), Some("music"));
        assert_eq!(o.prefix.as_deref(), Some("library/flac"));
        assert_eq!(o.access_key.as_deref(), Some("AKIAEXAMPLE"));
        assert_eq!(o.secret_key_file.as_deref(), Some(Path::new("/etc/musicfs/s3-secret")));
        assert_eq!((o.region.as_deref(), o.path.as_deref()), (None, None));
        // A local origin and an s3 one side by side.
        let both = format!("{GOOD}\n{}", &S3[S3.find("[[origins]]").unwrap()..]);
        let both = both
            .replace("[cache]\nmax_size = \"2GiB\"\nchunk_avg = \"512KiB\"\n\n[fuse]\nread_timeout = \"10s\"\n", "");
        assert_eq!(parse(&both).unwrap().origins.len(), 2);
    }

    #[test]
    fn s3_origins_need_their_own_fields_and_refuse_the_local_ones() {
        let cases: [(&str, &str, &str); 11] = [
            ("endpoint = \"https://s3.example.com\"\n", "", "origins.endpoint: required"),
            ("https://s3.example.com", "ftp://x", "origins.endpoint"),
            ("https://s3.example.com", "https://", "origins.endpoint"),
            ("bucket = \"music\"\n", "", "origins.bucket: required"),
            ("bucket = \"music\"", "bucket = \"a/b\"", "origins.bucket"),
            ("prefix = \"library/flac\"", "prefix = \"library/../etc\"", "origins.prefix"),
            ("prefix = \"library/flac\"", "prefix = \"a//b\"", "origins.prefix"),
            ("access_key = \"AKIAEXAMPLE\"\n", "", "origins.access_key: required"),
            ("secret_key_file = \"/etc/musicfs/s3-secret\"\n", "", "needs one of secret_key_file"),
            ("/etc/musicfs/s3-secret", "s3-secret", "origins.secret_key_file"),
            ("type = \"s3\"", "type = \"s3\"\npath = \"/srv/music\"", "origins.path: only for `type = \"local\"`"),
        ];
        for (from, to, want) in cases {
            assert!(S3.contains(from), "{from}");
            let err = parse(&S3.replace(from, to)).unwrap_err().to_string();
            assert!(err.contains(want) && err.contains("bucket"), "{from} -> {to}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        let two = S3.replace("secret_key_file", "secret_key_env = \"S3_SECRET\"\nsecret_key_file");
        assert!(parse(&two).unwrap_err().to_string().contains("more than one"));
        // S3 fields on a local origin, and a local origin without a path.
        let err = parse(&GOOD.replace("priority = 1", "priority = 1\nbucket = \"x\"")).unwrap_err().to_string();
        assert!(err.contains("origins.bucket: only for `type = \"s3\"`"), "{err}");
        let err = parse(&GOOD.replace("path = \"/srv/music\"", "")).unwrap_err().to_string();
        assert!(err.contains("origins.path: required"), "{err}");
        // A misspelt key is still an error naming the line.
        let err = parse(&S3.replace("access_key", "acces_key")).unwrap_err().to_string();
        assert!(err.contains(":11:") && err.contains("acces_key"), "{err}");
    }

    #[test]
    fn the_s3_secret_comes_from_inline_file_or_env_and_never_shows_in_debug() {
        let inline =
            parse(&S3.replace("secret_key_file = \"/etc/musicfs/s3-secret\"", "secret_key = \"hunter2\"")).unwrap();
        assert_eq!(inline.origins[0].secret().unwrap(), "hunter2");
        assert!(!format!("{inline:?}").contains("hunter2"), "the secret shows in Debug");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "from-a-file\n").unwrap();
        let text = S3.replace("/etc/musicfs/s3-secret", file.to_str().unwrap());
        assert_eq!(parse(&text).unwrap().origins[0].secret().unwrap(), "from-a-file");
        std::fs::remove_file(&file).unwrap();
        let err = parse(&text).unwrap().origins[0].secret().unwrap_err();
        assert!(err.contains("origins.secret_key_file") && err.contains("cannot read"), "{err}");

        let var = format!("MUSICFS_TEST_S3_SECRET_{}", std::process::id());
        let text = S3.replace("secret_key_file = \"/etc/musicfs/s3-secret\"", &format!("secret_key_env = \"{var}\""));
        let err = parse(&text).unwrap().origins[0].secret().unwrap_err();
        assert!(err.contains(&var), "{err}");
        // SAFETY: nextest runs each test in its own process; nothing else reads this variable.
        unsafe { std::env::set_var(&var, "from-env") };
        assert_eq!(parse(&text).unwrap().origins[0].secret().unwrap(), "from-env");
    }

    const SFTP: &str = r#"
mount_point = "/mnt/music"
cache_dir = "/var/cache/musicfs"

[[origins]]
id = "nas-sftp"
type = "sftp"
host = "nas.example.com"
user = "music"
private_key_file = "/etc/musicfs/id_ed25519"
known_hosts_file = "/etc/musicfs/known_hosts"
path = "/srv/music"
"#;

    #[test]
    fn an_sftp_origin_parses_with_its_fields_and_default_port() {
        let config = parse(SFTP).unwrap();
        let o = &config.origins[0];
        assert_eq!(o.kind, OriginKind::Sftp);
        assert_eq!(o.host.as_deref(), Some("nas.example.com"));
        assert_eq!(o.port, None);
        assert_eq!(o.port.unwrap_or(DEFAULT_SFTP_PORT), 22);
        assert_eq!(o.user.as_deref(), Some("music"));
        assert_eq!(o.private_key_file.as_deref(), Some(Path::new("/etc/musicfs/id_ed25519")));
        assert_eq!(o.known_hosts_file.as_deref(), Some(Path::new("/etc/musicfs/known_hosts")));
        assert_eq!(o.path.as_deref(), Some(Path::new("/srv/music")));
        // A port, a fingerprint instead of known_hosts, and a path relative to the login directory.
        let fp = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
        let other = SFTP
            .replace("user = \"music\"", "user = \"music\"\nport = 2222")
            .replace("known_hosts_file = \"/etc/musicfs/known_hosts\"", &format!("host_key_fingerprint = \"{fp}\""))
            .replace("\"/srv/music\"", "\"music\"");
        let config = parse(&other).unwrap();
        let o = &config.origins[0];
        assert_eq!((o.port, o.host_key_fingerprint.as_deref()), (Some(2222), Some(fp)));
        assert_eq!(o.path.as_deref(), Some(Path::new("music")));
        // Beside a local origin.
        let both = format!("{GOOD}\n{}", &SFTP[SFTP.find("[[origins]]").unwrap()..]);
        let both = both
            .replace("[cache]\nmax_size = \"2GiB\"\nchunk_avg = \"512KiB\"\n\n[fuse]\nread_timeout = \"10s\"\n", "");
        assert_eq!(parse(&both).unwrap().origins.len(), 2);
    }

    #[test]
    fn sftp_origins_need_their_own_fields_and_a_known_host_key() {
        let fp = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
        let known = "known_hosts_file = \"/etc/musicfs/known_hosts\"\n";
        let cases: [(&str, String, &str); 14] = [
            ("host = \"nas.example.com\"\n", String::new(), "origins.host: required"),
            ("\"nas.example.com\"", "\"music@nas.example.com\"".into(), "origins.host"),
            ("\"nas.example.com\"", "\"sftp://nas\"".into(), "origins.host"),
            ("user = \"music\"\n", String::new(), "origins.user: required"),
            ("user = \"music\"", "user = \"music\"\nport = 0".into(), "origins.port"),
            ("private_key_file = \"/etc/musicfs/id_ed25519\"\n", String::new(), "origins.private_key_file: required"),
            ("\"/etc/musicfs/id_ed25519\"", "\"id_ed25519\"".into(), "origins.private_key_file"),
            (known, String::new(), "unknown host keys are rejected"),
            ("\"/etc/musicfs/known_hosts\"", "\"known_hosts\"".into(), "origins.known_hosts_file"),
            (known, format!("{known}host_key_fingerprint = \"{fp}\"\n"), "give one"),
            (known, "host_key_fingerprint = \"MD5:aa:bb\"\n".into(), "origins.host_key_fingerprint"),
            (known, format!("host_key_fingerprint = \"{}\"\n", &fp[..40]), "origins.host_key_fingerprint"),
            ("path = \"/srv/music\"\n", String::new(), "origins.path: required"),
            ("type = \"sftp\"", "type = \"sftp\"\nbucket = \"x\"".into(), "origins.bucket: only for `type = \"s3\"`"),
        ];
        for (from, to, want) in cases {
            assert!(SFTP.contains(from), "{from}");
            let err = parse(&SFTP.replace(from, &to)).unwrap_err().to_string();
            assert!(err.contains(want) && err.contains("nas-sftp"), "{from} -> {to}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        // A port that does not fit, named with its line.
        let err = parse(&SFTP.replace("user = \"music\"", "user = \"music\"\nport = 70000")).unwrap_err().to_string();
        assert!(err.contains(":10:") && err.contains("70000"), "{err}");
        // SFTP fields on other types.
        let err = parse(&GOOD.replace("priority = 1", "priority = 1\nhost = \"x\"")).unwrap_err().to_string();
        assert!(err.contains("origins.host: only for `type = \"sftp\"` origins (origin `nas` is local)"), "{err}");
        let err = parse(&S3.replace("access_key", "known_hosts_file = \"/k\"\naccess_key")).unwrap_err().to_string();
        assert!(err.contains("origins.known_hosts_file: only for `type = \"sftp\"`"), "{err}");
        assert!(is_sha256_fingerprint(fp) && !is_sha256_fingerprint("sha256:x"));
    }

    #[test]
    fn a_missing_file_is_one_clear_line() {
        let err = Config::load(Path::new("/nonexistent/musicfs.toml")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/musicfs.toml") && err.contains("cannot read"), "{err}");
    }
}
