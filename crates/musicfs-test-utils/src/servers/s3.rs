//! [`S3Server`]: a real S3-compatible server on 127.0.0.1:<free port> with its own temp data dir, for
//! S3-origin tests at the network layer (L3). MinIO when `minio` is on PATH, otherwise s3s-fs
//! (`cargo install s3s-fs --version 0.14.1 --locked --features binary`; newer versions need a newer rustc).
//!
//! Filling it: s3s-fs keeps bucket `b` as the directory `<data>/b` and object `k` as the file `<data>/b/k`
//! (metadata files are optional), so with s3s-fs [`S3Server::create_bucket`] and [`S3Server::put_object`]
//! simply write there: instant and independent of the HTTP path under test. MinIO keeps its own on-disk
//! format, so with MinIO they go over HTTP, signed, like [`S3Server::http_create_bucket`] and
//! [`S3Server::http_put_object`] (which work on both servers). [`S3Server::store`] gives an `object_store`
//! client for the server, or for a proxy in front of it with [`S3Server::store_via`].

use super::{START_ATTEMPTS, ServerProcess, block_on, find_program, free_port, report_start, tcp_accepts};
use anyhow::{Context, Result, bail};
use object_store::ObjectStoreExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::signer::{Method, Signer};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tempfile::TempDir;

const ACCESS_KEY: &str = "musicfs-test";
const SECRET_KEY: &str = "musicfs-test-secret";
const REGION: &str = "us-east-1";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const INSTALL: &str = "install MinIO (`minio` on PATH) or s3s-fs with \
                       `cargo install s3s-fs --version 0.14.1 --locked --features binary`";

/// Which program serves S3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S3Backend {
    Minio,
    S3sFs,
}

/// A running S3 server; dropping it kills the server and removes its data.
pub struct S3Server {
    // Fields drop in order: the server is killed before its data dir is removed.
    process: ServerProcess,
    dir: TempDir,
    backend: S3Backend,
    port: u16,
    /// How long the server took to start (until it accepted connections, and for MinIO reported healthy).
    pub started_in: Duration,
}

impl S3Server {
    /// Starts MinIO (if on PATH) or s3s-fs on a free port with an empty data dir.
    pub fn start() -> Result<S3Server> {
        let (backend, program) = match find_program("minio") {
            Some(minio) => (S3Backend::Minio, minio),
            None => {
                (S3Backend::S3sFs, find_program("s3s-fs").with_context(|| format!("no S3 server found; {INSTALL}"))?)
            }
        };
        let dir = tempfile::Builder::new().prefix("musicfs-s3-").tempdir().context("creating S3 temp dir")?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data).context("creating the S3 data dir")?;
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let started = Instant::now();
            let mut cmd = Command::new(&program);
            match backend {
                S3Backend::Minio => {
                    cmd.arg("server").arg(&data).arg("--address").arg(format!("127.0.0.1:{port}"));
                    cmd.arg("--console-address").arg(format!("127.0.0.1:{}", free_port()?));
                    cmd.env("MINIO_ROOT_USER", ACCESS_KEY).env("MINIO_ROOT_PASSWORD", SECRET_KEY);
                    cmd.env("MINIO_BROWSER", "off").env("MINIO_UPDATE", "off");
                }
                S3Backend::S3sFs => {
                    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
                    cmd.args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY]).arg(&data);
                }
            }
            let mut process = ServerProcess::spawn(cmd, &dir.path().join("server.log"), &format!("{backend:?}"))?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let ready = process.wait_until(READY_TIMEOUT, || match backend {
                S3Backend::Minio => http_status(addr, "GET", "/minio/health/ready")
                    .and_then(|status| if status == 200 { Ok(()) } else { bail!("MinIO health: HTTP {status}") }),
                S3Backend::S3sFs => tcp_accepts(addr),
            });
            match ready {
                Ok(()) => {
                    let started_in = started.elapsed();
                    report_start(&format!("S3 ({backend:?})"), &addr.to_string(), started_in);
                    return Ok(S3Server { dir, backend, port, process, started_in });
                }
                Err(err) => last_err = Some(err),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("the S3 server did not start")))
    }

    pub fn backend(&self) -> S3Backend {
        self.backend
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `http://127.0.0.1:<port>` (path-style requests: `<endpoint>/<bucket>/<key>`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn access_key(&self) -> &str {
        ACCESS_KEY
    }

    pub fn secret_key(&self) -> &str {
        SECRET_KEY
    }

    pub fn region(&self) -> &str {
        REGION
    }

    /// The server's data directory (for s3s-fs: `<data>/<bucket>/<key>`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// An `object_store` client for `bucket` on this server.
    pub fn store(&self, bucket: &str) -> Result<AmazonS3> {
        self.store_via(&self.endpoint(), bucket)
    }

    /// An `object_store` client for `bucket` with this server's credentials but another endpoint, such as a
    /// Toxiproxy proxy in front of the server (`http://127.0.0.1:<proxy port>`).
    pub fn store_via(&self, endpoint: &str, bucket: &str) -> Result<AmazonS3> {
        AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_region(REGION)
            .build()
            .with_context(|| format!("building an S3 client for {endpoint}/{bucket}"))
    }

    /// Creates `bucket`: a directory for s3s-fs, a signed HTTP request for MinIO (see the module docs).
    pub fn create_bucket(&self, bucket: &str) -> Result<()> {
        match self.backend {
            S3Backend::S3sFs => std::fs::create_dir_all(self.data_dir().join(checked(bucket)?))
                .with_context(|| format!("creating bucket directory {bucket}")),
            S3Backend::Minio => self.http_create_bucket(bucket),
        }
    }

    /// Stores `bytes` as `bucket`/`key`: a file for s3s-fs, a signed HTTP PUT for MinIO (see the module docs).
    pub fn put_object(&self, bucket: &str, key: &str, bytes: &[u8]) -> Result<()> {
        match self.backend {
            S3Backend::S3sFs => {
                let path = self.data_dir().join(checked(bucket)?).join(checked(key)?);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
                }
                std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
            }
            S3Backend::Minio => self.http_put_object(bucket, key, bytes),
        }
    }

    /// Creates `bucket` with a real, SigV4-presigned `PUT /<bucket>/` request.
    pub fn http_create_bucket(&self, bucket: &str) -> Result<()> {
        let store = self.store(bucket)?;
        let url = block_on(async move {
            Ok(store.signed_url(Method::PUT, &ObjectPath::from(""), Duration::from_secs(300)).await?)
        })?;
        let target = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let status = http_status(self.addr(), "PUT", &target)?;
        match status {
            200 => Ok(()),
            _ => bail!("creating bucket {bucket}: HTTP {status}; server log:\n{}", self.log()),
        }
    }

    /// Stores `bytes` as `bucket`/`key` with a real, signed S3 `PutObject` request.
    pub fn http_put_object(&self, bucket: &str, key: &str, bytes: &[u8]) -> Result<()> {
        let store = self.store(bucket)?;
        let (path, payload) = (ObjectPath::from(key), bytes.to_vec());
        block_on(async move { Ok(store.put(&path, payload.into()).await?) })
            .with_context(|| format!("PUT {bucket}/{key}"))?;
        Ok(())
    }
}

/// Refuses names that would escape the data dir.
fn checked(name: &str) -> Result<&Path> {
    let path = Path::new(name);
    if name.is_empty() || path.is_absolute() || path.components().any(|c| c.as_os_str() == "..") {
        bail!("not a usable bucket or key name: {name:?}");
    }
    Ok(path)
}

/// Sends a bodiless HTTP/1.1 request and returns the status code.
fn http_status(addr: SocketAddr, method: &str, target: &str) -> Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        let n = stream.read(&mut head[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let text = String::from_utf8_lossy(&head[..got]);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad HTTP reply {text:?}"))
}
