//! The network faults the probe injects, and their undoing: Toxiproxy's proxies and toxics, local origin
//! directories moved aside, the S3 endpoint's line in /etc/hosts. [`restore`] undoes whatever is left of
//! them; [`Faults`] calls it on drop, so a failed scenario leaves the machine as it found it.

use crate::toxiproxy;
use anyhow::Result;
use std::path::Path;

/// The S3 endpoint's host name in /etc/hosts (4.2.5).
pub const S3_HOST: &str = "s3.musicfs.test";
pub const HOSTS: &str = "/etc/hosts";
/// Directories a scenario may move aside (to `<dir>.away`).
const MOVABLE: [&str; 3] = ["/srv/music", "/srv/s3/music", "/srv/sftp/music"];

/// Every fault a network scenario may leave: proxies, toxics, directories moved aside, the hosts file.
/// Undone on drop, and by [`restore`] after any scenario.
pub struct Faults;

impl Drop for Faults {
    fn drop(&mut self) {
        let _ = restore();
    }
}

/// Undoes every fault of this module, whatever is left of them.
pub fn restore() -> Result<()> {
    let reset = toxiproxy::reset();
    for dir in MOVABLE {
        let aside = Path::new(dir).with_extension("away");
        if aside.exists() && !Path::new(dir).exists() {
            std::fs::rename(&aside, dir)?;
        }
    }
    let hosts = std::fs::read_to_string(HOSTS).unwrap_or_default();
    if !hosts.contains(S3_HOST) {
        std::fs::write(HOSTS, format!("{hosts}127.0.0.1 {S3_HOST}\n"))?;
    }
    reset
}
