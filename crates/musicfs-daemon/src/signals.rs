//! Signals, on a thread of their own so they work even when the async runtime is stuck (2.1, 3.6).
//!
//! The first SIGTERM or SIGINT asks for the ordered shutdown; a second one while it runs detaches the mount
//! and exits at once (code 1), whatever the daemon is doing. SIGHUP asks for a config reload.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::path::PathBuf;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Who asked, and an optional drain timeout (from `musicfs shutdown --drain-timeout`).
    Shutdown(&'static str, Option<std::time::Duration>),
    /// Exit for a restart, leaving the FUSE connection to the next daemon (2.11); who asked.
    Restart(&'static str),
    Reload,
}

/// Exit code after a forced (second-signal) exit.
pub const FORCED_EXIT_CODE: i32 = 1;

/// Starts the signal thread; requests go to `tx` (which the control socket shares).
pub fn listen(mount_point: PathBuf, tx: mpsc::UnboundedSender<Request>) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new().name("musicfs-signals".into()).spawn(move || {
        let mut stopping = false;
        for signal in signals.forever() {
            let name = match signal {
                SIGTERM => "SIGTERM",
                SIGINT => "SIGINT",
                _ => {
                    let _ = tx.send(Request::Reload);
                    continue;
                }
            };
            if stopping {
                tracing::warn!(signal = name, "2.1 second signal during shutdown: detaching the mount and exiting now");
                crate::mounts::lazy_unmount(&mount_point);
                std::process::exit(FORCED_EXIT_CODE);
            }
            stopping = true;
            let _ = tx.send(Request::Shutdown(name, None));
        }
    })?;
    Ok(())
}
