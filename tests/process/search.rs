//! `musicfs search` against the real daemon: tracks are found by their tags, new tracks become searchable
//! after a sync, and a search index destroyed under the running daemon costs search only (6.5): the mount
//! keeps serving, `musicfs search rebuild` brings search back, and a restart rebuilds a damaged index (2.4).

use crate::musicfs;
use musicfs_test_utils::daemon::{Daemon, Scratch, is_fuse_mounted};
use musicfs_test_utils::sample::{self, SampleOptions, SampleTrack};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_musicfs");

/// The paths `musicfs search WORDS` prints, once the indexer has caught up (it runs behind the mount).
fn search_until(cache: &Path, words: &[&str], want: impl Fn(&[PathBuf]) -> bool) -> Vec<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, out, err) = musicfs(&[&["search"], words].concat(), cache);
        let paths: Vec<PathBuf> = out.lines().map(PathBuf::from).collect();
        if ok && want(&paths) {
            return paths;
        }
        assert!(Instant::now() < deadline, "search {words:?} never gave what was wanted: {out}{err}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn title_word(t: &SampleTrack) -> String {
    t.tags.title.clone().unwrap().split_whitespace().last().unwrap().to_owned()
}

/// Proves L2: 6.5
#[test]
fn search_finds_tracks_by_tag_and_survives_its_index_being_destroyed_under_the_daemon() {
    let scratch = Scratch::new().unwrap();
    let tracks = sample::generate(&scratch.lib(), &SampleOptions { tracks: 6, hostile: false, seconds: 0.5 }).unwrap();
    let mut daemon = Daemon::start(Path::new(BIN), &scratch.args()).unwrap();
    let cache = scratch.cache();
    let target = &tracks[2];
    let expected = scratch.mnt().join(target.expected_tag_path().unwrap());
    let artist = format!("artist:{}", target.tags.artist.as_deref().unwrap().split_whitespace().next().unwrap());
    let title = format!("title:{}", title_word(target));

    let found = search_until(&cache, &[&artist, &title], |p| !p.is_empty());
    assert_eq!(found, std::slice::from_ref(&expected), "artist and title words find exactly that track");
    assert_eq!(std::fs::read(&found[0]).unwrap(), std::fs::read(scratch.lib().join(&target.rel_path)).unwrap());

    // Destroyed under the running daemon: every file of the index truncated.
    let index = cache.join("search/v1");
    for entry in std::fs::read_dir(&index).unwrap().flatten() {
        if entry.path().is_file() && entry.file_name() != ".tantivy-writer.lock" {
            std::fs::write(entry.path(), b"").unwrap();
        }
    }
    let (_, out, err) = musicfs(&["search", &artist, &title], &cache);
    eprintln!("search on a destroyed index: {out}{err}");
    // Whatever search says now, the filesystem does not notice.
    for t in &tracks {
        let bytes = std::fs::read(scratch.mnt().join(t.expected_tag_path().unwrap())).unwrap();
        assert_eq!(bytes, std::fs::read(scratch.lib().join(&t.rel_path)).unwrap());
    }
    let (ok, status, _) = musicfs(&["status", "--json"], &cache);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(ok && status["state"] == "ready", "the library stays ready: {status}");

    let (ok, out, err) = musicfs(&["search", "rebuild"], &cache);
    assert!(ok && out.contains("\"documents\":6"), "{out}{err}");
    assert_eq!(search_until(&cache, &[&artist, &title], |p| !p.is_empty()), std::slice::from_ref(&expected));

    // A track added later is searchable after the sync that brings it.
    let added =
        sample::generate(&scratch.dir.path().join("more"), &SampleOptions { tracks: 7, hostile: false, seconds: 0.5 })
            .unwrap()
            .pop()
            .unwrap();
    std::fs::copy(scratch.dir.path().join("more").join(&added.rel_path), scratch.lib().join("added.flac")).unwrap();
    let (ok, out, err) = musicfs(&["sync"], &cache);
    assert!(ok && out.contains("\"added\":1"), "{out}{err}");
    let word = format!("title:{}", title_word(&added));
    let hits = search_until(&cache, &[&word], |p| p.iter().any(|p| p.ends_with(added.expected_tag_path().unwrap())));
    assert!(hits.iter().all(|p| p.exists()), "{hits:?}");

    // Damaged while stopped: the next start rebuilds it from the database.
    let status = daemon.stop().unwrap();
    assert!(status.success() && !is_fuse_mounted(&scratch.mnt()));
    std::fs::write(index.join("meta.json"), b"{ not json").unwrap();
    daemon = Daemon::start(Path::new(BIN), &scratch.args()).unwrap();
    assert_eq!(search_until(&cache, &[&artist, &title], |p| !p.is_empty()), [expected]);
    assert!(daemon.log().contains("6.5/2.4 search index was damaged"), "{}", daemon.log());
    assert!(daemon.stop().unwrap().success());
}
