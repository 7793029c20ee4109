//! The control socket: a Unix socket (mode 0600, in the runtime directory) through which the `musicfs`
//! command line talks to the running daemon — `status`, `metrics`, `shutdown`, `sync`, `search`, and the
//! `events` stream. [`protocol`] defines what goes over it, [`server`] is the daemon's side, [`client`] the
//! command line's.

pub mod client;
pub mod protocol;
pub mod server;

pub use client::{Client, ControlError};
pub use protocol::Command;
pub use server::start;

use std::path::{Path, PathBuf};

/// The socket of the daemon serving `cache_dir` (one daemon per cache, 3.9): in the runtime directory, named
/// after the cache directory, so that `musicfs status --cache-dir DIR` finds it.
pub fn socket_path(cache_dir: &Path) -> PathBuf {
    let canonical = std::fs::canonicalize(cache_dir).unwrap_or_else(|_| cache_dir.to_owned());
    let id = blake3::hash(canonical.as_os_str().as_encoded_bytes()).to_hex();
    runtime_dir().join(format!("control-{}.sock", &id[..16]))
}

/// The unit's `RuntimeDirectory=` as systemd passes it (`$RUNTIME_DIRECTORY`: the sandboxed daemon runs as
/// its own user, and its `ExecStop=` too); else `/run/musicfs` for root (so that root's `musicfs status`
/// finds the unit's daemon), else `$XDG_RUNTIME_DIR/musicfs`.
pub fn runtime_dir() -> PathBuf {
    let unit_dir = std::env::var("RUNTIME_DIRECTORY").ok().and_then(|d| d.split(':').next().map(PathBuf::from));
    if let Some(dir) = unit_dir.filter(|d| !d.as_os_str().is_empty()) {
        return dir;
    }
    // SAFETY: getuid cannot fail and has no preconditions.
    let uid = unsafe { libc::getuid() };
    match std::env::var_os("XDG_RUNTIME_DIR") {
        _ if uid == 0 => PathBuf::from("/run/musicfs"),
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("musicfs"),
        _ => std::env::temp_dir().join(format!("musicfs-{uid}")),
    }
}
