//! The mount table as the kernel shows it to this process (`/proc/self/mountinfo`): which filesystem is
//! mounted where. Read by the daemon (stale mounts, 2.7; the mount helper, issue 16) and by the local origin,
//! whose scan never descends into a MusicFS mount.

/// The fields of one mountinfo line that MusicFS needs.
pub struct MountEntry {
    pub mount_point: String,
    /// "fuse.musicfs", "ext4", …
    pub fstype: String,
    /// The filesystem's device, "major:minor".
    pub device: String,
    /// What was mounted: for FUSE, the filesystem's name ("musicfs").
    pub source: String,
}

/// Every mount of this process's mount namespace, in the kernel's order (a later mount at the same point
/// hides an earlier one).
pub fn mounts() -> Vec<MountEntry> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let (device, mount_point) = (fields.get(2)?, fields.get(4)?);
            let sep = fields.iter().position(|f| *f == "-")?;
            let (fstype, source) = (fields.get(sep + 1)?, fields.get(sep + 2)?);
            Some(MountEntry {
                mount_point: unescape(mount_point),
                fstype: (*fstype).to_owned(),
                device: (*device).to_owned(),
                source: unescape(source),
            })
        })
        .collect()
}

/// Where MusicFS filesystems (this daemon's or another's) are mounted: type `fuse.musicfs` (the mount
/// helper's) or a FUSE mount named `musicfs` (fuser's own mount, type `fuse`).
pub fn musicfs_mount_points() -> Vec<std::path::PathBuf> {
    mounts()
        .into_iter()
        .filter(|m| m.fstype == "fuse.musicfs" || m.fstype.starts_with("fuse") && m.source == "musicfs")
        .map(|m| m.mount_point.into())
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_escapes_are_decoded() {
        assert_eq!(unescape(r"/mnt/my\040music"), "/mnt/my music");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn the_root_is_in_the_table() {
        assert!(mounts().iter().any(|m| m.mount_point == "/"));
    }
}
