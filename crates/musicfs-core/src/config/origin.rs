//! Origins in the config file. `[[origins]]` tables are read as a flat [`OriginConfig`] with a key for every
//! type, and parsed once, at load, into an [`Origin`]: its shared fields and an [`OriginSpec`] that holds
//! exactly what its type needs. Nothing past the config reads the flat form, so no code downstream has to
//! wonder whether a field is set.

use super::Invalid;
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;

/// The region S3 requests are signed for when the config names none.
pub const DEFAULT_S3_REGION: &str = "us-east-1";
/// Ranged GETs of one object a first read keeps in flight when the config names no `reads_in_flight`: each
/// waits a round trip and the server's own per-request work, so four at once keep a stream going (s3fs keeps
/// five).
pub const DEFAULT_S3_READS_IN_FLIGHT: usize = 4;
/// The most `reads_in_flight` an S3 origin may ask for.
pub const MAX_S3_READS_IN_FLIGHT: usize = 8;
/// The SSH port of an SFTP origin when the config names none.
pub const DEFAULT_SFTP_PORT: u16 = 22;

/// One configured origin.
#[derive(Clone, Debug, PartialEq)]
pub struct Origin {
    /// A short stable name; it is stored with every track, so renaming it means a rescan.
    pub id: String,
    /// Lower is preferred.
    pub priority: u32,
    /// Makes this origin a copy of another (same layout, any type): never listed into the library, read from
    /// when that origin does not answer. Files served from it are flagged and re-validated against the
    /// original when it returns (4.2.6).
    pub backup_for: Option<String>,
    pub spec: OriginSpec,
}

/// Where an origin's music is and how to reach it.
#[derive(Clone, Debug, PartialEq)]
pub enum OriginSpec {
    /// A directory: a local disk, or an NFS/SMB mount. Absolute.
    Local { path: PathBuf },
    S3 {
        /// `https://host[:port]`, or `http://` for a server on a trusted network.
        endpoint: String,
        bucket: String,
        /// Only keys under this prefix (`music` or `music/flac`) form the library; `None` is the whole bucket.
        prefix: Option<String>,
        /// The region requests are signed for ([`DEFAULT_S3_REGION`] unless configured).
        region: String,
        access_key: String,
        secret: SecretSource,
        /// Ranged GETs of one object a first read keeps in flight (1 ..= [`MAX_S3_READS_IN_FLIGHT`]).
        reads_in_flight: usize,
    },
    Sftp {
        host: String,
        port: u16,
        user: String,
        /// The private key to log in with (absolute; OpenSSH or PEM format, without a passphrase).
        private_key_file: PathBuf,
        host_key: HostKey,
        /// The music directory on the server: absolute, or relative to where SFTP sessions start.
        path: PathBuf,
    },
}

impl OriginSpec {
    pub fn kind(&self) -> OriginKind {
        match self {
            OriginSpec::Local { .. } => OriginKind::Local,
            OriginSpec::S3 { .. } => OriginKind::S3,
            OriginSpec::Sftp { .. } => OriginKind::Sftp,
        }
    }
}

impl Origin {
    /// A `local` origin at `path`.
    pub fn local(id: impl Into<String>, priority: u32, path: PathBuf) -> Self {
        Origin { id: id.into(), priority, backup_for: None, spec: OriginSpec::Local { path } }
    }
}

/// Where an S3 origin's secret key comes from. It is read when the origin is built (at start), so a rotated
/// file or variable takes effect at the next start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// In the config file itself.
    Inline(Secret),
    /// A file holding it (one line; surrounding whitespace is ignored).
    File(PathBuf),
    /// An environment variable holding it.
    Env(String),
}

/// The secret key of an S3 origin could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("origins.secret_key_file: cannot read `{}` (origin `{origin}`): {source}", file.display())]
    Unreadable { origin: String, file: PathBuf, source: std::io::Error },
    #[error("origins.secret_key_file: `{}` (origin `{origin}`) is empty", file.display())]
    EmptyFile { origin: String, file: PathBuf },
    #[error("origins.secret_key_env: `{var}` (origin `{origin}`) is not set or empty")]
    Unset { origin: String, var: String },
}

impl SecretSource {
    /// The secret key now, for origin `origin` (named in errors).
    pub fn read(&self, origin: &str) -> Result<String, SecretError> {
        match self {
            SecretSource::Inline(secret) => Ok(secret.0.clone()),
            SecretSource::File(file) => {
                let text = std::fs::read_to_string(file).map_err(|source| SecretError::Unreadable {
                    origin: origin.to_owned(),
                    file: file.clone(),
                    source,
                })?;
                match text.trim() {
                    "" => Err(SecretError::EmptyFile { origin: origin.to_owned(), file: file.clone() }),
                    secret => Ok(secret.to_owned()),
                }
            }
            SecretSource::Env(var) => match std::env::var(var) {
                Ok(secret) if !secret.trim().is_empty() => Ok(secret.trim().to_owned()),
                _ => Err(SecretError::Unset { origin: origin.to_owned(), var: var.clone() }),
            },
        }
    }
}

/// How an SFTP server's host key is known. There is no "accept anything".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostKey {
    /// An OpenSSH known_hosts file (absolute) that must list the server's key.
    KnownHosts(PathBuf),
    /// The key's fingerprint as `ssh-keygen -lf` prints it (`SHA256:…`).
    Fingerprint(String),
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

/// `SHA256:` and the 43 unpadded base64 characters of a SHA-256 digest, as OpenSSH prints fingerprints.
pub fn is_sha256_fingerprint(text: &str) -> bool {
    text.strip_prefix("SHA256:")
        .is_some_and(|b64| b64.len() == 43 && b64.chars().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/'))
}

/// An `[[origins]]` table as written: every key of every type, checked and turned into an [`Origin`] by
/// [`OriginConfig::parse`].
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct OriginConfig {
    id: String,
    #[serde(rename = "type")]
    kind: OriginKind,
    #[serde(default)]
    priority: u32,
    backup_for: Option<String>,
    /// `local`: the root directory, absolute. `sftp`: the root directory on the server.
    path: Option<PathBuf>,
    endpoint: Option<String>,
    bucket: Option<String>,
    prefix: Option<String>,
    region: Option<String>,
    access_key: Option<String>,
    /// The secret key inline (prefer `secret_key_file` or `secret_key_env`).
    secret_key: Option<Secret>,
    secret_key_file: Option<PathBuf>,
    secret_key_env: Option<String>,
    reads_in_flight: Option<usize>,
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    private_key_file: Option<PathBuf>,
    known_hosts_file: Option<PathBuf>,
    /// With neither this nor `known_hosts_file`, the origin is refused: unknown host keys are never accepted.
    host_key_fingerprint: Option<String>,
}

impl OriginConfig {
    /// The id as written, for the checks that span origins.
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// Checks the fields of one origin against its type and keeps what the type needs. The message names the
    /// key and the origin.
    pub(super) fn parse(self) -> Result<Origin, Invalid> {
        self.check_keys_fit_the_type()?;
        let spec = match self.kind {
            OriginKind::Local => self.local()?,
            OriginKind::S3 => self.s3()?,
            OriginKind::Sftp => self.sftp()?,
        };
        Ok(Origin { id: self.id, priority: self.priority, backup_for: self.backup_for, spec })
    }

    fn check_keys_fit_the_type(&self) -> Result<(), Invalid> {
        let id = &self.id;
        let kind = self.kind.name();
        // Every type-specific key, with the types it belongs to.
        let typed: [(&str, bool, &[OriginKind]); 16] = [
            ("path", self.path.is_some(), &[OriginKind::Local, OriginKind::Sftp]),
            ("endpoint", self.endpoint.is_some(), &[OriginKind::S3]),
            ("bucket", self.bucket.is_some(), &[OriginKind::S3]),
            ("prefix", self.prefix.is_some(), &[OriginKind::S3]),
            ("region", self.region.is_some(), &[OriginKind::S3]),
            ("access_key", self.access_key.is_some(), &[OriginKind::S3]),
            ("secret_key", self.secret_key.is_some(), &[OriginKind::S3]),
            ("secret_key_file", self.secret_key_file.is_some(), &[OriginKind::S3]),
            ("secret_key_env", self.secret_key_env.is_some(), &[OriginKind::S3]),
            ("reads_in_flight", self.reads_in_flight.is_some(), &[OriginKind::S3]),
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
                return Err(Invalid::new(
                    format!("origins.{key}"),
                    format!("only for {} origins (origin `{id}` is {kind}{hint})", types.join(" or ")),
                ));
            }
        }
        Ok(())
    }

    fn local(&self) -> Result<OriginSpec, Invalid> {
        let id = &self.id;
        let Some(path) = &self.path else {
            return Err(Invalid::new("origins.path", format!("required for local origin `{id}`")));
        };
        if !path.is_absolute() {
            return Err(Invalid::new("origins.path", format!("`{}` (origin `{id}`) must be absolute", path.display())));
        }
        Ok(OriginSpec::Local { path: path.clone() })
    }

    fn s3(&self) -> Result<OriginSpec, Invalid> {
        let id = &self.id;
        let endpoint = self.endpoint.as_deref().unwrap_or_default();
        if endpoint.is_empty() {
            return Err(Invalid::new("origins.endpoint", format!("required for s3 origin `{id}`")));
        }
        let host = endpoint.strip_prefix("https://").or_else(|| endpoint.strip_prefix("http://"));
        if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
            return Err(Invalid::new(
                "origins.endpoint",
                format!("`{endpoint}` (origin `{id}`) must be http://HOST[:PORT] or https://HOST[:PORT]"),
            ));
        }
        let bucket = self.bucket.as_deref().unwrap_or_default();
        if bucket.is_empty() {
            return Err(Invalid::new("origins.bucket", format!("required for s3 origin `{id}`")));
        }
        if bucket.contains('/') || bucket.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Invalid::new("origins.bucket", format!("`{bucket}` (origin `{id}`) is not a bucket name")));
        }
        if let Some(prefix) = &self.prefix {
            let trimmed = prefix.trim_matches('/');
            if trimmed.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..")
                || prefix.chars().any(char::is_control)
            {
                return Err(Invalid::new(
                    "origins.prefix",
                    format!(
                        "`{prefix}` (origin `{id}`) must be key segments like `music` or `music/flac`, without `.`, `..` or `//`"
                    ),
                ));
            }
        }
        if self.region.as_deref().is_some_and(str::is_empty) {
            return Err(Invalid::new("origins.region", format!("empty for s3 origin `{id}`")));
        }
        let access_key = self.access_key.as_deref().unwrap_or_default();
        if access_key.is_empty() {
            return Err(Invalid::new("origins.access_key", format!("required for s3 origin `{id}`")));
        }
        let secret = match (&self.secret_key, &self.secret_key_file, &self.secret_key_env) {
            (None, None, None) => {
                return Err(Invalid::new(
                    "origins.secret_key_file",
                    format!("s3 origin `{id}` needs one of secret_key_file, secret_key_env or secret_key"),
                ));
            }
            (Some(secret), None, None) if secret.0.is_empty() => {
                return Err(Invalid::new("origins.secret_key", format!("empty for s3 origin `{id}`")));
            }
            (Some(secret), None, None) => SecretSource::Inline(secret.clone()),
            (None, Some(file), None) if !file.is_absolute() => {
                return Err(Invalid::new(
                    "origins.secret_key_file",
                    format!("`{}` (origin `{id}`) must be absolute", file.display()),
                ));
            }
            (None, Some(file), None) => SecretSource::File(file.clone()),
            (None, None, Some(var)) if var.is_empty() => {
                return Err(Invalid::new("origins.secret_key_env", format!("empty for s3 origin `{id}`")));
            }
            (None, None, Some(var)) => SecretSource::Env(var.clone()),
            _ => {
                return Err(Invalid::new(
                    "origins.secret_key",
                    format!("s3 origin `{id}` has more than one of secret_key, secret_key_file and secret_key_env"),
                ));
            }
        };
        let reads_in_flight = self.reads_in_flight.unwrap_or(DEFAULT_S3_READS_IN_FLIGHT);
        if !(1..=MAX_S3_READS_IN_FLIGHT).contains(&reads_in_flight) {
            return Err(Invalid::new(
                "origins.reads_in_flight",
                format!("{reads_in_flight} (origin `{id}`) must be 1 ..= {MAX_S3_READS_IN_FLIGHT}"),
            ));
        }
        Ok(OriginSpec::S3 {
            reads_in_flight,
            endpoint: endpoint.to_owned(),
            bucket: bucket.to_owned(),
            prefix: self.prefix.clone(),
            region: self.region.clone().unwrap_or_else(|| DEFAULT_S3_REGION.to_owned()),
            access_key: access_key.to_owned(),
            secret,
        })
    }

    fn sftp(&self) -> Result<OriginSpec, Invalid> {
        let id = &self.id;
        let host = self.host.as_deref().unwrap_or_default();
        if host.is_empty() {
            return Err(Invalid::new("origins.host", format!("required for sftp origin `{id}`")));
        }
        if host.contains(['/', '@']) || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Invalid::new(
                "origins.host",
                format!(
                    "`{host}` (origin `{id}`) must be a host name or address only (the user goes in `user`, the port in `port`)"
                ),
            ));
        }
        if self.port == Some(0) {
            return Err(Invalid::new("origins.port", format!("0 is not a port (origin `{id}`)")));
        }
        let user = self.user.as_deref().unwrap_or_default();
        if user.is_empty() {
            return Err(Invalid::new("origins.user", format!("required for sftp origin `{id}`")));
        }
        if user.chars().any(|c| c.is_whitespace() || c.is_control() || c == '@') {
            return Err(Invalid::new("origins.user", format!("`{user}` (origin `{id}`) is not a user name")));
        }
        let Some(key) = &self.private_key_file else {
            return Err(Invalid::new(
                "origins.private_key_file",
                format!("required for sftp origin `{id}` (logins are by public key)"),
            ));
        };
        if !key.is_absolute() {
            return Err(Invalid::new(
                "origins.private_key_file",
                format!("`{}` (origin `{id}`) must be absolute", key.display()),
            ));
        }
        let host_key = match (&self.known_hosts_file, &self.host_key_fingerprint) {
            (None, None) => {
                return Err(Invalid::new(
                    "origins.known_hosts_file",
                    format!(
                        "sftp origin `{id}` needs known_hosts_file or host_key_fingerprint: \
                     the server's host key must be known, unknown host keys are rejected"
                    ),
                ));
            }
            (Some(_), Some(_)) => {
                return Err(Invalid::new(
                    "origins.host_key_fingerprint",
                    format!("sftp origin `{id}` has both known_hosts_file and host_key_fingerprint; give one"),
                ));
            }
            (Some(file), None) if !file.is_absolute() => {
                return Err(Invalid::new(
                    "origins.known_hosts_file",
                    format!("`{}` (origin `{id}`) must be absolute", file.display()),
                ));
            }
            (Some(file), None) => HostKey::KnownHosts(file.clone()),
            (None, Some(fingerprint)) if !is_sha256_fingerprint(fingerprint) => {
                return Err(Invalid::new(
                    "origins.host_key_fingerprint",
                    format!(
                        "`{fingerprint}` (origin `{id}`) must be `SHA256:` and 43 base64 characters, \
                     as `ssh-keygen -lf <host key>.pub` prints it"
                    ),
                ));
            }
            (None, Some(fingerprint)) => HostKey::Fingerprint(fingerprint.clone()),
        };
        let path = match &self.path {
            None => {
                return Err(Invalid::new(
                    "origins.path",
                    format!("required for sftp origin `{id}` (the music directory on the server)"),
                ));
            }
            Some(path) if path.as_os_str().is_empty() => {
                return Err(Invalid::new("origins.path", format!("empty for sftp origin `{id}`")));
            }
            Some(path) => path.clone(),
        };
        Ok(OriginSpec::Sftp {
            host: host.to_owned(),
            port: self.port.unwrap_or(DEFAULT_SFTP_PORT),
            user: user.to_owned(),
            private_key_file: key.clone(),
            host_key,
            path,
        })
    }
}
