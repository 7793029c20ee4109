//! Assertions about time and errors: "completes within", "is still running after", "fails with this kind".
//! Bounds here are generous limits that only a hang exceeds, never performance targets.

use std::future::Future;
use std::time::{Duration, Instant};

/// Awaits `fut`, panicking if it takes longer than `limit`; returns its output and how long it took.
pub async fn completes_within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    match tokio::time::timeout(limit, fut).await {
        Ok(value) => (value, started.elapsed()),
        Err(_) => panic!("{what} did not complete within {limit:?}"),
    }
}

/// Panics if `fut` completes within `wait` (it was supposed to hang or block).
pub async fn still_running_after<T>(wait: Duration, what: &str, fut: impl Future<Output = T>) {
    if tokio::time::timeout(wait, fut).await.is_ok() {
        panic!("{what} completed, but was expected to still be running after {wait:?}");
    }
}

/// Runs a blocking closure on its own thread and panics if it does not return within `limit`
/// (the thread is abandoned: use for operations that might hang, like reads from a mount).
pub fn blocking_completes_within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> (T, Duration) {
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => (value, started.elapsed()),
        Err(_) => panic!("{what} did not return within {limit:?}"),
    }
}

/// Asserts an io::Result failed with the given raw errno.
pub fn assert_errno<T: std::fmt::Debug>(result: std::io::Result<T>, errno: i32, what: &str) {
    match result {
        Err(e) if e.raw_os_error() == Some(errno) => {}
        other => panic!("{what}: expected errno {errno}, got {other:?}"),
    }
}
