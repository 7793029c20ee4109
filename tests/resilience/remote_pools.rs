//! 3.2 in-process: the S3 and SFTP origins against real servers, each behind a counting relay that also
//! drops connections on demand. Connections are pooled (far fewer than requests) and bounded, a dropped one
//! is replaced without the caller seeing an error, idle ones are closed. (Every operation's own timeout is
//! proven against silent servers in the origins' unit tests; the binary's pooling, at L3.)

use musicfs_origins::sftp::{HostKeyCheck, PoolSettings, SftpOrigin, SftpSettings};
use musicfs_origins::{Origin, S3Origin, S3Settings};
use musicfs_test_utils::files::pseudo_random_bytes;
use musicfs_test_utils::servers::relay::Relay;
use musicfs_test_utils::servers::runtime;
use musicfs_test_utils::servers::s3::S3Server;
use musicfs_test_utils::servers::sshd::Sshd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const IDLE: Duration = Duration::from_millis(500);

/// Waits (bounded) until `done`; returns how long that took.
fn until(within: Duration, what: &str, done: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

/// Twenty reads one after another, then eight tasks of three reads at once.
fn read_a_lot(rt: &tokio::runtime::Runtime, origin: &Arc<dyn Origin>, data: &Arc<Vec<u8>>) {
    let rel = Path::new("track.flac");
    for i in 0..20usize {
        let got = rt.block_on(origin.read_range(rel, (i * 10_000) as u64, 4096)).unwrap();
        assert!(got[..] == data[i * 10_000..i * 10_000 + 4096], "read {i} differs");
    }
    rt.block_on(async {
        let tasks: Vec<_> = (0..8usize)
            .map(|t| {
                let (origin, data) = (origin.clone(), data.clone());
                tokio::spawn(async move {
                    for r in 0..3usize {
                        let at = (t * 3 + r) * 7_000;
                        let got = origin.read_range(Path::new("track.flac"), at as u64, 4096).await.unwrap();
                        assert!(got[..] == data[at..at + 4096], "concurrent read {t}/{r} differs");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
}

/// Proves L1: 3.2
#[test]
fn s3_and_sftp_connections_are_pooled_replaced_when_dropped_and_closed_when_idle() {
    let data = Arc::new(pseudo_random_bytes(300_000, 5));
    let rt = runtime();

    // S3: the HTTP client's pool, as the origin configures it.
    let server = S3Server::start().unwrap();
    server.create_bucket("music").unwrap();
    server.put_object("music", "track.flac", &data).unwrap();
    let relay = Relay::start(server.addr());
    let settings = S3Settings {
        endpoint: format!("http://{}", relay.addr),
        bucket: "music".into(),
        prefix: None,
        region: server.region().into(),
        access_key: server.access_key().into(),
        secret_key: server.secret_key().into(),
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        pool_idle: IDLE,
        reads_in_flight: musicfs_core::config::DEFAULT_S3_READS_IN_FLIGHT,
    };
    let s3: Arc<dyn Origin> = Arc::new(S3Origin::new("s3", settings, rt.handle().clone()).unwrap());
    read_a_lot(&rt, &s3, &data);
    let (connections, requests) = (relay.connections(), relay.requests());
    eprintln!("S3: {requests} requests over {connections} connections");
    assert!(requests >= 44, "every read was a request: {requests}");
    assert!(connections <= 12, "3.2: S3 connections are not pooled: {connections} for {requests} requests");
    assert!(relay.cut() > 0, "pooled connections were open to cut");
    let got = rt.block_on(s3.read_range(Path::new("track.flac"), 0, 4096)).expect("3.2: a dropped S3 connection");
    assert!(got[..] == data[..4096]);
    let closed = until(Duration::from_secs(5), "3.2: idle S3 connections closed", || relay.open() == 0);
    eprintln!("S3: idle connections closed {closed:?} after the last read (idle time {IDLE:?})");

    // SFTP: MusicFS's own session pool.
    let served = tempfile::tempdir().unwrap();
    std::fs::write(served.path().join("track.flac"), &*data).unwrap();
    let sshd = Sshd::start(served.path()).unwrap();
    let relay = Relay::start(sshd.addr());
    let settings = SftpSettings {
        host: "127.0.0.1".into(),
        port: relay.addr.port(),
        user: sshd.user().into(),
        private_key_file: sshd.client_key_path(),
        host_key: HostKeyCheck::KnownHosts(sshd.known_hosts_path()),
        root: sshd.serve_dir().to_owned(),
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        pool: PoolSettings { max_sessions: 2, idle_timeout: IDLE, check_after_idle: Duration::from_secs(5) },
    };
    let sftp = Arc::new(SftpOrigin::new("sftp", settings));
    let origin: Arc<dyn Origin> = sftp.clone();
    read_a_lot(&rt, &origin, &data);
    let stats = sftp.stats();
    let connects = stats.connects.load(Ordering::Relaxed);
    eprintln!("SFTP: 44 reads over {connects} sessions ({} TCP connections)", relay.connections());
    assert!((1..=2).contains(&connects), "3.2: {connects} SFTP sessions, beyond the pool's 2");
    assert_eq!(relay.connections(), connects as usize);
    assert!(relay.cut() > 0);
    let got = rt.block_on(origin.read_range(Path::new("track.flac"), 100, 4096)).expect("3.2: a dropped SFTP session");
    assert!(got[..] == data[100..4196]);
    assert_eq!(stats.retries.load(Ordering::Relaxed), 1, "replaced by a retry on a fresh session");
    let closed = until(Duration::from_secs(5), "3.2: idle SFTP sessions closed", || sftp.open_sessions() == 0);
    until(Duration::from_secs(5), "the relay sees them go", || relay.open() == 0);
    eprintln!("SFTP: idle sessions closed {closed:?} after the last read (idle time {IDLE:?})");
    assert!(closed >= IDLE / 2, "closed before the idle time: {closed:?}");
}
