//! The S3 origin end to end, where S3 differs from the other remotes (what all remotes share is in
//! `remote_origins`): the origin against a real S3 server (s3s-fs or MinIO), and the real `musicfs` binary
//! on a bucket reached through Toxiproxy: a partition that heals (N4), a host name that does not resolve until
//! it does (4.2.5), a connection dropped or gone silent mid-read (N2), and the
//! connection pool (3.2), counted by a relay between the daemon and Toxiproxy.

use musicfs_origins::s3::{POOL_IDLE, SCAN_REQUESTS};
use musicfs_test_utils::daemon::Scratch;
use musicfs_test_utils::files::timed_read;
use musicfs_test_utils::servers::relay::Relay;
use musicfs_test_utils::servers::runtime;
use musicfs_test_utils::servers::s3::S3Server;
use musicfs_test_utils::servers::toxiproxy::silence;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::mounted::{assert_served_without_remount, musicfs, start, status, wait_for_cache_to_settle, wait_for_state};
use crate::remote::{BUCKET, Library, Network, PREFIX, Remote, RemoteLibrary, SlowLink, s3_origin};
use crate::support::{check_ranged_reads, connections_of};

/// Makes the kernel forget the pages it cached of `path`, so the next read reaches the daemon.
fn drop_kernel_pages(path: &Path) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: fadvise on a descriptor we own; it only drops clean page-cache pages.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise failed: {rc}");
}

/// The origin itself against a real server: listing under the prefix, stat and content stamps, ranged reads
/// (short at the end, empty past it, whole), the blocking `Read + Seek` the tag scanner uses, and NotFound for a
/// missing key.
#[test]
fn the_s3_origin_lists_stats_and_reads_ranges_from_a_real_server() {
    use musicfs_origins::{Origin, S3Origin, S3Settings};
    let server = S3Server::start().unwrap();
    server.create_bucket(BUCKET).unwrap();
    let big = musicfs_test_utils::files::pseudo_random_bytes(600_000, 7);
    server.put_object(BUCKET, "lib/Artist/Album/01 - Song.flac", &big).unwrap();
    server.put_object(BUCKET, "lib/top.mp3", b"0123456789").unwrap();
    server.put_object(BUCKET, "other/not-mine.flac", b"x").unwrap();
    // Characters that URL encoding and object_store's own path escaping must both get right.
    let odd = "Odd {chars}/50% off & more é+ü [live].flac";
    server.put_object(BUCKET, &format!("lib/{odd}"), b"odd bytes").unwrap();
    let rt = runtime();
    let settings = S3Settings {
        endpoint: server.endpoint(),
        bucket: BUCKET.into(),
        prefix: Some("lib/".into()),
        region: server.region().into(),
        access_key: server.access_key().into(),
        secret_key: server.secret_key().into(),
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        pool_idle: musicfs_origins::s3::POOL_IDLE,
        reads_in_flight: musicfs_core::config::DEFAULT_S3_READS_IN_FLIGHT,
    };
    let origin = std::sync::Arc::new(S3Origin::new("s3", settings, rt.handle().clone()).unwrap());
    let song = Path::new("Artist/Album/01 - Song.flac");

    let listed = rt.block_on(origin.list()).unwrap();
    let paths: Vec<&Path> = listed.iter().map(|e| e.rel_path.as_path()).collect();
    assert_eq!(paths, [song, Path::new(odd), Path::new("top.mp3")]);
    assert_eq!(&rt.block_on(origin.read_range(Path::new(odd), 0, 100)).unwrap()[..], b"odd bytes");
    assert_eq!(listed[0].size, big.len() as u64);
    let stat = rt.block_on(origin.stat(song)).unwrap();
    assert_eq!((stat.size, stat.mtime_ns), (listed[0].size, listed[0].mtime_ns), "list and stat must agree");
    // 5.6: HEAD always carries the ETag, a stamp of the content. Listings carry it on AWS and MinIO; s3s-fs
    // leaves it out, and an entry without a stamp matches any.
    assert_ne!(stat.version, 0, "{stat:?}");
    assert!(listed[0].version == 0 || listed[0].version == stat.version, "{listed:?}");
    let other = rt.block_on(origin.stat(Path::new("top.mp3"))).unwrap();
    assert_ne!(other.version, stat.version, "different content, different stamp");

    check_ranged_reads(&rt, origin, song, &big);
}

/// Two S3 origins behind two proxies. Cutting one makes the library Degraded, cutting both Offline: cached
/// tracks keep playing byte-identical, an uncached one fails with EIO within the read timeout. When the
/// partition heals the library is Ready again without a remount, reads go to the origins again, and a
/// catch-up sync picks up a track uploaded during the partition (the sync interval is an hour). Failing
/// reads while offline are one log line per origin and one when it answers again, not a line per read.
/// Proves L3: N4, 4.2.3
#[test]
fn a_partition_heals_without_a_remount_and_a_catch_up_sync_runs() {
    let library = Library::generate(9);
    let server = library.bucket(&[("a", 0..4), ("b", 4..8)]);
    let net = Network::start();
    let (mut proxy_a, listen_a) = net.proxy("s3a", server.addr());
    let (mut proxy_b, listen_b) = net.proxy("s3b", server.addr());
    let rt = &net.rt;
    let scratch = Scratch::new().unwrap();
    let origins = s3_origin(&scratch, &server, "s3a", &format!("http://{listen_a}"), "a")
        + &s3_origin(&scratch, &server, "s3b", &format!("http://{listen_b}"), "b");
    let daemon = start(
        &scratch,
        &origins,
        "[health]\ninterval = \"1s\"\ntimeout = \"1s\"\n\n[fuse]\nread_timeout = \"3s\"\n\n\
         [library]\nsync_interval = \"1h\"\n",
    );
    let pid = daemon.pid();
    assert_eq!(status(&scratch)["tracks"], 8);
    // Play one track of each origin, so it is cached.
    for i in [0, 4] {
        assert!(std::fs::read(library.mounted(&scratch, i)).unwrap() == library.bytes(i));
    }
    wait_for_cache_to_settle(&scratch);

    rt.block_on(proxy_b.disable()).unwrap();
    let took = wait_for_state(&scratch, &daemon, "degraded", Duration::from_secs(10));
    eprintln!("degraded {took:?} after cutting one origin");
    rt.block_on(proxy_a.disable()).unwrap();
    let took = wait_for_state(&scratch, &daemon, "offline", Duration::from_secs(10));
    eprintln!("offline {took:?} after cutting both");

    for i in [0, 4] {
        // From the chunk cache, not from pages the kernel kept of the first read.
        drop_kernel_pages(&library.mounted(&scratch, i));
        let (got, took) = timed_read(&library.mounted(&scratch, i));
        assert!(got.expect("a cached track plays while offline") == library.bytes(i), "track {i} differs offline");
        eprintln!("cached track {i} read offline in {took:?}");
    }
    let (got, took) = timed_read(&library.mounted(&scratch, 1));
    let err = got.expect_err("an uncached track cannot be read while every origin is cut off");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(took < Duration::from_secs(10), "the failed read took {took:?}, not bounded by the 3 s read timeout");
    eprintln!("uncached read failed with EIO in {took:?} while offline");
    // A player retrying: every read fails, and the log says so once, not once per read (4.2.3).
    for _ in 0..5 {
        assert!(std::fs::read(library.mounted(&scratch, 1)).is_err());
    }
    let log = daemon.log();
    let failing = log.lines().filter(|l| l.contains("4.2.3 origin reads failing") && l.contains("s3a")).count();
    assert_eq!(failing, 1, "six failed reads of one origin make one line:\n{log}");
    // Nor a line per read from the cache (a failed ingest) or from the S3 client (its line per retried request,
    // "Encountered transport error", which the daemon's log filter holds back).
    assert!(!log.contains("ingest failed") && !log.contains("transport error"), "per-read lines:\n{log}");

    // Uploaded during the partition, straight to the server.
    server.http_put_object(BUCKET, &library.key("a", 8), &library.bytes(8)).unwrap();
    rt.block_on(proxy_a.enable()).unwrap();
    rt.block_on(proxy_b.enable()).unwrap();
    let took = wait_for_state(&scratch, &daemon, "ready", Duration::from_secs(10));
    eprintln!("ready {took:?} after the partition healed");

    let (got, took) = timed_read(&library.mounted(&scratch, 1));
    assert!(got.expect("reads go to the origin again") == library.bytes(1));
    eprintln!("the uncached track read in {took:?} after the heal");
    let new = library.mounted(&scratch, 8);
    let healed = Instant::now();
    while !new.exists() {
        assert!(healed.elapsed() < Duration::from_secs(15), "no catch-up sync after the heal:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(std::fs::read(&new).unwrap() == library.bytes(8));
    let log = daemon.log();
    assert!(log.contains("catch-up sync requested"), "{log}");
    assert!(log.lines().any(|l| l.contains("4.2.3 origin reads work again") && l.contains("s3a")), "{log}");
    assert_served_without_remount(&daemon, &scratch, pid);
    daemon.stop_cleanly();
}

/// An origin whose host name does not resolve (through the system resolver) is reported as a DNS failure,
/// in `musicfs status` and in the log, while the other origin serves: the library is degraded, not offline.
#[test]
fn an_origin_whose_host_does_not_resolve_is_reported_as_dns() {
    let library = Library::generate(2);
    let server = library.bucket(&[(PREFIX, 0..1)]);
    let scratch = Scratch::new().unwrap();
    let unresolvable = format!("http://musicfs-no-such-host.invalid:{}", server.port());
    let origins = s3_origin(&scratch, &server, "good", &server.endpoint(), PREFIX)
        + &s3_origin(&scratch, &server, "nodns", &unresolvable, PREFIX);
    let daemon = start(&scratch, &origins, "[health]\ninterval = \"1s\"\ntimeout = \"2s\"\n");
    assert!(std::fs::read(library.mounted(&scratch, 0)).unwrap() == library.bytes(0));
    wait_for_state(&scratch, &daemon, "degraded", Duration::from_secs(10));
    let now = status(&scratch);
    let error = now["origins"][1]["last_error"].as_str().unwrap_or_default().to_owned();
    assert_eq!(now["origins"][1]["id"], "nodns", "{now}");
    // Classified as DNS (not merely a connect error that mentions it somewhere in its chain).
    assert!(error.starts_with("origin unavailable: DNS") && error.contains("musicfs-no-such-host.invalid"), "{now}");
    assert_eq!(now["origins"][0]["healthy"], true, "{now}");
    let log = daemon.log();
    assert!(log.lines().any(|l| l.contains("nodns") && l.contains("error=origin unavailable: DNS")), "{log}");
    daemon.stop_cleanly();
}

/// A line in /etc/hosts for the length of a test: the system resolver (nss "files", read at every lookup)
/// answers for `name` only while it is there. Removed on drop, leaving the rest of the file as it was.
struct HostsEntry {
    line: String,
}

impl HostsEntry {
    fn add(name: &str) -> HostsEntry {
        let line = format!("127.0.0.1 {name}");
        let mut hosts = std::fs::read_to_string("/etc/hosts").expect("read /etc/hosts (run as root, as CI does)");
        if !hosts.ends_with('\n') {
            hosts.push('\n');
        }
        std::fs::write("/etc/hosts", format!("{hosts}{line}\n")).expect("write /etc/hosts (run as root, as CI does)");
        HostsEntry { line }
    }
}

impl Drop for HostsEntry {
    fn drop(&mut self) {
        if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
            let kept: String = hosts.lines().filter(|l| *l != self.line).map(|l| format!("{l}\n")).collect();
            let _ = std::fs::write("/etc/hosts", kept);
        }
    }
}

/// 4.2.5 through the real resolver: the only origin's host name does not resolve. That is DNS, not a dead
/// origin: the library is degraded (not offline), the log says DNS, and the origin is re-checked every 2 s
/// rather than every health interval (60 s here), so once the name resolves the library is ready within
/// seconds and a catch-up sync brings its tracks, without a remount.
/// Proves L3: 4.2.5
#[test]
fn a_host_name_that_does_not_resolve_is_degraded_and_rechecked_until_it_does() {
    let library = Library::generate(2);
    let server = library.bucket(&[(PREFIX, 0..2)]);
    let scratch = Scratch::new().unwrap();
    let name = format!("musicfs-dns-{}-{}.test", std::process::id(), server.port());
    let endpoint = format!("http://{name}:{}", server.port());
    let daemon = start(
        &scratch,
        &s3_origin(&scratch, &server, "far", &endpoint, PREFIX),
        "[health]\ninterval = \"60s\"\ntimeout = \"2s\"\n",
    );
    wait_for_state(&scratch, &daemon, "degraded", Duration::from_secs(10));
    let now = status(&scratch);
    assert!(
        now["origins"][0]["last_error"].as_str().is_some_and(|e| e.starts_with("origin unavailable: DNS")),
        "{now}"
    );
    assert_eq!(now["origins"][0]["dns_failure"], true, "{now}");
    assert!(daemon.log().contains("4.2.5 origin host name does not resolve"), "{}", daemon.log());
    let pid = daemon.pid();

    let _hosts = HostsEntry::add(&name);
    let resolved = Instant::now();
    let took = wait_for_state(&scratch, &daemon, "ready", Duration::from_secs(15));
    eprintln!("ready {took:?} after the name resolved (health interval 60 s)");
    let deadline = resolved + Duration::from_secs(20);
    while !library.mounted(&scratch, 1).exists() {
        assert!(Instant::now() < deadline, "no catch-up sync brought the tracks:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..2 {
        assert_eq!(std::fs::read(library.mounted(&scratch, i)).unwrap(), library.bytes(i));
    }
    assert_eq!(daemon.pid(), pid, "no restart, no remount");
    daemon.stop_cleanly();
}

/// Waits (bounded) until the relay has sent `at_least` bytes back to the daemon since it had sent `since`:
/// a read is then under way, mid-transfer.
fn wait_for_bytes(relay: &Relay, since: u64, at_least: u64) {
    let started = Instant::now();
    while relay.bytes_down() < since + at_least {
        assert!(started.elapsed() < Duration::from_secs(10), "the read never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// N2 through Toxiproxy (600 KB/s, so an uncached 1.3 MB track takes two seconds to read), with a relay in front
/// of the proxy that counts and can drop connections. First the connection carrying an uncached read is dropped
/// mid-read while the server keeps listening: the S3 client asks again for the rest on a fresh connection and
/// the read completes byte-identical. Then the connection goes silent mid-read (a `timeout` toxic: no more
/// data, never closed) and stays so: the read fails with EIO within the read timeout, and the library goes
/// offline. Once the toxic is gone the library is ready again and at once the same track reads byte-identical
/// from the same origin (no longer failed fast), with the same daemon on the same mount.
/// Proves L3: N2
#[test]
fn an_s3_connection_dropped_mid_read_is_retried_or_fails_in_bound_and_the_origin_is_reused() {
    let link = SlowLink::start(Remote::S3);
    let (library, rt, proxy) = (&link.served.library, &link.net.rt, &link.proxy);
    let (first, second) = (link.by_size[0], link.by_size[1]);
    let relay = Relay::start(link.listen);
    let scratch = Scratch::new().unwrap();
    let read_timeout = Duration::from_secs(8);
    let daemon = link.served.mount(
        &scratch,
        Some(relay.addr),
        &format!(
            "[health]\ninterval = \"1s\"\ntimeout = \"2s\"\n\n[fuse]\nread_timeout = \"{}s\"\n\n\
             [library]\nsync_interval = \"1h\"\n",
            read_timeout.as_secs()
        ),
    );
    let pid = daemon.pid();
    assert_eq!(status(&scratch)["tracks"], 12);

    // Dropped mid-read, the server still there: the rest comes over a fresh connection.
    let size = library.bytes(first).len();
    let connections = relay.connections();
    let path = library.mounted(&scratch, first);
    let since = relay.bytes_down();
    let reading = std::thread::spawn(move || timed_read(&path));
    wait_for_bytes(&relay, since, 256 << 10);
    let cut = relay.cut();
    let cut_at = relay.bytes_down() - since;
    assert!(cut > 0, "no connection to drop");
    let (got, took) = reading.join().unwrap();
    let got = got.unwrap_or_else(|e| {
        panic!("the read failed ({e}) instead of going on over a fresh connection:\n{}", daemon.log())
    });
    assert!(got == library.bytes(first), "the read over a fresh connection returned different bytes");
    assert!(took < read_timeout, "the read took {took:?}");
    assert!(relay.connections() > connections, "no fresh connection was opened");
    // Not even the reader saw an error: the S3 client fetched the rest itself (no fallback to another read).
    let log = daemon.log();
    assert!(!log.contains("4.2.3 origin reads failing"), "the drop reached the reader:\n{log}");
    eprintln!("{size} bytes at 600 KB/s: read in {took:?}, its connection dropped after {cut_at} bytes ({cut} cut)");

    // Silent mid-read, and it stays silent: EIO within the read timeout.
    let path = library.mounted(&scratch, second);
    let since = relay.bytes_down();
    let reading = std::thread::spawn(move || timed_read(&path));
    wait_for_bytes(&relay, since, 256 << 10);
    rt.block_on(proxy.add_toxic(&silence("silence"))).unwrap();
    let (got, took) = reading.join().unwrap();
    let err = got.expect_err("a read whose connection went silent for good cannot complete");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        took < read_timeout + Duration::from_secs(2),
        "the read failed after {took:?}, beyond the read timeout:\n{}",
        daemon.log()
    );
    eprintln!(
        "read over a connection gone silent mid-read failed with EIO in {took:?} (read timeout {read_timeout:?})"
    );

    // The health checks (2 s timeout) found the origin silent too.
    wait_for_state(&scratch, &daemon, "offline", Duration::from_secs(10));

    // Healed: the same origin serves the same track again, no remount.
    rt.block_on(proxy.remove_toxic("silence")).unwrap();
    let healed = Instant::now();
    let took = wait_for_state(&scratch, &daemon, "ready", Duration::from_secs(15));
    let requests = relay.requests();
    let (got, read_in) = timed_read(&library.mounted(&scratch, second));
    let got = got.unwrap_or_else(|e| panic!("the read after the heal failed ({e}):\n{}", daemon.log()));
    assert!(got == library.bytes(second), "the track reads differently after the heal");
    assert!(relay.requests() > requests, "the read after the heal did not go to the origin");
    eprintln!(
        "ready {took:?} after the toxic was removed; the track then read in {read_in:?} ({:?} after the heal)",
        healed.elapsed()
    );
    let now = status(&scratch);
    assert_eq!((now["state"].as_str(), now["origins"][0]["healthy"].as_bool()), (Some("ready"), Some(true)), "{now}");
    assert_served_without_remount(&daemon, &scratch, pid);
    daemon.stop_cleanly();
}

/// 3.2 for S3 through the real binary, with a relay in front of Toxiproxy that counts the connections the
/// daemon opens and the requests it sends. Connections are pooled: tracks read one after another, then four at
/// a time, take several requests each over a few connections. Connections the proxy drops while they sit in
/// the pool are noticed and replaced: the next read succeeds with no error. Idle connections are closed after
/// the pool's idle time ([`POOL_IDLE`]), and not at once. While the bucket is silent (no answer, connection
/// kept open), a read fails with EIO and a `musicfs sync` (a listing) reports the bucket unreachable, each
/// within its bound.
/// Proves L3: 3.2
#[test]
fn s3_connections_are_pooled_replaced_when_dropped_closed_when_idle_and_bounded() {
    // 0-5 read one after another, 6-13 four at a time, 14 and 15 before and after a drop, 16 while silent.
    let served = RemoteLibrary::serve(Remote::S3, Library::generate(17), 0..17);
    let library = &served.library;
    let net = Network::start();
    let (mut proxy, listen) = net.proxy("s3", served.addr());
    let rt = &net.rt;
    let relay = Relay::start(listen);
    let port = relay.addr.port();
    let scratch = Scratch::new().unwrap();
    // One health round at the start and no periodic sync: while the test runs, only its reads use the pool.
    let read_timeout = Duration::from_secs(4);
    let daemon = served.mount(
        &scratch,
        Some(relay.addr),
        &format!(
            "[health]\ninterval = \"1h\"\ntimeout = \"2s\"\n\n[fuse]\nread_timeout = \"{}s\"\n\n\
             [library]\nsync_interval = \"1h\"\n",
            read_timeout.as_secs()
        ),
    );
    let pid = daemon.pid().unwrap();
    assert_eq!(status(&scratch)["tracks"], 17);
    let (start_connections, start_requests) = (relay.connections(), relay.requests());
    eprintln!(
        "start (listing, tag scan, health round): {start_requests} requests over {start_connections} connections"
    );
    // The first scan reads tags up to SCAN_REQUESTS at once, each on its own connection; the listing and the
    // health round reuse them.
    assert!(
        start_connections <= SCAN_REQUESTS + 2,
        "{start_connections} connections to start, the scan's bound is {SCAN_REQUESTS}"
    );

    // One after another. Counted once the ingests are done: each ends with a HEAD after its reader has the data.
    let (c0, r0) = (relay.connections(), relay.requests());
    for i in 0..6 {
        assert!(std::fs::read(library.mounted(&scratch, i)).unwrap() == library.bytes(i), "track {i} differs");
    }
    wait_for_cache_to_settle(&scratch);
    let (sequential_connections, sequential_requests) = (relay.connections() - c0, relay.requests() - r0);
    eprintln!(
        "6 tracks one after another: {sequential_requests} requests over {sequential_connections} new connections"
    );
    // One connection, or two where a track's closing HEAD overlapped the next track's GET.
    assert!(sequential_connections <= 2, "{sequential_connections} connections for {sequential_requests} requests");
    assert!(sequential_requests >= 12, "a first read takes a GET and a HEAD: {sequential_requests} requests");

    // Four at a time.
    let (c0, r0) = (relay.connections(), relay.requests());
    let readers: Vec<_> = (0..4)
        .map(|t| {
            let paths: Vec<(usize, PathBuf)> = [6 + t, 10 + t].map(|i| (i, library.mounted(&scratch, i))).into();
            std::thread::spawn(move || {
                paths.into_iter().map(|(i, p)| (i, std::fs::read(p).unwrap())).collect::<Vec<_>>()
            })
        })
        .collect();
    for reader in readers {
        for (i, got) in reader.join().unwrap() {
            assert!(got == library.bytes(i), "track {i} differs");
        }
    }
    wait_for_cache_to_settle(&scratch);
    let (concurrent_connections, concurrent_requests) = (relay.connections() - c0, relay.requests() - r0);
    eprintln!(
        "8 tracks by 4 readers at once: {concurrent_requests} requests over {concurrent_connections} new connections"
    );
    // At most eight requests in flight (two per reader, the same overlap), so at most eight connections, and a
    // few more where a request started while a finished one's connection was still on its way back to the pool.
    assert!(concurrent_connections <= 12, "{concurrent_connections} connections for {concurrent_requests} requests");
    assert!(concurrent_requests >= 16, "{concurrent_requests} requests");
    // The reads reuse what the start opened: in all, many requests per connection.
    let (read_connections, read_requests) =
        (relay.connections() - start_connections, relay.requests() - start_requests);
    eprintln!("the reads: {read_requests} requests over {read_connections} new connections");
    assert!(
        read_requests >= 4 * read_connections.max(1),
        "{read_requests} requests over {read_connections} connections"
    );

    // The proxy drops the pooled connections: the daemon notices and replaces them, the reader sees nothing.
    assert!(std::fs::read(library.mounted(&scratch, 14)).unwrap() == library.bytes(14));
    let pooled = connections_of(pid, port);
    assert!(pooled >= 1, "no connection kept in the pool after a read");
    rt.block_on(proxy.disable()).unwrap();
    rt.block_on(proxy.enable()).unwrap();
    let dropped = Instant::now();
    while connections_of(pid, port) > 0 {
        assert!(dropped.elapsed() < Duration::from_secs(5), "the daemon kept connections the proxy had dropped");
        std::thread::sleep(Duration::from_millis(20));
    }
    let connections = relay.connections();
    let (got, took) = timed_read(&library.mounted(&scratch, 15));
    assert!(got.expect("a read after the pooled connections were dropped") == library.bytes(15));
    eprintln!("{pooled} pooled connections dropped by the proxy; the next read took {took:?}");
    assert!(relay.connections() > connections, "no fresh connection after the drop");
    assert!(!daemon.log().contains("4.2.3 origin reads failing"), "a read failed:\n{}", daemon.log());

    // Idle since that read: closed after the pool's idle time, not before.
    let idle_since = Instant::now();
    assert!(connections_of(pid, port) >= 1, "the connection was not kept for reuse");
    while connections_of(pid, port) > 0 || relay.open() > 0 {
        assert!(
            idle_since.elapsed() < 2 * POOL_IDLE + Duration::from_secs(5),
            "idle connections were not closed: {} open after {:?} (idle time {POOL_IDLE:?})",
            connections_of(pid, port),
            idle_since.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let closed_after = idle_since.elapsed();
    eprintln!("idle connections closed {closed_after:?} after the last read (idle time {POOL_IDLE:?})");
    assert!(closed_after + Duration::from_secs(2) >= POOL_IDLE, "closed after only {closed_after:?}");

    // Silent: every operation gives up within its bound.
    rt.block_on(proxy.add_toxic(&silence("silence"))).unwrap();
    let (got, took) = timed_read(&library.mounted(&scratch, 16));
    let err = got.expect_err("nothing answers");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(took < read_timeout + Duration::from_secs(2), "the read failed after {took:?}");
    let started = Instant::now();
    let (ok, out, err) = musicfs(&["sync"], &scratch);
    let sync_took = started.elapsed();
    eprintln!("silent bucket: a read failed with EIO in {took:?}, a listing (musicfs sync) gave up in {sync_took:?}");
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["unreachable"], serde_json::json!(["bucket"]), "{out}");
    assert!(sync_took < read_timeout + Duration::from_secs(5), "musicfs sync took {sync_took:?}");
    rt.block_on(proxy.remove_toxic("silence")).unwrap();
    assert_eq!(daemon.pid(), Some(pid));
    daemon.stop_cleanly();
}
