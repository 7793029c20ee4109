//! Full-text search over the library's tags: a tantivy index (the daemon keeps it in
//! `cache_dir/search/v1`) fed from the metadata database, which stays the only source of truth. Anything
//! here can be thrown away and rebuilt from SQLite.
//!
//! How it fails (IDs from `docs/failure-modes.toml`):
//!
//! - **6.5 search unavailable is not filesystem unavailable.** Every call returns a [`SearchError`]; nothing
//!   here panics on hostile query text or a damaged index (panics inside tantivy during the open-time check
//!   or a search are caught and returned as [`SearchError::Panicked`]), and segment files are read with
//!   `pread`, not `mmap`, so a file truncated or unreadable under a running daemon gives an error instead of a
//!   SIGBUS that would take the mount down (`directory.rs`). The daemon treats a search error as
//!   "search is unavailable", never as a failed FUSE request, and `musicfs search rebuild` ends in
//!   [`SearchIndex::rebuild`] or [`SearchIndex::recreate`].
//! - **2.4 / 5.2 damage is found at start and rebuilt.** [`SearchIndex::open`] checks that the index opens,
//!   that it has this build's schema, that every segment file matches its checksum, that its columns and
//!   stored documents read back and that a query answers. [`SearchIndex::open_or_rebuild`] moves a damaged
//!   directory aside (`<dir>.corrupt`, only the latest is kept) and rebuilds from the tracks, with one warning
//!   that names 6.5 and 2.4. A lock held by another writer is not damage ([`SearchError::Locked`]).
//! - **5.2 failed commits roll back.** When [`SearchIndex::commit`] fails, the writer is rolled back
//!   (`IndexWriter::rollback`): readers keep the last committed state, the failed batch is discarded (its
//!   size is in [`SearchError::CommitFailed`]) and does not leak into a later commit. The caller re-applies it
//!   or rebuilds.
//! - **5.2 loss in a crash is bounded.** Changes become durable only at a commit, so a crash loses at most
//!   [`SearchIndex::uncommitted`] changes. The daemon leaves none queued: its indexer
//!   (`crates/musicfs-daemon/src/search.rs`) answers every delta sync that changed the library, and every loss
//!   of events, with one [`SearchIndex::reconcile`], which commits before it returns; at shutdown it commits
//!   once more before the SQLite checkpoint (2.3). So a crash loses at most the reconcile in progress, and
//!   that loss is repaired at the next start: [`SearchIndex::open_or_rebuild`] reconciles the index with the
//!   tracks (a per-document fingerprint) and re-indexes what is missing, stale or gone.

mod directory;
mod query;

pub use query::{MAX_QUERY_BYTES, MAX_QUERY_TERMS};

use directory::PreadDirectory;
use musicfs_core::sync_util::lock_or_recover;
use musicfs_meta::Track;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use tantivy::collector::TopDocs;
use tantivy::indexer::IndexWriterOptions;
use tantivy::query::AllQuery;
use tantivy::schema::{FAST, Field, INDEXED, IndexRecordOption, STORED, Schema, TextFieldIndexing, TextOptions, Value};
use tantivy::tokenizer::{AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer};
use tantivy::{Index, IndexReader, IndexSettings, IndexWriter, ReloadPolicy, TantivyDocument, TantivyError, Term};

/// Most hits one search returns, whatever the caller asks for.
pub const MAX_HITS: usize = 1_000;

const TOKENIZER: &str = "musicfs";
/// One indexing thread with tantivy's minimum-plus arena: a music library is small, this machine has 2 cores.
const WRITER_MEMORY: usize = 20_000_000;
const META_FILE: &str = "meta.json";

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search index at {dir} is damaged: {reason}")]
    Damaged { dir: PathBuf, reason: String },
    #[error("search index at {dir} is locked by another writer (is another musicfs running?)")]
    Locked { dir: PathBuf },
    #[error("search index I/O error at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "search index commit failed, rolled back to the last commit ({discarded} uncommitted changes discarded): {reason}"
    )]
    CommitFailed { discarded: usize, reason: String },
    #[error("search query is too long ({len} bytes; at most {MAX_QUERY_BYTES})")]
    QueryTooLong { len: usize },
    #[error("search query has too many words (at most {MAX_QUERY_TERMS})")]
    TooManyTerms,
    #[error("search index panicked while {what}: {message}")]
    Panicked { what: &'static str, message: String },
    #[error("search index error: {0}")]
    Tantivy(#[from] TantivyError),
}

/// One search result.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub track_id: i64,
    /// Path inside the mount, as in [`Track::vpath`].
    pub vpath: String,
    pub score: f32,
}

/// How [`SearchIndex::open_or_rebuild`] found the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opened {
    /// It was healthy; `reindexed` tracks were missing, stale or gone (lost before a commit) and were re-applied.
    Healthy { reindexed: usize },
    /// There was none; it was built from the tracks.
    Created,
    /// It was damaged: moved aside to `moved_to` (or removed, if `None`) and rebuilt from the tracks.
    Rebuilt { reason: String, moved_to: Option<PathBuf> },
}

#[derive(Clone, Copy)]
pub(crate) struct Fields {
    track_id: Field,
    fingerprint: Field,
    vpath: Field,
    pub(crate) artist: Field,
    pub(crate) album: Field,
    pub(crate) title: Field,
    pub(crate) year: Field,
    pub(crate) path: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default().set_tokenizer(TOKENIZER).set_index_option(IndexRecordOption::WithFreqs),
    );
    let fields = Fields {
        track_id: b.add_i64_field("track_id", INDEXED | STORED | FAST),
        fingerprint: b.add_u64_field("fingerprint", FAST),
        vpath: b.add_text_field("vpath", STORED),
        artist: b.add_text_field("artist", text.clone()),
        album: b.add_text_field("album", text.clone()),
        title: b.add_text_field("title", text.clone()),
        year: b.add_text_field("year", text.clone()),
        path: b.add_text_field("path", text),
    };
    (b.build(), fields)
}

/// Words, lowercased, accents folded (`Björk` is found by `bjork`), absurdly long tokens dropped.
fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// Everything indexed about a track, hashed: when it differs from the stored one, the document is stale.
fn fingerprint(t: &Track) -> u64 {
    let mut h = blake3::Hasher::new();
    let tags = &t.tags;
    for part in [&tags.artist, &tags.album, &tags.title] {
        h.update(&[part.is_some() as u8]);
        h.update(part.as_deref().unwrap_or("").as_bytes());
        h.update(&[0xff]);
    }
    h.update(&tags.year.map_or(-1, i64::from).to_le_bytes());
    h.update(t.vpath.as_bytes());
    h.update(&[0xff]);
    h.update(t.rel_path.as_os_str().as_encoded_bytes());
    let bytes = h.finalize();
    u64::from_le_bytes(bytes.as_bytes()[..8].try_into().unwrap_or_default())
}

/// Runs `f`, turning a panic inside tantivy into an error (6.5: search failures stay search failures).
fn guarded<T>(what: &'static str, f: impl FnOnce() -> Result<T, SearchError>) -> Result<T, SearchError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into());
        Err(SearchError::Panicked { what, message })
    })
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SearchError + '_ {
    move |source| SearchError::Io { path: path.to_owned(), source }
}

struct WriterState {
    /// Open only while changes are queued: `None` when idle (after a commit, or a rollback that itself
    /// failed); the next write opens a new writer.
    writer: Option<IndexWriter>,
    uncommitted: usize,
}

/// The search index of one library. Cheap to share (`&self` everywhere); holds the directory's writer lock.
pub struct SearchIndex {
    dir: PathBuf,
    index: Index,
    fields: Fields,
    analyzer: TextAnalyzer,
    reader: IndexReader,
    writer: Mutex<WriterState>,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl SearchIndex {
    /// Opens the index in `dir`, creating an empty one when there is none, and checks it (2.4): it opens, has
    /// this build's schema, every segment file matches its checksum, the id columns and a stored document
    /// read back, and a query answers. Damage is [`SearchError::Damaged`]; nothing is repaired here.
    pub fn open(dir: &Path) -> Result<SearchIndex, SearchError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let (schema, fields) = schema();
        let damaged = |reason: String| SearchError::Damaged { dir: dir.to_owned(), reason };
        let index = if dir.join(META_FILE).exists() {
            guarded("opening the index", || {
                let directory = PreadDirectory::open(dir).map_err(|e| damaged(e.to_string()))?;
                Index::open(directory).map_err(|e| damaged(e.to_string()))
            })?
        } else {
            let leftovers: Vec<String> = std::fs::read_dir(dir)
                .map_err(io_error(dir))?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| !name.starts_with(".tantivy-"))
                .collect();
            if !leftovers.is_empty() {
                return Err(damaged(format!("{META_FILE} is missing but {} index files remain", leftovers.len())));
            }
            let directory = PreadDirectory::open(dir).map_err(TantivyError::from)?;
            Index::create(directory, schema.clone(), IndexSettings::default())?
        };
        index.tokenizers().register(TOKENIZER, analyzer());
        let reader = guarded("checking the index", || check(&index, &schema, &fields)).map_err(|e| match e {
            SearchError::Damaged { reason, .. } => damaged(reason),
            other => damaged(other.to_string()),
        })?;
        // Only to find out now whether another process holds the index; writers are opened when needed.
        drop(new_writer(&index, dir)?);
        Ok(SearchIndex {
            dir: dir.to_owned(),
            index,
            fields,
            analyzer: analyzer(),
            reader,
            writer: Mutex::new(WriterState { writer: None, uncommitted: 0 }),
        })
    }

    /// What the daemon calls at start: opens the index; if it is missing or damaged, builds it anew from
    /// `tracks` (a damaged one is moved aside first, with one warning naming 6.5 and 2.4); if it is healthy,
    /// reconciles it with `tracks` so changes lost before a commit in a crash are re-indexed (5.2).
    pub fn open_or_rebuild(dir: &Path, tracks: &[Track]) -> Result<(SearchIndex, Opened), SearchError> {
        let existed = dir.join(META_FILE).exists();
        match SearchIndex::open(dir) {
            Ok(index) if existed => {
                let reindexed = index.reconcile(tracks)?;
                if reindexed > 0 {
                    tracing::info!(dir = %dir.display(), reindexed, "5.2 search index was behind the metadata database; re-indexed the difference");
                }
                Ok((index, Opened::Healthy { reindexed }))
            }
            Ok(index) => {
                index.fill(tracks)?;
                tracing::info!(dir = %dir.display(), tracks = tracks.len(), "search index created from the metadata database");
                Ok((index, Opened::Created))
            }
            Err(SearchError::Damaged { reason, .. }) => {
                let moved_to = move_aside(dir)?;
                let index = SearchIndex::open(dir)?;
                index.fill(tracks)?;
                tracing::warn!(
                    dir = %dir.display(),
                    moved_to = %moved_to.as_deref().map_or("(removed)".into(), |p| p.display().to_string()),
                    tracks = tracks.len(),
                    %reason,
                    "6.5/2.4 search index was damaged; moved it aside and rebuilt it from the metadata database"
                );
                Ok((index, Opened::Rebuilt { reason, moved_to }))
            }
            Err(e) => Err(e),
        }
    }

    /// Throws away whatever is in `dir` (moved aside to `<dir>.corrupt`) and builds a new index from
    /// `tracks`: `musicfs search rebuild` when no daemon holds the index, or when it cannot be opened at all.
    pub fn recreate(dir: &Path, tracks: &[Track]) -> Result<SearchIndex, SearchError> {
        let moved_to = move_aside(dir)?;
        let index = SearchIndex::open(dir)?;
        index.fill(tracks)?;
        tracing::warn!(dir = %dir.display(), moved_to = ?moved_to, tracks = tracks.len(), "6.5 search index recreated from the metadata database");
        Ok(index)
    }

    /// Replaces every document with `tracks` in one commit (`musicfs search rebuild` on a running daemon,
    /// 6.5). Searches see the old documents until the commit; a failed rebuild rolls back to them.
    pub fn rebuild(&self, tracks: &[Track]) -> Result<(), SearchError> {
        let mut state = self.lock_writer();
        let writer = self.writer_of(&mut state)?;
        // Changes still queued are superseded by `tracks`; `delete_all_documents` would not reach them.
        writer.rollback()?;
        writer.delete_all_documents()?;
        state.uncommitted = 1;
        self.apply_locked(&mut state, tracks, &[])?;
        self.commit_locked(&mut state)?;
        tracing::warn!(dir = %self.dir.display(), tracks = tracks.len(), "6.5 search index rebuilt from the metadata database");
        Ok(())
    }

    /// Queues changes: `upserts` replace the documents of their track ids (or add them), `removed_ids` go.
    /// Nothing is visible or durable until [`commit`](Self::commit).
    pub fn apply(&self, upserts: &[Track], removed_ids: &[i64]) -> Result<(), SearchError> {
        let mut state = self.lock_writer();
        self.apply_locked(&mut state, upserts, removed_ids)
    }

    /// Makes the queued changes durable and searchable. On failure the writer is rolled back to the last
    /// commit (5.2): searches keep answering from it, and the queued changes are discarded.
    pub fn commit(&self) -> Result<(), SearchError> {
        let mut state = self.lock_writer();
        self.commit_locked(&mut state)
    }

    /// Changes queued since the last commit: what a crash now would lose (5.2).
    pub fn uncommitted(&self) -> usize {
        self.lock_writer().uncommitted
    }

    /// Documents in the last commit.
    pub fn doc_count(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Tracks matching every word of `query` (see `query.rs` for the little syntax there is),
    /// best first, at most `limit` (capped at [`MAX_HITS`]). User text never panics: it gives hits or an error.
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<Hit>, SearchError> {
        let limit = limit.min(MAX_HITS);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut analyzer = self.analyzer.clone();
        let Some(query) = query::build(query, &self.fields, &mut analyzer)? else {
            return Ok(Vec::new());
        };
        guarded("searching", || {
            let searcher = self.reader.searcher();
            let top = searcher.search(&query, &TopDocs::with_limit(limit).order_by_score())?;
            let mut hits = Vec::with_capacity(top.len());
            for (score, address) in top {
                let doc: TantivyDocument = searcher.doc(address)?;
                let track_id = doc.get_first(self.fields.track_id).and_then(|v| v.as_i64());
                let vpath = doc.get_first(self.fields.vpath).and_then(|v| v.as_str());
                if let (Some(track_id), Some(vpath)) = (track_id, vpath) {
                    hits.push(Hit { track_id, vpath: vpath.to_owned(), score });
                }
            }
            Ok(hits)
        })
    }

    /// Brings the committed index in line with `tracks`: indexes tracks that are missing or whose indexed
    /// fields changed, removes documents of tracks that are gone, and commits. Returns how many changed.
    pub fn reconcile(&self, tracks: &[Track]) -> Result<usize, SearchError> {
        let mut indexed = guarded("reading the index", || self.indexed_fingerprints())?;
        let mut upserts = Vec::new();
        for track in tracks {
            match indexed.remove(&track.id) {
                Some(Some(fp)) if fp == fingerprint(track) => {}
                _ => upserts.push(track.clone()),
            }
        }
        let removed: Vec<i64> = indexed.into_keys().collect();
        let changed = upserts.len() + removed.len();
        if changed > 0 {
            let mut state = self.lock_writer();
            self.apply_locked(&mut state, &upserts, &removed)?;
            self.commit_locked(&mut state)?;
        }
        Ok(changed)
    }

    /// Commits what is queued and waits for background merges: for the daemon's ordered shutdown (2.3).
    pub fn shutdown(self) -> Result<(), SearchError> {
        let mut state = self.lock_writer();
        self.commit_locked(&mut state)?;
        if let Some(writer) = state.writer.take() {
            writer.wait_merging_threads()?;
        }
        Ok(())
    }

    /// Where the index lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock_writer(&self) -> MutexGuard<'_, WriterState> {
        lock_or_recover(&self.writer)
    }

    fn writer_of<'a>(&self, state: &'a mut WriterState) -> Result<&'a mut IndexWriter, SearchError> {
        if state.writer.is_none() {
            state.writer = Some(new_writer(&self.index, &self.dir)?);
        }
        state.writer.as_mut().ok_or_else(|| SearchError::Locked { dir: self.dir.clone() })
    }

    fn apply_locked(&self, state: &mut WriterState, upserts: &[Track], removed_ids: &[i64]) -> Result<(), SearchError> {
        let id_term = |id: i64| Term::from_field_i64(self.fields.track_id, id);
        let writer = self.writer_of(state)?;
        let mut queued = 0;
        let result = (|| {
            for &id in removed_ids {
                writer.delete_term(id_term(id));
                queued += 1;
            }
            for track in upserts {
                writer.delete_term(id_term(track.id));
                writer.add_document(self.document(track))?;
                queued += 1;
            }
            Ok(())
        })();
        state.uncommitted += queued;
        result
    }

    fn commit_locked(&self, state: &mut WriterState) -> Result<(), SearchError> {
        let discarded = state.uncommitted;
        let result = commit_writer(self.writer_of(state)?);
        match result {
            Ok(()) => {
                state.uncommitted = 0;
                // 5.5: an idle writer holds its indexing arena and threads (about 25 MB at 100 000 tracks);
                // the library changes a few times an hour, so the next change opens a new one.
                if let Some(writer) = state.writer.take() {
                    writer.wait_merging_threads()?;
                }
                self.reader.reload()?;
                Ok(())
            }
            Err(e) => {
                if let Some(Err(rollback)) = state.writer.as_mut().map(IndexWriter::rollback) {
                    tracing::error!(error = %rollback, "5.2 search index rollback failed; reopening the writer");
                    state.writer = None;
                }
                state.uncommitted = 0;
                tracing::warn!(error = %e, discarded, "5.2 search index commit failed; rolled back to the last commit");
                Err(SearchError::CommitFailed { discarded, reason: e.to_string() })
            }
        }
    }

    /// Adds `tracks` to a fresh, empty index and commits them.
    fn fill(&self, tracks: &[Track]) -> Result<(), SearchError> {
        let mut state = self.lock_writer();
        self.apply_locked(&mut state, tracks, &[])?;
        self.commit_locked(&mut state)
    }

    /// Track id → fingerprint of every live document; `None` for an id that appears twice.
    fn indexed_fingerprints(&self) -> Result<HashMap<i64, Option<u64>>, SearchError> {
        let searcher = self.reader.searcher();
        let mut out = HashMap::new();
        for segment in searcher.segment_readers() {
            let ids = segment.fast_fields().i64("track_id")?;
            let fps = segment.fast_fields().u64("fingerprint")?;
            for doc in segment.doc_ids_alive() {
                let Some(id) = ids.first(doc) else { continue };
                out.entry(id).and_modify(|fp| *fp = None).or_insert(fps.first(doc));
            }
        }
        Ok(out)
    }

    fn document(&self, t: &Track) -> TantivyDocument {
        let f = &self.fields;
        let mut doc = TantivyDocument::new();
        doc.add_i64(f.track_id, t.id);
        doc.add_u64(f.fingerprint, fingerprint(t));
        doc.add_text(f.vpath, &t.vpath);
        for (field, value) in [(f.artist, &t.tags.artist), (f.album, &t.tags.album), (f.title, &t.tags.title)] {
            if let Some(value) = value {
                doc.add_text(field, value);
            }
        }
        if let Some(year) = t.tags.year {
            doc.add_text(f.year, year.to_string());
        }
        doc.add_text(f.path, &t.vpath);
        doc.add_text(f.path, t.rel_path.to_string_lossy());
        doc
    }
}

/// The commit's effect boundary: segments are flushed by `prepare_commit`, the commit then writes `meta.json`.
fn commit_writer(writer: &mut IndexWriter) -> Result<(), TantivyError> {
    let prepared = writer.prepare_commit()?;
    #[cfg(feature = "failpoints")]
    if fail::eval("search::commit::fail", |_| ()).is_some() {
        drop(prepared);
        return Err(TantivyError::IoError(std::sync::Arc::new(std::io::Error::other(
            "injected by failpoint search::commit::fail",
        ))));
    }
    prepared.commit()?;
    Ok(())
}

fn new_writer(index: &Index, dir: &Path) -> Result<IndexWriter, SearchError> {
    let options = IndexWriterOptions::builder()
        .memory_budget_per_thread(WRITER_MEMORY)
        .num_worker_threads(1)
        .num_merge_threads(1)
        .build();
    index.writer_with_options(options).map_err(|e| match e {
        TantivyError::LockFailure(..) => SearchError::Locked { dir: dir.to_owned() },
        other => other.into(),
    })
}

/// The open-time health check (2.4); returns the reader it checked with.
fn check(index: &Index, schema: &Schema, fields: &Fields) -> Result<IndexReader, SearchError> {
    let damaged = |reason: String| SearchError::Damaged { dir: PathBuf::new(), reason };
    if index.schema() != *schema {
        return Err(damaged("its schema is not this build's".into()));
    }
    let bad = index.validate_checksum().map_err(|e| damaged(e.to_string()))?;
    if !bad.is_empty() {
        let mut names: Vec<String> = bad.iter().map(|p| p.display().to_string()).collect();
        names.sort();
        return Err(damaged(format!("checksum mismatch in {}", names.join(", "))));
    }
    let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
    let searcher = reader.searcher();
    for segment in searcher.segment_readers() {
        let ids = segment.fast_fields().i64("track_id")?;
        if let Some(doc) = segment.doc_ids_alive().next()
            && ids.first(doc).is_none()
        {
            return Err(damaged("a document has no track id".into()));
        }
    }
    let top = searcher.search(&AllQuery, &TopDocs::with_limit(1).order_by_score())?;
    if let Some((_, address)) = top.first() {
        let doc: TantivyDocument = searcher.doc(*address)?;
        if doc.get_first(fields.vpath).and_then(|v| v.as_str()).is_none() {
            return Err(damaged("a stored document has no path".into()));
        }
    }
    Ok(reader)
}

/// Moves `dir` to `<dir>.corrupt` (replacing an older one) so it can be inspected; removes it if it cannot be
/// moved. Returns where it went, `None` when removed or when there was nothing.
fn move_aside(dir: &Path) -> Result<Option<PathBuf>, SearchError> {
    if !dir.exists() {
        return Ok(None);
    }
    let mut name = dir.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "search".into());
    name.push(".corrupt");
    let aside = dir.with_file_name(name);
    if aside.exists() {
        let _ = std::fs::remove_dir_all(&aside);
    }
    match std::fs::rename(dir, &aside) {
        Ok(()) => Ok(Some(aside)),
        Err(_) => {
            std::fs::remove_dir_all(dir).map_err(io_error(dir))?;
            Ok(None)
        }
    }
}
