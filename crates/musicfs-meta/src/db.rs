//! The metadata database (SQLite, WAL): tracks with their tags and virtual paths, stable inode numbers,
//! and chunk manifests. A restart loads all of it instead of rescanning the origins.
//!
//! A database that cannot be opened or fails `quick_check` is moved aside and replaced by an empty one,
//! which makes the daemon rescan (6.2); the damaged file is kept for inspection, never served.

use crate::tags::TrackTags;
use musicfs_cas::{Fingerprint, Manifest, ManifestError, ManifestStore};
use musicfs_core::sync_util::lock_or_recover;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// 2: tracks and manifests carry the origin's version stamp (5.6), manifests whether they were made from a
/// backup origin (4.2.6); version 1 databases are upgraded in place.
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tracks (
    id INTEGER PRIMARY KEY,
    origin TEXT NOT NULL,
    rel_path BLOB NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    artist TEXT, album TEXT, year INTEGER, track INTEGER, title TEXT,
    vpath TEXT NOT NULL,
    UNIQUE (origin, rel_path)
);
CREATE TABLE IF NOT EXISTS inodes (path TEXT PRIMARY KEY, ino INTEGER NOT NULL UNIQUE, is_dir INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS manifests (
    track_id INTEGER PRIMARY KEY REFERENCES tracks(id) ON DELETE CASCADE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    from_backup INTEGER NOT NULL DEFAULT 0,
    chunks BLOB NOT NULL
);
";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("metadata database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("metadata database at {path} is from a newer MusicFS (schema {found}, this build knows {SCHEMA_VERSION})")]
    TooNew { path: PathBuf, found: i64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Track {
    pub id: i64,
    pub origin: String,
    pub rel_path: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
    /// The origin's version stamp (`OriginEntry::version`); 0 when unknown.
    pub version: i64,
    pub tags: TrackTags,
    /// Path inside the mount, relative, `/`-separated.
    pub vpath: String,
}

pub struct Db {
    conn: Mutex<Connection>,
    path: PathBuf,
}

/// What a sync wants written, applied in one transaction.
#[derive(Default, Debug)]
pub struct Changes {
    /// New tracks (their `id` is ignored and assigned).
    pub added: Vec<Track>,
    /// Tracks whose file changed: new size, mtime and tags; their manifest is dropped.
    pub changed: Vec<Track>,
    pub removed: Vec<i64>,
    /// (track id, new vpath) for existing tracks whose path moved.
    pub renamed: Vec<(i64, String)>,
    /// (track id, version) for unchanged tracks stored before their origin's version stamp was known.
    pub restamped: Vec<(i64, i64)>,
}

/// The key a file's inode number is stored under: the file at its origin (`/ORIGIN/HEX-OF-RELATIVE-PATH`),
/// not its place in the virtual tree. A track keeps its inode when its virtual path moves (its tags
/// changed, or another track now takes its name and it becomes ` (2)`), so a player reading it never
/// finds another track's bytes behind the file it opened. The leading `/` keeps these keys apart from the
/// directories' (relative) paths; `load_tree` computes the same key in SQL (`hex()` is upper case).
pub fn file_inode_key(origin: &str, rel_path: &Path) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = rel_path.as_os_str().as_bytes();
    let mut key = String::with_capacity(origin.len() + 2 + 2 * bytes.len());
    key.push('/');
    key.push_str(origin);
    key.push('/');
    // Upper-case hex, two digits a byte (stored: it must never change). Built by hand: a `format!` per
    // byte was 3% of a first scan's time.
    for byte in bytes {
        key.push(char::from(HEX[usize::from(byte >> 4)]));
        key.push(char::from(HEX[usize::from(byte & 0xF)]));
    }
    key
}

impl Db {
    /// Opens the database, moving a damaged one aside and starting empty (the caller then rescans).
    pub fn open(path: &Path) -> Result<Db, DbError> {
        match Db::open_checked(path) {
            Ok(db) => Ok(db),
            Err(DbError::TooNew { path, found }) => Err(DbError::TooNew { path, found }),
            Err(e) => {
                let aside = path.with_extension(format!("corrupt-{}", std::process::id()));
                tracing::error!(error = %e, moved_to = %aside.display(), "6.2 metadata database is damaged; moved aside, rebuilding by rescan");
                let _ = std::fs::rename(path, &aside);
                if let (Some(dir), Some(stem)) = (path.parent(), path.file_stem()) {
                    musicfs_core::aside::prune(dir, &format!("{}.corrupt-", stem.to_string_lossy()));
                }
                for suffix in ["-wal", "-shm"] {
                    let mut side = path.as_os_str().to_owned();
                    side.push(suffix);
                    let _ = std::fs::remove_file(PathBuf::from(side));
                }
                Db::open_checked(path)
            }
        }
    }

    /// SQLite's full `integrity_check` of the database at `path`, opened read-only: "ok", or the problems found
    /// (one per line). For `musicfs cache verify`, with no daemon running.
    pub fn integrity_check(path: &Path) -> Result<String, DbError> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut stmt = conn.prepare("PRAGMA integrity_check")?;
        let lines: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok(lines.join("\n"))
    }

    fn open_checked(path: &Path) -> Result<Db, DbError> {
        fail::fail_point!("meta::db::open_corrupt", |_| Err(DbError::Sql(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some("failpoint meta::db::open_corrupt".into()),
        ))));
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(DbError::Sql(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(format!("quick_check: {check}")),
            )));
        }
        conn.execute_batch(SCHEMA)?;
        let version: Option<String> =
            conn.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0)).optional()?;
        match version.and_then(|v| v.parse::<i64>().ok()) {
            Some(found) if found > SCHEMA_VERSION => return Err(DbError::TooNew { path: path.to_owned(), found }),
            Some(found) => {
                if found < 2 {
                    upgrade_to_2(&conn)?;
                }
                if found < 3 {
                    upgrade_to_3(&conn)?;
                }
            }
            None => {
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )?;
            }
        }
        Ok(Db { conn: Mutex::new(conn), path: path.to_owned() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // rusqlite rolls back an unfinished transaction on drop, so a panic mid-write leaves no half state (2.9).
        lock_or_recover(&self.conn)
    }

    pub fn track_count(&self) -> Result<u64, DbError> {
        Ok(self.conn().query_row("SELECT COUNT(*) FROM tracks", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Tracks committed by a scan that was interrupted before it named them (2.5): a scan must finish first.
    pub fn unnamed_tracks(&self) -> Result<u64, DbError> {
        Ok(self.conn().query_row("SELECT COUNT(*) FROM tracks WHERE vpath = ''", [], |r| r.get::<_, i64>(0))? as u64)
    }

    pub fn load_tracks(&self) -> Result<Vec<Track>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, origin, rel_path, size, mtime_ns, artist, album, year, track, title, vpath, version
             FROM tracks ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Track {
                id: r.get(0)?,
                origin: r.get(1)?,
                rel_path: PathBuf::from(std::ffi::OsString::from_vec(r.get::<_, Vec<u8>>(2)?)),
                size: r.get::<_, i64>(3)? as u64,
                mtime_ns: r.get(4)?,
                version: r.get(11)?,
                tags: TrackTags {
                    artist: r.get(5)?,
                    album: r.get(6)?,
                    year: r.get(7)?,
                    track: r.get(8)?,
                    title: r.get(9)?,
                },
                vpath: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Builds the in-memory tree straight from two queries — directory inode numbers, then file rows joined
    /// with theirs — streaming the rows into the tree without collecting them first.
    pub fn load_tree(&self) -> Result<crate::tree::Tree, DbError> {
        let conn = self.conn();
        let mut dirs_stmt = conn.prepare_cached("SELECT path, ino FROM inodes WHERE is_dir = 1")?;
        let dirs = dirs_stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<Result<HashMap<_, _>, _>>()?;
        let mut files = conn.prepare_cached(
            "SELECT t.id, t.origin, t.rel_path, t.size, t.mtime_ns, t.vpath, i.ino, t.version
             FROM tracks t JOIN inodes i ON i.path = '/' || t.origin || '/' || hex(t.rel_path)
             WHERE t.vpath != ''",
        )?;
        let mut failure = None;
        let rows = files.query_map([], |r| {
            Ok(crate::tree::TreeRow {
                track_id: r.get(0)?,
                origin: r.get(1)?,
                rel_path: PathBuf::from(std::ffi::OsString::from_vec(r.get::<_, Vec<u8>>(2)?)),
                size: r.get::<_, i64>(3)? as u64,
                mtime_ns: r.get(4)?,
                vpath: r.get(5)?,
                ino: r.get::<_, i64>(6)? as u64,
                version: r.get(7)?,
            })
        })?;
        let tree = crate::tree::Tree::build(rows.map_while(|row| row.map_err(|e| failure = Some(e)).ok()), &dirs);
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(tree),
        }
    }

    /// Applies a sync in one transaction; returns the ids given to `changes.added`, in order.
    pub fn apply(&self, changes: &Changes) -> Result<Vec<i64>, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut ids = Vec::with_capacity(changes.added.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO tracks (origin, rel_path, size, mtime_ns, artist, album, year, track, title, vpath, version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for t in &changes.added {
                insert.execute(params![
                    t.origin,
                    t.rel_path.as_os_str().as_bytes(),
                    t.size as i64,
                    t.mtime_ns,
                    t.tags.artist,
                    t.tags.album,
                    t.tags.year,
                    t.tags.track,
                    t.tags.title,
                    t.vpath,
                    t.version
                ])?;
                ids.push(tx.last_insert_rowid());
            }
            let mut update = tx.prepare_cached(
                "UPDATE tracks SET size = ?2, mtime_ns = ?3, artist = ?4, album = ?5, year = ?6, track = ?7, title = ?8,
                 vpath = ?9, version = ?10 WHERE id = ?1",
            )?;
            let mut drop_manifest = tx.prepare_cached("DELETE FROM manifests WHERE track_id = ?1")?;
            for t in &changes.changed {
                update.execute(params![
                    t.id,
                    t.size as i64,
                    t.mtime_ns,
                    t.tags.artist,
                    t.tags.album,
                    t.tags.year,
                    t.tags.track,
                    t.tags.title,
                    t.vpath,
                    t.version
                ])?;
                drop_manifest.execute([t.id])?;
            }
            let mut delete = tx.prepare_cached("DELETE FROM tracks WHERE id = ?1")?;
            for id in &changes.removed {
                delete.execute([id])?;
            }
            let mut rename = tx.prepare_cached("UPDATE tracks SET vpath = ?2 WHERE id = ?1")?;
            for (id, vpath) in &changes.renamed {
                rename.execute(params![id, vpath])?;
            }
            let mut restamp = tx.prepare_cached("UPDATE tracks SET version = ?2 WHERE id = ?1")?;
            for (id, version) in &changes.restamped {
                restamp.execute(params![id, version])?;
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Inode numbers for `paths` (`""` is the root, always 1): a directory by its virtual path, a file by its
    /// [`file_inode_key`]. Numbers are assigned once and never reused.
    pub fn inodes_for(&self, paths: &[(&str, bool)]) -> Result<HashMap<String, u64>, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut known: HashMap<String, u64> = HashMap::with_capacity(paths.len());
        {
            let mut all = tx.prepare_cached("SELECT path, ino FROM inodes")?;
            let rows = all.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
            for row in rows {
                let (path, ino) = row?;
                known.insert(path, ino);
            }
            let mut next: u64 =
                tx.query_row("SELECT COALESCE(MAX(ino), 1) FROM inodes", [], |r| r.get::<_, i64>(0))? as u64 + 1;
            let mut insert = tx.prepare_cached("INSERT INTO inodes (path, ino, is_dir) VALUES (?1, ?2, ?3)")?;
            for (path, is_dir) in paths {
                if path.is_empty() || known.contains_key(*path) {
                    continue;
                }
                insert.execute(params![path, next as i64, *is_dir])?;
                known.insert((*path).to_owned(), next);
                next += 1;
            }
        }
        tx.commit()?;
        known.insert(String::new(), 1);
        Ok(known)
    }

    /// Tracks of `origin` whose cached copy was made from its backup origin and awaits re-validation (4.2.6).
    pub fn backup_served(&self, origin: &str) -> Result<Vec<i64>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT m.track_id FROM manifests m JOIN tracks t ON t.id = m.track_id
             WHERE m.from_backup = 1 AND t.origin = ?1",
        )?;
        let ids = stmt.query_map([origin], |r| r.get(0))?.collect::<Result<Vec<i64>, _>>()?;
        Ok(ids)
    }

    /// Runs a WAL checkpoint (at shutdown, so the main file is complete on its own).
    pub fn checkpoint(&self) -> Result<(), DbError> {
        self.conn().execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok(())
    }
}

/// Schema 1 → 2: existing rows get version 0 ("unknown", which matches any stamp) and are stamped by the next
/// sync without being read again.
fn upgrade_to_2(conn: &Connection) -> Result<(), DbError> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(
        "ALTER TABLE tracks ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE manifests ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE manifests ADD COLUMN from_backup INTEGER NOT NULL DEFAULT 0;
         UPDATE meta SET value = '2' WHERE key = 'schema';",
    )?;
    tx.commit()?;
    tracing::info!("metadata database upgraded from schema 1 to 2 (5.6 version stamps)");
    Ok(())
}

/// Manifests read per step of [`upgrade_to_3`], so a large cache is sealed in bounded memory.
const SEAL_BATCH: i64 = 1000;

/// Schema 2 → 3: every manifest blob gets the digest that lets a damaged one be told apart
/// (`Manifest::encode_chunks`), trusting it as schema 2 did; a blob that is not a chunk list is dropped (its
/// track is ingested again). One transaction: a crash midway leaves schema 2, and the upgrade runs again.
fn upgrade_to_3(conn: &Connection) -> Result<(), DbError> {
    let tx = conn.unchecked_transaction()?;
    let (mut sealed, mut dropped, mut after) = (0u64, 0u64, i64::MIN);
    loop {
        let rows: Vec<(i64, Vec<u8>)> = tx
            .prepare("SELECT track_id, chunks FROM manifests WHERE track_id > ?1 ORDER BY track_id LIMIT ?2")?
            .query_map(params![after, SEAL_BATCH], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let Some((last, _)) = rows.last() else { break };
        after = *last;
        for (track_id, blob) in rows {
            match Manifest::seal_legacy(&blob) {
                Some(blob) => {
                    tx.execute("UPDATE manifests SET chunks = ?1 WHERE track_id = ?2", params![blob, track_id])?;
                    sealed += 1;
                }
                None => {
                    tx.execute("DELETE FROM manifests WHERE track_id = ?1", [track_id])?;
                    dropped += 1;
                }
            }
        }
    }
    tx.execute("UPDATE meta SET value = '3' WHERE key = 'schema'", [])?;
    tx.commit()?;
    tracing::info!(sealed, dropped, "metadata database upgraded from schema 2 to 3 (manifest digests)");
    Ok(())
}

impl ManifestStore for Db {
    fn load(&self, track_id: i64) -> Result<Option<Manifest>, ManifestError> {
        let conn = self.conn();
        let row: Option<(i64, i64, i64, bool, Vec<u8>)> = conn
            .query_row(
                "SELECT size, mtime_ns, version, from_backup, chunks FROM manifests WHERE track_id = ?1",
                [track_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()
            .map_err(ManifestError::new)?;
        Ok(row.and_then(|(size, mtime_ns, version, from_backup, blob)| {
            Some(Manifest {
                fingerprint: Fingerprint { size: size as u64, mtime_ns, version },
                from_backup,
                chunks: Manifest::decode_chunks(&blob)?,
            })
        }))
    }

    fn save(&self, track_id: i64, manifest: &Manifest) -> Result<(), ManifestError> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO manifests (track_id, size, mtime_ns, version, from_backup, chunks)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    track_id,
                    manifest.fingerprint.size as i64,
                    manifest.fingerprint.mtime_ns,
                    manifest.fingerprint.version,
                    manifest.from_backup,
                    Manifest::encode_chunks(&manifest.chunks)
                ],
            )
            .map(|_| ())
            .map_err(ManifestError::new)
    }

    fn remove(&self, track_id: i64) -> Result<(), ManifestError> {
        self.conn()
            .execute("DELETE FROM manifests WHERE track_id = ?1", [track_id])
            .map(|_| ())
            .map_err(ManifestError::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(rel: &str, vpath: &str) -> Track {
        Track {
            id: 0,
            origin: "o".into(),
            rel_path: rel.into(),
            size: 10,
            mtime_ns: 5,
            version: 0,
            tags: TrackTags { title: Some("t\0with nul".into()), ..Default::default() },
            vpath: vpath.into(),
        }
    }

    #[test]
    fn tracks_inodes_and_manifests_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let db = Db::open(&path).unwrap();
        let ids = db.apply(&Changes { added: vec![track("a.flac", "A/B/a.flac")], ..Default::default() }).unwrap();
        let inodes = db.inodes_for(&[("A", true), ("A/B", true), ("A/B/a.flac", false)]).unwrap();
        let m = Manifest {
            fingerprint: Fingerprint { size: 10, mtime_ns: 5, version: 9 },
            chunks: vec![],
            from_backup: true,
        };
        db.save(ids[0], &m).unwrap();
        drop(db);
        let db = Db::open(&path).unwrap();
        let tracks = db.load_tracks().unwrap();
        assert_eq!(tracks.len(), 1);
        assert_eq!(tracks[0].tags.title.as_deref(), Some("t\0with nul"));
        assert_eq!(
            db.inodes_for(&[("A/B/a.flac", false), ("new", false)]).unwrap()["A/B/a.flac"],
            inodes["A/B/a.flac"]
        );
        assert_eq!(db.load(ids[0]).unwrap(), Some(m));
    }

    #[test]
    fn a_file_inode_key_is_the_origin_and_the_path_bytes_in_upper_case_hex() {
        // Stored in the inodes table: a key that changed would give every file a new inode number.
        let path = Path::new(std::ffi::OsStr::from_bytes(b"A/\xff\x00z"));
        assert_eq!(file_inode_key("nas", path), "/nas/412FFF007A");
        assert_eq!(file_inode_key("o", Path::new("")), "/o/");
    }

    #[test]
    fn a_schema_2_database_seals_its_manifests_and_drops_only_what_is_not_a_chunk_list() {
        use musicfs_cas::{ChunkHash, ChunkRef};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let chunks = vec![
            ChunkRef { offset: 0, len: 10, hash: ChunkHash::of(b"a") },
            ChunkRef { offset: 10, len: 5, hash: ChunkHash::of(b"b") },
        ];
        let m = Manifest { fingerprint: Fingerprint { size: 15, mtime_ns: 5, version: 0 }, chunks, from_backup: false };
        let ids = {
            let db = Db::open(&path).unwrap();
            let added = vec![track("a.flac", "A/B/a.flac"), track("b.flac", "A/B/b.flac")];
            let ids = db.apply(&Changes { added, ..Default::default() }).unwrap();
            db.save(ids[0], &m).unwrap();
            db.save(ids[1], &m).unwrap();
            // As schema 2 wrote them: the records alone; and one blob that is no chunk list at all.
            let records = &Manifest::encode_chunks(&m.chunks)[..2 * 36];
            let conn = db.conn();
            conn.execute("UPDATE manifests SET chunks = ?1 WHERE track_id = ?2", params![records, ids[0]]).unwrap();
            conn.execute("UPDATE manifests SET chunks = X'0102' WHERE track_id = ?1", [ids[1]]).unwrap();
            conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema'", []).unwrap();
            ids
        };
        let db = Db::open(&path).unwrap();
        assert_eq!(db.load(ids[0]).unwrap(), Some(m), "a schema 2 manifest is kept, with its digest");
        assert_eq!(db.load(ids[1]).unwrap(), None, "a blob that is not a chunk list is dropped");
        let schema: String =
            db.conn().query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0)).unwrap();
        assert_eq!(schema, "3");
    }

    #[test]
    fn a_corrupt_database_is_moved_aside_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        std::fs::write(&path, b"this is not a database at all, just some garbage bytes".repeat(100)).unwrap();
        let db = Db::open(&path).unwrap();
        assert_eq!(db.track_count().unwrap(), 0);
        let kept = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains("corrupt"));
        assert!(kept, "the damaged file is kept aside");
    }
}
