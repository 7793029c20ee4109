//! The remote-library fixture: a library of real tagged audio served by a real server of either kind
//! ([`Remote::S3`]: s3s-fs or MinIO; [`Remote::Sftp`]: OpenSSH `sshd`), the `[[origins]]` table that points
//! the daemon at it (directly or through a proxy), and Toxiproxy in front of it ([`Network`], [`SlowLink`]). A behaviour
//! that is the same for every remote is written once, as a function of [`Remote`], and instantiated per
//! backend by thin `#[test]` functions (as mountpoint-s3's test session creator runs one test against a mock
//! and a real S3); what only one backend has (pools, host keys, DNS) stays in that backend's file.

use musicfs_test_utils::daemon::{Daemon, Scratch};
use musicfs_test_utils::sample::{self, SampleOptions, SampleTrack};
use musicfs_test_utils::servers::noxious_client::Proxy;
use musicfs_test_utils::servers::runtime;
use musicfs_test_utils::servers::s3::S3Server;
use musicfs_test_utils::servers::sshd::Sshd;
use musicfs_test_utils::servers::tokio::runtime::Runtime;
use musicfs_test_utils::servers::toxiproxy::{Toxiproxy, bandwidth};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;

use crate::mounted::start;

/// The bucket S3 libraries live in.
pub const BUCKET: &str = "music";
/// The key prefix an S3 library lives under (the origin's `prefix`).
pub const PREFIX: &str = "library";

/// Which kind of server holds the library.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remote {
    S3,
    Sftp,
}

impl Remote {
    /// The origin's id in the daemon's config and status.
    pub fn origin_id(self) -> &'static str {
        match self {
            Remote::S3 => "bucket",
            Remote::Sftp => "nas",
        }
    }
}

/// Real tagged audio, generated once per test into its own directory: what the remote serves, and the bytes
/// a read through the mount must return.
pub struct Library {
    pub dir: tempfile::TempDir,
    pub tracks: Vec<SampleTrack>,
}

impl Library {
    pub fn generate(tracks: usize) -> Library {
        Library::generate_long(tracks, 1.0)
    }

    /// Tracks of `seconds` each (a WAV takes 32 KB a second).
    pub fn generate_long(tracks: usize, seconds: f32) -> Library {
        let dir = tempfile::tempdir().unwrap();
        let tracks = sample::generate(dir.path(), &SampleOptions { tracks, hostile: false, seconds })
            .expect("generate sample library (needs ffmpeg)");
        Library { dir, tracks }
    }

    /// Where track `i` was generated.
    pub fn path(&self, i: usize) -> PathBuf {
        self.dir.path().join(&self.tracks[i].rel_path)
    }

    pub fn bytes(&self, i: usize) -> Vec<u8> {
        std::fs::read(self.path(i)).unwrap()
    }

    /// Track indexes, the largest file first.
    pub fn by_size_descending(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.tracks.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(std::fs::metadata(self.path(i)).unwrap().len()));
        order
    }

    /// Track `i`'s key in the bucket under `prefix`.
    pub fn key(&self, prefix: &str, i: usize) -> String {
        format!("{prefix}/{}", self.tracks[i].rel_path.to_str().unwrap())
    }

    /// An S3 server whose bucket [`BUCKET`] holds these tracks under these prefixes.
    pub fn bucket(&self, prefixed: &[(&str, Range<usize>)]) -> S3Server {
        let server = S3Server::start().unwrap();
        server.create_bucket(BUCKET).unwrap();
        for (prefix, tracks) in prefixed {
            tracks.clone().for_each(|i| self.upload(&server, prefix, i));
        }
        server
    }

    /// Puts track `i` into the bucket under `prefix` (through the server's data dir for s3s-fs).
    pub fn upload(&self, server: &S3Server, prefix: &str, i: usize) {
        server.put_object(BUCKET, &self.key(prefix, i), &self.bytes(i)).unwrap();
    }

    /// Where track `i` shows in the mount.
    pub fn mounted(&self, scratch: &Scratch, i: usize) -> PathBuf {
        scratch.mnt().join(self.tracks[i].expected_tag_path().unwrap())
    }
}

/// An `[[origins]]` table for `prefix` of the bucket at `endpoint`, its secret in a file.
pub fn s3_origin(scratch: &Scratch, server: &S3Server, id: &str, endpoint: &str, prefix: &str) -> String {
    let secret = scratch.dir.path().join(format!("{id}.secret"));
    std::fs::write(&secret, format!("{}\n", server.secret_key())).unwrap();
    format!(
        "[[origins]]\nid = \"{id}\"\ntype = \"s3\"\nendpoint = \"{endpoint}\"\nbucket = \"{BUCKET}\"\nprefix = \"{prefix}\"\n\
         region = \"{}\"\naccess_key = \"{}\"\nsecret_key_file = {:?}\n\n",
        server.region(),
        server.access_key(),
        secret.display().to_string()
    )
}

/// An `[[origins]]` table for `sshd`, reached on `port` (the server's, or a proxy's).
pub fn sftp_origin(sshd: &Sshd, id: &str, port: u16) -> String {
    format!(
        "[[origins]]\nid = \"{id}\"\ntype = \"sftp\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"{}\"\n\
         private_key_file = {:?}\nknown_hosts_file = {:?}\npath = {:?}\n\n",
        sshd.user(),
        sshd.client_key_path().display().to_string(),
        sshd.known_hosts_path().display().to_string(),
        sshd.serve_dir().display().to_string(),
    )
}

enum Server {
    S3(S3Server),
    /// sshd serves its own copy of the served tracks, so a track can be added later.
    Sftp {
        sshd: Sshd,
        _served: tempfile::TempDir,
    },
}

/// A [`Library`] served by a real server of one [`Remote`] kind: some of its tracks at the start, more
/// added later with [`RemoteLibrary::add`].
pub struct RemoteLibrary {
    pub remote: Remote,
    pub library: Library,
    server: Server,
}

impl RemoteLibrary {
    /// Starts `remote`'s server serving the tracks `served` of `library`: under [`PREFIX`] in [`BUCKET`] for
    /// S3, in the directory sshd serves for SFTP.
    pub fn serve(remote: Remote, library: Library, served: impl IntoIterator<Item = usize>) -> RemoteLibrary {
        let server = match remote {
            Remote::S3 => Server::S3(library.bucket(&[])),
            Remote::Sftp => {
                let dir = tempfile::tempdir().unwrap();
                Server::Sftp { sshd: Sshd::start(dir.path()).unwrap(), _served: dir }
            }
        };
        let remote_library = RemoteLibrary { remote, library, server };
        for i in served {
            match &remote_library.server {
                Server::S3(server) => remote_library.library.upload(server, PREFIX, i),
                Server::Sftp { .. } => remote_library.copy_to_served(i),
            }
        }
        remote_library
    }

    /// Copies track `i` into sshd's directory whole: written beside it, then renamed into place, so a listing
    /// never sees half a file.
    fn copy_to_served(&self, i: usize) {
        let to = self.sshd().serve_dir().join(&self.library.tracks[i].rel_path);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let incoming = self.library.dir.path().join(format!(".incoming-{i}"));
        std::fs::copy(self.library.path(i), &incoming).unwrap();
        std::fs::rename(incoming, to).unwrap();
    }

    /// Adds track `i` while the daemon runs: an S3 `PutObject` over HTTP, or a file copied into sshd's
    /// directory.
    pub fn add(&self, i: usize) {
        match &self.server {
            Server::S3(server) => {
                server.http_put_object(BUCKET, &self.library.key(PREFIX, i), &self.library.bytes(i)).unwrap()
            }
            Server::Sftp { .. } => self.copy_to_served(i),
        }
    }

    /// The server's address, for a proxy in front of it.
    pub fn addr(&self) -> SocketAddr {
        match &self.server {
            Server::S3(server) => server.addr(),
            Server::Sftp { sshd, .. } => sshd.addr(),
        }
    }

    /// The `[[origins]]` table for this library with id [`Remote::origin_id`], reached directly or `via` a
    /// proxy (or relay) listening there.
    pub fn origin(&self, scratch: &Scratch, via: Option<SocketAddr>) -> String {
        let id = self.remote.origin_id();
        match &self.server {
            Server::S3(server) => {
                let endpoint = via.map_or_else(|| server.endpoint(), |addr| format!("http://{addr}"));
                s3_origin(scratch, server, id, &endpoint, PREFIX)
            }
            Server::Sftp { sshd, .. } => sftp_origin(sshd, id, via.map_or(sshd.port(), |addr| addr.port())),
        }
    }

    /// Starts the daemon on this library (directly, or `via` a proxy) with `extra` config.
    pub fn mount(&self, scratch: &Scratch, via: Option<SocketAddr>, extra: &str) -> Daemon {
        start(scratch, &self.origin(scratch, via), extra)
    }

    /// The S3 server; a test asks only on [`Remote::S3`].
    pub fn s3(&self) -> &S3Server {
        match &self.server {
            Server::S3(server) => server,
            Server::Sftp { .. } => panic!("an SFTP library has no S3 server"),
        }
    }

    /// The SFTP server; a test asks only on [`Remote::Sftp`].
    pub fn sshd(&self) -> &Sshd {
        match &self.server {
            Server::Sftp { sshd, .. } => sshd,
            Server::S3(_) => panic!("an S3 library has no sshd"),
        }
    }
}

/// Toxiproxy between the daemon and its servers, and the runtime its API calls run on.
pub struct Network {
    toxiproxy: Toxiproxy,
    pub rt: Runtime,
}

impl Network {
    pub fn start() -> Network {
        Network { toxiproxy: Toxiproxy::start().unwrap(), rt: runtime() }
    }

    /// A proxy `name` in front of `upstream`, and the address it listens on.
    pub fn proxy(&self, name: &str, upstream: SocketAddr) -> (Proxy, SocketAddr) {
        self.rt.block_on(self.toxiproxy.create_proxy(name, upstream)).unwrap()
    }
}

/// A remote library of twelve 40-second tracks (two WAVs of 1.3 MB among them, `by_size[0]` and `[1]`) behind a
/// proxy that passes 600 KB/s, so an uncached WAV takes about two seconds to read: time to cut its connection
/// mid-read (N2, N3).
pub struct SlowLink {
    pub served: RemoteLibrary,
    pub net: Network,
    pub proxy: Proxy,
    pub listen: SocketAddr,
    /// Track indexes, the largest file first.
    pub by_size: Vec<usize>,
}

impl SlowLink {
    pub fn start(remote: Remote) -> SlowLink {
        let served = RemoteLibrary::serve(remote, Library::generate_long(12, 40.0), 0..12);
        let by_size = served.library.by_size_descending();
        let net = Network::start();
        let (proxy, listen) = net.proxy("slow", served.addr());
        // Before any connection: toxiproxy-lite applies a toxic to connections made after it was added, and
        // one added later re-links live connections and may lose bytes in flight.
        net.rt.block_on(proxy.add_toxic(&bandwidth("slow", 600))).unwrap();
        SlowLink { served, net, proxy, listen, by_size }
    }
}
