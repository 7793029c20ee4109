//! A backup origin end to end (4.2.6, N2): the real `musicfs` binary serves an S3 bucket reached through
//! Toxiproxy, with a local directory as that origin's backup (`backup_for`). The S3 connection is cut in the
//! middle of a read and the read completes from the backup; tracks read while S3 is away come from the
//! backup and are flagged; when S3 returns they are re-validated, and the one whose backup copy was stale is
//! served from S3 again without anyone dropping the kernel's pages by hand.

use musicfs_test_utils::daemon::Scratch;
use musicfs_test_utils::files::timed_read;
use musicfs_test_utils::servers::toxiproxy::{bandwidth, silence};
use std::time::{Duration, Instant};

use crate::mounted::{assert_served_without_remount, start, status, wait_for_cache_to_settle, wait_for_state};
use crate::remote::{Library, Network, s3_origin};

/// Copies the library into a backup directory of the same layout; track `stale`'s copy has its last bytes
/// changed (same size), as a mirror that missed an edit.
fn backup_of(library: &Library, stale: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (i, track) in library.tracks.iter().enumerate() {
        let to = dir.path().join(&track.rel_path);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let mut bytes = library.bytes(i);
        if i == stale {
            let n = bytes.len();
            bytes[n - 16..].iter_mut().for_each(|b| *b ^= 0xff);
        }
        std::fs::write(to, bytes).unwrap();
    }
    dir
}

/// Proves L3: 4.2.6, N2
#[test]
fn an_s3_origin_cut_mid_read_is_served_from_its_backup_and_revalidated_when_it_returns() {
    // Track 5 is a WAV (the largest format here), read mid-cut; track 2's backup copy is stale.
    let (mid_read, plain, stale) = (5, 0, 2);
    // Long enough that the read is still running at the cut with every read the ingest keeps in flight (each
    // on its own connection, each slowed to 600 KB/s).
    let library = Library::generate_long(6, 120.0);
    let backup = backup_of(&library, stale);
    let server = library.bucket(&[("a", 0..6)]);
    let net = Network::start();
    let (mut proxy, listen) = net.proxy("s3a", server.addr());
    let rt = &net.rt;
    let scratch = Scratch::new().unwrap();
    let origins = s3_origin(&scratch, &server, "s3a", &format!("http://{listen}"), "a")
        + &format!(
            "[[origins]]\nid = \"mirror\"\ntype = \"local\"\npath = {:?}\nbackup_for = \"s3a\"\n\n",
            backup.path().display().to_string()
        );
    let read_timeout = Duration::from_secs(6);
    let daemon = start(
        &scratch,
        &origins,
        "[health]\ninterval = \"1s\"\ntimeout = \"1s\"\n\n[fuse]\nread_timeout = \"6s\"\n\n\
         [library]\nsync_interval = \"1h\"\n",
    );
    let pid = daemon.pid();
    assert_eq!(status(&scratch)["tracks"], 6, "the backup is not listed into the library");

    // Slow the S3 link (on new connections only: drop the pooled ones first), so a read is still running
    // when the link is cut.
    rt.block_on(proxy.disable()).unwrap();
    rt.block_on(proxy.add_toxic(&bandwidth("slow", 600))).unwrap();
    rt.block_on(proxy.enable()).unwrap();
    wait_for_state(&scratch, &daemon, "ready", Duration::from_secs(10));

    // N2: the connection drops mid-read; the read completes from the backup, byte-identical, in bound.
    let size = library.bytes(mid_read).len();
    let path = library.mounted(&scratch, mid_read);
    let reading = std::thread::spawn(move || timed_read(&path));
    std::thread::sleep(Duration::from_millis(500));
    rt.block_on(proxy.disable()).unwrap();
    let (got, took) = reading.join().unwrap();
    let got = got.unwrap_or_else(|e| panic!("N2: the cut read failed ({e}):\n{}", daemon.log()));
    assert!(got == library.bytes(mid_read), "N2: the read cut mid-way returned different bytes");
    assert!(took < read_timeout + Duration::from_secs(1), "N2: the cut read took {took:?}");
    assert!(took > Duration::from_millis(500), "the read ended before the cut ({took:?}): not a mid-read drop");
    eprintln!("{size} bytes at 600 KB/s, S3 cut after 0.5 s: completed from the backup in {took:?}");

    // 4.2.6: while S3 is away, other tracks come from the backup at once, as the backup has them.
    let (got, took) = timed_read(&library.mounted(&scratch, plain));
    assert!(got.expect("served from the backup") == library.bytes(plain));
    eprintln!("uncached track read from the backup in {took:?} while S3 is cut");
    let (got, _) = timed_read(&library.mounted(&scratch, stale));
    let served_stale = got.expect("served from the backup");
    assert!(served_stale != library.bytes(stale), "the backup's (stale) copy was served");
    assert_eq!(served_stale.len(), library.bytes(stale).len());
    let now = status(&scratch);
    assert_eq!(now["served_from_backup"], 3, "three tracks flagged: {now}");
    // S3 down, its backup up: degraded, once a health round (1 s apart) has found S3 gone; the three reads
    // above can all be done before the next round.
    wait_for_state(&scratch, &daemon, "degraded", Duration::from_secs(10));
    wait_for_cache_to_settle(&scratch);

    // S3 returns: the flagged tracks are read again from it; the stale copy is replaced and the kernel
    // told, so the very next read through the mount gets S3's bytes.
    rt.block_on(proxy.remove_toxic("slow")).unwrap();
    rt.block_on(proxy.enable()).unwrap();
    wait_for_state(&scratch, &daemon, "ready", Duration::from_secs(10));
    let healed = Instant::now();
    while !daemon.log().contains("4.2.6 origin back: tracks served from its backup re-validated") {
        assert!(healed.elapsed() < Duration::from_secs(20), "no re-validation after S3 returned:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("re-validated {:?} after S3 was ready again", healed.elapsed());
    let log = daemon.log();
    let line = log.lines().find(|l| l.contains("4.2.6 origin back")).unwrap();
    assert!(line.contains("differed=1") && line.contains("tracks=3"), "{line}");
    let (got, _) = timed_read(&library.mounted(&scratch, stale));
    assert!(got.unwrap() == library.bytes(stale), "4.2.6: the stale backup copy is still served");
    assert_eq!(status(&scratch)["served_from_backup"], 0);
    assert_served_without_remount(&daemon, &scratch, pid);

    // N2, frozen: S3 goes silent (the connection stays open, no byte comes). An uncached track is served
    // from the backup once the hedge gives up on S3 (at most 1.5 s), not after half the read timeout (2.7 s
    // here, 13.5 s at the defaults).
    let frozen = 1;
    rt.block_on(proxy.disable()).unwrap();
    rt.block_on(proxy.add_toxic(&silence("frozen"))).unwrap();
    rt.block_on(proxy.enable()).unwrap();
    let (got, took) = timed_read(&library.mounted(&scratch, frozen));
    assert!(got.expect("served from the backup while S3 is frozen") == library.bytes(frozen));
    eprintln!("uncached track read with S3 frozen: {took:?}");
    assert!(took < Duration::from_millis(2500), "N2: a frozen S3 stalled the reader for {took:?}");
    assert!(daemon.log().contains("N2 origin slow"), "the frozen origin was not marked slow:\n{}", daemon.log());
    rt.block_on(proxy.remove_toxic("frozen")).unwrap();
    daemon.stop_cleanly();
}
