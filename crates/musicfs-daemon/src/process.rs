//! Figures about this process, read from the kernel: open descriptors and their limit, resident memory, the
//! cgroup memory limit, and handing freed heap back to the system. A leaf module: it imports nothing from
//! the rest of the daemon, so any part of it (status, background work, search) may use it.

use std::path::Path;

/// Open descriptors of this process and its soft limit.
pub fn fd_usage() -> (u64, u64) {
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (open, if ok { limit.rlim_cur } else { 0 })
}

/// Resident memory of this process (VmRSS), 0 when it cannot be read.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        .map_or(0, |kb| kb * 1024)
}

/// The memory limit systemd set for this process's cgroup (MemoryHigh, else MemoryMax), if any. Reads the
/// unified hierarchy (cgroup v2, also mounted at `unified/` on hybrid hosts), else the v1 memory controller.
pub fn memory_limit() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let root = Path::new("/sys/fs/cgroup");
    let mut candidates = Vec::new();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        match controllers {
            "" => {
                for base in [root.to_owned(), root.join("unified")] {
                    candidates.push(base.join(path).join("memory.high"));
                    candidates.push(base.join(path).join("memory.max"));
                }
            }
            c if c.split(',').any(|c| c == "memory") => {
                candidates.push(root.join(c).join(path).join("memory.limit_in_bytes"))
            }
            _ => {}
        }
    }
    // "max" does not parse; v1 says "no limit" with a number near 2^63.
    candidates
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok()?.trim().parse::<u64>().ok())
        .find(|&limit| limit < 1 << 62)
}

/// Hands memory freed after a big transient allocation (loading or syncing the library, opening the search
/// index) back to the system; the allocator would otherwise keep it, and RSS would stay at the peak.
pub fn release_freed_memory() {
    // SAFETY: malloc_trim only walks glibc's own heap structures.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Hands back the memory a burst of reads left behind, once the reads have stopped. A cold read of a 512 MiB
/// track left the daemon at 302 MB resident, where `malloc_trim` brought it to 108 MB (the chunk memory
/// cache is 64 MiB of that): glibc keeps freed blocks for reuse. Only between reads, never during them:
/// trimming walks the heap under the allocator's lock.
#[derive(Debug, Default)]
pub struct TrimAfterReads {
    /// Reads served at the last check.
    seen: u64,
    /// Reads served when memory was last handed back.
    trimmed: u64,
}

impl TrimAfterReads {
    /// Called every [`RESOURCE_CHECK_EVERY`] with the reads served so far: hands memory back when reads were
    /// served since it last did and none since the last check. Returns whether it did.
    pub fn check(&mut self, reads: u64) -> bool {
        let quiet = reads == self.seen;
        self.seen = reads;
        if !quiet || reads == self.trimmed {
            return false;
        }
        self.trimmed = reads;
        release_freed_memory();
        true
    }
}

/// One malloc arena for the whole process, unless `MALLOC_ARENA_MAX` says otherwise. glibc gives threads
/// arenas of their own (up to eight per core), and memory freed in one stays fragmented there even after
/// `malloc_trim`: at 100 000 tracks the idle daemon held 62 MB with the default, 54 MB with two arenas and
/// 39 MB with one. Reads measured no slower with one (`cargo xtask bench`, two alternations). Called before
/// the daemon starts its threads.
pub fn use_one_malloc_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a parameter of glibc's allocator.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// How often descriptor and memory use are checked.
pub const RESOURCE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The share of a limit (in tenths) past which the resource watch warns: 80 %.
const WARN_AT_TENTHS: u64 = 8;

/// Which resource warnings are in force, so each is logged once per episode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Warned {
    pub fds: bool,
    pub memory: bool,
}

/// Warns once when open descriptors pass 80 % of RLIMIT_NOFILE (5.3), or resident memory 80 % of the
/// service's cgroup memory limit (5.5, 5.8: before MemoryHigh throttles it or MemoryMax kills it), and
/// again when use drops back.
pub fn watch_resources(warned: Warned) -> Warned {
    let (open, limit) = fd_usage();
    let fds = limit > 0 && open * 10 >= limit * WARN_AT_TENTHS;
    if fds && !warned.fds {
        tracing::warn!(open, limit, "5.3 file descriptors above 80% of the limit");
    } else if !fds && warned.fds {
        tracing::info!(open, limit, "5.3 file descriptor use back under 80% of the limit");
    }
    let rss = rss_bytes();
    let memory_limit = memory_limit();
    let memory = memory_limit.is_some_and(|max| rss * 10 >= max * WARN_AT_TENTHS);
    if memory && !warned.memory {
        tracing::warn!(
            rss_bytes = rss,
            limit_bytes = memory_limit,
            "5.5 resident memory above 80% of the cgroup limit"
        );
    } else if !memory && warned.memory {
        tracing::info!(rss_bytes = rss, limit_bytes = memory_limit, "5.5 resident memory back under 80% of the limit");
    }
    Warned { fds, memory }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_handed_back_once_after_each_burst_of_reads_when_they_have_stopped() {
        let mut trim = TrimAfterReads::default();
        // No reads yet: nothing to hand back.
        assert!(!trim.check(0));
        assert!(!trim.check(0));
        // Reads going on: never during them.
        assert!(!trim.check(40));
        assert!(!trim.check(90));
        // A check with no new reads: once.
        assert!(trim.check(90));
        assert!(!trim.check(90));
        assert!(!trim.check(90));
        // The next burst, then quiet again.
        assert!(!trim.check(91));
        assert!(trim.check(91));
    }

    #[test]
    fn this_process_has_descriptors_memory_and_a_limit() {
        let (open, limit) = fd_usage();
        assert!(open > 0 && limit >= open, "{open} of {limit}");
        assert!(rss_bytes() > 0);
    }
}
