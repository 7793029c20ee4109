//! [`ReaderStats`]: what the read path counts, shared by the reader, its origin reads and its ingests, and
//! read by `musicfs status`, the metrics and the tests.

use std::sync::atomic::AtomicU64;

#[derive(Debug, Default)]
pub struct ReaderStats {
    /// Chunk lookups answered from memory or the chunk store.
    pub chunk_hits: AtomicU64,
    /// Chunks fetched from the origin (ingest or refetch).
    pub chunk_misses: AtomicU64,
    /// Reads served straight from the origin, bypassing chunks.
    pub passthrough_reads: AtomicU64,
    /// Bytes read from origins.
    pub origin_bytes: AtomicU64,
    /// Origin reads answered by a backup origin because the track's own origin did not (4.2.6).
    pub backup_reads: AtomicU64,
    /// Chunks an ingest cut but did not cache because the cache disk was above 95 % (2.8): no prefetch then,
    /// only chunks a reader uses are cached.
    pub ahead_not_cached: AtomicU64,
    /// Chunks a read used but did not queue for the store because the write queue was full: the reader does
    /// not wait for the disk; the chunk is offered again when next used.
    pub writes_deferred: AtomicU64,
    /// Ingests that ended at their leash because no reader went on past the start (a tag scanner).
    pub ingests_not_played: AtomicU64,
}
