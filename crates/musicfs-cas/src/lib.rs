//! The content-addressed chunk cache.
//!
//! A track is cut into content-defined chunks ([`chunker`]); each chunk is stored once under its BLAKE3 hash
//! ([`store`]), verified on every read from disk, and evicted least-recently-used beyond `max_size`; [`disk`]
//! watches the filesystem under it. A
//! [`manifest::Manifest`] lists a track's chunks; [`reader::Reader`] serves byte ranges of a track from chunks,
//! fetching only missing chunks from the origin, and ingests a track on first read ([`ingest`]).

pub mod chunker;
pub mod disk;
pub mod error;
pub mod failure_log;
pub mod hash;
pub mod ingest;
pub mod manifest;
pub mod memory;
pub mod origin_read;
pub mod pieces;
pub mod reader;
pub mod stats;
pub mod store;
pub mod write_queue;

pub use chunker::ChunkParams;
pub use disk::{CacheDisk, DiskPressure, RealDisk};
pub use error::{ManifestError, ReadError, StoreError};
pub use hash::ChunkHash;
pub use manifest::{ChunkRef, Fingerprint, Manifest, ManifestStore};
pub use origin_read::FileRef;
pub use pieces::Pieces;
pub use reader::Reader;
pub use stats::ReaderStats;
pub use store::{ChunkBackend, ChunkStore, ReconcileReport, VerifyReport};
