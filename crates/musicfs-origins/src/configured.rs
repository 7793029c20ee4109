//! The origins the config names, built: one backend per `[[origins]]` entry, sorted by priority and split
//! into the library's origins and their backups (4.2.6). Remote calls are bounded a little under the FUSE
//! read timeout, like the reader's own origin calls, so a read sees the origin's timeout before its own.

use crate::sftp::{HostKeyCheck, PoolSettings, SftpOrigin, SftpSettings};
use crate::{LocalOrigin, OriginError, S3Origin, S3Settings, SharedOrigin};
use musicfs_core::config::{self, HostKey, OriginSpec, SecretError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Bound on opening one connection to an S3 origin.
const S3_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on opening one SFTP session, login included.
const SFTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The shortest bound on one remote call, however short the read timeout.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_millis(100);

/// Every configured origin, built.
pub struct ConfiguredOrigins {
    /// The origins listed into the library, most preferred first.
    pub library: Vec<SharedOrigin>,
    /// Backups, by the id of the origin each one copies; read from when that origin does not answer.
    pub backups: HashMap<String, SharedOrigin>,
    /// Every origin, the library's and the backups, most preferred first: what the health monitor checks.
    pub all: Vec<SharedOrigin>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("cannot set up s3 origin `{origin}`: {source}")]
    S3 { origin: String, source: OriginError },
}

/// Builds the origins of `configs`. Makes no connection: an origin that is down at start is found by the
/// health monitor like one that goes down later. `runtime` serves the blocking reads of S3 origins.
pub fn from_config(
    configs: &[config::Origin],
    read_timeout: Duration,
    runtime: &tokio::runtime::Handle,
) -> Result<ConfiguredOrigins, BuildError> {
    let mut configs: Vec<&config::Origin> = configs.iter().collect();
    configs.sort_by_key(|o| o.priority);
    let request_timeout = (read_timeout * 9 / 10).max(MIN_REQUEST_TIMEOUT);
    let mut built = ConfiguredOrigins { library: Vec::new(), backups: HashMap::new(), all: Vec::new() };
    for config in configs {
        let origin = build(config, request_timeout, runtime)?;
        match &config.backup_for {
            Some(primary) => {
                built.backups.insert(primary.clone(), origin.clone());
            }
            None => built.library.push(origin.clone()),
        }
        built.all.push(origin);
    }
    Ok(built)
}

fn build(
    config: &config::Origin,
    request_timeout: Duration,
    runtime: &tokio::runtime::Handle,
) -> Result<SharedOrigin, BuildError> {
    let id = config.id.clone();
    Ok(match &config.spec {
        OriginSpec::Local { path } => Arc::new(LocalOrigin::new(id, path.clone())),
        OriginSpec::S3 { endpoint, bucket, prefix, region, access_key, secret, reads_in_flight } => {
            let settings = S3Settings {
                endpoint: endpoint.clone(),
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                region: region.clone(),
                access_key: access_key.clone(),
                secret_key: secret.read(&id)?,
                request_timeout,
                connect_timeout: request_timeout.min(S3_CONNECT_TIMEOUT),
                pool_idle: crate::s3::POOL_IDLE,
                reads_in_flight: *reads_in_flight,
            };
            tracing::info!(origin = %id, endpoint = %settings.endpoint, bucket = %settings.bucket, prefix = ?settings.prefix, "S3 origin");
            let origin = S3Origin::new(id.clone(), settings, runtime.clone())
                .map_err(|source| BuildError::S3 { origin: id, source })?;
            Arc::new(origin)
        }
        OriginSpec::Sftp { host, port, user, private_key_file, host_key, path } => {
            let settings = SftpSettings {
                host: host.clone(),
                port: *port,
                user: user.clone(),
                private_key_file: private_key_file.clone(),
                host_key: match host_key {
                    HostKey::KnownHosts(file) => HostKeyCheck::KnownHosts(file.clone()),
                    HostKey::Fingerprint(fingerprint) => HostKeyCheck::Fingerprint(fingerprint.clone()),
                },
                root: path.clone(),
                timeout: request_timeout,
                connect_timeout: request_timeout.min(SFTP_CONNECT_TIMEOUT),
                pool: PoolSettings::default(),
            };
            tracing::info!(origin = %id, host = %settings.host, port = settings.port, user = %settings.user, root = %settings.root.display(), "SFTP origin");
            Arc::new(SftpOrigin::new(id, settings))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[tokio::test]
    async fn origins_are_sorted_by_priority_and_backups_kept_apart() {
        let local = |id: &str, priority: u32, backup_for: Option<&str>| config::Origin {
            backup_for: backup_for.map(str::to_owned),
            ..config::Origin::local(id, priority, PathBuf::from("/srv").join(id))
        };
        let configs = [local("second", 2, None), local("mirror", 0, Some("first")), local("first", 1, None)];
        let built = from_config(&configs, Duration::from_secs(1), &tokio::runtime::Handle::current()).unwrap();
        let ids = |origins: &[SharedOrigin]| origins.iter().map(|o| o.id().to_owned()).collect::<Vec<_>>();
        assert_eq!(ids(&built.library), ["first", "second"]);
        assert_eq!(ids(&built.all), ["mirror", "first", "second"]);
        assert_eq!(built.backups.get("first").map(|o| o.id()), Some("mirror"));
    }

    #[tokio::test]
    async fn an_unreadable_secret_names_the_origin() {
        let configs = [config::Origin {
            id: "bucket".into(),
            priority: 0,
            backup_for: None,
            spec: OriginSpec::S3 {
                endpoint: "http://127.0.0.1:9".into(),
                bucket: "music".into(),
                prefix: None,
                region: config::DEFAULT_S3_REGION.into(),
                access_key: "k".into(),
                secret: config::SecretSource::File("/nonexistent/secret".into()),
                reads_in_flight: config::DEFAULT_S3_READS_IN_FLIGHT,
            },
        }];
        let err = from_config(&configs, Duration::from_secs(1), &tokio::runtime::Handle::current())
            .err()
            .expect("no secret, no origin");
        assert!(err.to_string().contains("origin `bucket`") && err.to_string().contains("cannot read"), "{err}");
    }
}
