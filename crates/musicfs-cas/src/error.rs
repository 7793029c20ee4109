//! The chunk cache's errors, in one leaf module every other module may import: [`StoreError`] from the chunk
//! store and its disk, [`ManifestError`] from wherever manifests persist, and [`ReadError`], what a read of a
//! track can end with. The FUSE layer turns a `ReadError` into an errno in one place (musicfs-fuse's
//! `error.rs`).

use musicfs_origins::OriginError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("chunk store I/O error at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("chunk index error: {0}")]
    Index(String),
}

/// A [`crate::ManifestStore`] could not load, save or remove a manifest.
#[derive(Debug, thiserror::Error)]
#[error("manifest store: {0}")]
pub struct ManifestError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl ManifestError {
    pub fn new(source: impl std::error::Error + Send + Sync + 'static) -> ManifestError {
        ManifestError(Box::new(source))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Origin(#[from] OriginError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("the origin's copy changed under a cached track")]
    Changed,
    /// A blocking task of the read path panicked or was cancelled (the runtime is shutting down).
    #[error("internal error: a blocking task of the read path failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// An ingest ended at its leash: no reader went on past the start of the track (a tag scanner). Readers
    /// never see it: they read from the origin once the ingest has finished.
    #[error("no reader went on past the start of the track; the ingest ended early")]
    NotPlayed,
    /// A failpoint (`cas::…`) failed the read on purpose.
    #[error("internal error: failpoint {0}")]
    Failpoint(&'static str),
}
