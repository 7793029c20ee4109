//! Secrets stay secret: with both remote kinds configured (an S3 secret key in a file, an SFTP private key)
//! and one S3 origin whose secret is wrong (so failures are logged too), the daemon's log at `trace` for
//! every crate, `musicfs status --json` and `musicfs metrics` contain neither secret key nor any line of the
//! private key file.

use crate::mounted::{musicfs, start};
use crate::remote::{Library, Remote, RemoteLibrary, s3_origin};
use musicfs_test_utils::daemon::Scratch;
use musicfs_test_utils::files::walk_files;

#[test]
fn no_secret_reaches_the_log_at_any_level_the_status_or_the_metrics() {
    let scratch = Scratch::new().unwrap();
    let s3 = RemoteLibrary::serve(Remote::S3, Library::generate(2), 0..2);
    let sftp = RemoteLibrary::serve(Remote::Sftp, Library::generate(1), 0..1);
    // A second origin on the same bucket whose secret is wrong: its requests are refused and logged.
    let wrong = "Wr0ngSecretThatMustNeverBeLogged1234567890";
    let good = s3.s3().secret_key().to_owned();
    let mut origins = s3.origin(&scratch, None) + &sftp.origin(&scratch, None);
    let bad = s3_origin(&scratch, s3.s3(), "bad", &s3.s3().endpoint(), "elsewhere");
    std::fs::write(scratch.dir.path().join("bad.secret"), format!("{wrong}\n")).unwrap();
    origins += &bad;
    let daemon = start(&scratch, &origins, "[logging]\nlevel = \"trace,object_store=trace\"\n");
    let mut read = 0;
    for file in walk_files(&scratch.mnt()).unwrap() {
        read += std::fs::read(&file).unwrap().len();
    }
    assert!(read > 0, "nothing was read through the mount");
    let (_, sync, _) = musicfs(&["sync"], &scratch);
    let (ok, status, err) = musicfs(&["status", "--json"], &scratch);
    assert!(ok, "{err}");
    let (ok, metrics, err) = musicfs(&["metrics"], &scratch);
    assert!(ok, "{err}");
    let log = daemon.log();
    assert!(log.contains("TRACE"), "the log is not at trace level: {} bytes", log.len());
    assert!(log.contains("bad"), "the wrong-secret origin left no trace in the log");

    let key = std::fs::read_to_string(sftp.sshd().client_key_path()).unwrap();
    let key_lines: Vec<&str> = key.lines().filter(|l| l.len() >= 16 && !l.starts_with("-----")).collect();
    assert!(!key_lines.is_empty(), "the private key file has no body lines");
    for (what, text) in [("log", &log), ("status", &status), ("metrics", &metrics), ("sync answer", &sync)] {
        assert!(!text.contains(&good), "the S3 secret key is in the {what}");
        assert!(!text.contains(wrong), "the wrong S3 secret key is in the {what}");
        for line in &key_lines {
            assert!(!text.contains(line), "a line of the SFTP private key is in the {what}");
        }
    }
    daemon.stop_cleanly();
}
