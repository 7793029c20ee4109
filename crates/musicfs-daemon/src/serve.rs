//! Serving: once started, the daemon waits here for a shutdown request (a signal or `musicfs shutdown`),
//! applying SIGHUP reloads as they come, and then stops in order — or, asked to restart while the service
//! manager holds the FUSE connection, hands it over (2.11). A FUSE session that ends on its own instead (3.4)
//! ends the daemon with exit 1.

use crate::signals::Request;
use crate::start::Daemon;
use crate::{DRAIN_TIMEOUT, DaemonError, reload};

impl Daemon {
    /// Serves until asked to stop, then shuts down in order; returns when the mount is gone.
    pub(crate) async fn serve(mut self) -> Result<(), DaemonError> {
        let (reason, drain_timeout) = loop {
            tokio::select! {
                request = self.requests.recv() => match request {
                    Some(Request::Shutdown(who, drain)) => break (who, drain.unwrap_or(DRAIN_TIMEOUT)),
                    Some(Request::Restart(who)) if self.session.kept => self.hand_over(who).await,
                    Some(Request::Restart(who)) => {
                        tracing::warn!(who, "2.11 asked to restart, but nothing holds the FUSE connection: stopping instead");
                        break (who, DRAIN_TIMEOUT);
                    }
                    Some(Request::Reload) => reload::reload(
                        &mut self.config,
                        self.config_file.as_deref(),
                        &self.shared.fs,
                        &self.shared.store,
                    ),
                    None => break ("signal thread ended", DRAIN_TIMEOUT),
                },
                ended = &mut self.session.ended => {
                    self.cancel.cancel();
                    return self.session_ended(ended).await;
                }
            }
        };
        self.shutdown(reason, drain_timeout).await;
        Ok(())
    }
}
