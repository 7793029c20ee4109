//! The SFTP origin end to end against a real OpenSSH `sshd` (internal-sftp), where SFTP differs from the other
//! remotes (what all remotes share is in `remote_origins`): the origin itself (listing with names that are
//! not UTF-8 and links, ranged reads, host key checks, logins), its session pool (a few sessions for many
//! reads, idle ones closed, a dropped one replaced), and the real `musicfs` binary on a library served over
//! SFTP through Toxiproxy while its connection is cut mid-read (N3).

use musicfs_origins::sftp::{HostKeyCheck, PoolSettings, SftpOrigin, SftpSettings, sha256_fingerprint};
use musicfs_origins::{Origin, OriginError, health};
use musicfs_test_utils::daemon::Scratch;
use musicfs_test_utils::files::{pseudo_random_bytes, timed_read};
use musicfs_test_utils::servers::relay::Relay;
use musicfs_test_utils::servers::runtime;
use musicfs_test_utils::servers::sshd::Sshd;
use musicfs_test_utils::servers::tokio;
use musicfs_test_utils::servers::toxiproxy::bandwidth;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::mounted::{assert_served_without_remount, status, wait_for_state};
use crate::remote::{Network, Remote, SlowLink};
use crate::support::check_ranged_reads;

/// Settings for the origin against `sshd`, reached on `port` (the server's, or a proxy's).
fn settings(sshd: &Sshd, port: u16, host_key: HostKeyCheck) -> SftpSettings {
    SftpSettings {
        host: "127.0.0.1".into(),
        port,
        user: sshd.user().into(),
        private_key_file: sshd.client_key_path(),
        host_key,
        root: sshd.serve_dir().to_owned(),
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        pool: PoolSettings::default(),
    }
}

fn known_hosts(sshd: &Sshd) -> HostKeyCheck {
    HostKeyCheck::KnownHosts(sshd.known_hosts_path())
}

/// The server's host key fingerprint, as `ssh-keygen -lf` prints it.
fn fingerprint(sshd: &Sshd) -> String {
    let b64 = sshd.host_public_key().split_whitespace().nth(1).unwrap();
    let blob = base64_decode(b64);
    sha256_fingerprint(&blob)
}

/// Standard base64 (with or without padding), enough for a public key line.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Logins sshd accepted so far (one per session the origin opened).
fn logins(sshd: &Sshd) -> usize {
    sshd.log().matches("Accepted publickey").count()
}

/// The logins in sshd's log once there are at least `want`, or after 5 s: its log lines arrive through a
/// pipe a moment after the logins themselves.
pub(crate) fn logins_at_least(sshd: &Sshd, want: usize) -> usize {
    let started = Instant::now();
    while logins(sshd) < want && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    logins(sshd)
}

/// Kills every session process of `sshd` (the children of the listener), as a dropped connection would end
/// them, and leaves the listener up. Returns how many it killed.
fn kill_sessions(sshd: &Sshd) -> usize {
    let listener = sshd.pid().expect("sshd runs");
    let mut parents = std::collections::HashMap::<u32, Vec<u32>>::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // "pid (comm) state ppid …": the comm may hold spaces, so split after its closing parenthesis.
        let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else { continue };
        let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) else { continue };
        parents.entry(ppid).or_default().push(pid);
    }
    let mut doomed = Vec::new();
    let mut queue = vec![listener];
    while let Some(pid) = queue.pop() {
        for &child in parents.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            doomed.push(child);
            queue.push(child);
        }
    }
    for &pid in &doomed {
        // SAFETY: kill(2) on pids we just found under our own sshd; a pid that already exited is harmless.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    doomed.len()
}

/// The origin itself against a real server: a listing that walks subdirectories, keeps a name that is not
/// UTF-8 and a link inside the root, and skips links that leave the root or point at directories; stat;
/// ranged reads (short at the end, empty past it); the blocking `Read + Seek` the tag scanner uses; NotFound.
#[test]
fn the_sftp_origin_lists_stats_and_reads_ranges_from_a_real_server() {
    let served = tempfile::tempdir().unwrap();
    let big = pseudo_random_bytes(600_000, 7);
    let root = served.path();
    std::fs::create_dir_all(root.join("Artist/Album")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("Artist/Album/01 - Song.flac"), &big).unwrap();
    std::fs::write(root.join("top.mp3"), b"0123456789").unwrap();
    let odd = Path::new(OsStr::from_bytes(b"caf\xe9 \xff.flac"));
    std::fs::write(root.join(odd), b"odd bytes").unwrap();
    std::os::unix::fs::symlink("top.mp3", root.join("link-in.mp3")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("link-out.flac")).unwrap();
    std::os::unix::fs::symlink("Artist", root.join("dir-link")).unwrap();
    std::os::unix::fs::symlink("nowhere.flac", root.join("dangling.flac")).unwrap();
    let sshd = Sshd::start(root).unwrap();
    let rt = runtime();
    let origin = Arc::new(SftpOrigin::new("sftp", settings(&sshd, sshd.port(), known_hosts(&sshd))));
    let song = Path::new("Artist/Album/01 - Song.flac");

    let listed = rt.block_on(origin.list()).unwrap();
    let paths: Vec<&Path> = listed.iter().map(|e| e.rel_path.as_path()).collect();
    assert_eq!(paths, [song, odd, Path::new("link-in.mp3"), Path::new("top.mp3")]);
    assert_eq!((listed[0].size, listed[2].size), (big.len() as u64, 10));
    assert_eq!(&rt.block_on(origin.read_range(odd, 0, 100)).unwrap()[..], b"odd bytes");
    let stat = rt.block_on(origin.stat(song)).unwrap();
    assert_eq!((stat.size, stat.mtime_ns), (listed[0].size, listed[0].mtime_ns), "list and stat must agree");
    assert!(stat.mtime_ns > 0);

    assert!(matches!(rt.block_on(origin.stat(Path::new("Artist"))), Err(OriginError::NotFound(_))), "a directory");
    assert!(matches!(rt.block_on(origin.stat(Path::new("../etc/passwd"))), Err(OriginError::NotFound(_))));
    check_ranged_reads(&rt, origin.clone(), song, &big);
    // All of that on one pooled session, nothing ran concurrently, and one for the health check.
    assert_eq!(origin.stats().connects.load(Ordering::Relaxed), 2);
    // With hardware AES, an AES cipher, not libssh2's portable chacha20-poly1305.
    let cipher = origin.stats().cipher.lock().unwrap().clone().unwrap_or_default();
    eprintln!("cipher: {cipher}");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("aes") {
        assert!(cipher.starts_with("aes"), "negotiated {cipher}");
    }
    assert_eq!(logins_at_least(&sshd, 2), 2, "{}", sshd.log());
}

/// A ranged read moves its range over the wire and not much more: libssh2 asks the server for four times the
/// buffer it is handed, ahead, and a seek to the next range throws that away, so a 1 MiB read used to move
/// 4 MiB (a 128 KiB first block 512 KiB: the first byte of a track waited for it). Counted at a relay between
/// the origin and the server, after a pause for answers still on their way; reads at scattered offsets, each
/// a seek on the kept file handle.
#[test]
fn an_sftp_ranged_read_moves_its_range_not_four_times_it() {
    let served = tempfile::tempdir().unwrap();
    let data = pseudo_random_bytes(24 << 20, 11);
    std::fs::write(served.path().join("track.flac"), &data).unwrap();
    let sshd = Sshd::start(served.path()).unwrap();
    let relay = Relay::start(format!("127.0.0.1:{}", sshd.port()).parse().unwrap());
    let rt = runtime();
    let origin = SftpOrigin::new("sftp", settings(&sshd, relay.addr.port(), known_hosts(&sshd)));
    let track = Path::new("track.flac");
    rt.block_on(origin.stat(track)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let before = relay.bytes_down();
    let mut asked = 0;
    for (offset, len) in
        [(3u64 << 20, 4096usize), (9 << 20, 128 << 10), (1 << 20, 1 << 20), (14 << 20, 8 << 20), (5, 77_777)]
    {
        let got = rt.block_on(origin.read_range(track, offset, len)).unwrap();
        assert!(got[..] == data[offset as usize..offset as usize + len], "bytes at {offset}");
        asked += len as u64;
    }
    std::thread::sleep(Duration::from_millis(500));
    let moved = relay.bytes_down() - before;
    eprintln!("asked {asked} bytes, the server sent {moved}");
    assert!(moved < asked + asked / 10 + (256 << 10), "asked {asked} bytes, the server sent {moved}");
}

/// Every cipher the origin may agree on decrypts correctly, and fully: libssh2 is patched (vendor/libssh2-sys)
/// to decrypt the middle of each packet in one call for AES-CTR and AES-GCM, so each is read here against a
/// server that offers only it, in ranges from a few bytes to several packets, and the bytes must be the file's.
#[test]
fn every_cipher_the_sftp_origin_agrees_on_reads_the_files_bytes() {
    let served = tempfile::tempdir().unwrap();
    let data = pseudo_random_bytes(3 << 20, 5);
    std::fs::write(served.path().join("track.flac"), &data).unwrap();
    let track = Path::new("track.flac");
    let rt = runtime();
    for cipher in [
        "aes128-ctr",
        "aes192-ctr",
        "aes256-ctr",
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
        "chacha20-poly1305@openssh.com",
    ] {
        let sshd = Sshd::start_with_ciphers(served.path(), Some(cipher)).unwrap();
        let origin = SftpOrigin::new("sftp", settings(&sshd, sshd.port(), known_hosts(&sshd)));
        for (offset, len) in [(0u64, 1usize), (17, 15), (4095, 33), (100_000, 65_536), (7, 1 << 20), (0, 3 << 20)] {
            let got = rt.block_on(origin.read_range(track, offset, len)).unwrap();
            assert!(got[..] == data[offset as usize..offset as usize + len], "{cipher}: bytes at {offset}+{len}");
        }
        let agreed = origin.stats().cipher.lock().unwrap().clone().unwrap_or_default();
        assert_eq!(agreed, cipher, "the server offered only {cipher}");
    }
}

/// The server's host key must be known: the right fingerprint or known_hosts entry lets the origin in; an
/// unknown key, a changed key and a wrong fingerprint are refused with messages that say so and name the
/// server's fingerprint; a client key the server does not accept is a failed login, said as such.
#[test]
fn unknown_or_changed_host_keys_and_refused_logins_are_clear_errors() {
    let served = tempfile::tempdir().unwrap();
    std::fs::write(served.path().join("a.flac"), b"x").unwrap();
    let sshd = Sshd::start(served.path()).unwrap();
    let rt = runtime();
    let fp = fingerprint(&sshd);
    let check = |host_key: HostKeyCheck| -> Result<(), OriginError> {
        rt.block_on(SftpOrigin::new("sftp", settings(&sshd, sshd.port(), host_key)).health_check())
    };
    check(HostKeyCheck::Fingerprint(fp.clone())).expect("the right fingerprint is accepted");
    check(known_hosts(&sshd)).expect("the known_hosts entry is accepted");

    let unavailable = |result: Result<(), OriginError>| match result {
        Err(OriginError::Unavailable(msg)) => msg,
        other => panic!("expected Unavailable, got {other:?}"),
    };
    let wrong = format!("SHA256:{}", "A".repeat(43));
    let msg = unavailable(check(HostKeyCheck::Fingerprint(wrong)));
    assert!(msg.contains("not the configured host_key_fingerprint") && msg.contains(&fp), "{msg}");

    let dir = tempfile::tempdir().unwrap();
    let key_b64 = sshd.host_public_key().split_whitespace().nth(1).unwrap().to_owned();
    // Listed for another host only: unknown.
    let other_host = dir.path().join("other_host");
    std::fs::write(&other_host, format!("nas.example.com {}\n", sshd.host_public_key())).unwrap();
    let msg = unavailable(check(HostKeyCheck::KnownHosts(other_host.clone())));
    assert!(msg.contains("unknown host keys are rejected") && msg.contains(&fp), "{msg}");
    assert!(msg.contains(&format!("[127.0.0.1]:{}", sshd.port())) && msg.contains("ssh-keyscan"), "{msg}");
    // Another key of the same type for this host: changed.
    let mut changed_key = base64_decode(&key_b64);
    let last = changed_key.len() - 1;
    changed_key[last] ^= 0xff;
    let changed = dir.path().join("changed");
    let changed_line = format!("[127.0.0.1]:* ssh-ed25519 {}\n", base64_encode(&changed_key));
    std::fs::write(&changed, changed_line).unwrap();
    let msg = unavailable(check(HostKeyCheck::KnownHosts(changed)));
    assert!(msg.contains("does not match") && msg.contains("line 1") && msg.contains(&fp), "{msg}");
    // No known_hosts file at all.
    let msg = unavailable(check(HostKeyCheck::KnownHosts(dir.path().join("missing"))));
    assert!(msg.contains("cannot read known_hosts_file"), "{msg}");

    // A client key the server does not know.
    let stranger = dir.path().join("stranger");
    let keygen = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&stranger).status();
    assert!(keygen.unwrap().success());
    let mut s = settings(&sshd, sshd.port(), known_hosts(&sshd));
    s.private_key_file = stranger;
    let msg = unavailable(rt.block_on(SftpOrigin::new("sftp", s).health_check()));
    assert!(msg.contains("public key login as") && msg.contains(sshd.user()), "{msg}");
    // A root that is not there is not a healthy origin.
    let mut s = settings(&sshd, sshd.port(), known_hosts(&sshd));
    s.root = served.path().join("no-such-dir");
    let missing = rt.block_on(SftpOrigin::new("sftp", s).health_check());
    assert!(matches!(missing, Err(OriginError::NotFound(_))), "{missing:?}");
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The session pool against a real sshd (3.2, SFTP part): forty reads from eight concurrent tasks are served
/// by at most four sessions (four logins in sshd's log); idle sessions are closed after the idle timeout
/// (sshd logs their disconnects); a session whose connection dropped while idle is replaced without the
/// caller seeing an error, by a retry on a fresh session, or by the check before reuse once it idled.
/// Proves L3: 3.2
#[test]
fn sftp_sessions_are_pooled_closed_when_idle_and_replaced_when_dropped() {
    let served = tempfile::tempdir().unwrap();
    let data = Arc::new(pseudo_random_bytes(2 << 20, 11));
    std::fs::write(served.path().join("track.flac"), &*data).unwrap();
    let sshd = Sshd::start(served.path()).unwrap();
    let rt = runtime();
    let mut s = settings(&sshd, sshd.port(), known_hosts(&sshd));
    s.pool = PoolSettings {
        max_sessions: 4,
        idle_timeout: Duration::from_secs(1),
        check_after_idle: Duration::from_secs(5),
    };
    let origin = Arc::new(SftpOrigin::new("sftp", s));
    let rel = Path::new("track.flac");

    let reads = rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let (origin, data) = (origin.clone(), data.clone());
            tasks.push(tokio::spawn(async move {
                for r in 0..5u64 {
                    let offset = (t * 5 + r) * 40_000;
                    let got = origin.read_range(Path::new("track.flac"), offset, 64 << 10).await.unwrap();
                    assert!(got[..] == data[offset as usize..offset as usize + (64 << 10)], "read {t}/{r} differs");
                }
            }));
        }
        let n = tasks.len() * 5;
        for task in tasks {
            task.await.unwrap();
        }
        n
    });
    let started = Instant::now();
    assert!(rt.block_on(origin.read_range(rel, 0, data.len())).unwrap()[..] == data[..]);
    let remote = started.elapsed();
    let started = Instant::now();
    assert!(std::fs::read(served.path().join("track.flac")).unwrap() == *data);
    eprintln!("2 MiB in one read: {remote:?} over SFTP (loopback), {:?} from the local disk", started.elapsed());
    let connects = origin.stats().connects.load(Ordering::Relaxed) as usize;
    eprintln!("{reads} concurrent reads used {connects} sessions ({} logins in sshd's log)", logins(&sshd));
    assert!((1..=4).contains(&connects), "{connects} sessions for {reads} reads");
    assert_eq!(logins_at_least(&sshd, connects), connects, "{}", sshd.log());
    assert!(origin.open_sessions() <= 4);

    // Idle for longer than the idle timeout: every session is closed, and sshd saw each one go.
    let idle_since = Instant::now();
    while origin.open_sessions() > 0 {
        assert!(idle_since.elapsed() < Duration::from_secs(5), "idle sessions were never closed");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("idle sessions closed {:?} after the last read (idle timeout 1 s)", idle_since.elapsed());
    // The reaper takes the sessions out of the pool first, then closes and counts them one by one (each close
    // bounded by 1 s): the count follows a moment later.
    let closing = Instant::now();
    while (origin.stats().closed_idle.load(Ordering::Relaxed) as usize) < connects
        && closing.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(origin.stats().closed_idle.load(Ordering::Relaxed) as usize, connects);
    let disconnected = Instant::now();
    while sshd.log().matches("Received disconnect").count() < connects {
        assert!(
            disconnected.elapsed() < Duration::from_secs(5),
            "sshd did not see the sessions close:\n{}",
            sshd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // One session open and idle, its connection dropped under it: the next read still succeeds.
    assert!(rt.block_on(origin.read_range(rel, 0, 1000)).unwrap()[..] == data[..1000]);
    assert_eq!(origin.open_sessions(), 1);
    assert!(kill_sessions(&sshd) > 0);
    let started = Instant::now();
    let got = rt.block_on(origin.read_range(rel, 5000, 1000)).expect("a dropped session is replaced transparently");
    eprintln!("read over a dropped session took {:?} (reconnect included)", started.elapsed());
    assert!(got[..] == data[5000..6000]);
    assert_eq!(origin.stats().retries.load(Ordering::Relaxed), 1, "the read was retried on a fresh session");
    assert_eq!(origin.open_sessions(), 1, "the dropped session was replaced, not added to");

    // With a short check-before-reuse threshold, the check finds the dead session before any read uses it.
    let mut s = settings(&sshd, sshd.port(), known_hosts(&sshd));
    s.pool.check_after_idle = Duration::from_millis(100);
    let checked = SftpOrigin::new("checked", s);
    assert!(rt.block_on(checked.read_range(rel, 0, 10)).unwrap()[..] == data[..10]);
    assert!(kill_sessions(&sshd) > 0);
    std::thread::sleep(Duration::from_millis(300));
    assert!(rt.block_on(checked.read_range(rel, 10, 10)).unwrap()[..] == data[10..20]);
    let stats = checked.stats();
    assert_eq!(stats.retries.load(Ordering::Relaxed), 0, "the check, not a retry, caught the dead session");
    assert_eq!((stats.discarded.load(Ordering::Relaxed), stats.connects.load(Ordering::Relaxed)), (1, 2));
}

/// N1: a health check never queues behind reads for a session. The pool has one session, busy with a
/// 1.3 MB read over a 200 KB/s link (about six seconds); the check runs on a session of its own and answers
/// within its 2 s bound while the read goes on. (On a pooled session it waited for the read and timed out:
/// a slow, busy server called down.) The next check finds its session still logged in.
/// Proves L3: N1
#[test]
fn a_health_check_answers_beside_a_busy_pool_on_its_own_session() {
    let served = tempfile::tempdir().unwrap();
    let bytes = pseudo_random_bytes(1_200_000, 5);
    std::fs::write(served.path().join("track.flac"), &bytes).unwrap();
    let sshd = Sshd::start(served.path()).unwrap();
    let net = Network::start();
    let (proxy, listen) = net.proxy("busy", sshd.addr());
    net.rt.block_on(proxy.add_toxic(&bandwidth("slow", 200))).unwrap();
    let mut s = settings(&sshd, listen.port(), known_hosts(&sshd));
    s.pool.max_sessions = 1;
    let origin = Arc::new(SftpOrigin::new("sftp", s));
    let shared: musicfs_origins::SharedOrigin = origin.clone();
    let rel = Path::new("track.flac");

    let reader = origin.clone();
    let started = Instant::now();
    let reading = net.rt.spawn(async move { reader.read_range(rel, 0, 4 << 20).await });
    std::thread::sleep(Duration::from_millis(500));
    let bound = Duration::from_secs(2);
    let checked = net.rt.block_on(health::check_one(&shared, bound));
    assert!(!reading.is_finished(), "the read ended before the check: the test proves nothing");
    let took = checked.unwrap_or_else(|e| panic!("the check beside a busy pool failed: {e}"));
    eprintln!("health check beside a read holding the pool's only session: {took:?}");
    let got = net.rt.block_on(reading).unwrap().unwrap();
    assert!(got[..] == bytes[..], "the read returned different bytes");
    eprintln!("the read of {} bytes took {:?}", bytes.len(), started.elapsed());

    let connects = origin.stats().connects.load(Ordering::Relaxed);
    net.rt.block_on(health::check_one(&shared, bound)).unwrap();
    assert_eq!(origin.stats().connects.load(Ordering::Relaxed), connects, "the second check logged in again");
}

/// N3 through Toxiproxy (600 KB/s, so reading a 1.3 MB track takes two seconds): the SSH connection carrying
/// an uncached track is dropped mid-read (its session killed on the server); the session is replaced and the
/// read completes byte-identical within the read timeout. Then the network is cut mid-read (proxy disabled):
/// the read completes or fails with EIO within the read timeout, and once the network is back the next read
/// works on a new session, without a remount.
/// Proves L3: N3
#[test]
fn an_sftp_connection_dropped_mid_read_is_replaced_and_the_read_completes_or_fails_in_bound() {
    let mut link = SlowLink::start(Remote::Sftp);
    let (library, sshd, rt) = (&link.served.library, link.served.sshd(), &link.net.rt);
    let (first, second, third) = (link.by_size[0], link.by_size[1], link.by_size[2]);
    let scratch = Scratch::new().unwrap();
    let read_timeout = Duration::from_secs(15);
    let daemon = link.served.mount(
        &scratch,
        Some(link.listen),
        "[health]\ninterval = \"1s\"\ntimeout = \"2s\"\n\n[fuse]\nread_timeout = \"15s\"\n",
    );
    let pid = daemon.pid();
    assert_eq!(status(&scratch)["tracks"], 12);

    // The session dies mid-read; the listener stays, so a fresh session can finish the read.
    let size = library.bytes(first).len();
    let before = logins(sshd);
    let path = library.mounted(&scratch, first);
    let reading = std::thread::spawn(move || timed_read(&path));
    std::thread::sleep(Duration::from_millis(800));
    let killed = kill_sessions(sshd);
    assert!(killed > 0, "no session to kill");
    let (got, took) = reading.join().unwrap();
    let got =
        got.unwrap_or_else(|e| panic!("the read failed ({e}) instead of moving to a fresh session:\n{}", daemon.log()));
    assert!(got == library.bytes(first), "the read over a replaced session returned different bytes");
    assert!(took < read_timeout, "the read took {took:?}");
    eprintln!("{size} bytes at 600 KB/s: read in {took:?} with its session killed after 0.8 s ({killed} processes)");
    assert!(logins_at_least(sshd, before + 1) > before, "no new session was opened:\n{}", sshd.log());
    let log = daemon.log();
    assert!(log.contains("SFTP session dropped; retrying on a fresh session"), "{log}");

    // The network goes away mid-read: done or EIO, within the bound.
    let path = library.mounted(&scratch, second);
    let reading = std::thread::spawn(move || timed_read(&path));
    std::thread::sleep(Duration::from_millis(800));
    rt.block_on(link.proxy.disable()).unwrap();
    let (got, took) = reading.join().unwrap();
    let outcome = match got {
        Ok(bytes) => {
            assert!(bytes == library.bytes(second), "a read that completed returned different bytes");
            "completed".to_owned()
        }
        Err(e) => {
            assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
            format!("failed with {e}")
        }
    };
    assert!(took < read_timeout + Duration::from_secs(2), "the cut read took {took:?}, beyond the read timeout");
    eprintln!("read cut by a partition after 0.8 s {outcome} in {took:?}");

    // Back: the next uncached read works on a new session, with no remount.
    let before = logins(sshd);
    rt.block_on(link.proxy.enable()).unwrap();
    rt.block_on(link.proxy.remove_toxic("slow")).unwrap();
    wait_for_state(&scratch, &daemon, "ready", Duration::from_secs(10));
    let started = Instant::now();
    let (got, took) = timed_read(&library.mounted(&scratch, third));
    assert!(got.expect("reads work again after the partition") == library.bytes(third));
    eprintln!("first read after the partition healed: {took:?} ({:?} after the heal)", started.elapsed());
    assert!(logins_at_least(sshd, before + 1) > before, "no new session after the heal:\n{}", sshd.log());
    assert_served_without_remount(&daemon, &scratch, pid);
    daemon.stop_cleanly();
}
