//! Synthetic libraries for the search tests: tracks shaped like the metadata database's, with words that
//! say which track they belong to, so a test knows exactly which hits a query must give.

#![allow(dead_code)]

use musicfs_meta::{Track, TrackTags};
use std::path::PathBuf;

pub const COLOURS: [&str; 8] = ["red", "orange", "yellow", "green", "blue", "indigo", "violet", "black"];
/// Tracks per artist in [`library`].
pub const PER_ARTIST: i64 = 20;

/// Track `id` (1-based): artist `Band{a:03}` with `a = (id - 1) / 20`, title `Song{id:05} <colour>`.
pub fn track(id: i64) -> Track {
    let artist = (id - 1) / PER_ARTIST;
    let album = (id - 1) / 10;
    let colour = COLOURS[(id as usize) % COLOURS.len()];
    let year = 1960 + (artist % 60) as u32;
    let number = ((id - 1) % 10 + 1) as u32;
    Track {
        id,
        origin: "local".into(),
        rel_path: PathBuf::from(format!("incoming/{id:05}.flac")),
        size: 1_000 + id as u64,
        mtime_ns: id,
        version: 0,
        tags: TrackTags {
            artist: Some(format!("Band{artist:03}")),
            album: Some(format!("Album{album:04}")),
            year: Some(year),
            track: Some(number),
            title: Some(format!("Song{id:05} {colour}")),
        },
        vpath: vpath(id),
    }
}

pub fn vpath(id: i64) -> String {
    let artist = (id - 1) / PER_ARTIST;
    let album = (id - 1) / 10;
    let number = (id - 1) % 10 + 1;
    let year = 1960 + artist % 60;
    let colour = COLOURS[(id as usize) % COLOURS.len()];
    format!("Band{artist:03}/Album{album:04} ({year})/{number:02} - Song{id:05} {colour}.flac")
}

/// Tracks `first..=last`.
pub fn library(first: i64, last: i64) -> Vec<Track> {
    (first..=last).map(track).collect()
}

/// Sorted track ids of hits.
pub fn ids(hits: &[musicfs_search::Hit]) -> Vec<i64> {
    let mut ids: Vec<i64> = hits.iter().map(|h| h.track_id).collect();
    ids.sort();
    ids
}
