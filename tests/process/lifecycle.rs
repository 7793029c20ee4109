//! The daemon's lifecycle under stress, with the real binary and faults injected through `FAILPOINTS`
//! (needs a `--features failpoints` build): draining shutdown, a forced second signal, panics in request
//! handlers, an aborted FUSE connection, systemd notifications and the watchdog, SIGHUP, and 100 readers
//! against a hung origin.

#![cfg(feature = "failpoints")]

use musicfs_test_utils::daemon::{Daemon, DaemonArgs, Scratch, is_fuse_mounted};
use musicfs_test_utils::files::{pseudo_random_bytes, write_config};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_musicfs");
const BIG: &str = "Unknown Artist/Unknown Album/big.wav";

fn scratch_with_big_file() -> (Scratch, Vec<u8>) {
    let scratch = Scratch::new().unwrap();
    let data = pseudo_random_bytes(2 << 20, 11);
    std::fs::write(scratch.lib().join("big.wav"), &data).unwrap();
    (scratch, data)
}

fn with_env(scratch: &Scratch, failpoints: &str, extra: &[&str]) -> DaemonArgs {
    let mut args = scratch.args();
    args.env.push(("FAILPOINTS".into(), failpoints.into()));
    args.extra.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Proves L2: 2.1, 2.3
#[test]
fn sigterm_while_a_read_is_in_flight_drains_it_then_exits_0() {
    let (scratch, data) = scratch_with_big_file();
    // Every origin read takes 1.5 s: the first read of the file is still in flight when SIGTERM arrives.
    let mut daemon =
        Daemon::start(Path::new(BIN), &with_env(&scratch, "origins::read::stall=sleep(1500)", &[])).unwrap();
    let path = scratch.mnt().join(BIG);
    let reader = std::thread::spawn(move || {
        let file = std::fs::File::open(path)?;
        let mut buf = vec![0u8; 65536];
        std::os::unix::fs::FileExt::read_at(&file, &mut buf, 0).map(|n| buf[..n].to_vec())
    });
    std::thread::sleep(Duration::from_millis(400));
    let asked = Instant::now();
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait(Duration::from_secs(20)).unwrap();
    let took = asked.elapsed();
    assert!(status.success(), "{status}\n{}", daemon.log());
    let got = reader.join().unwrap().expect("the in-flight read was drained, not cut off");
    assert!(got == data[..got.len()] && !got.is_empty());
    assert!(!is_fuse_mounted(&scratch.mnt()), "the mount is gone");
    let log = daemon.log();
    let order = ["2.1 shutting down", "2.3 stopped cleanly"];
    let at: Vec<usize> = order.iter().map(|m| log.find(m).unwrap_or_else(|| panic!("{m} missing:\n{log}"))).collect();
    assert!(at[0] < at[1]);
    eprintln!("SIGTERM to exit with a read in flight: {took:?}");
    assert!(took < Duration::from_secs(10), "shutdown is bounded: {took:?}");
}

/// Proves L2: 2.1
#[test]
fn a_second_signal_during_shutdown_exits_within_two_seconds() {
    let (scratch, _) = scratch_with_big_file();
    // The origin hangs for a minute: the drain would wait its full timeout.
    let mut daemon =
        Daemon::start(Path::new(BIN), &with_env(&scratch, "origins::read::stall=sleep(60000)", &[])).unwrap();
    let path = scratch.mnt().join(BIG);
    std::thread::spawn(move || std::fs::read(path));
    std::thread::sleep(Duration::from_millis(300));
    daemon.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    let second = Instant::now();
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait(Duration::from_secs(10)).unwrap();
    let took = second.elapsed();
    assert_eq!(status.code(), Some(1), "a forced exit is not a clean one");
    assert!(took < Duration::from_secs(2), "forced exit took {took:?}");
    assert!(daemon.log().contains("2.1 second signal"), "{}", daemon.log());
    assert!(!is_fuse_mounted(&scratch.mnt()), "the mount was detached on the way out");
}

/// Proves L2: 2.2
#[test]
fn a_panic_while_serving_a_read_answers_eio_and_the_mount_keeps_serving() {
    let (scratch, _) = scratch_with_big_file();
    let daemon = Daemon::start(Path::new(BIN), &with_env(&scratch, "fuse::request::panic=return(read)", &[])).unwrap();
    let err = std::fs::read(scratch.mnt().join(BIG)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    for _ in 0..3 {
        assert!(std::fs::read_dir(scratch.mnt().join("Unknown Artist/Unknown Album")).unwrap().count() == 1);
        assert_eq!(std::fs::metadata(scratch.mnt().join(BIG)).unwrap().len(), 2 << 20);
    }
    let log = daemon.log();
    assert!(log.contains("2.2 panic") && log.contains("failpoint fuse::request::panic in read"), "{log}");
    assert!(log.contains("adapter.rs"), "the panic's location is logged: {log}");
    assert!(daemon.stop().unwrap().success());
}

/// Proves L2: 3.4
#[test]
fn an_aborted_fuse_connection_ends_the_daemon_with_exit_1_and_leaves_no_dead_mount() {
    use std::os::unix::fs::MetadataExt;
    let (scratch, data) = scratch_with_big_file();
    let mut daemon = Daemon::start(Path::new(BIN), &scratch.args()).unwrap();
    let conns = Path::new("/sys/fs/fuse/connections");
    if std::fs::read_dir(conns).map(|mut d| d.next().is_none()).unwrap_or(true) {
        let ok = std::process::Command::new("mount").args(["-t", "fusectl", "fusectl"]).arg(conns).status();
        assert!(
            ok.is_ok_and(|s| s.success())
                || conns.join("0").exists()
                || std::fs::read_dir(conns).is_ok_and(|mut d| d.next().is_some()),
            "fusectl must be mounted at {} (as root: mount -t fusectl fusectl {0})",
            conns.display()
        );
    }
    let minor = libc::minor(std::fs::metadata(scratch.mnt()).unwrap().dev());
    std::fs::write(conns.join(minor.to_string()).join("abort"), "1").unwrap();
    let status = daemon.wait(Duration::from_secs(20)).unwrap();
    assert_eq!(status.code(), Some(1), "exit non-zero so systemd restarts it:\n{}", daemon.log());
    assert!(daemon.log().contains("3.4"), "{}", daemon.log());
    assert!(!is_fuse_mounted(&scratch.mnt()), "no dead mount is left behind");
    drop(daemon);
    let daemon = Daemon::start(Path::new(BIN), &scratch.args()).unwrap();
    assert!(std::fs::read(scratch.mnt().join(BIG)).unwrap() == data);
    assert!(daemon.stop().unwrap().success());
}

fn recv_all(socket: &UnixDatagram, until: Instant) -> Vec<(Instant, String)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        if let Ok(n) = socket.recv(&mut buf) {
            out.push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned()));
        }
    }
    out
}

/// Proves L2: 2.10, 3.1
#[test]
fn systemd_hears_ready_status_watchdog_and_stopping_and_the_pets_stop_when_the_self_check_stalls() {
    let (scratch, _) = scratch_with_big_file();
    let sock_path: PathBuf = scratch.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&sock_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut args = with_env(&scratch, "daemon::watchdog::selfcheck_stall=4*off->return", &[]);
    args.env.push(("NOTIFY_SOCKET".into(), sock_path.display().to_string()));
    args.env.push(("WATCHDOG_USEC".into(), "400000".into()));
    let daemon = Daemon::start(Path::new(BIN), &args).unwrap();
    let messages = recv_all(&socket, Instant::now() + Duration::from_secs(3));
    let ready = messages.iter().position(|(_, m)| m.contains("READY=1")).expect("READY=1 was sent");
    assert!(messages[ready].1.contains("STATUS=ready: 1 tracks"), "{messages:?}");
    let pets: Vec<Instant> = messages.iter().filter(|(_, m)| m.contains("WATCHDOG=1")).map(|(t, _)| *t).collect();
    assert!((3..=5).contains(&pets.len()), "four passing self-checks, four pets, then none: {} pets", pets.len());
    let last_pet = *pets.last().unwrap();
    assert!(Instant::now().duration_since(last_pet) > Duration::from_millis(1000), "no pet once the self-check stalls");
    assert!(daemon.log().contains("3.1 self-check did not finish in time"), "{}", daemon.log());
    daemon.signal(libc::SIGTERM);
    let after = recv_all(&socket, Instant::now() + Duration::from_millis(1500));
    assert!(after.iter().any(|(_, m)| m.contains("STOPPING=1")), "{after:?}");
    let mut daemon = daemon;
    assert!(daemon.wait(Duration::from_secs(10)).unwrap().success());
}

/// Proves L2: 3.6
#[test]
fn sighup_applies_a_valid_config_and_keeps_the_old_one_when_the_new_is_invalid() {
    let scratch = Scratch::new().unwrap();
    for i in 0..6u64 {
        std::fs::write(scratch.lib().join(format!("t{i}.wav")), pseudo_random_bytes(300_000, i)).unwrap();
    }
    let config = scratch.dir.path().join("musicfs.toml");
    let small = "[cache]\nchunk_min = \"4KiB\"\nchunk_avg = \"16KiB\"\nchunk_max = \"64KiB\"\n";
    write_config(&config, &scratch.mnt(), &scratch.cache(), &scratch.lib(), &format!("{small}max_size = \"10MiB\"\n"))
        .unwrap();
    let args = DaemonArgs { config: Some(config.clone()), mount_point: scratch.mnt(), ..Default::default() };
    let daemon = Daemon::start(Path::new(BIN), &args).unwrap();
    for i in 0..6 {
        std::fs::read(scratch.mnt().join(format!("Unknown Artist/Unknown Album/t{i}.wav"))).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(musicfs_test_utils::files::chunk_bytes(&scratch.cache()).unwrap() > 1 << 20);

    write_config(
        &config,
        &scratch.mnt(),
        &scratch.cache(),
        &scratch.lib(),
        &format!("{small}max_size = \"512KiB\"\n\n[fuse]\nread_timeout = \"7s\"\nthreads = 3\n"),
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("3.6 SIGHUP: config reloaded") {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = daemon.log();
    assert!(log.contains("cache.max_size") && log.contains("fuse.read_timeout"), "applied live: {log}");
    assert!(log.contains("fuse (threads, allow_other)"), "threads needs a restart and says so: {log}");
    assert!(
        musicfs_test_utils::files::chunk_bytes(&scratch.cache()).unwrap() <= 512 << 10,
        "the smaller cache limit took effect"
    );

    std::fs::write(&config, "this is = = not toml").unwrap();
    daemon.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("new config rejected") {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        std::fs::read(scratch.mnt().join("Unknown Artist/Unknown Album/t0.wav")).unwrap()
            == pseudo_random_bytes(300_000, 0)
    );
    assert!(daemon.stop().unwrap().success());
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Proves L2: 5.1, 3.8
#[test]
fn a_hundred_readers_on_a_hung_origin_neither_deadlock_nor_slow_stat() {
    let readers: usize = std::env::var("MUSICFS_5_1_READERS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let scratch = Scratch::new().unwrap();
    for i in 0..20u64 {
        std::fs::write(scratch.lib().join(format!("t{i:02}.wav")), pseudo_random_bytes(200_000, i)).unwrap();
    }
    let daemon = Daemon::start(
        Path::new(BIN),
        &with_env(&scratch, "origins::read::stall=sleep(60000)", &["--read-timeout", "2s"]),
    )
    .unwrap();
    let dir = scratch.mnt().join("Unknown Artist/Unknown Album");
    let started = Instant::now();
    let handles: Vec<_> = (0..readers)
        .map(|i| {
            let path = dir.join(format!("t{:02}.wav", i % 20));
            std::thread::spawn(move || {
                let t = Instant::now();
                let r = std::fs::File::open(&path).and_then(|f| {
                    let mut buf = vec![0u8; 4096];
                    std::os::unix::fs::FileExt::read_at(&f, &mut buf, (i as u64 % 40) * 4096)
                });
                (r, t.elapsed())
            })
        })
        .collect();
    let mut stats = Vec::new();
    while stats.len() < 400 {
        let t = Instant::now();
        std::fs::metadata(dir.join(format!("t{:02}.wav", stats.len() % 20))).unwrap();
        if stats.len() % 20 == 0 {
            assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 20);
        }
        stats.push(t.elapsed());
    }
    let mut longest = Duration::ZERO;
    for h in handles {
        let (result, took) = h.join().unwrap();
        let err = result.expect_err("the origin is hung: no bytes can come");
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
        longest = longest.max(took);
    }
    // A hang detector with room for a loaded machine; stacked waits (one full timeout per queued reader) blow it.
    assert!(longest < Duration::from_secs(5), "every read ends near the 2 s bound; the longest took {longest:?}");
    stats.sort();
    eprintln!(
        "5.1 with {readers} readers on a hung origin: stat p50 {:?}, p99 {:?}, max {:?}; longest read {longest:?}; all done in {:?}",
        percentile(&stats, 0.5),
        percentile(&stats, 0.99),
        stats[stats.len() - 1],
        started.elapsed()
    );
    assert!(stats[stats.len() - 1] < Duration::from_secs(5), "stat never waits for the hung reads");
    assert!(daemon.stop().unwrap().success());
}
