//! The servers behind Toxiproxy, as the origin tests will use them: SFTP and S3 traffic passes through a
//! proxy, a disabled proxy (a partition) stops it, and a latency toxic slows S3 reads down.

use crate::support::{random_bytes, sftp_get, write_file};
use musicfs_test_utils::servers::object_store::ObjectStoreExt;
use musicfs_test_utils::servers::object_store::path::Path;
use musicfs_test_utils::servers::s3::S3Server;
use musicfs_test_utils::servers::sshd::Sshd;
use musicfs_test_utils::servers::tokio;
use musicfs_test_utils::servers::toxiproxy::{Toxiproxy, latency};
use std::time::{Duration, Instant};

#[tokio::test(crate = "musicfs_test_utils::servers::tokio")]
async fn sftp_passes_through_a_proxy_and_stops_while_it_is_disabled() {
    let served = tempfile::tempdir().unwrap();
    let bytes = random_bytes(500_000);
    write_file(served.path(), "track.bin", &bytes);
    let sshd = Sshd::start(served.path()).unwrap();
    let toxiproxy = Toxiproxy::start().unwrap();
    let (mut proxy, listen) = toxiproxy.create_proxy("sftp", sshd.addr()).await.unwrap();

    let fetched = sftp_get(&sshd, listen.port(), "track.bin").unwrap();
    assert_eq!(fetched, bytes, "the file fetched through the proxy differs");

    proxy.disable().await.unwrap();
    assert!(sftp_get(&sshd, listen.port(), "track.bin").is_err(), "sftp got through a disabled proxy");
    proxy.enable().await.unwrap();
    assert_eq!(sftp_get(&sshd, listen.port(), "track.bin").unwrap(), bytes);
}

#[tokio::test(crate = "musicfs_test_utils::servers::tokio")]
async fn s3_reads_pass_through_a_proxy_and_a_latency_toxic_slows_them() {
    let server = S3Server::start().unwrap();
    let bytes = random_bytes(100_000);
    server.create_bucket("music").unwrap();
    server.put_object("music", "a.flac", &bytes).unwrap();
    let toxiproxy = Toxiproxy::start().unwrap();
    let (proxy, listen) = toxiproxy.create_proxy("s3", server.addr()).await.unwrap();
    let store = server.store_via(&format!("http://{listen}"), "music").unwrap();

    let got = store.get(&Path::from("a.flac")).await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), bytes.as_slice(), "the object read through the proxy differs");

    proxy.add_toxic(&latency("slow", 300)).await.unwrap();
    let started = Instant::now();
    let got = store.get(&Path::from("a.flac")).await.unwrap().bytes().await.unwrap();
    let took = started.elapsed();
    assert_eq!(got.as_ref(), bytes.as_slice());
    assert!(took >= Duration::from_millis(300), "a 300 ms latency toxic added only {took:?} to an S3 read");
}
