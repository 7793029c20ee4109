//! Health checks that never answer (4.2.1).

use musicfs_origins::health::{self, LibraryState};
use musicfs_origins::memory::MemoryOrigin;
use musicfs_origins::{OriginError, SharedOrigin};
use musicfs_test_utils::assertions::completes_within;
use std::sync::Arc;
use std::time::Duration;

/// Proves L1: 4.2.1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_health_check_ends_at_its_timeout() {
    let scenario = fail::FailScenario::setup();
    let origin: SharedOrigin = Arc::new(MemoryOrigin::new());
    fail::cfg("origins::health::check_hang", "return").unwrap();
    let (result, took) = completes_within(
        Duration::from_secs(5),
        "a hung check",
        health::check_one(&origin, Duration::from_millis(200)),
    )
    .await;
    assert!(matches!(result, Err(OriginError::Timeout(_))), "{result:?}");
    assert!(took >= Duration::from_millis(200), "it really hung until the timeout: {took:?}");
    let round = health::check_all(std::slice::from_ref(&origin), Duration::from_millis(200)).await;
    assert_eq!(health::state_of(&round), LibraryState::Offline);
    fail::remove("origins::health::check_hang");
    assert!(health::check_one(&origin, Duration::from_millis(200)).await.is_ok());
    let round = health::check_all(std::slice::from_ref(&origin), Duration::from_millis(200)).await;
    assert_eq!(health::state_of(&round), LibraryState::Ready);
    scenario.teardown();
}
