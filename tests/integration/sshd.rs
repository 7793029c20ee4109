//! `Sshd` gives a working OpenSSH server: the real `sftp` client, with the throwaway key and known_hosts,
//! fetches files byte for byte; other keys are refused; `stop` cuts it off, live sessions included, and
//! `start_again` brings it back on the same port with the same host key.

use crate::support::{random_bytes, sftp_batch, sftp_get, write_file};
use musicfs_test_utils::servers::sshd::Sshd;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sftp_gets_files_by_relative_and_absolute_path() {
    let served = tempfile::tempdir().unwrap();
    let bytes = random_bytes(300_000);
    let path = write_file(served.path(), "Artist/Album/01 Track.bin", &bytes);
    let sshd = Sshd::start(served.path()).unwrap();
    eprintln!("sshd started in {:?} (pid {:?}, port {})", sshd.started_in, sshd.pid(), sshd.port());
    assert!(sshd.pid().is_some());
    assert_eq!(sshd.addr().port(), sshd.port());

    // Relative paths start in the served directory ("\" escapes the space in sftp batch syntax).
    let relative = sftp_get(&sshd, sshd.port(), "Artist/Album/01\\ Track.bin").unwrap();
    assert_eq!(relative, bytes, "bytes fetched by relative path differ");
    let absolute = sftp_get(&sshd, sshd.port(), &path.display().to_string().replace(' ', "\\ ")).unwrap();
    assert_eq!(absolute, bytes, "bytes fetched by absolute path differ");

    let listing = sftp_batch(&sshd, sshd.port(), "ls -l Artist/Album\n");
    assert!(listing.status.success());
    assert!(String::from_utf8_lossy(&listing.stdout).contains("300000"), "ls -l does not show the file size");

    let missing = sftp_get(&sshd, sshd.port(), "no-such-file");
    assert!(missing.is_err(), "getting a missing file succeeded");
}

#[test]
fn a_key_that_is_not_authorized_is_refused() {
    let served = tempfile::tempdir().unwrap();
    write_file(served.path(), "f", b"secret");
    let sshd = Sshd::start(served.path()).unwrap();
    let other = tempfile::tempdir().unwrap();
    let other_key = other.path().join("other");
    let keygen = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&other_key).status();
    assert!(keygen.unwrap().success());
    let out = Command::new("sftp")
        .args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", sshd.known_hosts_path().display()))
        .arg("-i")
        .arg(&other_key)
        .arg("-P")
        .arg(sshd.port().to_string())
        .arg("-b")
        .arg("/dev/null")
        .arg(format!("{}@127.0.0.1", sshd.user()))
        .output()
        .expect("sftp runs");
    assert!(!out.status.success(), "an unauthorized key got in");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{out:?}");
}

#[test]
fn stop_cuts_the_server_off_and_start_again_serves_on_the_same_port() {
    let served = tempfile::tempdir().unwrap();
    let bytes = random_bytes(10_000);
    write_file(served.path(), "a.bin", &bytes);
    let mut sshd = Sshd::start(served.path()).unwrap();
    let port = sshd.port();
    let first_pid = sshd.pid().unwrap();
    assert_eq!(sftp_get(&sshd, port, "a.bin").unwrap(), bytes);

    // A live session (sftp reading commands from a pipe we keep open) must die with the server.
    let mut session = sshd
        .sftp_command(port, Path::new("-"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sftp runs");
    let mut stdin = session.stdin.take().unwrap();
    stdin.write_all(b"pwd\n").unwrap();
    // Keep reading its output until it exits: a closed pipe would kill it with SIGPIPE and prove nothing.
    let mut output = BufReader::new(session.stdout.take().unwrap());
    let mut line = String::new();
    output.read_line(&mut line).unwrap();
    assert!(line.contains("pwd") || line.contains("directory"), "no answer from the live session: {line:?}");

    sshd.stop();
    // sftp notices only when it next talks to the server (`pwd` is answered locally, `ls` is not): ask
    // again and hang up. A surviving session would
    // answer and exit 0; a cut one fails.
    let _ = stdin.write_all(b"ls -l a.bin\n");
    drop(stdin);
    let mut rest = String::new();
    let _ = output.read_to_string(&mut rest);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = session.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "sftp still running 10 s after sshd.stop()");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "a live sftp session survived sshd.stop(); it said {rest:?}");
    assert_eq!(sshd.pid(), None);
    assert!(std::net::TcpStream::connect(sshd.addr()).is_err(), "the port still accepts after stop");
    assert!(sftp_get(&sshd, port, "a.bin").is_err(), "sftp worked against a stopped sshd");

    sshd.start_again().unwrap();
    eprintln!("sshd restarted in {:?}", sshd.started_in);
    assert_eq!(sshd.port(), port);
    assert_ne!(sshd.pid(), Some(first_pid));
    // Same host key: the known_hosts file written at the first start still verifies the server.
    assert_eq!(sftp_get(&sshd, port, "a.bin").unwrap(), bytes);
}
