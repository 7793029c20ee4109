//! The task supervisor (2.6): every background task runs under it. A task that panics, fails or returns
//! while the daemon is still running is restarted with backoff (1 s, 5 s, 30 s, then 30 s) up to a capped
//! number of restarts; past the cap it stays dead, which the watchdog's self-check sees for critical tasks
//! (so systemd restarts the whole daemon). Restarts and liveness are visible in `musicfs status`.
//! [`Supervisor::revive_given_up`] gives such tasks a fresh start when what they depend on recovers, e.g.
//! when an origin returns (4.2.4): a task that failed because an origin was gone should not stay dead.

use crate::sync_util::lock_or_recover;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const BACKOFF: [Duration; 3] = [Duration::from_secs(1), Duration::from_secs(5), Duration::from_secs(30)];
/// Restarts before the supervisor gives a task up.
pub const MAX_RESTARTS: u32 = 10;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskHealth {
    pub name: String,
    pub critical: bool,
    pub alive: bool,
    pub restarts: u32,
    pub last_failure: Option<String>,
}

#[derive(Clone)]
pub struct Supervisor {
    tasks: Arc<Mutex<Vec<TaskHealth>>>,
    cancel: CancellationToken,
    backoff: Vec<Duration>,
    max_restarts: u32,
    revive: Arc<tokio::sync::Notify>,
}

impl Supervisor {
    pub fn new(cancel: CancellationToken) -> Supervisor {
        Supervisor::with_policy(cancel, BACKOFF.to_vec(), MAX_RESTARTS)
    }

    /// A supervisor with its own backoff steps (the last repeats) and restart cap; tests use short ones.
    pub fn with_policy(cancel: CancellationToken, backoff: Vec<Duration>, max_restarts: u32) -> Supervisor {
        Supervisor {
            tasks: Arc::new(Mutex::new(Vec::new())),
            cancel,
            backoff,
            max_restarts,
            revive: Arc::new(tokio::sync::Notify::new()),
        }
    }

    fn update(&self, index: usize, change: impl FnOnce(&mut TaskHealth)) {
        let mut tasks = lock_or_recover(&self.tasks);
        if let Some(task) = tasks.get_mut(index) {
            change(task);
        }
    }

    /// Runs `make(token)` as a supervised task. The token is cancelled at shutdown; a task that ends for any
    /// other reason is restarted.
    pub fn spawn<F, Fut, E>(&self, name: &'static str, critical: bool, make: F)
    where
        F: Fn(CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let index = {
            let mut tasks = lock_or_recover(&self.tasks);
            tasks.push(TaskHealth { name: name.to_owned(), critical, alive: true, restarts: 0, last_failure: None });
            tasks.len() - 1
        };
        let this = self.clone();
        tokio::spawn(async move {
            let mut restarts = 0u32;
            loop {
                let run = tokio::spawn(make(this.cancel.child_token())).await;
                if this.cancel.is_cancelled() {
                    this.update(index, |t| t.alive = false);
                    return;
                }
                let failure = match run {
                    Ok(Ok(())) => "returned while the daemon runs".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) if e.is_panic() => "panicked (see the 2.2 panic line above)".to_owned(),
                    Err(e) => e.to_string(),
                };
                if restarts >= this.max_restarts {
                    tracing::error!(
                        task = name,
                        critical,
                        restarts,
                        failure,
                        "2.6 task failed too often; giving it up"
                    );
                    // Registered before the task is marked dead, so a revive right after cannot be missed.
                    let revived = this.revive.notified();
                    this.update(index, |t| {
                        t.alive = false;
                        t.last_failure = Some(failure);
                    });
                    tokio::select! {
                        _ = this.cancel.cancelled() => return,
                        _ = revived => {}
                    }
                    tracing::info!(task = name, "4.2.4 given-up task revived: what it depends on recovered");
                    restarts = 0;
                    this.update(index, |t| {
                        t.alive = true;
                        t.restarts = 0;
                    });
                    continue;
                }
                let wait = this
                    .backoff
                    .get(restarts as usize)
                    .or(this.backoff.last())
                    .copied()
                    .unwrap_or(Duration::from_secs(1));
                restarts += 1;
                tracing::warn!(
                    task = name,
                    failure,
                    restart = restarts,
                    ?wait,
                    "2.6 task died; restarting after backoff"
                );
                this.update(index, |t| {
                    t.restarts = restarts;
                    t.last_failure = Some(failure);
                });
                tokio::select! {
                    _ = this.cancel.cancelled() => {
                        this.update(index, |t| t.alive = false);
                        return;
                    }
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        });
    }

    pub fn health(&self) -> Vec<TaskHealth> {
        lock_or_recover(&self.tasks).clone()
    }

    /// Restarts every given-up task with a fresh restart budget; returns their names.
    pub fn revive_given_up(&self) -> Vec<String> {
        let dead: Vec<String> = self.health().into_iter().filter(|t| !t.alive).map(|t| t.name).collect();
        if !dead.is_empty() && !self.cancel.is_cancelled() {
            self.revive.notify_waiters();
        }
        dead
    }

    /// Names of critical tasks that are no longer running (given up), for the watchdog's self-check.
    pub fn dead_critical(&self) -> Vec<String> {
        self.health().into_iter().filter(|t| t.critical && !t.alive).map(|t| t.name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Proves L1: 2.6, 2.2, 4.2.4
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_task_is_restarted_with_backoff_and_one_that_keeps_failing_is_given_up() {
        let cancel = CancellationToken::new();
        let sup =
            Supervisor::with_policy(cancel.clone(), vec![Duration::from_millis(20), Duration::from_millis(50)], 3);
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        sup.spawn("flaky", true, move |token| {
            let r = r.clone();
            async move {
                if r.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("flaky task panics");
                }
                token.cancelled().await;
                Ok::<(), String>(())
            }
        });
        sup.spawn("broken", true, |_| async { Err("cannot reach the origin".to_owned()) });
        tokio::time::sleep(Duration::from_millis(600)).await;
        let health = sup.health();
        let flaky = health.iter().find(|t| t.name == "flaky").unwrap();
        assert_eq!((flaky.alive, flaky.restarts), (true, 2), "restarted after each panic, then runs: {flaky:?}");
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        let broken = health.iter().find(|t| t.name == "broken").unwrap();
        assert_eq!((broken.alive, broken.restarts), (false, 3), "given up after the cap: {broken:?}");
        assert_eq!(broken.last_failure.as_deref(), Some("cannot reach the origin"));
        assert_eq!(sup.dead_critical(), vec!["broken"]);

        // 4.2.4: what it depended on is back; the given-up task gets a fresh start and budget.
        assert_eq!(sup.revive_given_up(), vec!["broken"]);
        tokio::time::sleep(Duration::from_millis(600)).await;
        let broken = sup.health().into_iter().find(|t| t.name == "broken").unwrap();
        assert_eq!((broken.alive, broken.restarts), (false, 3), "revived, failed through a new budget: {broken:?}");
        let revived = Arc::new(AtomicU32::new(0));
        let r = revived.clone();
        sup.spawn("recovers", false, move |token| {
            let r = r.clone();
            async move {
                if r.fetch_add(1, Ordering::SeqCst) < 4 {
                    return Err("origin gone".to_owned());
                }
                token.cancelled().await;
                Ok(())
            }
        });
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(revived.load(Ordering::SeqCst), 4, "given up after 1 run and 3 restarts");
        assert!(sup.revive_given_up().iter().any(|name| name == "recovers"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let recovers = sup.health().into_iter().find(|t| t.name == "recovers").unwrap();
        assert_eq!((recovers.alive, recovers.restarts), (true, 0), "running again after the revive: {recovers:?}");
        assert_eq!(revived.load(Ordering::SeqCst), 5);
        cancel.cancel();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(sup.health().iter().all(|t| !t.alive), "cancellation reaches every task");
    }
}
