//! The filesystem: [`fs::MusicFs`] answers lookups, attributes, listings and reads with plain Rust types and
//! [`error::FsError`]; [`adapter`] is the only module that knows fuser, and the only place errors become errnos.
//! [`invalidate`] works out what the kernel must forget after a sync.

pub mod adapter;
pub mod error;
pub mod fs;
pub mod invalidate;
pub mod stats;

pub use error::FsError;
pub use fs::{Attr, DirEntry, Kind, MusicFs};
