//! Manifests: the ordered chunk list of one track version, the trait for storing them ([`ManifestStore`],
//! SQLite in the daemon), and [`ManifestCache`], the read path's memory of the manifests it used last.

use crate::error::{ManifestError, ReadError};
use crate::hash::ChunkHash;
use musicfs_core::sync_util::lock_or_recover;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Identifies the origin version a manifest was made from; a fingerprint that does not [match] means
/// re-ingest.
///
/// [match]: Fingerprint::matches
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub size: u64,
    pub mtime_ns: i64,
    /// The origin's version stamp (5.6); 0 when unknown, which matches any stamp.
    pub version: i64,
}

impl Fingerprint {
    /// Same size and mtime, and the same version stamp where both sides know it.
    pub fn matches(&self, other: &Fingerprint) -> bool {
        self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && (self.version == 0 || other.version == 0 || self.version == other.version)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    pub offset: u64,
    pub len: u32,
    pub hash: ChunkHash,
}

impl ChunkRef {
    pub fn end(&self) -> u64 {
        self.offset + self.len as u64
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub fingerprint: Fingerprint,
    pub chunks: Vec<ChunkRef>,
    /// Made from a backup origin's copy while the track's own origin was away (4.2.6): served, but
    /// re-validated against the origin when it returns.
    pub from_backup: bool,
}

impl Manifest {
    /// Index of the chunk holding byte `offset`, if any.
    pub fn chunk_at(chunks: &[ChunkRef], offset: u64) -> Option<usize> {
        let idx = chunks.partition_point(|c| c.end() <= offset);
        (idx < chunks.len() && chunks[idx].offset <= offset).then_some(idx)
    }

    /// Compact encoding: per chunk, 4 bytes length (LE) + 32 bytes hash (offsets are implied), then the BLAKE3
    /// of all of that. Each chunk's bytes are checked against its hash, but only the digest checks the list:
    /// without it a damaged blob (records moved, a length changed where the total stays) would serve verified
    /// chunks in the wrong place.
    pub fn encode_chunks(chunks: &[ChunkRef]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunks.len() * RECORD + DIGEST);
        for c in chunks {
            out.extend_from_slice(&c.len.to_le_bytes());
            out.extend_from_slice(&c.hash.0);
        }
        let digest = blake3::hash(&out);
        out.extend_from_slice(digest.as_bytes());
        out
    }

    /// The chunk list of a blob [`Manifest::encode_chunks`] made, or None when it is damaged: the track is
    /// then ingested again.
    pub fn decode_chunks(blob: &[u8]) -> Option<Vec<ChunkRef>> {
        if blob.len() % RECORD != DIGEST {
            return None;
        }
        let (records, digest) = blob.split_at(blob.len() - DIGEST);
        if blake3::hash(records).as_bytes().as_slice() != digest {
            return None;
        }
        Manifest::records(records)
    }

    /// A blob written before manifests carried their digest (database schema 2), sealed with one as it is;
    /// None for a blob that is not one.
    pub fn seal_legacy(blob: &[u8]) -> Option<Vec<u8>> {
        if !blob.len().is_multiple_of(RECORD) {
            return None;
        }
        Manifest::records(blob).map(|chunks| Manifest::encode_chunks(&chunks))
    }

    fn records(records: &[u8]) -> Option<Vec<ChunkRef>> {
        let mut offset = 0u64;
        let mut out = Vec::with_capacity(records.len() / RECORD);
        for rec in records.chunks_exact(RECORD) {
            let len = u32::from_le_bytes(rec[..4].try_into().ok()?);
            let hash = ChunkHash(rec[4..].try_into().ok()?);
            out.push(ChunkRef { offset, len, hash });
            offset += len as u64;
        }
        Some(out)
    }

    /// Total bytes covered; equals the fingerprint size for a complete manifest.
    pub fn covered(&self) -> u64 {
        self.chunks.last().map_or(0, ChunkRef::end)
    }
}

/// Bytes of one chunk's record in an encoded manifest: length and hash.
const RECORD: usize = 4 + 32;
/// Bytes of the digest that ends an encoded manifest.
const DIGEST: usize = 32;

/// Where manifests persist (SQLite in the daemon). Calls are blocking; the reader runs them off the runtime.
pub trait ManifestStore: Send + Sync + 'static {
    fn load(&self, track_id: i64) -> Result<Option<Manifest>, ManifestError>;
    fn save(&self, track_id: i64, manifest: &Manifest) -> Result<(), ManifestError>;
    fn remove(&self, track_id: i64) -> Result<(), ManifestError>;
}

/// In-memory manifests, the test double beside [`ManifestStore`]; counts its loads.
#[derive(Default)]
pub struct MemoryManifests {
    manifests: Mutex<HashMap<i64, Manifest>>,
    loads: AtomicU64,
}

impl MemoryManifests {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Manifest>> {
        // Single inserts and removes: a poisoned map is still consistent (2.9).
        lock_or_recover(&self.manifests)
    }

    /// How many times a manifest was loaded.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }
}

impl ManifestStore for MemoryManifests {
    fn load(&self, track_id: i64) -> Result<Option<Manifest>, ManifestError> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        Ok(self.map().get(&track_id).cloned())
    }
    fn save(&self, track_id: i64, manifest: &Manifest) -> Result<(), ManifestError> {
        self.map().insert(track_id, manifest.clone());
        Ok(())
    }
    fn remove(&self, track_id: i64) -> Result<(), ManifestError> {
        self.map().remove(&track_id);
        Ok(())
    }
}

/// Manifests the read path used recently, in front of the [`ManifestStore`], whose calls block (SQLite): they
/// run on blocking threads. At most this many are remembered; past that the memory starts over.
const MANIFEST_CACHE_LIMIT: usize = 4096;

/// What the read path knows of a track's manifest.
enum Known {
    Manifest(Arc<Manifest>),
    /// The store had no complete manifest of this version of the track: its reads need not ask again until an
    /// ingest saves one. Without this every read of an uncached track (a random read, a read during its
    /// ingest) asked SQLite on a blocking thread first.
    Absent(Fingerprint),
}

/// The read path's manifests: remembered in memory, loaded from and saved to the [`ManifestStore`].
pub struct ManifestCache {
    store: Arc<dyn ManifestStore>,
    recent: Mutex<HashMap<i64, Known>>,
    /// Counts saves and removals: a load that found nothing while one happened may be out of date, and is not
    /// remembered as [`Known::Absent`].
    changes: AtomicU64,
}

impl ManifestCache {
    pub fn new(store: Arc<dyn ManifestStore>) -> ManifestCache {
        ManifestCache { store, recent: Mutex::new(HashMap::new()), changes: AtomicU64::new(0) }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Known>> {
        // Single inserts and removes: a poisoned map is still consistent (2.9).
        lock_or_recover(&self.recent)
    }

    /// The complete manifest of the track's version `fingerprint`, if one was made: `None` means the track
    /// must be ingested (again).
    pub async fn current(&self, track_id: i64, fingerprint: &Fingerprint) -> Result<Option<Arc<Manifest>>, ReadError> {
        fail::fail_point!("cas::reader::manifest_fetch", |_| Err(ReadError::Failpoint("cas::reader::manifest_fetch")));
        match self.recent().get(&track_id) {
            Some(Known::Manifest(m)) if m.fingerprint.matches(fingerprint) => return Ok(Some(m.clone())),
            Some(Known::Absent(version)) if version.matches(fingerprint) => return Ok(None),
            _ => {}
        }
        let changes = self.changes.load(Ordering::SeqCst);
        match self.load(track_id).await? {
            Some(m) if m.fingerprint.matches(fingerprint) && m.covered() == fingerprint.size => {
                let m = Arc::new(m);
                self.remember(track_id, m.clone());
                Ok(Some(m))
            }
            _ => {
                let mut recent = self.recent();
                if self.changes.load(Ordering::SeqCst) == changes {
                    Self::make_room(&mut recent);
                    recent.insert(track_id, Known::Absent(*fingerprint));
                }
                Ok(None)
            }
        }
    }

    /// The stored manifest of a track, whatever version it describes.
    pub async fn load(&self, track_id: i64) -> Result<Option<Manifest>, ReadError> {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || store.load(track_id)).await??)
    }

    /// Stores a manifest an ingest made, and remembers it.
    pub async fn save(&self, track_id: i64, manifest: Arc<Manifest>) -> Result<(), ReadError> {
        let (store, saved) = (self.store.clone(), manifest.clone());
        let result = tokio::task::spawn_blocking(move || store.save(track_id, &saved)).await;
        self.remember(track_id, manifest);
        Ok(result??)
    }

    pub fn remember(&self, track_id: i64, manifest: Arc<Manifest>) {
        let mut recent = self.recent();
        self.changes.fetch_add(1, Ordering::SeqCst);
        Self::make_room(&mut recent);
        recent.insert(track_id, Known::Manifest(manifest));
    }

    fn make_room(recent: &mut HashMap<i64, Known>) {
        if recent.len() >= MANIFEST_CACHE_LIMIT {
            recent.clear();
        }
    }

    /// Forgets the track's manifest, here and in the store: the track is ingested again when next read.
    pub async fn forget(&self, track_id: i64) {
        {
            let mut recent = self.recent();
            self.changes.fetch_add(1, Ordering::SeqCst);
            recent.remove(&track_id);
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.remove(track_id)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(track = track_id, error = %e, "could not remove a stale manifest"),
            Err(e) => tracing::warn!(track = track_id, error = %e, "manifest removal task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose loads say they have started, then answer what the test sends them, when it sends it.
    struct HeldLoads {
        started: Mutex<std::sync::mpsc::Sender<()>>,
        answers: Mutex<std::sync::mpsc::Receiver<Option<Manifest>>>,
    }

    impl ManifestStore for HeldLoads {
        fn load(&self, _track_id: i64) -> Result<Option<Manifest>, ManifestError> {
            let _ = lock_or_recover(&self.started).send(());
            Ok(lock_or_recover(&self.answers).recv().ok().flatten())
        }
        fn save(&self, _track_id: i64, _manifest: &Manifest) -> Result<(), ManifestError> {
            Ok(())
        }
        fn remove(&self, _track_id: i64) -> Result<(), ManifestError> {
            Ok(())
        }
    }

    /// A load that found no manifest while an ingest saved one must not hide the saved one: the track would be
    /// ingested again on every read until the cache starts over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_manifest_saved_during_a_load_that_found_none_is_not_forgotten() {
        let (answer, answers) = std::sync::mpsc::channel();
        let (started, load_started) = std::sync::mpsc::channel();
        let store = HeldLoads { started: Mutex::new(started), answers: Mutex::new(answers) };
        let cache = Arc::new(ManifestCache::new(Arc::new(store)));
        let fingerprint = Fingerprint { size: 10, mtime_ns: 1, version: 0 };
        let chunks = vec![ChunkRef { offset: 0, len: 10, hash: ChunkHash::of(b"0123456789") }];
        let manifest = Arc::new(Manifest { fingerprint, chunks, from_backup: false });

        // A reader's lookup is in the store, not yet answered; the ingest saves the manifest meanwhile.
        let lookup = tokio::spawn({
            let cache = cache.clone();
            async move { cache.current(1, &fingerprint).await }
        });
        tokio::task::spawn_blocking(move || load_started.recv()).await.unwrap().unwrap();
        cache.save(1, manifest.clone()).await.unwrap();
        answer.send(None).unwrap();
        assert!(lookup.await.unwrap().unwrap().is_none(), "the lookup answers what the store said");

        assert_eq!(cache.current(1, &fingerprint).await.unwrap(), Some(manifest), "the saved manifest is known");
    }

    /// Once the store has said a track has no manifest, reads of that version do not ask it again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_track_without_a_manifest_is_looked_up_once_per_version() {
        let store = Arc::new(MemoryManifests::default());
        let cache = ManifestCache::new(store.clone());
        let fingerprint = Fingerprint { size: 10, mtime_ns: 1, version: 0 };
        for _ in 0..3 {
            assert!(cache.current(1, &fingerprint).await.unwrap().is_none());
        }
        assert_eq!(store.loads(), 1);
        let changed = Fingerprint { mtime_ns: 2, ..fingerprint };
        assert!(cache.current(1, &changed).await.unwrap().is_none());
        assert_eq!(store.loads(), 2, "a new version of the track is looked up again");
    }

    /// A manifest of `size` bytes in one chunk.
    fn one_chunk(size: u32) -> Manifest {
        let fingerprint = Fingerprint { size: size as u64, mtime_ns: 1, version: 0 };
        Manifest {
            fingerprint,
            chunks: vec![ChunkRef { offset: 0, len: size, hash: ChunkHash::of(b"x") }],
            from_backup: false,
        }
    }

    /// Several tracks' manifests are remembered at once, up to the limit, and each is loaded from the store
    /// once; past the limit the memory starts over. (With room made before every insert, only the last track
    /// was remembered and the others were loaded on each read.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn manifests_of_many_tracks_are_remembered_together_and_loaded_once() {
        let store = Arc::new(MemoryManifests::default());
        let cache = ManifestCache::new(store.clone());
        let tracks = 1..=3i64;
        for track in tracks.clone() {
            store.save(track, &one_chunk(10)).unwrap();
        }
        let fingerprint = one_chunk(10).fingerprint;
        for _ in 0..2 {
            for track in tracks.clone() {
                assert!(cache.current(track, &fingerprint).await.unwrap().is_some());
            }
        }
        assert_eq!(store.loads(), 3, "one load per track");

        for track in 100..100 + MANIFEST_CACHE_LIMIT as i64 {
            cache.remember(track, Arc::new(one_chunk(10)));
        }
        assert!(cache.recent().len() <= MANIFEST_CACHE_LIMIT, "the memory is bounded");
        assert!(cache.current(1, &fingerprint).await.unwrap().is_some());
        assert_eq!(store.loads(), 4, "past the limit, the memory started over");
    }

    /// A forgotten manifest is gone from memory and from the store: the track is ingested again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_forgotten_manifest_is_gone_from_memory_and_the_store() {
        let store = Arc::new(MemoryManifests::default());
        let cache = ManifestCache::new(store.clone());
        let manifest = Arc::new(one_chunk(10));
        cache.save(1, manifest.clone()).await.unwrap();
        assert_eq!(cache.current(1, &manifest.fingerprint).await.unwrap(), Some(manifest.clone()));
        cache.forget(1).await;
        assert_eq!(cache.current(1, &manifest.fingerprint).await.unwrap(), None, "still known after forget");
        assert!(store.load(1).unwrap().is_none(), "still in the store after forget");
    }

    #[test]
    fn encoding_round_trips_and_offsets_follow_lengths() {
        let chunks = vec![
            ChunkRef { offset: 0, len: 10, hash: ChunkHash::of(b"a") },
            ChunkRef { offset: 10, len: 5, hash: ChunkHash::of(b"b") },
        ];
        let blob = Manifest::encode_chunks(&chunks);
        assert_eq!(Manifest::decode_chunks(&blob), Some(chunks.clone()));
        assert_eq!(Manifest::decode_chunks(&blob[1..]), None);
        // Schema 2's blobs had no digest: refused as they are, decoded once sealed.
        let legacy = &blob[..blob.len() - DIGEST];
        assert_eq!(Manifest::decode_chunks(legacy), None);
        assert_eq!(Manifest::seal_legacy(legacy), Some(blob.clone()));
        assert_eq!(Manifest::seal_legacy(&blob), None);
        assert_eq!(Manifest::chunk_at(&chunks, 0), Some(0));
        assert_eq!(Manifest::chunk_at(&chunks, 9), Some(0));
        assert_eq!(Manifest::chunk_at(&chunks, 10), Some(1));
        assert_eq!(Manifest::chunk_at(&chunks, 15), None);
    }
}
