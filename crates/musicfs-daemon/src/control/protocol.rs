//! The control protocol, the one definition both ends use: the client sends one [`Command`] as a JSON line,
//! the daemon answers one JSON line (the Prometheus text for `metrics`), or `{"error": …}` when it could not
//! do what was asked. `events` instead streams one JSON line per event until either side hangs up.
//!
//! The JSON is read by tests and probes (`musicfs status --json`, `musicfs sync`, `musicfs search --json`),
//! so field names and shapes are a compatibility promise.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use crate::status::Status;

/// What the client asks for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Answered with a [`Status`].
    Status,
    /// Answered with Prometheus text.
    Metrics,
    /// Start an ordered shutdown; answered with a [`ShutdownAnswer`] at once, before the daemon has stopped.
    Shutdown {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        drain_timeout_secs: Option<f64>,
    },
    /// Restart without unmounting (2.11): the daemon saves its state and exits with
    /// [`crate::RESTART_EXIT_CODE`], leaving the FUSE connection with the service manager for the next one;
    /// answered with a [`ShutdownAnswer`] at once, or an error when nothing holds the connection.
    Restart,
    /// Run a delta sync now; answered with its [`SyncReport`].
    Sync,
    /// Stream events until the client hangs up.
    Events,
    /// Tracks matching every word of `query`, best first; answered with a [`SearchAnswer`].
    Search {
        query: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// Rebuild the search index from the database (6.5); answered with a [`RebuildAnswer`].
    SearchRebuild,
}

/// The most hits a search answers when the command names no limit.
pub const DEFAULT_SEARCH_LIMIT: usize = 20;

/// `{"error": …}`: the daemon understood the connection but could not do what was asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    pub error: String,
}

/// The answer to [`Command::Shutdown`]: the daemon's pid, so the client can wait for it to exit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownAnswer {
    pub shutting_down: bool,
    pub pid: u32,
}

/// What one delta sync found (the answer to [`Command::Sync`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub renamed: usize,
    /// Tracks in the library after the sync.
    pub tracks: usize,
    /// Origins whose listing failed; their tracks were kept as they were.
    pub unreachable: Vec<String>,
}

/// The answer to [`Command::Search`]: hits best first, with their paths inside `mount_point`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchAnswer {
    pub hits: Vec<SearchHit>,
    pub mount_point: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    /// The track's path inside the mount.
    pub path: String,
    pub score: f32,
    pub track_id: i64,
}

/// The answer to [`Command::SearchRebuild`] (and of an offline rebuild): documents now searchable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildAnswer {
    pub documents: u64,
    pub rebuilt: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command lines older clients send still parse, and ours parse back to themselves.
    #[test]
    fn commands_read_the_wire_format() {
        let cases = [
            (r#"{"cmd":"status"}"#, Command::Status),
            (r#"{"cmd":"shutdown"}"#, Command::Shutdown { drain_timeout_secs: None }),
            (r#"{"cmd":"shutdown","drain_timeout_secs":2}"#, Command::Shutdown { drain_timeout_secs: Some(2.0) }),
            (r#"{"cmd":"restart"}"#, Command::Restart),
            (r#"{"cmd":"search","query":"a b","limit":5}"#, Command::Search { query: "a b".into(), limit: Some(5) }),
            (r#"{"cmd":"search_rebuild"}"#, Command::SearchRebuild),
        ];
        for (line, command) in cases {
            assert_eq!(serde_json::from_str::<Command>(line).unwrap(), command, "{line}");
            let again = serde_json::to_string(&command).unwrap();
            assert_eq!(serde_json::from_str::<Command>(&again).unwrap(), command, "{again}");
        }
        assert!(serde_json::from_str::<Command>(r#"{"cmd":"reboot"}"#).is_err());
    }

    #[test]
    fn answers_keep_their_field_names() {
        let sync = SyncReport { added: 1, unreachable: vec!["nas".into()], ..SyncReport::default() };
        assert_eq!(
            serde_json::to_string(&sync).unwrap(),
            r#"{"added":1,"changed":0,"removed":0,"renamed":0,"tracks":0,"unreachable":["nas"]}"#
        );
        let rebuilt = RebuildAnswer { documents: 6, rebuilt: true };
        assert_eq!(serde_json::to_string(&rebuilt).unwrap(), r#"{"documents":6,"rebuilt":true}"#);
        let search = SearchAnswer {
            hits: vec![SearchHit { path: "A/B/01 - C.flac".into(), score: 1.5, track_id: 7 }],
            mount_point: "/m".into(),
        };
        assert_eq!(
            serde_json::to_string(&search).unwrap(),
            r#"{"hits":[{"path":"A/B/01 - C.flac","score":1.5,"track_id":7}],"mount_point":"/m"}"#
        );
        let bye = ShutdownAnswer { shutting_down: true, pid: 42 };
        assert_eq!(serde_json::to_string(&bye).unwrap(), r#"{"shutting_down":true,"pid":42}"#);
    }
}
