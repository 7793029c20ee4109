//! Metadata: what tracks exist, what they are called in the mount, and where their bytes are.
//!
//! [`db`] keeps tracks, inode numbers and chunk manifests in SQLite so a restart loads them instead of
//! rescanning; [`tags`] reads tags with lofty; [`names`] turns untrusted tags into safe, unique paths;
//! [`tree`] is the in-memory virtual directory tree; [`sync`] does the first scan and later delta syncs.

pub mod db;
pub mod names;
pub mod sync;
pub mod tags;
pub mod tree;

pub use db::{Db, DbError, Track};
pub use tags::TrackTags;
pub use tree::{Node, NodeKind, Tree};
