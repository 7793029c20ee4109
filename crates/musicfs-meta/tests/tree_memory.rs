//! Memory of the virtual tree at library scale (5.5): a mounted library keeps its whole tree in memory, so
//! the tree's heap must stay within a per-track budget and grow linearly with the number of tracks.
//!
//! The tree is built from synthetic rows (no audio files, no database) the way `Db::load_tree` builds it,
//! and measured twice: by [`Tree::heap_bytes`], the accounting a metric can export, and by a counting
//! allocator in this test binary, which sees every byte the build left allocated. The two must agree, so
//! the accounting cannot quietly miss a part of the tree.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

use musicfs_meta::Tree;
use musicfs_meta::tree::TreeRow;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;

/// Counts the bytes live on the current thread: allocations add, frees subtract. Per thread, so whatever
/// else the test harness does on its own threads does not count; the tree is built on the test's thread.
struct CountingAllocator;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: during thread teardown the slot may be gone; nothing is measured then.
    let _ = LIVE.try_with(|live| live.set(live.get() + delta));
}

fn live_bytes() -> isize {
    LIVE.with(Cell::get)
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only a const-initialised
// thread-local Cell, which never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Heap bytes per track the tree may use. Measured on 2026-11-25: 166 bytes per track at both 10 000 and
/// 100 000 tracks — node slots 80 B (72 B each, with the album and artist directories), file names 23 B,
/// origin paths 52 B, children lists 9 B, directory names 2 B. The budget leaves room for longer names.
const BUDGET_PER_TRACK: usize = 256;

/// A library shaped like a real one: 10 tracks per album, 10 albums per artist.
fn vpath(i: usize) -> String {
    format!("Artist {:05}/Album {:06} (2001)/{:02} - Title {i:07}.flac", i / 100, i / 10, i % 10 + 1)
}

/// Builds a tree of `tracks` synthetic tracks; returns it with the bytes the build left allocated.
fn build(tracks: usize) -> (Tree, usize) {
    let dirs = Tree::dir_paths_of((0..tracks).map(vpath).collect::<Vec<_>>().iter().map(String::as_str));
    let inodes: HashMap<String, u64> = dirs.into_iter().enumerate().map(|(i, d)| (d, i as u64 + 2)).collect();
    let first_file = inodes.len() as u64 + 2;
    // Rows are made one at a time while the tree takes them, as `Db::load_tree` streams them from SQLite:
    // each row is freed once added, so what stays allocated is the tree.
    let rows = (0..tracks).map(|i| TreeRow {
        track_id: i as i64 + 1,
        origin: "nas".into(),
        rel_path: format!("music/Artist {:05}/Album {:06}/{:02} Title {i:07}.flac", i / 100, i / 10, i % 10 + 1).into(),
        size: 30_000_000,
        mtime_ns: 1_700_000_000_000_000_000,
        version: 0,
        vpath: vpath(i),
        ino: first_file + i as u64,
    });
    let before = live_bytes();
    let tree = Tree::build(rows, &inodes);
    let allocated = usize::try_from(live_bytes() - before).expect("the build freed more than it allocated");
    assert_eq!(tree.file_count(), tracks, "every synthetic track is in the tree");
    (tree, allocated)
}

/// Proves L1: 5.5
#[test]
fn tree_memory_stays_within_its_per_track_budget_and_grows_linearly() {
    let mut per_track = Vec::new();
    for tracks in [10_000, 100_000] {
        let (tree, allocated) = build(tracks);
        let accounted = tree.heap_bytes();
        println!(
            "{tracks} tracks: heap_bytes {accounted} ({} B/track), allocator {allocated}; a node slot is {} B",
            accounted / tracks,
            std::mem::size_of::<Option<musicfs_meta::Node>>()
        );
        // The accounting sees the whole tree: within 1 % of what the allocator handed out.
        assert!(
            accounted.abs_diff(allocated) * 100 <= allocated,
            "Tree::heap_bytes() = {accounted} but the build left {allocated} bytes allocated"
        );
        assert!(
            allocated <= tracks * BUDGET_PER_TRACK,
            "{tracks} tracks take {allocated} heap bytes, {} per track; the budget is {BUDGET_PER_TRACK}",
            allocated / tracks
        );
        per_track.push(allocated as f64 / tracks as f64);
        drop(tree);
    }
    // Linear: ten times the tracks, ten times the bytes (within 10 %), so no per-track cost grows with the
    // library's size.
    let ratio = per_track[1] / per_track[0];
    assert!(
        (0.9..=1.1).contains(&ratio),
        "bytes per track at 100 000 tracks are {ratio:.2} times those at 10 000 ({per_track:?})"
    );
}
