//! A property test of the virtual tree across add, change, remove and restart (issue 13): random sequences
//! of operations on an origin, each followed by the real delta sync into the real database (and a restart
//! reopens the database and loads the tree from it alone). After every step the tree shows exactly the
//! origin's audio files, once each; every name is a safe component (non-empty, not `.` or `..`, no `/` or
//! NUL, at most 255 bytes) and unique in its directory; a track keeps its inode number for as long as it
//! exists (through changes, other tracks' arrivals and departures, renames forced by collisions, and
//! restarts), and a restart changes nothing at all.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

use musicfs_meta::sync::{SyncOptions, sync};
use musicfs_meta::{Db, NodeKind, Tree};
use musicfs_origins::SharedOrigin;
use musicfs_origins::memory::MemoryOrigin;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File stems that collide once placed (untagged files all land in "Unknown Artist/Unknown Album"), clash
/// with disambiguation suffixes, or need cleaning.
const STEMS: [&str; 8] = ["a", "A", "a (2)", "..", " b ", "c\u{1}d", "song", "ü"];

#[derive(Clone, Debug)]
enum Op {
    Add { dir: usize, stem: usize, long: bool, seed: u8 },
    Change { pick: usize, seed: u8 },
    Remove { pick: usize },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..3, 0..STEMS.len(), any::<bool>(), any::<u8>())
            .prop_map(|(dir, stem, long, seed)| Op::Add { dir, stem, long, seed }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(pick, seed)| Op::Change { pick, seed }),
        2 => any::<usize>().prop_map(|pick| Op::Remove { pick }),
        1 => Just(Op::Restart),
    ]
}

/// Every file of the tree: its path from the root, inode and track id; checks the names on the way.
fn files_of(tree: &Tree) -> Result<BTreeMap<i64, (String, u64)>, TestCaseError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(1u64, String::new())];
    while let Some((dir, path)) = stack.pop() {
        let mut names = HashSet::new();
        for child in tree.children(dir).expect("a directory") {
            let name = tree.name(child);
            prop_assert!(!name.is_empty() && name != "." && name != "..", "bad name {:?} under {:?}", name, path);
            prop_assert!(!name.contains('/') && !name.contains('\0'), "bad name {:?}", name);
            prop_assert!(name.len() <= 255, "{} bytes: {:?}", name.len(), name);
            prop_assert!(names.insert(name.to_owned()), "{:?} twice in {:?}", name, path);
            let full = format!("{path}/{name}");
            match &child.kind {
                NodeKind::Dir { .. } => stack.push((child.ino, full)),
                NodeKind::File(f) => {
                    prop_assert!(out.insert(f.track_id, (full, child.ino)).is_none(), "track {} twice", f.track_id);
                }
            }
        }
    }
    Ok(out)
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("meta.db");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let memory = Arc::new(MemoryOrigin::named("lib"));
    let origins: Vec<SharedOrigin> = vec![memory.clone()];
    let mut db = Arc::new(Db::open(&db_path).unwrap());
    let mut live: Vec<PathBuf> = Vec::new();
    let mut inodes: BTreeMap<PathBuf, u64> = BTreeMap::new();
    let mut clock = 1_000_000_000i64;
    for op in ops {
        clock += 1_000_000;
        let before = files_of(&musicfs_meta::sync::load_tree(&db).unwrap())?;
        match op {
            Op::Add { dir, stem, long, seed } => {
                let stem = if long { STEMS[stem].repeat(200) } else { STEMS[stem].to_owned() };
                let rel = PathBuf::from(format!("d{dir}")).join(format!("{stem}.flac"));
                if !live.contains(&rel) {
                    memory.insert(rel.clone(), vec![seed; 100 + seed as usize], clock);
                    live.push(rel);
                }
            }
            Op::Change { pick, seed } if !live.is_empty() => {
                let rel = live[pick % live.len()].clone();
                memory.insert(rel, vec![seed ^ 0x55; 300 + seed as usize], clock);
            }
            Op::Remove { pick } if !live.is_empty() => {
                let rel = live.remove(pick % live.len());
                memory.remove(&rel);
                inodes.remove(&rel);
            }
            Op::Restart => {
                drop(db);
                db = Arc::new(Db::open(&db_path).unwrap());
                let after = files_of(&musicfs_meta::sync::load_tree(&db).unwrap())?;
                prop_assert_eq!(&after, &before, "a restart changed the tree");
                continue;
            }
            _ => continue,
        }
        let (_, tree) = rt.block_on(sync(&db, &origins, SyncOptions::default())).unwrap();
        let files = files_of(&tree)?;
        prop_assert_eq!(files.len(), live.len(), "the tree has {:?} for {:?}", files, live);
        // The loaded tree (what a restart serves) equals the one the sync built.
        prop_assert_eq!(&files_of(&musicfs_meta::sync::load_tree(&db).unwrap())?, &files);
        let tracks = db.load_tracks().unwrap();
        for track in &tracks {
            let (_, ino) = files.get(&track.id).expect("every stored track is in the tree");
            let rel: &Path = &track.rel_path;
            if let Some(old) = inodes.insert(rel.to_owned(), *ino) {
                prop_assert_eq!(old, *ino, "{:?} changed its inode", rel);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_tree_stays_safe_unique_and_stable_across_add_change_remove_and_restart(
        ops in proptest::collection::vec(op(), 1..24)
    ) {
        run(ops)?;
    }
}
