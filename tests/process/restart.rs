//! 2.11: a restart costs the listeners nothing. [`FdStore`] stands in for systemd's file descriptor store:
//! the daemon stores its FUSE connection there, the test kills it (or asks it to restart) while readers
//! stream and list, and the next daemon gets the connection back in `LISTEN_FDS`, as systemd passes it.

use musicfs_test_utils::daemon::{Daemon, Scratch, abort_connection_after, is_fuse_mounted};
use musicfs_test_utils::fdstore::FdStore;
use musicfs_test_utils::files::pseudo_random_bytes;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_musicfs");
const TRACKS: u64 = 8;
const LEN: usize = 3 << 20;
const BLOCK: usize = 64 << 10;

/// A reader in a process of its own: the test's process holds the FUSE connection in its fd store, and a
/// thread of it blocked on the mount while no daemon serves would stall the fork that starts the next
/// daemon (its child faults on a locked page). Players are separate processes too. Reads `path` block by
/// block, over and over, dropping the page cache before each pass so that every block reaches the
/// daemon, compares each block with the origin's copy, and stops when the stop file appears; prints
/// `reads passes short wrong longest_ms` and then one line per failed read.
const READER: &str = r#"
import os, sys, time
path, origin, stop, block = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
expected = open(origin, "rb").read()
reads = passes = short = wrong = 0
longest = 0.0
failed = []
while not os.path.exists(stop):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        failed.append("open: %s" % e); time.sleep(0.02); continue
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    for offset in range(0, len(expected), block):
        started = time.monotonic()
        try:
            data = os.pread(fd, block, offset)
        except OSError as e:
            failed.append("read at %d: %s" % (offset, e)); data = None
        longest = max(longest, time.monotonic() - started)
        reads += 1
        if data is not None and len(data) < min(block, len(expected) - offset):
            short += 1
        elif data is not None and data != expected[offset:offset + len(data)]:
            wrong += 1
        if os.path.exists(stop):
            break
    else:
        passes += 1
    os.close(fd)
print(reads, passes, short, wrong, int(longest * 1000))
for line in failed:
    print(line)
"#;

/// Lists the album and stats every track in a process of its own until the stop file appears; prints
/// `listings` and one line per failure.
const LISTER: &str = r#"
import os, sys, time
album, stop, tracks = sys.argv[1], sys.argv[2], int(sys.argv[3])
listings = 0
failed = []
while not os.path.exists(stop):
    try:
        names = os.listdir(album)
        if len(names) != tracks:
            failed.append("listed %d tracks" % len(names))
        for name in names:
            os.stat(os.path.join(album, name))
        listings += 1
    except OSError as e:
        failed.append(str(e))
    time.sleep(0.005)
print(listings)
for line in failed:
    print(line)
"#;

/// What one reader process saw.
#[derive(Debug)]
struct Seen {
    reads: u64,
    passes: u64,
    short: u64,
    wrong: u64,
    longest_ms: u64,
    failed: Vec<String>,
}

fn python(script: &str, args: &[String]) -> std::process::Child {
    std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the readers")
}

fn output_lines(child: std::process::Child) -> Vec<String> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "reader failed: {:?}", out);
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

fn seen(child: std::process::Child) -> Seen {
    let lines = output_lines(child);
    let n: Vec<u64> = lines[0].split(' ').map(|f| f.parse().unwrap()).collect();
    Seen { reads: n[0], passes: n[1], short: n[2], wrong: n[3], longest_ms: n[4], failed: lines[1..].to_vec() }
}

/// Waits (up to 10 s) until at least `count` requests wait on the FUSE connection at `mount_point`
/// (`/sys/fs/fuse/connections/N/waiting`); returns how many there were.
fn wait_for_requests(mount_point: &Path, count: u64) -> u64 {
    let id = musicfs_test_utils::daemon::connection_id(mount_point).expect("a FUSE mount");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting = std::fs::read_to_string(format!("/sys/fs/fuse/connections/{id}/waiting"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        if waiting >= count || std::time::Instant::now() > deadline {
            return waiting;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn album(scratch: &Scratch) -> PathBuf {
    scratch.mnt().join("Unknown Artist/Unknown Album")
}

/// Proves L2: 2.11
#[test]
fn kill_9_and_a_planned_restart_fail_no_read_while_readers_stream_and_list() {
    let scratch = Scratch::new().unwrap();
    let tracks: Vec<Arc<Vec<u8>>> = (0..TRACKS).map(|i| Arc::new(pseudo_random_bytes(LEN, 100 + i))).collect();
    for (i, bytes) in tracks.iter().enumerate() {
        std::fs::write(scratch.lib().join(format!("t{i}.wav")), bytes.as_slice()).unwrap();
    }
    let keeper = FdStore::new(scratch.dir.path()).unwrap();
    let args = |stall: bool, fds: Vec<(String, Arc<std::os::fd::OwnedFd>)>| {
        let mut args = scratch.args();
        args.env.push(keeper.env());
        if stall {
            // Each origin read takes 1.5 s: uncached reads are in flight when this daemon is killed.
            args.env.push(("FAILPOINTS".into(), "origins::read::stall=sleep(1500)".into()));
        }
        args.listen_fds = fds;
        args
    };
    // Half the tracks cached (by a daemon that then stops: its successor loads the library, no scan).
    let caching = Daemon::start(Path::new(BIN), &scratch.args()).unwrap();
    for i in 0..TRACKS / 2 {
        assert_eq!(std::fs::read(album(&scratch).join(format!("t{i}.wav"))).unwrap(), *tracks[i as usize]);
    }
    caching.stop_cleanly();
    let first = Daemon::start(Path::new(BIN), &args(true, Vec::new())).unwrap();
    // The connection lives in this process's fd store: should the test hang, nothing could kill its readers.
    let finished = abort_connection_after(&scratch.mnt(), Duration::from_secs(45));
    let connection = keeper.wait_for_fd("fuse", Duration::from_secs(10)).unwrap();

    let stop = scratch.dir.path().join("stop");
    let arg = |p: &Path| p.display().to_string();
    let readers: Vec<_> = (0..TRACKS as usize)
        .map(|i| {
            let (track, origin) = (album(&scratch).join(format!("t{i}.wav")), scratch.lib().join(format!("t{i}.wav")));
            python(READER, &[arg(&track), arg(&origin), arg(&stop), BLOCK.to_string()])
        })
        .collect();
    let lister = python(LISTER, &[arg(&album(&scratch)), arg(&stop), TRACKS.to_string()]);
    // kill -9 while the readers of uncached tracks wait on the stalled origin.
    wait_for_requests(&scratch.mnt(), 4);
    // By now the daemon has read them and waits on the origin: only a resend brings them to the next one.
    std::thread::sleep(Duration::from_millis(500));
    let requests_waiting = wait_for_requests(&scratch.mnt(), 4);
    first.kill9().unwrap();
    assert!(is_fuse_mounted(&scratch.mnt()), "the stored connection keeps the mount");
    let second = Daemon::start(Path::new(BIN), &args(false, vec![("fuse".into(), connection.clone())])).unwrap();
    assert!(second.log().contains("2.11 resumed the FUSE connection"), "{}", second.log());
    std::thread::sleep(Duration::from_millis(1500));

    // A planned restart: the daemon leaves with exit 75 and the mount stays.
    let (ok, out, err) = super::musicfs(&["shutdown", "--restart"], &scratch.cache());
    assert!(ok, "{out}{err}");
    let status = second.wait_keeping_mount(Duration::from_secs(20)).unwrap();
    assert_eq!(status.code(), Some(musicfs_daemon::RESTART_EXIT_CODE));
    assert!(is_fuse_mounted(&scratch.mnt()), "a restart keeps the mount");
    let third = Daemon::start(Path::new(BIN), &args(false, vec![("fuse".into(), connection)])).unwrap();
    assert!(third.log().contains("2.11 resumed the FUSE connection"), "{}", third.log());
    std::thread::sleep(Duration::from_millis(1500));

    std::fs::write(&stop, b"").unwrap();
    let seen: Vec<Seen> = readers.into_iter().map(seen).collect();
    let listed = output_lines(lister);
    for (i, seen) in seen.iter().enumerate() {
        assert!(seen.failed.is_empty(), "t{i}: failed reads across the restarts: {:?}", seen.failed);
        assert_eq!((seen.short, seen.wrong), (0, 0), "t{i}: short or wrong reads: {seen:?}");
        assert!(seen.passes >= 1 && seen.reads > (LEN / BLOCK) as u64, "t{i} kept streaming: {seen:?}");
    }
    assert!(
        listed.len() == 1 && listed[0].parse::<u64>().unwrap() > 10,
        "listing failed across the restarts: {listed:?}"
    );
    assert!(requests_waiting >= 4, "reads were in flight at the kill: {requests_waiting}");
    let longest = seen.iter().map(|s| s.longest_ms).max().unwrap_or_default();
    eprintln!("2.11 longest wait of one read across kill -9 and a planned restart: {longest} ms");

    // A real stop still leaves no mount.
    third.stop_cleanly();
    finished.store(true, Ordering::SeqCst);
}

/// Sets `fs.fuse.default_request_timeout` (Linux ≥ 6.14) for the life of the guard, then puts the old value
/// back, even if the test fails. Only connections mounted meanwhile get the timeout; 600 s is far above any
/// request a test holds, so a test mounting beside this one is not disturbed.
struct KernelRequestTimeout(String);

const REQUEST_TIMEOUT: &str = "/proc/sys/fs/fuse/default_request_timeout";

impl KernelRequestTimeout {
    fn set(seconds: u32) -> KernelRequestTimeout {
        let before = std::fs::read_to_string(REQUEST_TIMEOUT)
            .expect("fs.fuse.default_request_timeout: this suite needs Linux ≥ 6.14 and root");
        std::fs::write(REQUEST_TIMEOUT, seconds.to_string()).expect("setting fs.fuse.default_request_timeout");
        KernelRequestTimeout(before)
    }
}

impl Drop for KernelRequestTimeout {
    fn drop(&mut self) {
        let _ = std::fs::write(REQUEST_TIMEOUT, self.0.trim());
    }
}

/// With a kernel request timeout set, a request that waits longer aborts the whole connection, restart or
/// not: the daemon names the limit at mount, so whoever sets it knows a restart must stay well below it.
/// Without one, it says nothing.
/// Proves L2: 2.11
#[test]
fn a_kernel_request_timeout_is_named_at_mount_and_silence_without_one() {
    let scratch = Scratch::new().unwrap();
    std::fs::write(scratch.lib().join("a.wav"), pseudo_random_bytes(4096, 3)).unwrap();
    let warning = "fs.fuse.default_request_timeout";
    let log = {
        let _timeout = KernelRequestTimeout::set(600);
        let daemon = Daemon::start(Path::new(BIN), &scratch.args()).unwrap();
        daemon.log()
    };
    let line = log.lines().find(|l| l.contains(warning)).unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(line.contains("600s") && line.contains("WARN"), "{line}");
    let quiet = {
        let _timeout = KernelRequestTimeout::set(0);
        let scratch = Scratch::new().unwrap();
        std::fs::write(scratch.lib().join("a.wav"), pseudo_random_bytes(4096, 3)).unwrap();
        Daemon::start(Path::new(BIN), &scratch.args()).unwrap().log()
    };
    assert!(!quiet.contains(warning), "a warning with no timeout set:\n{quiet}");
}
