//! The search index in the running daemon (5.2, 6.5): checked after the mount is up, rebuilt from SQLite if
//! damaged, and kept in line with the library by a lossless consumer of the event bus. `musicfs search`
//! queries it. When it is unavailable, search says so and the filesystem never notices: nothing on the read
//! path touches it, and its task is not critical to the watchdog.
//!
//! Memory (5.5): an open index holds its term dictionaries and columns on the heap, tens of MB at 100 000
//! tracks. So it is open only while used: it closes after [`IDLE_CLOSE`] without a query or a change, and
//! the next one opens it again (a fraction of a second).

use crate::events::Event;
use musicfs_core::events::{Delivery, Subscription};
use musicfs_core::sync_util::lock_or_recover;
use musicfs_meta::Db;
use musicfs_search::{Hit, SearchIndex};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long an unused index stays open.
pub const IDLE_CLOSE: Duration = Duration::from_secs(60);

/// Where the index lives under the cache directory.
pub fn index_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("search").join("v1")
}

/// Where search stands, as `musicfs status` shows it: `opening`, `ready`, `rebuilding`, `closed` (at
/// shutdown), or `unavailable: WHY` (6.5). Sent over the control socket as that string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SearchState {
    Opening,
    /// Checked and usable, whether the index is open right now or closed while idle.
    Ready,
    Rebuilding,
    Closed,
    Unavailable(String),
}

impl fmt::Display for SearchState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SearchState::Opening => f.write_str("opening"),
            SearchState::Ready => f.write_str("ready"),
            SearchState::Rebuilding => f.write_str("rebuilding"),
            SearchState::Closed => f.write_str("closed"),
            SearchState::Unavailable(why) => write!(f, "unavailable: {why}"),
        }
    }
}

/// A string that is none of the [`SearchState`]s.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a search state")]
pub struct UnknownSearchState(pub String);

impl FromStr for SearchState {
    type Err = UnknownSearchState;

    fn from_str(text: &str) -> Result<Self, UnknownSearchState> {
        Ok(match text {
            "opening" => SearchState::Opening,
            "ready" => SearchState::Ready,
            "rebuilding" => SearchState::Rebuilding,
            "closed" => SearchState::Closed,
            other => match other.strip_prefix("unavailable: ") {
                Some(why) => SearchState::Unavailable(why.to_owned()),
                None => return Err(UnknownSearchState(other.to_owned())),
            },
        })
    }
}

impl Serialize for SearchState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SearchState {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

pub struct Search {
    dir: PathBuf,
    db: Arc<Db>,
    /// Open while in use; `None` when closed (idle) or not available.
    index: Mutex<Option<Arc<SearchIndex>>>,
    last_used: Mutex<Instant>,
    /// Opening, ready (open or closed), or why search is unavailable.
    state: Mutex<SearchState>,
    /// Searchable documents at the last open or change, for status while the index is closed.
    documents: AtomicU64,
    pub events: tokio::sync::Mutex<Subscription<Event>>,
}

impl Search {
    pub fn new(cache_dir: &Path, db: Arc<Db>, events: Subscription<Event>) -> Search {
        Search {
            dir: index_dir(cache_dir),
            db,
            index: Mutex::new(None),
            last_used: Mutex::new(Instant::now()),
            state: Mutex::new(SearchState::Opening),
            documents: AtomicU64::new(0),
            events: tokio::sync::Mutex::new(events),
        }
    }

    /// The search indexer (supervised, not critical): checks the index (rebuilding a damaged one, re-indexing
    /// what a crash lost), then re-indexes after every library change and after lost events, and closes the
    /// index when idle. A failure to open ends the task with an error, so the supervisor retries with backoff
    /// while search stays unavailable.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> Result<(), SearchFailure> {
        let mut events = self.events.lock().await;
        if *lock_or_recover(&self.state) != SearchState::Ready {
            let (dir, db) = (self.dir.clone(), self.db.clone());
            let opened = blocking(move || {
                let tracks = db.load_tracks()?;
                Ok(SearchIndex::open_or_rebuild(&dir, &tracks)?)
            })
            .await;
            match opened {
                Ok((index, how)) => {
                    tracing::info!(documents = index.doc_count(), ?how, "search index ready");
                    // Checked, and closed until someone searches (5.5).
                    self.documents.store(index.doc_count(), Ordering::Relaxed);
                    drop(index);
                    crate::process::release_freed_memory();
                    *lock_or_recover(&self.state) = SearchState::Ready;
                }
                Err(e) => {
                    crate::process::release_freed_memory();
                    *lock_or_recover(&self.state) = SearchState::Unavailable(e.to_string());
                    return Err(SearchFailure::Unavailable(Box::new(e)));
                }
            }
        }
        let mut idle_check = tokio::time::interval(IDLE_CLOSE / 4);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = idle_check.tick() => self.close_if_idle(),
                delivery = events.next() => match delivery {
                    Delivery::Event(Event::LibraryChanged { .. }) | Delivery::Lost(_) => self.catch_up().await?,
                    Delivery::Event(_) => {}
                    Delivery::Closed => return Ok(()),
                },
            }
        }
    }

    /// Holds `index` open and notes its use.
    fn keep(&self, index: Arc<SearchIndex>) {
        self.documents.store(index.doc_count(), Ordering::Relaxed);
        *lock_or_recover(&self.index) = Some(index);
        *lock_or_recover(&self.last_used) = Instant::now();
    }

    fn close_if_idle(&self) {
        if lock_or_recover(&self.last_used).elapsed() < IDLE_CLOSE {
            return;
        }
        if let Some(index) = lock_or_recover(&self.index).take() {
            drop(index);
            crate::process::release_freed_memory();
            tracing::debug!("search index closed while idle (5.5)");
        }
    }

    /// The open index, opened again if it was closed while idle.
    async fn open_index(&self) -> Result<Arc<SearchIndex>, SearchFailure> {
        if let Some(index) = lock_or_recover(&self.index).clone() {
            *lock_or_recover(&self.last_used) = Instant::now();
            return Ok(index);
        }
        let state = lock_or_recover(&self.state).clone();
        if state != SearchState::Ready {
            return Err(SearchFailure::NotReady(state));
        }
        let dir = self.dir.clone();
        let index = blocking(move || Ok(SearchIndex::open(&dir)?))
            .await
            .map(Arc::new)
            .map_err(|e| SearchFailure::CannotOpen(Box::new(e)))?;
        self.keep(index.clone());
        Ok(index)
    }

    /// Re-indexes what differs from the database (per-document fingerprints), and commits.
    async fn catch_up(&self) -> Result<(), SearchFailure> {
        let index = self.open_index().await?;
        let db = self.db.clone();
        let result = blocking(move || {
            let tracks = db.load_tracks()?;
            let changed = index.reconcile(&tracks)?;
            Ok((changed, index.doc_count()))
        })
        .await;
        crate::process::release_freed_memory();
        match result {
            Ok((changed, documents)) => {
                self.documents.store(documents, Ordering::Relaxed);
                tracing::debug!(changed, "search index caught up with the library");
                Ok(())
            }
            // A failed commit rolled back; the next change (or the restarted task) reconciles again.
            Err(e) => Err(SearchFailure::CatchUp(Box::new(e))),
        }
    }

    pub async fn query(&self, text: String, limit: usize) -> Result<Vec<Hit>, SearchFailure> {
        let index = self.open_index().await?;
        blocking(move || Ok(index.search(&text, limit)?)).await
    }

    /// `musicfs search rebuild` on the running daemon (6.5): every document replaced from the database. An
    /// index too damaged for that, or one that could not be opened at all, is thrown away and built anew.
    pub async fn rebuild(&self) -> Result<u64, SearchFailure> {
        let current = lock_or_recover(&self.index).take();
        *lock_or_recover(&self.state) = SearchState::Rebuilding;
        let (db, dir) = (self.db.clone(), self.dir.clone());
        let rebuilt = blocking(move || {
            let tracks = db.load_tracks()?;
            if let Some(index) = current {
                match index.rebuild(&tracks) {
                    Ok(()) => return Ok(index),
                    Err(e) => {
                        tracing::warn!(error = %e, "6.5 search index too damaged to rebuild in place; recreating it")
                    }
                }
            }
            Ok(SearchIndex::recreate(&dir, &tracks).map(Arc::new)?)
        })
        .await;
        crate::process::release_freed_memory();
        match rebuilt {
            Ok(index) => {
                let documents = index.doc_count();
                self.keep(index);
                *lock_or_recover(&self.state) = SearchState::Ready;
                Ok(documents)
            }
            Err(e) => {
                *lock_or_recover(&self.state) = SearchState::Unavailable(e.to_string());
                Err(e)
            }
        }
    }

    /// For status: the state and the number of documents searchable.
    pub fn status(&self) -> (SearchState, u64) {
        (lock_or_recover(&self.state).clone(), self.documents.load(Ordering::Relaxed))
    }

    /// At shutdown (2.3), before the database checkpoint: commit what is queued and wait for merges.
    pub fn close(&self) {
        let Some(index) = lock_or_recover(&self.index).take() else { return };
        *lock_or_recover(&self.state) = SearchState::Closed;
        let result = match Arc::try_unwrap(index) {
            Ok(index) => index.shutdown(),
            // A search still running holds it: commit, and let the last holder drop it.
            Err(shared) => shared.commit(),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "search index could not commit at shutdown; the next start reconciles it");
        }
    }
}

/// Why search could not answer or keep up with the library.
#[derive(Debug, thiserror::Error)]
pub enum SearchFailure {
    /// Search is opening, rebuilding, closed or unavailable.
    #[error("search is {0}")]
    NotReady(SearchState),
    #[error("search index cannot be opened: {0}; `musicfs search rebuild` rebuilds it")]
    CannotOpen(#[source] Box<SearchFailure>),
    /// The indexer could not check the index at start; search stays unavailable until a retry succeeds.
    #[error("6.5 search index unavailable: {0}")]
    Unavailable(#[source] Box<SearchFailure>),
    #[error("search index could not catch up: {0}")]
    CatchUp(#[source] Box<SearchFailure>),
    #[error(transparent)]
    Index(#[from] musicfs_search::SearchError),
    #[error(transparent)]
    Database(#[from] musicfs_meta::DbError),
    #[error("search task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Runs index work on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SearchFailure> + Send + 'static,
) -> Result<T, SearchFailure> {
    tokio::task::spawn_blocking(work).await?
}

/// `musicfs search rebuild` with no daemon running: throw the index away and build it anew from the database.
pub fn rebuild_offline(cache_dir: &Path) -> Result<u64, crate::DaemonError> {
    let _lock = crate::CacheLock::acquire(cache_dir)?;
    let db = Db::open(&cache_dir.join(crate::META_DB))?;
    let tracks = db.load_tracks()?;
    let index = SearchIndex::recreate(&index_dir(cache_dir), &tracks)?;
    let documents = index.doc_count();
    index.shutdown()?;
    Ok(documents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_states_read_back_what_status_shows() {
        for state in [
            SearchState::Opening,
            SearchState::Ready,
            SearchState::Rebuilding,
            SearchState::Closed,
            SearchState::Unavailable("index damaged: bad segment".into()),
        ] {
            assert_eq!(state.to_string().parse::<SearchState>().unwrap(), state);
        }
        assert!("sleeping".parse::<SearchState>().is_err());
    }
}
