//! Origins that hang or fail, in-process: reads stay bounded (3.8) and fail fast after a timeout until the origin
//! is back, health rounds stay bounded (4.2.2), a host name that does not resolve is degraded and re-checked soon
//! (4.2.5).

use musicfs_origins::health::{self, LibraryState};
use musicfs_origins::memory::MemoryOrigin;
use musicfs_origins::{Origin, OriginError, SharedOrigin};
use musicfs_test_utils::assertions::completes_within;
use musicfs_test_utils::faulty_origin::{FailMode, FaultyOrigin};
use musicfs_test_utils::fixtures::{InProcessFs, track_bytes};
use std::sync::Arc;
use std::time::Duration;

/// Proves L1: 3.8
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_origin_gives_eio_within_the_read_timeout_while_metadata_stays_answered() {
    let read_timeout = Duration::from_millis(500);
    let fx = InProcessFs::new(2, 100_000, read_timeout).await.unwrap();
    let ino = fx.ino(0).unwrap();
    fx.origin.set_mode(FailMode::TimeoutMs(60_000));

    // Twenty readers hang on the origin; metadata must not wait for them.
    let mut readers = Vec::new();
    for i in 0..20u64 {
        let fs = fx.fs.clone();
        readers.push(tokio::spawn(async move { fs.read(ino, i * 4096, 4096).await }));
    }
    let fs = fx.fs.clone();
    completes_within(Duration::from_secs(2), "1000 lookups and getattrs during hung reads", async move {
        for _ in 0..1000 {
            fs.getattr(ino).unwrap();
            fs.lookup(1, b"Unknown Artist").unwrap();
        }
    })
    .await;
    for reader in readers {
        let (result, took) = completes_within(Duration::from_secs(10), "a read from a hung origin", reader).await;
        let err = result.unwrap().unwrap_err();
        assert_eq!(err.errno(), libc::EIO, "{err}");
        assert!(took <= Duration::from_secs(10));
    }
    assert!(fx.origin.faults_injected() >= 1, "the hang was really injected");

    // Right after the timeouts, reads from the hung origin fail fast instead of each waiting a full timeout.
    let (fast, took) =
        completes_within(Duration::from_secs(5), "a read while the breaker is open", fx.fs.read(ino, 0, 4096)).await;
    assert_eq!(fast.unwrap_err().errno(), libc::EIO);
    assert!(took < read_timeout / 2, "failed fast: {took:?}");

    fx.origin.set_mode(FailMode::Healthy);
    tokio::time::sleep(read_timeout).await;
    assert_eq!(fx.read_all(ino, 65536).await.unwrap(), track_bytes(0, 100_000), "reads work again once it recovers");
}

/// A remote origin bounds its own requests and reports the timeout itself, usually just before the reader's
/// own bound fires (S3 and SFTP use the same bound). That is the same hang: it opens the breaker too, so the
/// next read fails fast without asking the origin again, instead of waiting a whole timeout more (which made a
/// read through a silent S3 connection take two read timeouts). Once the health monitor sees the origin back,
/// reads go to it at once rather than at the end of the window.
/// Proves L1: 3.8
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_reporting_its_own_timeout_opens_the_breaker_until_it_is_back() {
    // A long window (5.4 s), so the checks below run well inside it even on a busy machine.
    let read_timeout = Duration::from_secs(6);
    let fx = InProcessFs::new(2, 100_000, read_timeout).await.unwrap();
    let ino = fx.ino(0).unwrap();
    // Gives up on its own after 300 ms, well inside the reader's bound.
    fx.origin.set_mode(FailMode::TimeoutMs(300));
    let (first, took) =
        completes_within(Duration::from_secs(10), "a read from a timing-out origin", fx.fs.read(ino, 0, 4096)).await;
    assert_eq!(first.unwrap_err().errno(), libc::EIO);
    assert!(took < read_timeout, "{took:?}");
    let asked = fx.origin.read_calls();
    let (fast, took) =
        completes_within(Duration::from_secs(5), "a read while the breaker is open", fx.fs.read(ino, 0, 4096)).await;
    assert_eq!(fast.unwrap_err().errno(), libc::EIO);
    assert_eq!(fx.origin.read_calls(), asked, "the origin was asked again instead of failing fast ({took:?})");

    fx.origin.set_mode(FailMode::Healthy);
    let (still, _) = completes_within(Duration::from_secs(5), "a read", fx.fs.read(ino, 0, 4096)).await;
    assert!(still.is_err(), "the breaker stays open for its window while nobody says the origin is back");
    fx.fs.reader().origin_is_back(fx.origin.id());
    assert_eq!(fx.read_all(ino, 65536).await.unwrap(), track_bytes(0, 100_000), "read from the origin at once");
    assert!(fx.origin.faults_injected() >= 1, "the timeout was really injected");
}

/// Proves L1: 4.2.2, 4.2.1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_origins_do_not_stall_the_health_round() {
    let healthy: SharedOrigin = Arc::new(MemoryOrigin::new());
    let mut origins = vec![healthy];
    let mut hung = Vec::new();
    for _ in 0..5 {
        let origin = FaultyOrigin::new(Arc::new(MemoryOrigin::new()), FailMode::TimeoutMs(60_000));
        hung.push(origin.clone());
        origins.push(origin);
    }
    // Five hung origins checked one after another would take 5 × 400 ms; together they take one timeout.
    let (round, took) = completes_within(
        Duration::from_secs(10),
        "a health round",
        health::check_all(&origins, Duration::from_millis(400)),
    )
    .await;
    assert!(took < Duration::from_millis(1500), "the round took {took:?}: origins were not checked concurrently");
    assert!(round[0].outcome.is_ok());
    assert!(round[1..].iter().all(|r| matches!(r.outcome, Err(OriginError::Timeout(_)))));
    assert_eq!(health::state_of(&round), LibraryState::Degraded);
    assert!(hung.iter().all(|o| o.faults_injected() == 1));
}

/// Proves L1: 4.2.5
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_failure_is_degraded_and_rechecked_soon_not_an_origin_death() {
    let every = Duration::from_secs(30);
    let origin = FaultyOrigin::new(Arc::new(MemoryOrigin::new()), FailMode::Dns);
    let origins: Vec<SharedOrigin> = vec![origin.clone()];

    // The only origin does not resolve: degraded, not offline, and the next round comes soon.
    let round = health::check_all(&origins, Duration::from_secs(1)).await;
    let error = round[0].outcome.as_ref().unwrap_err();
    assert!(error.is_dns() && error.to_string().contains("DNS"), "logged as DNS: {error}");
    assert_eq!(health::state_of(&round), LibraryState::Degraded);
    assert_eq!(health::next_round(&round, every), health::DNS_RECHECK);

    // A dead origin (connection refused) is what takes the library offline, at the normal pace.
    origin.set_mode(FailMode::ReturnError(std::io::ErrorKind::ConnectionRefused));
    let round = health::check_all(&origins, Duration::from_secs(1)).await;
    assert!(!round[0].outcome.as_ref().unwrap_err().is_dns());
    assert_eq!(health::state_of(&round), LibraryState::Offline);
    assert_eq!(health::next_round(&round, every), every);

    // Resolved again: ready.
    origin.set_mode(FailMode::Healthy);
    let round = health::check_all(&origins, Duration::from_secs(1)).await;
    assert_eq!(health::state_of(&round), LibraryState::Ready);
    assert_eq!(origin.faults_injected(), 2);
}

/// 4.2.3 in-process: the library goes Ready → Degraded → Offline → Ready as its origins fail and return;
/// cached music keeps playing while they are down; uncached reads fail fast with EIO; and the thousand
/// failing reads of a player retrying are one log line, plus one when the origin answers again.
/// Proves L1: 4.2.3
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_origins_down_keeps_cached_music_playing_with_one_log_line_not_one_per_read() {
    let fx = InProcessFs::new(2, 200_000, Duration::from_secs(2)).await.unwrap();
    let other = FaultyOrigin::new(Arc::new(MemoryOrigin::new()), FailMode::Healthy);
    let origins: Vec<SharedOrigin> = vec![fx.origin.clone(), other.clone()];
    let state = async || health::state_of(&health::check_all(&origins, Duration::from_secs(1)).await);
    assert_eq!(state().await, LibraryState::Ready);

    let (cached, uncached) = (fx.ino(0).unwrap(), fx.ino(1).unwrap());
    assert_eq!(fx.read_all(cached, 65536).await.unwrap(), track_bytes(0, 200_000));
    fx.fs.reader().flush(Duration::from_secs(5)).await.unwrap();

    other.set_mode(FailMode::ReturnError(std::io::ErrorKind::ConnectionRefused));
    assert_eq!(state().await, LibraryState::Degraded);
    fx.origin.set_mode(FailMode::ReturnError(std::io::ErrorKind::ConnectionRefused));
    assert_eq!(state().await, LibraryState::Offline);

    let failures = &fx.fs.reader().failures();
    let lines_before = failures.lines.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..200 {
        assert_eq!(fx.read_all(cached, 65536).await.unwrap(), track_bytes(0, 200_000), "cached music plays");
        let err = fx.fs.read(uncached, 0, 65536).await.unwrap_err();
        assert_eq!(err.errno(), libc::EIO, "{err}");
    }
    assert!(fx.origin.faults_injected() >= 200, "the uncached reads reached the failing origin");
    let lines = || failures.lines.load(std::sync::atomic::Ordering::Relaxed) - lines_before;
    assert_eq!(lines(), 1, "200 failing reads are one log line");

    fx.origin.set_mode(FailMode::Healthy);
    other.set_mode(FailMode::Healthy);
    assert_eq!(state().await, LibraryState::Ready);
    assert_eq!(fx.read_all(uncached, 65536).await.unwrap(), track_bytes(1, 200_000));
    assert_eq!(lines(), 2, "and one more when the origin answers again");
}

/// A slow origin that works is read from, not timed out: an ingest asks it only for what it can send within
/// its bound, so its reads never time out, its breaker stays closed, the reads behind the ingest are served,
/// and the track ends up cached. Before, every ingest asked for 8 MiB at once, which a 0.5 MB/s origin cannot
/// send within 1.8 s: the request timed out, the breaker opened and the reads failed.
/// Proves L1: N1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_origin_is_read_in_blocks_it_can_send_within_its_bound() {
    const LEN: usize = 2_000_000;
    let fx = InProcessFs::new(1, LEN, Duration::from_secs(2)).await.unwrap();
    let ino = fx.ino(0).unwrap();
    fx.origin.set_mode(FailMode::Throttle { bytes_per_sec: 500_000 });
    let got = fx.read_all(ino, 65536).await.expect("every read of the slow origin served");
    assert_eq!(got, track_bytes(0, LEN));
    assert_eq!(fx.fs.reader().failures().lines.load(std::sync::atomic::Ordering::Relaxed), 0, "no origin read failed");
    fx.fs.reader().flush(Duration::from_secs(10)).await.unwrap();
    let file = fx.fs.file(ino).unwrap();
    assert!(fx.fs.reader().is_cached(&file).await.unwrap(), "the track was cached as it was read");
}
