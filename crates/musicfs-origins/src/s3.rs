//! The S3 origin: a bucket (optionally a prefix inside it) on any S3-compatible server, through
//! object_store's `AmazonS3` client.
//!
//! Every remote operation is bounded (3.2): the HTTP client has a request timeout and a connect timeout,
//! object_store's retries are capped at [`MAX_RETRIES`] within the request timeout, and each call is also
//! wrapped in a tokio timeout as the last word, so a dead or silent server fails within the bound instead of
//! hanging. Connections are pooled by the HTTP client and checked before reuse (one the server or a middlebox
//! has closed is dropped from the pool, not handed out); idle ones are closed after [`POOL_IDLE`]; a connection
//! that drops during a request is replaced by a retry of the (idempotent) request, and one that drops while a
//! GET's body is streaming by a ranged GET for the rest.
//!
//! [`Origin::open_blocking`] gives a `Read + Seek` over ranged GETs with a [`READ_AHEAD`] buffer (growing while the parser reads on); its
//! requests run on the runtime captured at construction, waited for (bounded) from the calling thread.
//!
//! Keys map to relative paths by stripping the prefix; a key that could escape the origin root is logged
//! and skipped. Errors are mapped to [`OriginError`]: a missing key is `NotFound`, a timeout is `Timeout`, a
//! refused connection is `Unavailable`, and a name that does not resolve is `Dns` (4.2.5 wants DNS failures
//! told apart from dead servers).

use crate::read_ahead::ReadAhead;
use crate::{Origin, OriginEntry, OriginError, ReadSeek, is_safe_relative};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{DnsFuture, DnsResolver, HttpError, HttpErrorKind};
use object_store::path::Path as KeyPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Idle pooled connections are closed after this long (the HTTP client's pool closes them within twice this):
/// well under the idle limits servers and the proxies in front of them apply (AWS S3 is commonly reported to
/// close idle connections after about 20 s), so a request is not sent on a connection the server is closing
/// at that moment. Music is read in bursts (a track's ingest, a scan) and the pool serves those; between two
/// tracks a connection would go stale anyway.
pub const POOL_IDLE: Duration = Duration::from_secs(5);
/// Retries of one request after a transient failure (connection dropped, 5xx); all within the request timeout.
pub const MAX_RETRIES: usize = 2;
pub use crate::read_ahead::READ_AHEAD;
/// Files a scan reads tags from at once: each costs a round trip or two, which many in flight hide. A
/// scan is bound by latency, not bandwidth (a tag read is one ranged GET of [`READ_AHEAD`] or less): 16 at
/// once took 67 s for 20 000 tracks against a server with 40 ms per request (`cargo xtask bench --peers`),
/// as a home connection to a cloud bucket would. Each holds at most its read-ahead buffer.
pub const SCAN_REQUESTS: usize = 64;

/// Where the bucket is and how to reach it.
#[derive(Clone)]
pub struct S3Settings {
    /// `http://host:port` or `https://host`; plain HTTP is allowed only when the endpoint says so.
    pub endpoint: String,
    pub bucket: String,
    /// Keys under this prefix (without leading or trailing `/`) form the library; None for the whole bucket.
    pub prefix: Option<String>,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// Bound on one request (and its retries).
    pub request_timeout: Duration,
    /// Bound on opening one connection.
    pub connect_timeout: Duration,
    /// Pooled connections idle this long are closed ([`POOL_IDLE`] in the daemon; tests use less).
    pub pool_idle: Duration,
    /// Ranged GETs of one object a first read keeps in flight (`reads_in_flight` in the config).
    pub reads_in_flight: usize,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("request_timeout", &self.request_timeout)
            .field("pool_idle", &self.pool_idle)
            .field("reads_in_flight", &self.reads_in_flight)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

pub struct S3Origin {
    id: String,
    store: Arc<AmazonS3>,
    prefix: Option<String>,
    endpoint: String,
    timeout: Duration,
    reads_in_flight: usize,
    runtime: tokio::runtime::Handle,
}

/// A name resolution failure, kept as its own type so error mapping can tell DNS from a dead server.
#[derive(Debug, thiserror::Error)]
#[error("DNS: cannot resolve {host}: {source}")]
pub struct DnsFailure {
    pub host: String,
    #[source]
    pub source: std::io::Error,
}

/// The system resolver (getaddrinfo on a blocking thread), its failures marked as [`DnsFailure`].
#[derive(Debug)]
struct SystemResolver;

impl DnsResolver for SystemResolver {
    fn resolve(&self, host: &str) -> DnsFuture {
        let host = host.to_owned();
        Box::pin(async move {
            let looked_up = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map(|addrs| addrs.map(|a| a.ip()).collect::<Vec<IpAddr>>());
            match looked_up {
                Ok(ips) if !ips.is_empty() => Ok(ips),
                Ok(_) => {
                    let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses");
                    Err(Box::new(DnsFailure { host, source }) as object_store::client::DnsError)
                }
                Err(source) => Err(Box::new(DnsFailure { host, source }) as object_store::client::DnsError),
            }
        })
    }
}

impl S3Origin {
    /// Builds the client (no request is made). `runtime` serves [`Origin::open_blocking`]'s reads.
    pub fn new(
        id: impl Into<String>,
        settings: S3Settings,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, OriginError> {
        Self::with_resolver(id, settings, runtime, Arc::new(SystemResolver))
    }

    /// As [`S3Origin::new`], with another name resolver (tests use one that always fails).
    pub fn with_resolver(
        id: impl Into<String>,
        settings: S3Settings,
        runtime: tokio::runtime::Handle,
        resolver: Arc<dyn DnsResolver>,
    ) -> Result<Self, OriginError> {
        let id = id.into();
        let options = ClientOptions::new()
            .with_allow_http(settings.endpoint.starts_with("http://"))
            .with_timeout(settings.request_timeout)
            .with_connect_timeout(settings.connect_timeout)
            .with_pool_idle_timeout(settings.pool_idle)
            .with_dns_resolver(resolver);
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(500),
                base: 2.0,
            },
            max_retries: MAX_RETRIES,
            retry_timeout: settings.request_timeout,
        };
        let store = AmazonS3Builder::new()
            .with_endpoint(&settings.endpoint)
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_access_key_id(&settings.access_key)
            .with_secret_access_key(&settings.secret_key)
            .with_client_options(options)
            .with_retry(retry)
            .build()
            .map_err(|e| OriginError::Unavailable(format!("S3 origin `{id}`: {}", build_failure(&e))))?;
        let prefix = settings.prefix.map(|p| p.trim_matches('/').to_owned()).filter(|p| !p.is_empty());
        if let Some(p) = &prefix
            && KeyPath::parse(p).is_err()
        {
            return Err(OriginError::Unavailable(format!("S3 origin `{id}`: `{p}` is not a usable key prefix")));
        }
        Ok(Self {
            id,
            store: Arc::new(store),
            prefix,
            endpoint: settings.endpoint,
            timeout: settings.request_timeout,
            reads_in_flight: settings.reads_in_flight,
            runtime,
        })
    }

    /// Runs `op` on the runtime and waits for it from this (blocking) thread, bounded. Unlike
    /// `Handle::block_on` this cannot panic, whichever thread calls it.
    fn wait<T: Send + 'static>(
        &self,
        op: impl std::future::Future<Output = Result<T, OriginError>> + Send + 'static,
    ) -> Result<T, OriginError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let task = self.runtime.spawn(async move {
            let _ = tx.send(op.await);
        });
        // The operation bounds itself; the extra second only covers scheduling.
        let result = rx.recv_timeout(self.timeout + Duration::from_secs(1));
        task.abort();
        result.unwrap_or(Err(OriginError::Timeout(self.timeout)))
    }

    /// A handle sharing this origin's client, for readers that outlive the borrow.
    fn shared(&self) -> Arc<S3Origin> {
        Arc::new(S3Origin {
            id: self.id.clone(),
            store: self.store.clone(),
            prefix: self.prefix.clone(),
            endpoint: self.endpoint.clone(),
            timeout: self.timeout,
            reads_in_flight: self.reads_in_flight,
            runtime: self.runtime.clone(),
        })
    }

    /// The object key for a relative path (None for a path that is unsafe or not UTF-8).
    fn key(&self, rel: &Path) -> Option<KeyPath> {
        rel_to_key(self.prefix.as_deref(), rel)
    }

    /// The prefix as a listing argument, unencoded like the keys (checked in the constructor).
    fn list_prefix(&self) -> Option<KeyPath> {
        self.prefix.as_deref().and_then(|p| KeyPath::parse(p).ok())
    }

    /// Runs `op` bounded by the request timeout, mapping its error for `rel`.
    async fn bounded<T>(
        &self,
        rel: &Path,
        op: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> Result<T, OriginError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(map_error(e, rel, self.timeout, &self.endpoint)),
            Err(_) => Err(OriginError::Timeout(self.timeout)),
        }
    }

    async fn head(&self, rel: &Path) -> Result<OriginEntry, OriginError> {
        let key = self.key(rel).ok_or_else(|| OriginError::NotFound(rel.to_owned()))?;
        let meta = self.bounded(rel, self.store.head(&key)).await?;
        Ok(OriginEntry {
            rel_path: rel.to_owned(),
            size: meta.size,
            mtime_ns: mtime_ns(&meta),
            version: version(&meta),
        })
    }

    async fn get_range(&self, rel: &Path, offset: u64, len: usize) -> Result<Bytes, OriginError> {
        let key = self.key(rel).ok_or_else(|| OriginError::NotFound(rel.to_owned()))?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        let range = offset..offset.saturating_add(len as u64);
        match self.bounded(rel, self.store.get_range(&key, range)).await {
            Ok(bytes) => Ok(bytes),
            // A range that starts at or past the end: an empty read, as at the end of a local file.
            Err(OriginError::Unavailable(msg)) if msg.contains("status code: 416") => Ok(Bytes::new()),
            Err(e) => Err(e),
        }
    }
}

/// Whole seconds only: a listing reports LastModified to the millisecond, a HEAD only to the second (an HTTP
/// date), and the cache compares the two to see whether a file changed under it.
fn mtime_ns(meta: &object_store::ObjectMeta) -> i64 {
    meta.last_modified.timestamp().saturating_mul(1_000_000_000)
}

/// The ETag changes with the content (it is the MD5 of a simple upload), whatever the clocks say (5.6).
fn version(meta: &object_store::ObjectMeta) -> i64 {
    meta.e_tag.as_deref().map_or(0, |tag| crate::stamp(&[tag.trim_matches('"').as_bytes()]))
}

/// The relative path for an object key, or None if the key is outside the prefix, is the prefix itself,
/// could escape the origin root (`..`, `.`, empty segments, an absolute path), or could not be asked for again
/// by the same key (a NUL, say: a track listed that no read can fetch).
pub fn key_to_rel(prefix: Option<&str>, key: &str) -> Option<PathBuf> {
    let rest = match prefix {
        Some(prefix) => key.strip_prefix(prefix)?.strip_prefix('/')?,
        None => key,
    };
    if rest.is_empty() || rest.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") {
        return None;
    }
    let rel = PathBuf::from(rest);
    let fetchable = rel_to_key(prefix, &rel).is_some_and(|back| back.as_ref() == key);
    (is_safe_relative(&rel) && fetchable).then_some(rel)
}

/// The object key for a relative path: `prefix/rel`, or None for an unsafe or non-UTF-8 path.
pub fn rel_to_key(prefix: Option<&str>, rel: &Path) -> Option<KeyPath> {
    if !is_safe_relative(rel) {
        return None;
    }
    let rel = rel.to_str()?;
    let key = match prefix {
        Some(prefix) => format!("{prefix}/{rel}"),
        None => rel.to_owned(),
    };
    // `parse` keeps the key as it is (`from` would percent-encode some characters and miss the object).
    KeyPath::parse(key).ok()
}

/// Maps an object_store error to an [`OriginError`]; see the module docs.
pub fn map_error(err: object_store::Error, rel: &Path, timeout: Duration, endpoint: &str) -> OriginError {
    if let object_store::Error::NotFound { .. } = err {
        return OriginError::NotFound(rel.to_owned());
    }
    let mut kind = None;
    let mut dns = None;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(d) = e.downcast_ref::<DnsFailure>() {
            dns = Some(OriginError::Dns {
                host: d.host.clone(),
                detail: format!("cannot resolve {}: {}", d.host, d.source),
            });
        } else if let Some(h) = e.downcast_ref::<HttpError>() {
            kind.get_or_insert(h.kind());
        } else if dns.is_none() && e.to_string().starts_with("dns error") {
            dns = Some(OriginError::Dns {
                host: endpoint.to_owned(),
                detail: format!("cannot resolve the host of {endpoint}: {e}"),
            });
        }
        source = e.source();
    }
    let chain = error_chain(&err);
    if let Some(dns) = dns {
        return dns;
    }
    match kind {
        Some(HttpErrorKind::Timeout) => OriginError::Timeout(timeout),
        Some(HttpErrorKind::Connect) => OriginError::Unavailable(format!("cannot connect to {endpoint}: {chain}")),
        _ => OriginError::Unavailable(format!("S3 request to {endpoint} failed: {chain}")),
    }
}

/// An error with all its sources, on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

#[async_trait]
impl Origin for S3Origin {
    fn id(&self) -> &str {
        &self.id
    }

    async fn list(&self) -> Result<Vec<OriginEntry>, OriginError> {
        let prefix = self.list_prefix();
        let root = Path::new("");
        let mut stream = self.store.list(prefix.as_ref());
        let mut out = Vec::new();
        // One page per request: each bounded on its own, so a big bucket is not cut off by one timeout.
        loop {
            let next = match tokio::time::timeout(self.timeout, stream.next()).await {
                Ok(next) => next,
                Err(_) => return Err(OriginError::Timeout(self.timeout)),
            };
            let meta = match next {
                None => break,
                Some(Ok(meta)) => meta,
                Some(Err(e)) => return Err(map_error(e, root, self.timeout, &self.endpoint)),
            };
            match key_to_rel(self.prefix.as_deref(), meta.location.as_ref()) {
                Some(rel) => out.push(OriginEntry {
                    rel_path: rel,
                    size: meta.size,
                    mtime_ns: mtime_ns(&meta),
                    version: version(&meta),
                }),
                None => {
                    tracing::warn!(origin = %self.id, key = %meta.location, "skipping an object key that is not a safe relative path")
                }
            }
        }
        out.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
        Ok(out)
    }

    async fn stat(&self, rel: &Path) -> Result<OriginEntry, OriginError> {
        self.head(rel).await
    }

    async fn read_range(&self, rel: &Path, offset: u64, len: usize) -> Result<Bytes, OriginError> {
        self.get_range(rel, offset, len).await
    }

    fn open_blocking(&self, rel: &Path) -> Result<Box<dyn ReadSeek>, OriginError> {
        let origin = self.shared();
        let r = rel.to_owned();
        let size = self.wait(async move { origin.head(&r).await })?.size;
        self.open_sized(rel, size)
    }

    fn open_sized(&self, rel: &Path, size: u64) -> Result<Box<dyn ReadSeek>, OriginError> {
        let (origin, rel) = (self.shared(), rel.to_owned());
        Ok(Box::new(ReadAhead::new(size, move |pos, want| {
            let (o, r) = (origin.clone(), rel.clone());
            origin.wait(async move { o.get_range(&r, pos, want).await })
        })))
    }

    fn scan_parallelism(&self) -> usize {
        SCAN_REQUESTS
    }

    fn reads_in_flight(&self) -> usize {
        self.reads_in_flight
    }

    fn random_reads_ingest(&self) -> bool {
        true
    }

    async fn health_check(&self) -> Result<(), OriginError> {
        // One list request of the prefix, at most one key: cheap, and it checks bucket and credentials.
        let prefix = self.list_prefix();
        let mut stream = self.store.list(prefix.as_ref());
        match tokio::time::timeout(self.timeout, stream.next()).await {
            Err(_) => Err(OriginError::Timeout(self.timeout)),
            Ok(Some(Err(e))) => Err(map_error(e, Path::new(""), self.timeout, &self.endpoint)),
            Ok(_) => Ok(()),
        }
    }
}

/// Why the S3 client could not be built, with every cause: the HTTP client's own message is only "builder
/// error". The TLS library loads the system's CA certificates even for an `http://` endpoint, and fails
/// without any (a minimal container), so that case also says what to install.
fn build_failure(error: &object_store::Error) -> String {
    let mut text = format!("cannot build the S3 client: {error}");
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        text.push_str(&format!(": {e}"));
        cause = e.source();
    }
    if text.contains("No CA certificates") {
        text.push_str(
            " (the TLS library found no CA certificates: install the system's CA bundle, e.g. Debian's \
             ca-certificates, or point SSL_CERT_FILE at one)",
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Instant;

    #[test]
    fn keys_map_to_relative_paths_under_the_prefix() {
        assert_eq!(key_to_rel(None, "Artist/Album/01.flac"), Some(PathBuf::from("Artist/Album/01.flac")));
        assert_eq!(key_to_rel(Some("lib"), "lib/a/b.mp3"), Some(PathBuf::from("a/b.mp3")));
        assert_eq!(key_to_rel(Some("lib/music"), "lib/music/x.ogg"), Some(PathBuf::from("x.ogg")));
        // Outside the prefix, or a key that only starts with the same letters.
        assert_eq!(key_to_rel(Some("lib"), "other/b.mp3"), None);
        assert_eq!(key_to_rel(Some("lib"), "library/b.mp3"), None);
        // The prefix itself (a "directory marker").
        assert_eq!(key_to_rel(Some("lib"), "lib/"), None);
        // Names with spaces and non-ASCII characters are fine.
        assert_eq!(key_to_rel(None, "Björk/Début (1993)/01 - Human Behaviour.flac").unwrap().components().count(), 3);
        // And the mapping goes back to the same key.
        let rel = key_to_rel(Some("lib"), "lib/A {b}/c%20d^.flac").unwrap();
        assert_eq!(rel_to_key(Some("lib"), &rel).unwrap().as_ref(), "lib/A {b}/c%20d^.flac");
    }

    #[test]
    fn unsafe_keys_are_rejected() {
        for key in ["../etc/passwd", "a/../../b", "a/./b", "/abs/x.flac", "a//b.flac", "a/b/", "", ".", ".."] {
            assert_eq!(key_to_rel(None, key), None, "{key:?} must be rejected");
            assert_eq!(key_to_rel(Some("lib"), &format!("lib/{key}")), None, "lib/{key:?} must be rejected");
        }
        assert!(rel_to_key(None, Path::new("../x")).is_none());
        assert!(rel_to_key(None, Path::new("/x")).is_none());
    }

    fn settings(endpoint: String) -> S3Settings {
        S3Settings {
            endpoint,
            bucket: "music".into(),
            prefix: None,
            region: "us-east-1".into(),
            access_key: "k".into(),
            secret_key: "s".into(),
            request_timeout: Duration::from_millis(700),
            connect_timeout: Duration::from_millis(500),
            pool_idle: POOL_IDLE,
            reads_in_flight: musicfs_core::config::DEFAULT_S3_READS_IN_FLIGHT,
        }
    }

    /// A server that accepts connections and never answers: every operation must give up within its bound.
    /// Proves L1: 4.2.1
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_operation_on_a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let held = std::thread::spawn(move || {
            let mut conns = Vec::new();
            for c in listener.incoming().take(64) {
                conns.push(c);
            }
        });
        let origin = Arc::new(
            S3Origin::new("s3", settings(format!("http://{addr}")), tokio::runtime::Handle::current()).unwrap(),
        );
        let rel = Path::new("a.flac");
        // A hang detector around each operation: the origin's own timeout (700 ms) must answer first.
        async fn within<T>(op: impl std::future::Future<Output = Result<T, OriginError>>) -> Result<T, OriginError> {
            let started = Instant::now();
            let result = tokio::time::timeout(Duration::from_secs(5), op).await.expect("the operation hung");
            assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
            result
        }
        assert!(matches!(within(origin.list()).await, Err(OriginError::Timeout(_))));
        assert!(matches!(within(origin.stat(rel)).await, Err(OriginError::Timeout(_))));
        assert!(matches!(within(origin.read_range(rel, 0, 10)).await, Err(OriginError::Timeout(_))));
        assert!(matches!(within(origin.health_check()).await, Err(OriginError::Timeout(_))));
        let o = origin.clone();
        let opened = within(async move {
            tokio::task::spawn_blocking(move || o.open_blocking(Path::new("a.flac")).map(|_| ())).await.unwrap()
        })
        .await;
        assert!(matches!(opened, Err(OriginError::Timeout(_))), "{opened:?}");
        drop(held);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_connection_is_unavailable_and_a_dns_failure_says_dns() {
        // A port nobody listens on.
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let origin =
            S3Origin::new("s3", settings(format!("http://{addr}")), tokio::runtime::Handle::current()).unwrap();
        let started = Instant::now();
        match origin.health_check().await {
            Err(OriginError::Unavailable(msg)) => assert!(!msg.contains("DNS"), "{msg}"),
            other => panic!("a refused connection should be Unavailable, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(3), "a refused connection took {:?}", started.elapsed());

        #[derive(Debug)]
        struct NoDns;
        impl DnsResolver for NoDns {
            fn resolve(&self, host: &str) -> DnsFuture {
                let host = host.to_owned();
                Box::pin(async move {
                    let source = std::io::Error::other("Name or service not known");
                    Err(Box::new(DnsFailure { host, source }) as object_store::client::DnsError)
                })
            }
        }
        let origin = S3Origin::with_resolver(
            "s3",
            settings("http://s3.nowhere.invalid:9000".into()),
            tokio::runtime::Handle::current(),
            Arc::new(NoDns),
        )
        .unwrap();
        for result in [origin.health_check().await, origin.read_range(Path::new("a"), 0, 1).await.map(|_| ())] {
            match result {
                Err(e @ OriginError::Dns { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.starts_with("origin unavailable: DNS") && msg.contains("s3.nowhere.invalid"), "{msg}")
                }
                other => panic!("a DNS failure should be OriginError::Dns, got {other:?}"),
            }
        }
    }
}
