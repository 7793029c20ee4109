//! Origin health: every check bounded by a timeout whatever the origin type (4.2.1), all origins checked
//! concurrently so one hung origin cannot stall the round (4.2.2), and the resulting overall state
//! Ready → Degraded → Offline → Ready (4.2.3).

use crate::{OriginError, SharedOrigin};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LibraryState {
    /// Every origin answers.
    Ready,
    /// Some origins answer, or the ones that do not failed to resolve their host name (4.2.5).
    Degraded,
    /// No origin answers: only cached music plays.
    Offline,
}

impl LibraryState {
    pub fn as_str(self) -> &'static str {
        match self {
            LibraryState::Ready => "ready",
            LibraryState::Degraded => "degraded",
            LibraryState::Offline => "offline",
        }
    }
}

#[derive(Debug)]
pub struct CheckResult {
    pub origin: String,
    pub outcome: Result<Duration, OriginError>,
}

/// One bounded health check. A check that does not answer within `timeout` is a failure, not a wait.
pub async fn check_one(origin: &SharedOrigin, timeout: Duration) -> Result<Duration, OriginError> {
    let started = Instant::now();
    let check = async {
        #[cfg(feature = "failpoints")]
        if fail::eval("origins::health::check_hang", |_| ()).is_some() {
            std::future::pending::<()>().await;
        }
        origin.health_check().await
    };
    match tokio::time::timeout(timeout, check).await {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(OriginError::Timeout(timeout)),
    }
}

/// Checks all origins at once; the round takes about one timeout at worst.
pub async fn check_all(origins: &[SharedOrigin], timeout: Duration) -> Vec<CheckResult> {
    let mut set = tokio::task::JoinSet::new();
    for (i, origin) in origins.iter().enumerate() {
        let origin = origin.clone();
        set.spawn(async move {
            (i, CheckResult { origin: origin.id().to_owned(), outcome: check_one(&origin, timeout).await })
        });
    }
    let mut results: Vec<(usize, CheckResult)> = Vec::with_capacity(origins.len());
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(result) => results.push(result),
            Err(e) => tracing::error!(error = %e, "health check task failed"),
        }
    }
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// The overall state from one round of results.
pub fn state_of(results: &[CheckResult]) -> LibraryState {
    let healthy = results.iter().filter(|r| r.outcome.is_ok()).count();
    let dns = results.iter().filter(|r| r.outcome.as_ref().is_err_and(OriginError::is_dns)).count();
    state_from(healthy, dns, results.len())
}

/// The overall state from counts of origins: answering, failing to resolve (4.2.5: degraded, not dead), all.
pub fn state_from(healthy: usize, dns_failures: usize, total: usize) -> LibraryState {
    if healthy == total {
        LibraryState::Ready
    } else if healthy == 0 && dns_failures == 0 {
        LibraryState::Offline
    } else {
        LibraryState::Degraded
    }
}

/// How soon to check again after a DNS failure (4.2.5), instead of the full health interval.
pub const DNS_RECHECK: Duration = Duration::from_secs(2);

/// When the next round should run: soon if a name did not resolve, else after `every`.
pub fn next_round(results: &[CheckResult], every: Duration) -> Duration {
    let dns = results.iter().any(|r| r.outcome.as_ref().is_err_and(OriginError::is_dns));
    if dns { DNS_RECHECK.min(every) } else { every }
}
