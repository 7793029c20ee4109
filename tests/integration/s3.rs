//! `S3Server` gives a working S3 server: objects put there come back byte for byte through real SigV4-signed
//! requests (object_store), missing keys are NotFound, wrong secrets are refused, and writes over HTTP work.

use crate::support::random_bytes;
use musicfs_test_utils::servers::object_store::aws::AmazonS3Builder;
use musicfs_test_utils::servers::object_store::path::Path;
use musicfs_test_utils::servers::object_store::{Error, ObjectStoreExt};
use musicfs_test_utils::servers::s3::S3Server;
use musicfs_test_utils::servers::tokio;

#[tokio::test(crate = "musicfs_test_utils::servers::tokio")]
async fn signed_get_returns_the_object_and_a_missing_key_is_not_found() {
    let server = S3Server::start().unwrap();
    eprintln!("S3 server ({:?}) started in {:?} at {}", server.backend(), server.started_in, server.endpoint());
    assert_eq!(server.region(), "us-east-1");
    let bytes = random_bytes(1_000_000);
    server.create_bucket("music").unwrap();
    server.put_object("music", "Artist/Album/01 Track.flac", &bytes).unwrap();

    let store = server.store("music").unwrap();
    let got = store.get(&Path::from("Artist/Album/01 Track.flac")).await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), bytes.as_slice(), "the object came back different");
    let head = store.head(&Path::from("Artist/Album/01 Track.flac")).await.unwrap();
    assert_eq!(head.size, bytes.len() as u64);

    match store.get(&Path::from("Artist/Album/02 Missing.flac")).await {
        Err(Error::NotFound { .. }) => {}
        other => panic!("a missing key should be NotFound, got {other:?}"),
    }
}

#[tokio::test(crate = "musicfs_test_utils::servers::tokio")]
async fn a_wrong_secret_is_refused() {
    let server = S3Server::start().unwrap();
    server.create_bucket("music").unwrap();
    server.put_object("music", "x", b"payload").unwrap();
    let wrong = AmazonS3Builder::new()
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .with_bucket_name("music")
        .with_access_key_id(server.access_key())
        .with_secret_access_key("not-the-secret")
        .with_region(server.region())
        .build()
        .unwrap();
    let result = wrong.get(&Path::from("x")).await;
    assert!(result.is_err(), "a request signed with the wrong secret was served");
    assert!(!matches!(result, Err(Error::NotFound { .. })), "expected an auth error, got {result:?}");
}

#[tokio::test(crate = "musicfs_test_utils::servers::tokio")]
async fn buckets_and_objects_written_over_http_are_served() {
    let server = S3Server::start().unwrap();
    server.http_create_bucket("uploads").unwrap();
    let bytes = random_bytes(200_000);
    server.http_put_object("uploads", "dir/file.bin", &bytes).unwrap();
    let store = server.store("uploads").unwrap();
    let got = store.get(&Path::from("dir/file.bin")).await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), bytes.as_slice());
    // The same key in another bucket is not there: the server really routes by bucket.
    let other = server.store("elsewhere").unwrap().get(&Path::from("dir/file.bin")).await;
    assert!(other.is_err(), "an object showed up in a bucket it was never put in");
}
