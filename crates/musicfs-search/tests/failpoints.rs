//! A commit that fails at its effect boundary (`search::commit::fail`) rolls back (5.2).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod common;

use common::{ids, library, track};
use musicfs_search::{Opened, SearchError, SearchIndex};

/// Proves L1: 5.2
#[test]
fn a_failed_commit_rolls_back_to_the_last_commit_and_a_retry_succeeds() {
    let scenario = fail::FailScenario::setup();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v1");
    let (index, opened) = SearchIndex::open_or_rebuild(&dir, &library(1, 1000)).unwrap();
    assert_eq!(opened, Opened::Created);

    // Batch B adds 100 tracks and removes a committed one; its commit fails after the segments are written.
    let batch = library(2001, 2100);
    fail::cfg("search::commit::fail", "1*return->off").unwrap();
    index.apply(&batch, &[42]).unwrap();
    match index.commit() {
        Err(SearchError::CommitFailed { discarded, .. }) => assert_eq!(discarded, 101),
        other => panic!("the commit must fail at the failpoint, got {other:?}"),
    }
    assert_eq!(index.uncommitted(), 0, "the failed batch is discarded");
    assert_eq!(index.doc_count(), 1000, "searches answer from the last commit");
    assert_eq!(ids(&index.search("song00042", 10).unwrap()), [42], "the failed removal did not happen");
    assert!(index.search("song02050", 10).unwrap().is_empty(), "the failed additions are not searchable");

    // The next commit (failpoint now off) must not publish the rolled-back batch.
    fail::remove("search::commit::fail");
    let mut retitled = track(7);
    retitled.tags.title = Some("Retitled".into());
    index.apply(&[retitled], &[]).unwrap();
    index.commit().unwrap();
    assert_eq!(ids(&index.search("retitled", 10).unwrap()), [7]);
    assert!(
        index.search("song02050", 10).unwrap().is_empty(),
        "the rolled-back batch does not leak into a later commit"
    );
    assert_eq!(ids(&index.search("song00042", 10).unwrap()), [42]);
    assert_eq!(index.doc_count(), 1000);

    // Retrying the batch works, and it is durable.
    index.apply(&batch, &[42]).unwrap();
    index.commit().unwrap();
    assert_eq!(ids(&index.search("song02050", 10).unwrap()), [2050]);
    assert!(index.search("song00042", 10).unwrap().is_empty());
    assert_eq!(index.doc_count(), 1099);
    drop(index);
    let index = SearchIndex::open(&dir).unwrap();
    assert_eq!(index.doc_count(), 1099, "the retried commit survives a reopen");
    scenario.teardown();
}
