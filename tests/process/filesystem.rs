//! The filesystem end to end: tree layout, byte-identical reads, hostile tags, restarts, offline playback,
//! corrupt chunks, eviction, read-only, the cache lock, bad configs, stale mounts, delta sync, signals.

use crate::musicfs;
use musicfs_test_utils::daemon::{Daemon, DaemonArgs, Scratch, is_fuse_mounted};
use musicfs_test_utils::files::{chunk_bytes, chunk_files, pseudo_random_bytes, walk_files, write_config};
use musicfs_test_utils::sample::{self, SampleOptions, SampleTrack};
use std::collections::HashMap;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_musicfs");

fn library(scratch: &Scratch, tracks: usize, hostile: bool) -> Vec<SampleTrack> {
    sample::generate(&scratch.lib(), &SampleOptions { tracks, hostile, seconds: 1.0 }).expect("generate sample library")
}

fn start(scratch: &Scratch) -> Daemon {
    Daemon::start(Path::new(BIN), &scratch.args()).expect("start musicfs")
}

fn start_with_config(scratch: &Scratch, extra_toml: &str) -> Daemon {
    let config = scratch.dir.path().join("musicfs.toml");
    write_config(&config, &scratch.mnt(), &scratch.cache(), &scratch.lib(), extra_toml).expect("write config");
    let mut args = scratch.args();
    args.origins.clear();
    args.cache_dir = None;
    args.config = Some(config);
    Daemon::start(Path::new(BIN), &args).expect("start musicfs with config")
}

/// Origin path → content, for every generated file.
fn origin_contents(scratch: &Scratch, tracks: &[SampleTrack]) -> HashMap<PathBuf, Vec<u8>> {
    tracks
        .iter()
        .map(|t| (t.rel_path.clone(), std::fs::read(scratch.lib().join(&t.rel_path)).expect("read origin")))
        .collect()
}

#[test]
fn the_tree_follows_the_tags_and_reads_match_the_origin() {
    let scratch = Scratch::new().unwrap();
    let tracks = library(&scratch, 24, false);
    let daemon = start(&scratch);
    for track in &tracks {
        let expected = track.expected_tag_path().expect("ordinary track has a tag path");
        let in_mount = scratch.mnt().join(&expected);
        let bytes = std::fs::read(&in_mount).unwrap_or_else(|e| panic!("{}: {e}", expected.display()));
        assert_eq!(bytes, std::fs::read(scratch.lib().join(&track.rel_path)).unwrap(), "{}", expected.display());
    }
    let listed = walk_files(&scratch.mnt()).unwrap();
    assert_eq!(listed.len(), tracks.len(), "every track once, nothing else: {listed:?}");
    let top: Vec<String> =
        std::fs::read_dir(scratch.mnt()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(top.iter().all(|name| name.starts_with("Artist ")), "{top:?}");
    daemon.stop_cleanly();
}

#[test]
fn random_ranges_read_byte_identical_across_chunk_boundaries() {
    let scratch = Scratch::new().unwrap();
    let data = pseudo_random_bytes(6 << 20, 42);
    std::fs::write(scratch.lib().join("big.wav"), &data).unwrap();
    // Small chunks so that reads cross many chunk boundaries.
    let daemon =
        start_with_config(&scratch, "[cache]\nchunk_min = \"4KiB\"\nchunk_avg = \"16KiB\"\nchunk_max = \"64KiB\"\n");
    let path = scratch.mnt().join("Unknown Artist/Unknown Album/big.wav");
    let mut rng_state = 7u64;
    let mut next = |bound: u64| {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state % bound
    };
    // Several passes: the first runs while the file is being ingested, the later ones from chunks.
    for pass in 0..3 {
        let file = std::fs::File::open(&path).unwrap();
        for _ in 0..150 {
            let offset = next(data.len() as u64 + 100);
            let len = 1 + next(300_000) as usize;
            let mut buf = vec![0u8; len];
            let mut got = 0;
            while got < len {
                let n = file.read_at(&mut buf[got..], offset + got as u64).unwrap();
                if n == 0 {
                    break;
                }
                got += n;
            }
            let start = (offset as usize).min(data.len());
            let end = (offset as usize + len).min(data.len());
            assert_eq!(got, end - start, "pass {pass}: length at offset {offset}");
            assert!(buf[..got] == data[start..end], "pass {pass}: bytes differ at offset {offset} len {len}");
        }
    }
    // Chunk writes land behind the reads; a clean stop waits for them.
    daemon.stop_cleanly();
    assert!(chunk_files(&scratch.cache()).unwrap().len() > 50, "the file was cut into many small chunks");
}

#[test]
fn hostile_tags_give_safe_unique_paths_and_nothing_vanishes() {
    let scratch = Scratch::new().unwrap();
    let tracks = library(&scratch, 6, true);
    let origin = origin_contents(&scratch, &tracks);
    let daemon = start(&scratch);
    let listed = walk_files(&scratch.mnt()).unwrap();
    assert_eq!(listed.len(), tracks.len(), "every generated file appears exactly once");
    let mut seen_content: Vec<Vec<u8>> = Vec::new();
    for path in &listed {
        let rel = path.strip_prefix(scratch.mnt()).unwrap();
        let parts: Vec<&str> = rel.iter().map(|c| c.to_str().expect("names are UTF-8")).collect();
        assert_eq!(parts.len(), 3, "Artist/Album/File: {rel:?}");
        for part in &parts {
            assert!(!part.is_empty() && *part != "." && *part != "..", "{rel:?}");
            assert!(part.len() <= 255, "{} bytes in {rel:?}", part.len());
            assert!(!part.chars().any(|c| c.is_control() || c == '\0'), "{rel:?}");
        }
        seen_content.push(std::fs::read(path).unwrap());
    }
    let mut expected: Vec<Vec<u8>> = origin.into_values().collect();
    expected.sort();
    seen_content.sort();
    assert!(expected == seen_content, "the mount holds exactly the origin's files, byte for byte");
    daemon.stop_cleanly();
}

/// Proves L2: 3.10
#[test]
fn a_restart_reuses_the_database_and_cache_and_keeps_inode_numbers() {
    let scratch = Scratch::new().unwrap();
    let tracks = library(&scratch, 12, false);
    let daemon = start(&scratch);
    let mut inodes = HashMap::new();
    for path in walk_files(&scratch.mnt()).unwrap() {
        std::fs::read(&path).unwrap();
        inodes.insert(path.clone(), std::fs::metadata(&path).unwrap().ino());
    }
    daemon.stop_cleanly();
    let chunks_before = chunk_files(&scratch.cache()).unwrap();
    assert!(!chunks_before.is_empty());

    let daemon = start(&scratch);
    let log = daemon.log();
    assert!(log.contains("loaded library from the database"), "{log}");
    assert!(!log.contains("scanning the origins"), "no full rescan on restart: {log}");
    for (path, ino) in &inodes {
        assert_eq!(std::fs::metadata(path).unwrap().ino(), *ino, "inode of {}", path.display());
    }
    for track in &tracks {
        let bytes = std::fs::read(scratch.mnt().join(track.expected_tag_path().unwrap())).unwrap();
        assert_eq!(bytes, std::fs::read(scratch.lib().join(&track.rel_path)).unwrap());
    }
    assert_eq!(chunk_files(&scratch.cache()).unwrap(), chunks_before, "reading again reused the cached chunks");
    daemon.stop_cleanly();
}

#[test]
fn cached_tracks_keep_playing_when_the_origin_is_gone() {
    let scratch = Scratch::new().unwrap();
    let tracks = library(&scratch, 8, false);
    let (played, unplayed) = (&tracks[0], &tracks[1]);
    let played_bytes = std::fs::read(scratch.lib().join(&played.rel_path)).unwrap();
    let daemon = start_with_config(&scratch, "[fuse]\nread_timeout = \"3s\"\n");
    assert_eq!(std::fs::read(scratch.mnt().join(played.expected_tag_path().unwrap())).unwrap(), played_bytes);
    daemon.stop_cleanly();

    // The NAS is gone: the origin directory disappears entirely.
    std::fs::rename(scratch.lib(), scratch.dir.path().join("lib.away")).unwrap();
    let daemon = start_with_config(&scratch, "[fuse]\nread_timeout = \"3s\"\n");
    assert_eq!(
        std::fs::read(scratch.mnt().join(played.expected_tag_path().unwrap())).unwrap(),
        played_bytes,
        "a track played once is served from the cache"
    );
    assert!(scratch.mnt().join(unplayed.expected_tag_path().unwrap()).exists(), "uncached tracks stay listed");
    let started = Instant::now();
    let err = std::fs::read(scratch.mnt().join(unplayed.expected_tag_path().unwrap())).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "an uncached track fails with EIO, not a hang: {err}");
    assert!(started.elapsed() < Duration::from_secs(20), "the failure came within the read bound");
    daemon.stop_cleanly();
}

/// Proves L2: 6.4
#[test]
fn a_corrupted_chunk_is_detected_and_refetched() {
    let scratch = Scratch::new().unwrap();
    let tracks = library(&scratch, 4, false);
    let daemon = start(&scratch);
    let target = scratch.mnt().join(tracks[0].expected_tag_path().unwrap());
    let original = std::fs::read(&target).unwrap();
    for t in &tracks[1..] {
        std::fs::read(scratch.mnt().join(t.expected_tag_path().unwrap())).unwrap();
    }
    daemon.stop_cleanly();

    // Flip one byte in every chunk file: whichever chunk the track uses is now rotten.
    let chunks = chunk_files(&scratch.cache()).unwrap();
    let mut pristine = HashMap::new();
    for chunk in &chunks {
        let mut bytes = std::fs::read(chunk).unwrap();
        pristine.insert(chunk.clone(), bytes.clone());
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(chunk, bytes).unwrap();
    }
    let daemon = start(&scratch);
    assert_eq!(std::fs::read(&target).unwrap(), original, "corrupt chunks are never served");
    daemon.stop_cleanly();
    let log = std::fs::read_dir(scratch.cache())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("daemon-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(log.contains("6.4 chunk failed its hash check"), "the corruption was detected and logged:\n{log}");
    let repaired = chunk_files(&scratch.cache())
        .unwrap()
        .into_iter()
        .filter(|c| pristine.get(c) == std::fs::read(c).ok().as_ref())
        .count();
    assert!(repaired >= 1, "the refetched chunk was written back with its true content");
}

/// Proves L2: 3.10
#[test]
fn eviction_keeps_the_cache_under_max_size() {
    let scratch = Scratch::new().unwrap();
    for i in 0..12 {
        std::fs::write(scratch.lib().join(format!("t{i:02}.wav")), pseudo_random_bytes(200_000, i)).unwrap();
    }
    let daemon = start_with_config(
        &scratch,
        "[cache]\nmax_size = \"512KiB\"\nchunk_min = \"4KiB\"\nchunk_avg = \"16KiB\"\nchunk_max = \"64KiB\"\n",
    );
    for i in 0..12u64 {
        let path = scratch.mnt().join(format!("Unknown Artist/Unknown Album/t{i:02}.wav"));
        assert_eq!(std::fs::read(&path).unwrap(), pseudo_random_bytes(200_000, i));
        let used = chunk_bytes(&scratch.cache()).unwrap();
        assert!(used <= 512 << 10, "after track {i}: {used} bytes of chunks on disk");
    }
    daemon.stop_cleanly();
    assert!(chunk_bytes(&scratch.cache()).unwrap() > 256 << 10, "the cache was used, not emptied");
}

#[test]
fn writes_are_refused_with_erofs() {
    let scratch = Scratch::new().unwrap();
    let tracks = library(&scratch, 2, false);
    let daemon = start(&scratch);
    let existing = scratch.mnt().join(tracks[0].expected_tag_path().unwrap());
    let erofs = |r: std::io::Result<()>| assert_eq!(r.map_err(|e| e.raw_os_error()), Err(Some(libc::EROFS)));
    erofs(std::fs::write(scratch.mnt().join("new.flac"), b"x"));
    erofs(std::fs::OpenOptions::new().write(true).open(&existing).map(|_| ()));
    erofs(std::fs::create_dir(scratch.mnt().join("dir")));
    erofs(std::fs::remove_file(&existing));
    daemon.stop_cleanly();
}

/// Programs probe every file they open with an ioctl (Python's `open` asks TCGETS: is it a terminal?). The
/// answer is ENOTTY, as on a disk file, and no log line: fuser's default logged a warning per call.
#[test]
fn ioctls_answer_enotty_without_a_log_line() {
    use std::os::fd::AsRawFd;
    let scratch = Scratch::new().unwrap();
    let tracks = library(&scratch, 1, false);
    let daemon = start(&scratch);
    let track = scratch.mnt().join(tracks[0].expected_tag_path().unwrap());
    for _ in 0..12 {
        let file = std::fs::File::open(&track).unwrap();
        let mut term = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: TCGETS writes one termios into the buffer given, which outlives the call.
        let done = unsafe { libc::ioctl(file.as_raw_fd(), libc::TCGETS, term.as_mut_ptr()) };
        assert_eq!(done, -1, "TCGETS on a music file succeeded");
        assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::ENOTTY));
    }
    let log = daemon.log();
    assert!(!log.contains("ioctl"), "ioctls were logged:\n{log}");
    daemon.stop_cleanly();
}

/// Issue 16: an operation MusicFS does not implement is logged once, not per call. Extended attributes, fsync
/// and SEEK_DATA reach the daemon once each: fuser answers ENOSYS (with a warning), and the kernel remembers
/// that for the connection (`no_getxattr`, `no_listxattr`, `no_fsync`, `no_lseek`).
#[test]
fn an_unimplemented_operation_is_logged_once_not_per_call() {
    use std::os::fd::AsRawFd;
    let scratch = Scratch::new().unwrap();
    let tracks = library(&scratch, 1, false);
    let daemon = start(&scratch);
    let track = scratch.mnt().join(tracks[0].expected_tag_path().unwrap());
    let path = std::ffi::CString::new(track.as_os_str().as_encoded_bytes()).unwrap();
    for _ in 0..12 {
        let file = std::fs::File::open(&track).unwrap();
        let mut buf = [0u8; 64];
        // SAFETY: each call gets a valid NUL-terminated path or an open descriptor and a buffer of the length
        // passed.
        unsafe {
            libc::getxattr(path.as_ptr(), c"user.musicfs".as_ptr(), buf.as_mut_ptr().cast(), buf.len());
            libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len());
            libc::fsync(file.as_raw_fd());
            libc::lseek(file.as_raw_fd(), 0, libc::SEEK_DATA);
        }
    }
    let log = daemon.log();
    for op in ["getxattr", "listxattr", "fsync", "lseek"] {
        let lines = log.lines().filter(|l| l.contains(&format!("[Not Implemented] {op}("))).count();
        // Once: it reached the daemon (so this test sees the path), and the kernel did not ask again.
        assert_eq!(lines, 1, "{op} logged {lines} times for 12 calls:\n{log}");
    }
    daemon.stop_cleanly();
}

/// The cache holds the library's metadata and cached audio: its directory is 0700 and its files 0600, so
/// another local user reads neither, whatever the umask the daemon was started with.
#[test]
fn the_cache_is_private_to_the_daemons_user() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::new().unwrap();
    let tracks = library(&scratch, 2, false);
    // A cache made open by an older version is tightened too.
    std::fs::create_dir_all(scratch.cache()).unwrap();
    std::fs::set_permissions(scratch.cache(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let daemon = start(&scratch);
    std::fs::read(scratch.mnt().join(tracks[0].expected_tag_path().unwrap())).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&scratch.cache()), 0o700);
    for path in walk_files(&scratch.cache()).unwrap() {
        match std::fs::metadata(&path) {
            Ok(meta) => assert_eq!(meta.permissions().mode() & 0o077, 0, "{} is open to others", path.display()),
            // A chunk write's temporary file, renamed into place since the walk saw it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
    assert!(daemon.log().contains("cache made private"), "{}", daemon.log());
    daemon.stop_cleanly();
}

/// A mount point inside the origin it shows would make every sync index the mount's own files again: the
/// daemon refuses it at start with one line naming both keys, and mounts nothing.
#[test]
fn a_mount_inside_its_origin_is_refused_naming_both_keys() {
    let scratch = Scratch::new().unwrap();
    library(&scratch, 1, false);
    let inside = scratch.lib().join("mnt");
    std::fs::create_dir_all(&inside).unwrap();
    let config = scratch.dir.path().join("overlap.toml");
    write_config(&config, &inside, &scratch.cache(), &scratch.lib(), "").unwrap();
    let out = std::process::Command::new(BIN).args(["mount", "--config"]).arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("mount_point, origins.path (origin `lib`)") && stderr.contains("overlap.toml"), "{stderr}");
    assert!(!is_fuse_mounted(&inside));
}

/// Proves L2: 3.9
#[test]
fn a_second_daemon_on_the_same_cache_exits_1_naming_the_first() {
    let scratch = Scratch::new().unwrap();
    library(&scratch, 2, false);
    let daemon = start(&scratch);
    let other_mount = scratch.dir.path().join("mnt2");
    let out = std::process::Command::new(BIN)
        .args(["mount", "--origin"])
        .arg(scratch.lib())
        .arg("--cache-dir")
        .arg(scratch.cache())
        .arg(&other_mount)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("already running (PID {})", daemon.pid().unwrap())), "{stderr}");
    assert!(!is_fuse_mounted(&other_mount));
    daemon.stop_cleanly();
}

#[test]
fn a_bad_config_is_one_clear_line_naming_the_key_and_file() {
    let scratch = Scratch::new().unwrap();
    let config = scratch.dir.path().join("bad.toml");
    write_config(&config, &scratch.mnt(), &scratch.cache(), &scratch.lib(), "[cache]\nmax_sise = \"1GiB\"\n").unwrap();
    let out = std::process::Command::new(BIN).args(["mount", "--config"]).arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("max_sise") && stderr.contains("bad.toml:"), "{stderr}");
    assert!(!is_fuse_mounted(&scratch.mnt()));
}

/// Proves L2: 2.7
#[test]
fn after_kill_9_the_next_start_clears_the_stale_mount() {
    let scratch = Scratch::new().unwrap();
    let tracks = library(&scratch, 2, false);
    let daemon = start(&scratch);
    daemon.kill9().unwrap();
    // (stat may still be answered from the kernel's attribute cache; listing needs the dead daemon.)
    let stale = std::fs::read_dir(scratch.mnt()).unwrap_err();
    assert_eq!(stale.raw_os_error(), Some(libc::ENOTCONN), "kill -9 leaves a dead mount behind");
    let daemon = start(&scratch);
    assert!(daemon.log().contains("2.7"), "{}", daemon.log());
    let bytes = std::fs::read(scratch.mnt().join(tracks[0].expected_tag_path().unwrap())).unwrap();
    assert_eq!(bytes, std::fs::read(scratch.lib().join(&tracks[0].rel_path)).unwrap());
    daemon.stop_cleanly();
}

#[test]
fn the_background_delta_sync_picks_up_added_changed_and_removed_files() {
    let scratch = Scratch::new().unwrap();
    let tracks = library(&scratch, 8, false);
    let daemon = start_with_config(&scratch, "[library]\nsync_interval = \"1s\"\n");
    let gone = scratch.mnt().join(tracks[0].expected_tag_path().unwrap());
    let changed = scratch.mnt().join(tracks[1].expected_tag_path().unwrap());
    assert!(gone.exists());
    std::fs::remove_file(scratch.lib().join(&tracks[0].rel_path)).unwrap();
    // A changed file: new content and size under the same tags (appended junk after the audio).
    let mut longer = std::fs::read(scratch.lib().join(&tracks[1].rel_path)).unwrap();
    longer.extend_from_slice(&[0u8; 4096]);
    std::fs::write(scratch.lib().join(&tracks[1].rel_path), &longer).unwrap();
    std::fs::write(scratch.lib().join("new-track.wav"), pseudo_random_bytes(10_000, 3)).unwrap();
    let added = scratch.mnt().join("Unknown Artist/Unknown Album/new-track.wav");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(added.exists()
        && !gone.exists()
        && std::fs::metadata(&changed).map(|m| m.len()).ok() == Some(longer.len() as u64))
    {
        assert!(Instant::now() < deadline, "delta sync did not show the changes:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(std::fs::read(&changed).unwrap(), longer, "a changed file reads its new content");
    assert_eq!(std::fs::read(&added).unwrap(), pseudo_random_bytes(10_000, 3));
    daemon.stop_cleanly();
}

#[test]
fn sigint_stops_as_cleanly_as_sigterm() {
    let scratch = Scratch::new().unwrap();
    library(&scratch, 2, false);
    let mut daemon = start(&scratch);
    daemon.signal(libc::SIGINT);
    let status = daemon.wait(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{status}");
    assert!(!is_fuse_mounted(&scratch.mnt()));
}

/// Proves L2: 6.4, 6.3
#[test]
fn cache_verify_and_repair_find_rot_offline_and_refuse_to_race_the_daemon() {
    let scratch = Scratch::new().unwrap();
    let tracks = library(&scratch, 4, false);
    let daemon = start(&scratch);
    for t in &tracks {
        std::fs::read(scratch.mnt().join(t.expected_tag_path().unwrap())).unwrap();
    }
    let busy =
        std::process::Command::new(BIN).args(["cache", "verify", "--cache-dir"]).arg(scratch.cache()).output().unwrap();
    assert_eq!(busy.status.code(), Some(1), "{}", String::from_utf8_lossy(&busy.stderr));
    assert!(String::from_utf8_lossy(&busy.stderr).contains("already running"));
    daemon.stop_cleanly();

    let chunks = chunk_files(&scratch.cache()).unwrap();
    let victim = &chunks[0];
    let mut bytes = std::fs::read(victim).unwrap();
    bytes[0] ^= 1;
    std::fs::write(victim, bytes).unwrap();
    let (ok, stdout, _) = musicfs(&["cache", "verify"], &scratch.cache());
    assert!(ok && stdout.contains("1 rotten chunks removed"), "{stdout}");
    assert!(!victim.exists());

    std::fs::write(scratch.cache().join("chunks/v1/index.redb"), b"garbage").unwrap();
    let (ok, stdout, _) = musicfs(&["cache", "repair"], &scratch.cache());
    assert!(ok && stdout.contains(&format!("checked {} chunks", chunks.len() - 1)), "{stdout}");
    let daemon = start(&scratch);
    for t in &tracks {
        let got = std::fs::read(scratch.mnt().join(t.expected_tag_path().unwrap())).unwrap();
        assert_eq!(got, std::fs::read(scratch.lib().join(&t.rel_path)).unwrap());
    }
    daemon.stop_cleanly();
}

/// Proves L2: 3.5, 6.2
///
/// `cache verify` after a clean stop finds the chunk index matching the chunk files and the library database
/// whole; a chunk file gone behind the index's back is reported as a repair, and a damaged database fails
/// the command (exit 1) naming it, as the soak scenario relies on.
#[test]
fn cache_verify_checks_the_index_against_the_chunk_files_and_the_database_integrity() {
    let scratch = Scratch::new().unwrap();
    let tracks = library(&scratch, 4, false);
    let daemon = start(&scratch);
    for t in &tracks {
        std::fs::read(scratch.mnt().join(t.expected_tag_path().unwrap())).unwrap();
    }
    daemon.stop_cleanly();
    let (ok, stdout, stderr) = musicfs(&["cache", "verify"], &scratch.cache());
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("all sound"), "{stdout}");
    assert!(stdout.contains("chunk index: matches the chunk files"), "{stdout}");
    assert!(stdout.contains("library database: integrity_check ok"), "{stdout}");

    std::fs::remove_file(&chunk_files(&scratch.cache()).unwrap()[0]).unwrap();
    let (ok, stdout, _) = musicfs(&["cache", "verify"], &scratch.cache());
    assert!(ok && stdout.contains("1 entries without a file dropped"), "{stdout}");

    let db = scratch.cache().join("meta.db");
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 8192, "the database is only {} bytes", bytes.len());
    // Pages after the first (the header stays, so the file still opens as a database).
    for b in &mut bytes[4096..8192] {
        *b = 0x5a;
    }
    std::fs::write(&db, bytes).unwrap();
    let (ok, stdout, stderr) = musicfs(&["cache", "verify"], &scratch.cache());
    assert!(!ok, "a damaged database passed: {stdout}");
    assert!(stderr.contains("fails its integrity check"), "{stderr}");
}

/// A player reading a track keeps getting that track when a newcomer takes its name: the newcomer sorts
/// first (its origin path is earlier), so it gets `song.wav` and the open track becomes `song (2).wav`. The
/// open file goes on with its own bytes, because a file's inode follows its origin file, not its name;
/// each name then reads what it now shows.
#[test]
fn an_open_track_keeps_its_bytes_when_a_newcomer_takes_its_name() {
    use std::io::{Read, Seek, SeekFrom};
    let scratch = Scratch::new().unwrap();
    let first = pseudo_random_bytes(3 << 20, 7);
    let newcomer = pseudo_random_bytes(3 << 20, 8);
    std::fs::create_dir_all(scratch.lib().join("b")).unwrap();
    std::fs::write(scratch.lib().join("b/song.wav"), &first).unwrap();
    let daemon = start(&scratch);
    let album = scratch.mnt().join("Unknown Artist/Unknown Album");
    let mut open = std::fs::File::open(album.join("song.wav")).unwrap();
    let mut head = vec![0u8; 1 << 20];
    open.read_exact(&mut head).unwrap();
    assert_eq!(head, first[..1 << 20]);

    std::fs::create_dir_all(scratch.lib().join("a")).unwrap();
    std::fs::write(scratch.lib().join("a/song.wav"), &newcomer).unwrap();
    let (ok, out, err) = musicfs(&["sync"], &scratch.cache());
    assert!(ok, "{out}{err}");
    assert!(album.join("song (2).wav").exists(), "the newcomer did not take the name: {out}");

    let mut rest = Vec::new();
    open.seek(SeekFrom::Start(1 << 20)).unwrap();
    open.read_to_end(&mut rest).unwrap();
    assert!(rest == first[1 << 20..], "the open track was handed another track's bytes");
    assert!(std::fs::read(album.join("song.wav")).unwrap() == newcomer);
    assert!(std::fs::read(album.join("song (2).wav")).unwrap() == first);
    drop(open);
    daemon.stop_cleanly();
}

/// A stop while a player holds a track open (paused, say) does not wait for it: the mount is detached
/// lazily and the daemon leaves at once (it used to wait 10 s for a FUSE session that ends only when the
/// file is closed); the mount is gone for everyone else.
#[test]
fn a_stop_with_a_file_held_open_does_not_wait_for_it() {
    use std::io::Read;
    let scratch = Scratch::new().unwrap();
    let tracks = library(&scratch, 1, false);
    let mut daemon = start(&scratch);
    let mut open = std::fs::File::open(scratch.mnt().join(tracks[0].expected_tag_path().unwrap())).unwrap();
    let mut head = [0u8; 4096];
    open.read_exact(&mut head).unwrap();
    let asked = Instant::now();
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait(Duration::from_secs(30)).unwrap();
    let took = asked.elapsed();
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(5), "the stop waited {took:?} for a file held open");
    assert!(daemon.log().contains("2.3 stopped cleanly"), "{}", daemon.log());
    assert!(!is_fuse_mounted(&scratch.mnt()));
    drop(open);
}

/// Issue 16: a MusicFS mount inside an origin — another daemon's, there or behind a symlink — is never
/// scanned: its files are a library shown again, not music of this origin.
#[test]
fn a_musicfs_mount_inside_an_origin_is_never_scanned() {
    let (outer, inner) = (Scratch::new().unwrap(), Scratch::new().unwrap());
    std::fs::write(outer.lib().join("own.wav"), pseudo_random_bytes(64 << 10, 1)).unwrap();
    for i in 0..3 {
        std::fs::write(inner.lib().join(format!("other{i}.wav")), pseudo_random_bytes(64 << 10, 10 + i)).unwrap();
    }
    // The inner daemon mounts inside the outer daemon's origin, and a symlink there points at it too.
    let mirror = outer.lib().join("mirror");
    let inner_daemon =
        Daemon::start(Path::new(BIN), &DaemonArgs { mount_point: mirror.clone(), ..inner.args() }).unwrap();
    std::os::unix::fs::symlink(&mirror, outer.lib().join("link")).unwrap();
    assert_eq!(walk_files(&mirror).unwrap().len(), 3, "the inner mount serves its library");

    let outer_daemon = Daemon::start(Path::new(BIN), &outer.args()).unwrap();
    let listed = walk_files(&outer.mnt()).unwrap();
    assert_eq!(listed.len(), 1, "only the origin's own track: {listed:?}");
    assert!(outer_daemon.log().contains("not scanning a MusicFS mount"), "{}", outer_daemon.log());
    outer_daemon.stop_cleanly();
    inner_daemon.stop_cleanly();
}
