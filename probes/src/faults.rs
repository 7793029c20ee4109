//! The network faults the probe injects, and their undoing: Toxiproxy's proxies and toxics, local origin
//! directories moved aside, the S3 endpoint's line in /etc/hosts. [`restore`] undoes whatever is left of
//! them; [`Faults`] calls it on drop, so a failed scenario leaves the machine as it found it.

use crate::toxiproxy;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The S3 endpoint's host name in /etc/hosts (4.2.5).
pub const S3_HOST: &str = "s3.musicfs.test";
pub const HOSTS: &str = "/etc/hosts";
/// Where [`break_name`] keeps the hosts file as it was, for [`restore`] (in /run: gone at reboot, like
/// every other fault).
const HOSTS_SAVED: &str = "/run/musicfs-probe.hosts";
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

/// Whether a scenario may move `dir` aside: only the directories [`restore`] knows to put back.
pub fn movable(dir: &Path) -> bool {
    MOVABLE.iter().any(|m| Path::new(m) == dir)
}

/// Replaces the contents of the hosts file. On NixOS /etc/hosts is a symlink into the read-only store:
/// it is replaced by a regular file (by rename, so no reader sees half of it; fine in a test VM, and
/// the next activation puts the symlink back). A regular file is written in place, as it may be a bind
/// mount (which cannot be renamed over).
fn write_hosts(path: &Path, text: &str) -> Result<()> {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if is_link {
        let tmp = path.with_file_name(".hosts.musicfs-probe");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    } else {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Whether a hosts line gives `name` an address (its comment aside).
fn names(line: &str, name: &str) -> bool {
    line.split_whitespace().skip(1).take_while(|w| !w.starts_with('#')).any(|w| w == name)
}

/// The hosts file with `name` taken out of every line; a line left with no name goes. Other names on the
/// same line stay (in the VM test the S3 name may share the proxy node's line, and `proxy` must resolve).
fn without_name(hosts: &str, name: &str) -> String {
    let mut out = String::new();
    for line in hosts.lines() {
        if !names(line, name) {
            out += &format!("{line}\n");
            continue;
        }
        let (entry, comment) = line.split_once('#').map_or((line, None), |(e, c)| (e, Some(c)));
        let mut words = entry.split_whitespace();
        let address = words.next().unwrap_or_default();
        let rest: Vec<&str> = words.filter(|w| *w != name).collect();
        if !rest.is_empty() {
            out += &format!("{address} {}{}\n", rest.join(" "), comment.map_or(String::new(), |c| format!(" #{c}")));
        }
    }
    out
}

/// Makes [`S3_HOST`] stop resolving: its lines leave /etc/hosts, which is saved first for [`restore`].
pub fn break_name() -> Result<()> {
    break_name_in(Path::new(HOSTS), Path::new(HOSTS_SAVED), S3_HOST)
}

fn break_name_in(hosts: &Path, saved: &Path, name: &str) -> Result<()> {
    let text = std::fs::read_to_string(hosts).with_context(|| format!("reading {}", hosts.display()))?;
    // A copy saved by an earlier, unrestored break is the original; keep it.
    if !saved.exists() {
        std::fs::write(saved, &text).with_context(|| format!("saving {}", hosts.display()))?;
    }
    write_hosts(hosts, &without_name(&text, name))
}

/// Puts the hosts file back: the saved copy if there is one (whatever address the name had: loopback in
/// nspawn, the proxy node in the VM test), else a loopback line for the name if it is missing (nspawn).
fn restore_hosts(hosts: &Path, saved: &Path, name: &str) -> Result<()> {
    if let Ok(text) = std::fs::read_to_string(saved) {
        write_hosts(hosts, &text)?;
        std::fs::remove_file(saved)?;
        return Ok(());
    }
    let text = std::fs::read_to_string(hosts).unwrap_or_default();
    if !text.lines().any(|l| names(l, name)) {
        write_hosts(hosts, &format!("{text}127.0.0.1 {name}\n"))?;
    }
    Ok(())
}

/// Undoes every fault of this module, whatever is left of them; tries every step even when one fails,
/// and reports the first failure.
pub fn restore() -> Result<()> {
    let mut results = vec![toxiproxy::reset()];
    for dir in MOVABLE {
        let aside: PathBuf = Path::new(dir).with_extension("away");
        if aside.exists() && !Path::new(dir).exists() {
            results.push(std::fs::rename(&aside, dir).with_context(|| format!("moving {dir} back")));
        }
    }
    results.push(restore_hosts(Path::new(HOSTS), Path::new(HOSTS_SAVED), S3_HOST));
    results.into_iter().collect::<Result<Vec<()>>>().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("musicfs-probe-faults-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    const HOSTS_TEXT: &str = "127.0.0.1 localhost\n192.168.1.3 proxy s3.musicfs.test\n";

    #[test]
    fn a_store_symlink_is_replaced_by_a_regular_file_and_the_original_lines_come_back() {
        let dir = scratch("symlink");
        // NixOS: /etc/hosts -> a read-only file elsewhere.
        let store = dir.join("store-hosts");
        std::fs::write(&store, HOSTS_TEXT).unwrap();
        let mut perms = std::fs::metadata(&store).unwrap().permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(&store, perms).unwrap();
        let hosts = dir.join("hosts");
        std::os::unix::fs::symlink(&store, &hosts).unwrap();
        let saved = dir.join("saved");

        break_name_in(&hosts, &saved, S3_HOST).unwrap();
        assert!(!std::fs::symlink_metadata(&hosts).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read_to_string(&hosts).unwrap(), "127.0.0.1 localhost\n192.168.1.3 proxy\n");
        assert_eq!(std::fs::read_to_string(&store).unwrap(), HOSTS_TEXT, "the store file is untouched");
        // A second break keeps the first copy: the original.
        break_name_in(&hosts, &saved, S3_HOST).unwrap();
        restore_hosts(&hosts, &saved, S3_HOST).unwrap();
        assert_eq!(std::fs::read_to_string(&hosts).unwrap(), HOSTS_TEXT, "the proxy's address, not loopback");
        assert!(!saved.exists());
        // Restoring twice changes nothing.
        restore_hosts(&hosts, &saved, S3_HOST).unwrap();
        assert_eq!(std::fs::read_to_string(&hosts).unwrap(), HOSTS_TEXT);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn without_a_saved_copy_a_missing_name_gets_the_loopback_line_of_the_nspawn_machine() {
        let dir = scratch("fallback");
        let hosts = dir.join("hosts");
        std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
        restore_hosts(&hosts, &dir.join("saved"), S3_HOST).unwrap();
        assert_eq!(std::fs::read_to_string(&hosts).unwrap(), "127.0.0.1 localhost\n127.0.0.1 s3.musicfs.test\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_lines_naming_the_host_go_and_similar_names_stay() {
        let text = "127.0.0.1 localhost\n10.0.0.1 s3.musicfs.test\n10.0.0.2 xs3.musicfs.test # s3.musicfs.test\n";
        assert_eq!(without_name(text, S3_HOST), "127.0.0.1 localhost\n10.0.0.2 xs3.musicfs.test # s3.musicfs.test\n");
        assert_eq!(
            without_name("192.168.1.3 proxy s3.musicfs.test proxy.local # nodes\n", S3_HOST),
            "192.168.1.3 proxy proxy.local # nodes\n",
            "the proxy node's own names keep resolving"
        );
    }
}
