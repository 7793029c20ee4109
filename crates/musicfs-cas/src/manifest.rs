//! Manifests: the ordered chunk list of one track version, and the trait for storing them.

use crate::hash::ChunkHash;

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

    /// Compact encoding: per chunk, 4 bytes length (LE) + 32 bytes hash. Offsets are implied.
    pub fn encode_chunks(chunks: &[ChunkRef]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunks.len() * 36);
        for c in chunks {
            out.extend_from_slice(&c.len.to_le_bytes());
            out.extend_from_slice(&c.hash.0);
        }
        out
    }

    pub fn decode_chunks(blob: &[u8]) -> Option<Vec<ChunkRef>> {
        if !blob.len().is_multiple_of(36) {
            return None;
        }
        let mut offset = 0u64;
        let mut out = Vec::with_capacity(blob.len() / 36);
        for rec in blob.chunks_exact(36) {
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

/// Where manifests persist (SQLite in the daemon). Calls are blocking; the reader runs them off the runtime.
pub trait ManifestStore: Send + Sync + 'static {
    fn load(&self, track_id: i64) -> Result<Option<Manifest>, String>;
    fn save(&self, track_id: i64, manifest: &Manifest) -> Result<(), String>;
    fn remove(&self, track_id: i64) -> Result<(), String>;
}

/// In-memory manifests, the test double beside [`ManifestStore`].
#[derive(Default)]
pub struct MemoryManifests(pub std::sync::Mutex<std::collections::HashMap<i64, Manifest>>);

impl ManifestStore for MemoryManifests {
    fn load(&self, track_id: i64) -> Result<Option<Manifest>, String> {
        Ok(self.0.lock().map_err(|e| e.to_string())?.get(&track_id).cloned())
    }
    fn save(&self, track_id: i64, manifest: &Manifest) -> Result<(), String> {
        self.0.lock().map_err(|e| e.to_string())?.insert(track_id, manifest.clone());
        Ok(())
    }
    fn remove(&self, track_id: i64) -> Result<(), String> {
        self.0.lock().map_err(|e| e.to_string())?.remove(&track_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_offsets_follow_lengths() {
        let chunks = vec![
            ChunkRef { offset: 0, len: 10, hash: ChunkHash::of(b"a") },
            ChunkRef { offset: 10, len: 5, hash: ChunkHash::of(b"b") },
        ];
        let blob = Manifest::encode_chunks(&chunks);
        assert_eq!(Manifest::decode_chunks(&blob), Some(chunks.clone()));
        assert_eq!(Manifest::decode_chunks(&blob[1..]), None);
        assert_eq!(Manifest::chunk_at(&chunks, 0), Some(0));
        assert_eq!(Manifest::chunk_at(&chunks, 9), Some(0));
        assert_eq!(Manifest::chunk_at(&chunks, 10), Some(1));
        assert_eq!(Manifest::chunk_at(&chunks, 15), None);
    }
}
