//! Helpers shared by the network-layer tests: a TCP echo server, timed round trips, an `sftp` batch runner, the
//! checks of a remote origin's ranged and blocking reads, and a count of a process's connections.

use musicfs_origins::{Origin, OriginError};
use musicfs_test_utils::servers::sshd::Sshd;
use musicfs_test_utils::servers::tokio;
use musicfs_test_utils::servers::tokio::io::{AsyncReadExt, AsyncWriteExt};
use musicfs_test_utils::servers::tokio::net::TcpStream;
use musicfs_test_utils::servers::tokio::runtime::Runtime;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A TCP server on a free loopback port that sends back every byte it receives, one thread per client.
pub struct Echo {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    pub fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        std::thread::spawn(move || {
                            let mut reader = stream.try_clone().unwrap();
                            let mut writer = stream;
                            let _ = std::io::copy(&mut reader, &mut writer);
                        });
                    }
                    Err(err) if err.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
                    Err(err) => panic!("echo server accept failed: {err}"),
                }
            }
        });
        Echo { addr, stop, thread: Some(thread) }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sends `msg` and reads the same number of bytes back; returns them and how long the round trip took.
pub async fn round_trip(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<(Vec<u8>, Duration)> {
    let started = Instant::now();
    let exchange = async {
        stream.write_all(msg).await?;
        let mut back = vec![0u8; msg.len()];
        stream.read_exact(&mut back).await?;
        Ok(back)
    };
    match tokio::time::timeout(Duration::from_secs(20), exchange).await {
        Ok(Ok(back)) => Ok((back, started.elapsed())),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(std::io::Error::new(ErrorKind::TimedOut, "no echo within 20 s")),
    }
}

/// Connects to `addr` and checks one echo round trip; returns the stream and the round-trip time.
pub async fn connect_and_echo(addr: SocketAddr, msg: &[u8]) -> (TcpStream, Duration) {
    let mut stream = TcpStream::connect(addr).await.unwrap_or_else(|err| panic!("connecting to {addr}: {err}"));
    let (back, took) = round_trip(&mut stream, msg).await.unwrap_or_else(|err| panic!("echo through {addr}: {err}"));
    assert_eq!(back, msg, "the echo came back different");
    (stream, took)
}

/// Runs the real `sftp` client in batch mode against 127.0.0.1:`port` (the server or a proxy in front of it).
pub fn sftp_batch(sshd: &Sshd, port: u16, batch: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let batch_file = dir.path().join("batch");
    std::fs::write(&batch_file, batch).unwrap();
    sshd.sftp_command(port, &batch_file)
        .output()
        .expect("the sftp client runs (Debian: apt-get install -y openssh-client)")
}

/// `get remote local` over SFTP through `port`; returns the bytes fetched, or the client's output on failure.
pub fn sftp_get(sshd: &Sshd, port: u16, remote: &str) -> Result<Vec<u8>, String> {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("fetched");
    let out = sftp_batch(sshd, port, &format!("get {remote} {}\n", local.display()));
    if !out.status.success() {
        return Err(format!(
            "sftp exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::read(&local).map_err(|err| format!("sftp succeeded but {} is unreadable: {err}", local.display()))
}

/// `len` random bytes, so a test cannot pass by reading zeros or an old file.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::fill(&mut bytes[..]);
    bytes
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

/// What every remote origin's reads must do with `big`, stored at `song`: a range inside the file, one that
/// runs over the end (short), one past the end (empty), the whole file at once; NotFound for a missing file
/// (read and stat); a passing health check; and the tag scanner's blocking reader.
pub fn check_ranged_reads(rt: &Runtime, origin: Arc<dyn Origin>, song: &Path, big: &[u8]) {
    let n = big.len();
    assert_eq!(&rt.block_on(origin.read_range(song, 1000, 5000)).unwrap()[..], &big[1000..6000]);
    assert_eq!(
        &rt.block_on(origin.read_range(song, n as u64 - 1000, 5000)).unwrap()[..],
        &big[n - 1000..],
        "short at EOF"
    );
    assert!(rt.block_on(origin.read_range(song, n as u64 + 100_000, 10)).unwrap().is_empty(), "empty past EOF");
    assert!(rt.block_on(origin.read_range(song, 0, n * 2)).unwrap() == big, "a whole-file read");
    assert!(matches!(rt.block_on(origin.read_range(Path::new("nope.flac"), 0, 1)), Err(OriginError::NotFound(_))));
    assert!(matches!(rt.block_on(origin.stat(Path::new("nope.flac"))), Err(OriginError::NotFound(_))));
    rt.block_on(origin.health_check()).unwrap();
    check_blocking_reader(origin, song, big);
}

/// The tag scanner's reader of a remote origin, on a plain thread as the scanner uses it: small reads and
/// seeks, then the whole file `big` at `song`; a missing file is NotFound.
pub fn check_blocking_reader(origin: Arc<dyn Origin>, song: &Path, big: &[u8]) {
    use std::io::{Read, Seek, SeekFrom};
    let (song, big) = (song.to_owned(), big.to_owned());
    std::thread::spawn(move || {
        let mut r = origin.open_blocking(&song).unwrap();
        let mut head = [0u8; 4];
        r.read_exact(&mut head).unwrap();
        assert_eq!(head, big[..4]);
        assert_eq!(r.seek(SeekFrom::End(-128)).unwrap(), big.len() as u64 - 128);
        let mut tail = Vec::new();
        r.read_to_end(&mut tail).unwrap();
        assert_eq!(tail, big[big.len() - 128..]);
        r.seek(SeekFrom::Start(0)).unwrap();
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert!(all == big, "the blocking reader returned different bytes");
        let missing = origin.open_blocking(Path::new("nope.flac"));
        assert!(matches!(missing, Err(OriginError::NotFound(_))));
    })
    .join()
    .unwrap();
}

/// TCP connections process `pid` holds open (ESTABLISHED) to 127.0.0.1:`port`, from its own sockets.
pub fn connections_of(pid: u32, port: u16) -> usize {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else { continue };
        let target = target.to_string_lossy().into_owned();
        if let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
            inodes.insert(inode.to_owned());
        }
    }
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap();
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            fields.len() > 9 && fields[2] == remote && fields[3] == "01" && inodes.contains(fields[9])
        })
        .count()
}
