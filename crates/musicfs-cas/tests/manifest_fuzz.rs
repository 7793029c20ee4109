//! Damaged manifests (issue 13's "manifest decoding" fuzz target, run on stable as proptest cases;
//! `cargo xtask fuzz` runs many more). A manifest is stored as a blob (SQLite in the daemon); here the blob of a
//! real ingested track is damaged the ways a broken database or a bug could: bytes flipped, records swapped
//! or dropped, a length moved from one chunk to another so the total stays, zero-length records, a cut. Whatever
//! the damage, decoding never panics, and every read of the track returns exactly the origin's bytes: a damaged
//! manifest is refused (or its chunks fail their checks) and the track is ingested again.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a panic is a failed test

mod common;
use bytes::Bytes;
use common::read_all;
use musicfs_cas::{ChunkParams, ChunkStore, FileRef, Fingerprint, Manifest, ManifestError, ManifestStore, Reader};
use musicfs_origins::memory::MemoryOrigin;
use proptest::prelude::*;
use rand::{RngCore, SeedableRng};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PARAMS: ChunkParams = ChunkParams { min: 4096, avg: 16384, max: 65536 };
const TRACK_LEN: usize = 300_000;
const RECORD: usize = 36;

/// Manifests kept as the daemon keeps them: the encoded blob, decoded at each load.
#[derive(Default)]
struct BlobManifests(Mutex<HashMap<i64, Row>>);

/// One row of the daemon's `manifests` table: fingerprint, from_backup, the chunk list's blob.
type Row = (Fingerprint, bool, Vec<u8>);

impl ManifestStore for BlobManifests {
    fn load(&self, track_id: i64) -> Result<Option<Manifest>, ManifestError> {
        let rows = self.0.lock().unwrap();
        Ok(rows.get(&track_id).and_then(|(fingerprint, from_backup, blob)| {
            Some(Manifest {
                fingerprint: *fingerprint,
                from_backup: *from_backup,
                chunks: Manifest::decode_chunks(blob)?,
            })
        }))
    }
    fn save(&self, track_id: i64, manifest: &Manifest) -> Result<(), ManifestError> {
        let blob = Manifest::encode_chunks(&manifest.chunks);
        self.0.lock().unwrap().insert(track_id, (manifest.fingerprint, manifest.from_backup, blob));
        Ok(())
    }
    fn remove(&self, track_id: i64) -> Result<(), ManifestError> {
        self.0.lock().unwrap().remove(&track_id);
        Ok(())
    }
}

#[derive(Clone, Debug)]
enum Damage {
    Flip {
        at: usize,
        bit: u8,
    },
    SwapRecords(usize, usize),
    DropRecord(usize),
    /// `amount` moves from one record's length to another's: the total stays.
    MoveLength {
        from: usize,
        to: usize,
        amount: u32,
    },
    ZeroLengthRecord(usize),
    Cut(usize),
    /// The digest removed: a blob as schema 2 wrote it, which is no longer trusted unsealed.
    DropDigest,
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Damage::Flip { at, bit }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Damage::SwapRecords(a, b)),
        any::<usize>().prop_map(Damage::DropRecord),
        (any::<usize>(), any::<usize>(), 1u32..70_000).prop_map(|(from, to, amount)| Damage::MoveLength {
            from,
            to,
            amount
        }),
        any::<usize>().prop_map(Damage::ZeroLengthRecord),
        any::<usize>().prop_map(Damage::Cut),
        Just(Damage::DropDigest),
    ]
}

/// `i` as a position in `0..n` (0 when there is none).
fn pick(i: usize, n: usize) -> usize {
    i % n.max(1)
}

fn records(blob: &[u8]) -> usize {
    blob.len() / RECORD
}

fn len_at(blob: &[u8], record: usize) -> u32 {
    u32::from_le_bytes(blob[record * RECORD..record * RECORD + 4].try_into().unwrap())
}

fn set_len_at(blob: &mut [u8], record: usize, len: u32) {
    blob[record * RECORD..record * RECORD + 4].copy_from_slice(&len.to_le_bytes());
}

fn apply(blob: &mut Vec<u8>, damage: &Damage) {
    let n = records(blob);
    if n == 0 && !matches!(damage, Damage::Flip { .. } | Damage::Cut(_)) {
        return;
    }
    match damage {
        Damage::Flip { at, bit } => {
            let at = pick(*at, blob.len());
            blob[at] ^= 1 << bit;
        }
        Damage::SwapRecords(a, b) => {
            let (a, b) = (pick(*a, n), pick(*b, n));
            for i in 0..RECORD {
                blob.swap(a * RECORD + i, b * RECORD + i);
            }
        }
        Damage::DropRecord(at) => {
            let at = pick(*at, n);
            blob.drain(at * RECORD..(at + 1) * RECORD);
        }
        Damage::MoveLength { from, to, amount } => {
            let (from, to) = (pick(*from, n), pick(*to, n));
            let amount = (*amount).min(len_at(blob, from));
            let (from_len, to_len) = (len_at(blob, from), len_at(blob, to));
            set_len_at(blob, from, from_len - amount);
            set_len_at(blob, to, to_len.wrapping_add(amount));
        }
        Damage::ZeroLengthRecord(at) => {
            let at = pick(*at, n + 1) * RECORD;
            // Zero bytes long, with the hash of a chunk the store holds.
            let record: Vec<u8> = [0u8; 4].into_iter().chain(blob[4..RECORD].iter().copied()).collect();
            blob.splice(at..at, record);
        }
        Damage::Cut(at) => blob.truncate(pick(*at, blob.len())),
        Damage::DropDigest => blob.truncate(n * RECORD),
    }
}

struct Track {
    _dir: tempfile::TempDir,
    store: Arc<ChunkStore>,
    manifests: Arc<BlobManifests>,
    file: FileRef,
    data: Vec<u8>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A track read once (ingested: chunks cached, manifest saved as a blob).
async fn ingested_track() -> Track {
    let mut data = vec![0u8; TRACK_LEN];
    rand::rngs::StdRng::seed_from_u64(7).fill_bytes(&mut data);
    let origin = Arc::new(MemoryOrigin::new());
    origin.insert("t.flac", Bytes::from(data.clone()), 1);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ChunkStore::open(dir.path(), 1 << 30).unwrap());
    let manifests = Arc::new(BlobManifests::default());
    let file = FileRef {
        track_id: 1,
        origin,
        backup: None,
        rel_path: PathBuf::from("t.flac"),
        fingerprint: Fingerprint { size: TRACK_LEN as u64, mtime_ns: 1, version: 0 },
    };
    let reader = Reader::new(store.clone(), manifests.clone(), PARAMS, 1 << 20, Duration::from_secs(5));
    assert_eq!(read_all(&reader, &file, 65536).await, data);
    reader.flush(Duration::from_secs(5)).await.unwrap();
    assert!(manifests.load(1).unwrap().is_some(), "the ingest saved a manifest");
    Track { _dir: dir, store, manifests, file, data }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_damaged_manifest_never_serves_wrong_bytes(damages in proptest::collection::vec(damage(), 1..4), step in prop::sample::select(vec![4096u32, 65536, 131072])) {
        let rt = runtime();
        rt.block_on(async {
            let track = ingested_track().await;
            {
                let mut rows = track.manifests.0.lock().unwrap();
                let (_, _, blob) = rows.get_mut(&1).unwrap();
                for damage in &damages {
                    if !blob.is_empty() {
                        apply(blob, damage);
                    }
                }
            }
            // A new reader: nothing remembered, the damaged blob is what it finds.
            let reader = Reader::new(track.store.clone(), track.manifests.clone(), PARAMS, 1 << 20, Duration::from_secs(5));
            let got = read_all(&reader, &track.file, step).await;
            assert!(got == track.data, "{damages:?}: {} bytes read, first difference at {:?}", got.len(),
                got.iter().zip(&track.data).position(|(a, b)| a != b));
        });
    }

    #[test]
    fn decoding_any_blob_never_panics_and_a_decoded_list_is_contiguous(blob in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Some(chunks) = Manifest::decode_chunks(&blob) {
            let mut offset = 0;
            for c in &chunks {
                prop_assert_eq!(c.offset, offset);
                offset += u64::from(c.len);
            }
        }
    }
}

#[test]
fn a_manifest_round_trips_and_a_swap_is_caught_by_the_digest() {
    let rt = runtime();
    rt.block_on(async {
        let track = ingested_track().await;
        let mut blob = track.manifests.0.lock().unwrap().get(&1).unwrap().2.clone();
        let chunks = Manifest::decode_chunks(&blob).unwrap();
        assert!(chunks.len() >= 4, "the track has several chunks: {}", chunks.len());
        assert_eq!(Manifest::encode_chunks(&chunks), blob);
        apply(&mut blob, &Damage::SwapRecords(0, 2));
        assert_eq!(Manifest::decode_chunks(&blob), None, "records moved: the digest no longer matches");
    });
}

/// A manifest that is whole but wrong (as a bug in an ingest could make it, past any digest): two chunks'
/// lengths moved so the total stays. The reader must not slice past a chunk's bytes (a panic on the read
/// path): it refuses the manifest and ingests the track again.
#[test]
fn a_length_moved_between_chunks_is_refused_not_sliced_past() {
    let rt = runtime();
    rt.block_on(async {
        let track = ingested_track().await;
        let mut manifest = track.manifests.load(1).unwrap().unwrap();
        manifest.chunks[0].len -= 100;
        manifest.chunks[1].len += 100;
        manifest.chunks[1].offset -= 100;
        let memory = Arc::new(musicfs_cas::manifest::MemoryManifests::default());
        memory.save(1, &manifest).unwrap();
        let reader = Reader::new(track.store.clone(), memory.clone(), PARAMS, 1 << 20, Duration::from_secs(5));
        assert!(read_all(&reader, &track.file, 131072).await == track.data, "the bytes read are the origin's");
        reader.flush(Duration::from_secs(5)).await.unwrap();
        assert_ne!(memory.load(1).unwrap(), Some(manifest), "the wrong manifest was replaced by a new ingest");
    });
}
