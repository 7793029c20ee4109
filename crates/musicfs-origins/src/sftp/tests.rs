//! Tests of the origin's path mapping, and of the whole origin against servers that fail before any login
//! (silent, refusing, not resolving) or a missing key. The tests against a real sshd are in
//! `tests/integration/sftp_origin.rs`; the host key tests are in `host_keys.rs`.

use super::*;
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;

#[test]
fn relative_paths_map_under_the_root_and_unsafe_ones_are_refused() {
    let root = Path::new("/srv/music");
    assert_eq!(remote_path(root, Path::new("A/B/01.flac")), Some(PathBuf::from("/srv/music/A/B/01.flac")));
    assert_eq!(remote_path(Path::new("music"), Path::new("x.mp3")), Some(PathBuf::from("music/x.mp3")));
    // Bytes that are not UTF-8 stay as they are.
    let odd = Path::new(std::ffi::OsStr::from_bytes(b"caf\xe9/\xff.flac"));
    assert_eq!(remote_path(root, odd).unwrap().as_os_str().as_bytes(), b"/srv/music/caf\xe9/\xff.flac");
    for bad in ["../etc/passwd", "/etc/passwd", "a/../../b", "", "."] {
        assert_eq!(remote_path(root, Path::new(bad)), None, "{bad:?} must be refused");
    }
    // Names in a directory listing: one plain component, whatever its bytes.
    assert!(is_one_name(Path::new("01 - Song.flac")));
    assert!(is_one_name(Path::new(std::ffi::OsStr::from_bytes(b"\xff\xfe.mp3"))));
    for bad in ["..", ".", "", "a/b", "/etc", "../x"] {
        assert!(!is_one_name(Path::new(bad)), "{bad:?} is not one name");
    }
}

fn settings(host: &str, port: u16) -> SftpSettings {
    SftpSettings {
        host: host.into(),
        port,
        user: "music".into(),
        // Any readable file: these servers never get as far as a login.
        private_key_file: std::env::current_exe().unwrap(),
        host_key: HostKeyCheck::Fingerprint(format!("SHA256:{}", "A".repeat(43))),
        root: PathBuf::from("/srv/music"),
        timeout: Duration::from_millis(700),
        connect_timeout: Duration::from_millis(500),
        pool: PoolSettings::default(),
    }
}

/// A server that accepts connections and never answers (no SSH banner): every operation — list, stat,
/// read, the blocking reader's open and the health check — gives up within its bound.
/// Proves L1: 4.2.1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sftp_operation_on_a_silent_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in listener.incoming().take(64) {
            conns.push(c);
        }
    });
    let origin = Arc::new(SftpOrigin::new("sftp", settings("127.0.0.1", addr.port())));
    let rel = Path::new("a.flac");
    // A hang detector around each operation: the origin's own bound (700 ms) must answer first.
    async fn within<T>(op: impl std::future::Future<Output = Result<T, OriginError>>) -> Result<T, OriginError> {
        let started = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(5), op).await.expect("the operation hung");
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
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
    // No session was ever opened, and none is left holding a slot.
    assert_eq!(origin.stats().connects.load(Ordering::Relaxed), 0);
    assert_eq!(origin.open_sessions(), 0);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_unavailable_and_a_dns_failure_says_dns() {
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let origin = SftpOrigin::new("sftp", settings("127.0.0.1", port));
    let started = Instant::now();
    match origin.health_check().await {
        Err(OriginError::Unavailable(msg)) => {
            assert!(msg.contains("connection refused") && !msg.contains("DNS"), "{msg}")
        }
        other => panic!("a refused connection should be Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2), "a refused connection took {:?}", started.elapsed());
    assert_eq!(origin.open_sessions(), 0, "a failed connect must give its slot back");

    let origin = SftpOrigin::new("sftp", settings("musicfs-no-such-host.invalid", 22));
    for result in [origin.health_check().await, origin.read_range(Path::new("a"), 0, 1).await.map(|_| ())] {
        match result {
            Err(e @ OriginError::Dns { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.starts_with("origin unavailable: DNS") && msg.contains("musicfs-no-such-host.invalid"),
                    "{msg}"
                )
            }
            other => panic!("a DNS failure should be OriginError::Dns, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_private_key_is_a_clear_error() {
    let mut s = settings("127.0.0.1", 1);
    s.private_key_file = PathBuf::from("/nonexistent/id_ed25519");
    match SftpOrigin::new("sftp", s).health_check().await {
        Err(OriginError::Unavailable(msg)) => {
            assert!(msg.contains("private_key_file") && msg.contains("/nonexistent/id_ed25519"), "{msg}")
        }
        other => panic!("{other:?}"),
    }
}
