//! Talking to systemd (2.10, 3.1): READY=1 once the mount answers, STATUS= kept current, STOPPING=1 at
//! shutdown, and WATCHDOG=1 — sent only while the daemon's self-checks pass, so a hung daemon stops
//! petting the watchdog and systemd restarts it. Without NOTIFY_SOCKET every call is a no-op.

use sd_notify::NotifyState;
use std::future::Future;
use std::time::Duration;

pub fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// `BARRIER=1`: returns once the service manager has processed every message sent before it, which it
/// shows by closing the pipe end sent along. A process that exits right after a notification must wait
/// so: systemd accepts a message from an `ExecStartPre=` process only while that process still runs.
pub fn barrier(timeout: Duration) -> std::io::Result<()> {
    use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
    let mut ends = [0; 2];
    // SAFETY: pipe2 fills the two-element array with two new descriptors on success.
    if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
    sd_notify::notify_with_fds(&[NotifyState::Custom("BARRIER=1")], &[write.as_fd()])?;
    drop(write);
    let mut pfd = libc::pollfd { fd: read.as_raw_fd(), events: 0, revents: 0 };
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd; POLLHUP is reported once the last write end is closed.
    let rc = unsafe { libc::poll(&mut pfd, 1, millis) };
    match rc {
        1 => Ok(()),
        0 => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the service manager did not answer BARRIER=1")),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// The watchdog interval systemd asked for (WatchdogSec), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Pets the watchdog every `interval / 2` while `self_check` passes. A check that fails or does not finish
/// within `interval / 4` skips that pet; enough skipped pets and systemd kills and restarts the service.
pub async fn watchdog_loop<C, F, E>(interval: Duration, mut self_check: C, mut pet: impl FnMut())
where
    C: FnMut() -> F,
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let period = interval / 2;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        match tokio::time::timeout(interval / 4, self_check()).await {
            Ok(Ok(())) => {
                if failing {
                    tracing::info!("3.1 self-check passes again; watchdog resumed");
                    failing = false;
                }
                pet();
            }
            Ok(Err(why)) => {
                if !failing {
                    tracing::error!(why = %why, "3.1 self-check failed: not petting the watchdog");
                    failing = true;
                }
            }
            Err(_) => {
                if !failing {
                    tracing::error!("3.1 self-check did not finish in time: not petting the watchdog");
                    failing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Proves L1: 3.1
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_watchdog_is_petted_only_while_self_checks_pass() {
        let healthy = Arc::new(AtomicBool::new(true));
        let hung = Arc::new(AtomicBool::new(false));
        let pets = Arc::new(AtomicUsize::new(0));
        let (h, g, p) = (healthy.clone(), hung.clone(), pets.clone());
        let task = tokio::spawn(watchdog_loop(
            Duration::from_millis(200),
            move || {
                let (h, g) = (h.clone(), g.clone());
                async move {
                    if g.load(Ordering::SeqCst) {
                        std::future::pending::<()>().await;
                    }
                    if h.load(Ordering::SeqCst) { Ok(()) } else { Err("FUSE does not answer") }
                }
            },
            move || {
                p.fetch_add(1, Ordering::SeqCst);
            },
        ));
        tokio::time::sleep(Duration::from_millis(550)).await;
        let while_healthy = pets.load(Ordering::SeqCst);
        assert!(while_healthy >= 3, "petted every half interval: {while_healthy}");
        healthy.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let at_failure = pets.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(pets.load(Ordering::SeqCst), at_failure, "no pet while a check fails");
        healthy.store(true, Ordering::SeqCst);
        hung.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(pets.load(Ordering::SeqCst), at_failure, "no pet while a check hangs");
        hung.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(pets.load(Ordering::SeqCst) > at_failure, "petting resumes when checks pass again");
        task.abort();
    }

    /// Proves L1: 2.10
    #[test]
    fn readiness_status_and_stopping_reach_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        // SAFETY: this test runs in its own process under nextest; no other thread reads the environment.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        ready("serving 3 tracks");
        status("degraded: origin nas down");
        stopping();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        for _ in 0..3 {
            let n = socket.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert!(got[0].contains("READY=1") && got[0].contains("STATUS=serving 3 tracks"), "{got:?}");
        assert!(got[1].contains("STATUS=degraded: origin nas down"), "{got:?}");
        assert!(got[2].contains("STOPPING=1"), "{got:?}");
    }
}
