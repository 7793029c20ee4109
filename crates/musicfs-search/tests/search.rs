//! The search index at L1: searching a synthetic library, damage found at open and rebuilt from the tracks
//! (5.2, 2.4), crashes before and during commits (5.2), and hostile query text.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod common;

use common::{ids, library, track, vpath};
use musicfs_search::{Opened, SearchError, SearchIndex};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn index_dir(tmp: &tempfile::TempDir) -> PathBuf {
    tmp.path().join("search").join("v1")
}

fn built(dir: &Path, tracks: &[musicfs_meta::Track]) -> SearchIndex {
    let (index, opened) = SearchIndex::open_or_rebuild(dir, tracks).unwrap();
    assert_eq!(opened, Opened::Created);
    index
}

/// Asserts the index answers for the 1 000-track library: artist 7's twenty tracks, track 42, with their vpaths.
fn assert_answers_library(index: &SearchIndex) {
    let hits = index.search("band007", 100).unwrap();
    assert_eq!(ids(&hits), (141..=160).collect::<Vec<_>>());
    for hit in &hits {
        assert_eq!(hit.vpath, vpath(hit.track_id));
    }
    let hits = index.search("song00042", 10).unwrap();
    assert_eq!(ids(&hits), [42]);
    assert_eq!(hits[0].vpath, vpath(42));
}

#[test]
fn search_maps_artist_and_title_words_to_the_right_vpaths() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = index_dir(&tmp);
    let index = built(&dir, &library(1, 1000));
    assert_eq!(index.doc_count(), 1000);
    assert_answers_library(&index);

    // Words combine with AND; case and accents do not matter; a field prefix narrows.
    let red: Vec<i64> = (141..=160).filter(|id| id % 8 == 0).collect();
    assert_eq!(ids(&index.search("Band007 RED", 100).unwrap()), red);
    assert_eq!(ids(&index.search("artist:band007", 100).unwrap()), (141..=160).collect::<Vec<_>>());
    assert!(index.search("title:band007", 100).unwrap().is_empty());
    assert_eq!(ids(&index.search("1967", 100).unwrap()), (141..=160).collect::<Vec<_>>(), "year 1967 is artist 7's");
    assert_eq!(ids(&index.search("00042.flac", 10).unwrap()), [42], "the origin file name is searchable");
    assert_eq!(index.search("red", 5).unwrap().len(), 5, "the limit holds");
    assert!(index.search("red", 0).unwrap().is_empty());
    assert!(index.search("   ", 10).unwrap().is_empty());
    let best = index.search("song00042 red blue", 10).unwrap();
    assert!(best.is_empty(), "every word must match");

    // Updates, removals and renames show after a commit, not before.
    let mut renamed = track(42);
    renamed.tags.title = Some("Jóga".into());
    renamed.tags.artist = Some("Björk".into());
    renamed.vpath = "Björk/Homogenic (1997)/01 - Jóga.flac".into();
    index.apply(&[renamed.clone()], &[43]).unwrap();
    assert_eq!(index.uncommitted(), 2);
    assert_eq!(ids(&index.search("song00043", 10).unwrap()), [43], "not visible before the commit");
    index.commit().unwrap();
    assert_eq!(index.uncommitted(), 0);
    assert!(index.search("song00042", 10).unwrap().is_empty());
    assert!(index.search("song00043", 10).unwrap().is_empty());
    let hits = index.search("bjork joga", 10).unwrap();
    assert_eq!(ids(&hits), [42]);
    assert_eq!(hits[0].vpath, renamed.vpath);
    assert_eq!(index.doc_count(), 999);
}

/// Damage done to a closed, healthy index: what a crash, a bad disk or a stray `rm` can leave behind.
type Damage = (&'static str, fn(&Path));

fn damages() -> Vec<Damage> {
    fn segment_file(dir: &Path, ext: &str) -> PathBuf {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .unwrap_or_else(|| panic!("no .{ext} segment file in {}", dir.display()))
    }
    vec![
        ("garbage in meta.json", |dir| {
            std::fs::write(dir.join("meta.json"), b"{\"segments\": [\0\xff garbage").unwrap()
        }),
        ("empty meta.json", |dir| std::fs::write(dir.join("meta.json"), b"").unwrap()),
        ("meta.json deleted", |dir| std::fs::remove_file(dir.join("meta.json")).unwrap()),
        ("terms file truncated", |dir| {
            let path = segment_file(dir, "term");
            let len = std::fs::metadata(&path).unwrap().len();
            std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len / 2).unwrap();
        }),
        ("doc store deleted", |dir| std::fs::remove_file(segment_file(dir, "store")).unwrap()),
        ("postings deleted", |dir| std::fs::remove_file(segment_file(dir, "idx")).unwrap()),
        ("a byte flipped in the postings", |dir| {
            let path = segment_file(dir, "idx");
            let mut bytes = std::fs::read(&path).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x5a;
            std::fs::write(&path, bytes).unwrap();
        }),
        ("fast fields truncated to nothing", |dir| {
            let path = segment_file(dir, "fast");
            std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
        }),
    ]
}

/// Proves L1: 5.2, 2.4
#[test]
fn a_damaged_index_is_detected_at_open_and_rebuilt_from_the_tracks() {
    let tracks = library(1, 1000);
    for (what, damage) in damages() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = index_dir(&tmp);
        let index = built(&dir, &tracks);
        assert_answers_library(&index);
        drop(index);

        damage(&dir);
        match SearchIndex::open(&dir) {
            Err(SearchError::Damaged { .. }) => {}
            other => panic!("{what}: open must report damage, got {other:?}"),
        }
        let (index, opened) = SearchIndex::open_or_rebuild(&dir, &tracks).unwrap();
        let Opened::Rebuilt { reason, moved_to } = opened else { panic!("{what}: expected a rebuild, got {opened:?}") };
        assert!(!reason.is_empty());
        let moved_to = moved_to.unwrap_or_else(|| panic!("{what}: the damaged index is kept for inspection"));
        assert!(moved_to.is_dir(), "{what}: {} exists", moved_to.display());
        assert_eq!(index.doc_count(), 1000, "{what}");
        assert_answers_library(&index);
        drop(index);

        let (index, opened) = SearchIndex::open_or_rebuild(&dir, &tracks).unwrap();
        assert_eq!(opened, Opened::Healthy { reindexed: 0 }, "{what}: the rebuilt index is sound");
        assert_answers_library(&index);
    }
}

/// A writer holds tantivy's lock only while changes are queued (an idle one would hold its memory, 5.5);
/// other processes are kept away by the daemon's cache lock. A lock found held is not damage.
#[test]
fn a_locked_index_is_not_mistaken_for_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = index_dir(&tmp);
    let tracks = library(1, 100);
    let first = built(&dir, &tracks);
    first.apply(&library(200, 200), &[]).unwrap();
    match SearchIndex::open_or_rebuild(&dir, &tracks) {
        Err(SearchError::Locked { .. }) => {}
        other => panic!("a second writer must be told the index is locked, got {other:?}"),
    }
    assert!(!dir.with_file_name("v1.corrupt").exists(), "a locked index is never moved aside");
    assert_eq!(ids(&first.search("song00042", 10).unwrap()), [42]);
}

#[test]
fn rebuild_and_recreate_replace_every_document() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = index_dir(&tmp);
    let index = built(&dir, &library(1, 1000));
    index.apply(&library(5000, 5009), &[]).unwrap();
    index.rebuild(&library(2001, 2500)).unwrap();
    assert_eq!(index.doc_count(), 500);
    assert!(index.search("song00042", 10).unwrap().is_empty(), "old documents are gone");
    assert!(index.search("song05000", 10).unwrap().is_empty(), "what was queued before the rebuild is gone too");
    assert_eq!(ids(&index.search("song02042", 10).unwrap()), [2042]);
    drop(index);

    std::fs::write(dir.join("meta.json"), b"garbage").unwrap();
    let index = SearchIndex::recreate(&dir, &library(1, 1000)).unwrap();
    assert_eq!(index.doc_count(), 1000);
    assert_answers_library(&index);
}

/// Proves L1: 6.5
#[test]
fn an_index_damaged_under_a_running_process_gives_errors_not_a_crash_and_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = index_dir(&tmp);
    let tracks = library(1, 1000);
    let index = built(&dir, &tracks);
    assert_answers_library(&index);
    // The disk loses the index while it is in use: every segment file truncated to nothing. Through a memory
    // map this is a SIGBUS that kills the process, mount and all.
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".json") && !name.starts_with(".tantivy") {
            std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
        }
    }
    for query in ["band007", "song00042", "red", "1967"] {
        match index.search(query, 100) {
            Ok(_) | Err(SearchError::Tantivy(_)) => {}
            Err(other) => panic!("{query}: search must fail as a search error, got {other}"),
        }
    }
    assert!(index.search("band007", 100).is_err(), "the damage is reported, not hidden");
    // `musicfs search rebuild` on the running index repairs it from the tracks.
    index.rebuild(&tracks).unwrap();
    assert_eq!(index.doc_count(), 1000);
    assert_answers_library(&index);
    drop(index);
    let (_index, opened) = SearchIndex::open_or_rebuild(&dir, &tracks).unwrap();
    assert_eq!(opened, Opened::Healthy { reindexed: 0 });
}

/// Set in a child process started by a crash test: `<mode>:<index dir>`.
const CHILD_ENV: &str = "MUSICFS_SEARCH_CRASH_CHILD";

fn child_role() -> Option<(String, PathBuf)> {
    let value = std::env::var(CHILD_ENV).ok()?;
    let (mode, dir) = value.split_once(':')?;
    Some((mode.to_owned(), PathBuf::from(dir)))
}

/// Runs this test binary again as a child that executes only `test` in the given role.
fn spawn_child(test: &str, mode: &str, dir: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{mode}:{}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Proves L1: 5.2
#[test]
fn a_crash_between_apply_and_commit_loses_only_the_uncommitted_changes() {
    if let Some((_, dir)) = child_role() {
        // The child: 1 000 tracks committed, then 500 added and one removed, then a crash before the commit.
        let (index, _) = SearchIndex::open_or_rebuild(&dir, &library(1, 1000)).unwrap();
        index.apply(&library(1001, 1500), &[42]).unwrap();
        assert_eq!(index.uncommitted(), 501);
        println!("applied");
        std::process::abort();
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = index_dir(&tmp);
    let child = spawn_child("a_crash_between_apply_and_commit_loses_only_the_uncommitted_changes", "abort", &dir);
    let output = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("applied"), "the child got as far as the crash");
    assert!(!output.status.success(), "the child crashed");

    let index = SearchIndex::open(&dir).expect("an index crashed before a commit opens and passes its check");
    assert_eq!(index.doc_count(), 1000, "the last commit survived, the uncommitted changes did not");
    assert_answers_library(&index);
    assert!(index.search("song01200", 10).unwrap().is_empty());
    drop(index);

    // At the next start the daemon reconciles with SQLite, which holds the changes: the loss is repaired.
    let mut tracks = library(1, 1500);
    tracks.retain(|t| t.id != 42);
    let (index, opened) = SearchIndex::open_or_rebuild(&dir, &tracks).unwrap();
    assert_eq!(opened, Opened::Healthy { reindexed: 501 });
    assert_eq!(index.doc_count(), 1499);
    assert_eq!(ids(&index.search("song01200", 10).unwrap()), [1200]);
    assert!(index.search("song00042", 10).unwrap().is_empty());
}

const KILL_BATCH: i64 = 200;

/// Proves L1: 5.2
#[test]
fn kill_9_while_indexing_keeps_whole_commits_and_the_index_opens() {
    if let Some((_, dir)) = child_role() {
        // The child: batches of 200 tracks, each applied and committed, until it is killed.
        let index = SearchIndex::open(&dir).unwrap();
        let mut next = index.doc_count() as i64 + 1;
        loop {
            index.apply(&library(next, next + KILL_BATCH - 1), &[]).unwrap();
            index.commit().unwrap();
            next += KILL_BATCH;
            println!("committed {}", next - 1);
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = index_dir(&tmp);
    drop(SearchIndex::open(&dir).unwrap());
    for round in 0..4u64 {
        let mut child = spawn_child("kill_9_while_indexing_keeps_whole_commits_and_the_index_opens", "loop", &dir);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut last_seen = 0;
        let started = Instant::now();
        for line in lines.by_ref() {
            if let Some(n) = line.unwrap().strip_prefix("committed ") {
                last_seen = n.parse::<i64>().unwrap();
                if last_seen % (3 * KILL_BATCH) == 0 {
                    break;
                }
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the child stopped committing");
        }
        // Kill at a different point of the next batch each round: adding, flushing, or writing meta.json.
        std::thread::sleep(Duration::from_millis(round * 7));
        child.kill().unwrap();
        child.wait().unwrap();

        let index = SearchIndex::open(&dir).expect("an index killed while indexing opens and passes its check");
        let count = index.doc_count() as i64;
        assert!(count >= last_seen, "round {round}: committed batches survive ({count} < {last_seen})");
        assert_eq!(count % KILL_BATCH, 0, "round {round}: a commit is whole or absent, never half a batch");
        assert_eq!(ids(&index.search(&format!("song{count:05}"), 10).unwrap()), [count]);
        assert!(index.search(&format!("song{:05}", count + 1), 10).unwrap().is_empty());
    }
}

#[test]
fn hostile_queries_give_hits_or_a_clear_error_never_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let index = built(&index_dir(&tmp), &library(1, 1000));
    let long_word = "a".repeat(10_000);
    let many_words = "band007 ".repeat(1_000);
    let nested = "(".repeat(5_000) + "band007" + &")".repeat(5_000);
    let hostile: Vec<String> = [
        "\"band007",
        "band007\"",
        "artist:",
        "artist:\"",
        ":::",
        "title:(a OR",
        "nosuchfield:band007",
        "artist:artist:band007",
        "* ? ~ ^2 + - ! && || AND OR NOT",
        "\0",
        "band007\0red",
        "\u{feff}\u{202e}band007\u{fffd}",
        "🎸🥁 band007",
        "a*b?c~2^3",
        "/regex.*/",
        "[a TO z]",
        "year:>1990",
        "\\",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([long_word.clone(), many_words.clone(), nested.clone(), "x".repeat(1_024), "b ".repeat(33)])
    .collect();
    for query in &hostile {
        match index.search(query, 10) {
            Ok(_) | Err(SearchError::QueryTooLong { .. }) | Err(SearchError::TooManyTerms) => {}
            Err(other) => panic!("query {:?}: unexpected error {other}", query.chars().take(40).collect::<String>()),
        }
    }
    assert!(matches!(index.search(&long_word, 10), Err(SearchError::QueryTooLong { len: 10_000 })));
    assert!(matches!(index.search(&nested, 10), Err(SearchError::QueryTooLong { .. })));
    assert!(matches!(index.search(&"b ".repeat(33), 10), Err(SearchError::TooManyTerms)));
    assert_eq!(ids(&index.search("\"band007", 100).unwrap()), (141..=160).collect::<Vec<_>>(), "quotes are not syntax");
    assert_eq!(ids(&index.search("band007\0red", 100).unwrap()), [144, 152, 160], "NUL separates words");
    assert!(index.search("artist:", 10).unwrap().is_empty());
    let message = index.search(&long_word, 10).unwrap_err().to_string();
    assert!(message.contains("too long"), "{message}");
}
