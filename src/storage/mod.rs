//! The embedded SQLite file (`storage.path`; none = an in-memory database that dies with the
//! process): opened in WAL mode, brought to the latest schema by numbered migrations, and then
//! owned by the control thread, the only thread that ever touches it (workers never block on
//! disk). Each subsystem keeps its tables in its own file here (`windows` for limit-window
//! snapshots) and appends its migrations to `MIGRATIONS`.
//! Invariant: `PRAGMA user_version` = the number of migrations applied; a migration runs once,
//! in order, inside a transaction, so a crash mid-migration leaves the previous version.

mod batches;
pub mod health;
pub mod idle_class;
pub mod journal;
pub mod keeper;
pub mod keys;
mod labels;
pub mod memlog;
mod packed;
pub mod pins;
mod request_migrations;
pub mod requests;
pub mod rollups;
pub mod windows;

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

/// Schema migrations, in order; never edit or reorder a released entry, only append.
pub const MIGRATIONS: &[&str] = &[
    // 1: limit-window snapshots, one row per window (see `windows`).
    "CREATE TABLE limit_windows (
        limiter TEXT PRIMARY KEY NOT NULL,
        bucket_ms INTEGER NOT NULL,
        saved_unix_ms INTEGER NOT NULL,
        buckets BLOB NOT NULL
    ) STRICT;",
    // 2: request records (see `requests`).
    request_migrations::MIGRATION,
    // 3: stats rollups, seeded from the request records (see `rollups`).
    rollups::MIGRATION,
    // 4: compact request rows with shared labels, no secondary index (see `requests`).
    request_migrations::MIGRATION_COMPACT,
    // 5: the runtime key pool (see `keys`).
    keys::MIGRATION,
    // 6: account-scoped object ids pinned to their creating key (see `pins`).
    pins::MIGRATION,
    // 7: a request row's unfiltered numbers in one blob (see `packed`).
    packed::MIGRATION,
    // 8: new request rows carry their request id in the numbers blob (see `packed`).
    packed::MIGRATION_ID_IN_BLOB,
    // 9: request rows of time, label (with the status) and blob, with no per-row checks (see
    // `requests`).
    request_migrations::MIGRATION_LEAN,
    // 10: a writer batch's request rows in one table row (see `batches`).
    batches::MIGRATION,
];

#[derive(Debug)]
pub struct StorageError(pub String);

/// Sizes of the database, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DbBytes {
    /// Pages holding data (the free list excluded).
    pub used: u64,
    /// The main file (in memory: all pages).
    pub file: u64,
    pub wal: u64,
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StorageError {}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        StorageError(format!("sqlite: {e}"))
    }
}

/// The open database. `Send` but used by one thread at a time: the control thread.
pub struct Storage {
    conn: Connection,
    persistent: bool,
    /// The file and its (device, inode) when opened: a file deleted or replaced under rotor
    /// takes writes into an unlinked inode, so the writer compares this before trusting it.
    file: Option<(PathBuf, (u64, u64))>,
    /// Label ids of this database's request rows (see `labels`).
    labels: labels::LabelCache,
    /// Bytes per page, read once at open (only a VACUUM could change it, and rotor runs none).
    page_size: u64,
}

/// (device, inode) of the file at `path`, if it exists.
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The most WAL pages a commit leaves before it copies them into the database (SQLite's
/// automatic checkpoint, which runs in the committing thread, the control thread here). At
/// SQLite's default of 1,000 pages (4 MB) the checkpoint took 3-5 ms of CPU every ~0.7 s with
/// the request log at ~97k requests/s, and the worker on that core waited as long
/// (`perf sched`: the worker's longest wait ended with the checkpoint). 128 pages spread the
/// same copying over runs of about half a millisecond: p99.9 4.5 -> 3.7 ms at 64 connections
/// (`benches/ab.sh`, issue 18). The price is more syncs: ~10 checkpoints a second at that load,
/// each syncing the WAL and the database (`synchronous = NORMAL`), which the control thread
/// waits out off the CPU (0.2-0.8 ms a sync on the project's VM); the queue holds ~0.6 s of
/// records at that load for a slower disk.
const WAL_CHECKPOINT_PAGES: i64 = 128;

impl Storage {
    /// Opens (creating it and its directory if needed) and migrates the database at `path`;
    /// `None` = in memory.
    pub fn open(path: Option<&Path>) -> Result<Storage, StorageError> {
        Self::open_with(path, MIGRATIONS)
    }

    /// `open` with an explicit migration list (tests, and future subsystems' own checks).
    pub fn open_with(path: Option<&Path>, migrations: &[&str]) -> Result<Storage, StorageError> {
        let conn = match path {
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| StorageError(format!("cannot create {}: {e}", dir.display())))?;
                }
                let conn = Connection::open(path)?;
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                conn
            }
            None => Connection::open_in_memory()?,
        };
        // A locked file (another writer) waits a little instead of failing at once.
        conn.busy_timeout(std::time::Duration::from_millis(2_000))?;
        // Room for every writer statement, the 1..64-row inserts included (see `requests`).
        conn.set_prepared_statement_cache_capacity(64);
        let file = match path {
            Some(path) => Some((
                path.to_owned(),
                identity(path).ok_or_else(|| StorageError(format!("{} vanished while opening", path.display())))?,
            )),
            None => None,
        };
        let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
        let mut storage = Storage {
            conn,
            persistent: path.is_some(),
            file,
            labels: labels::LabelCache::default(),
            page_size: u64::try_from(page_size).unwrap_or(4096),
        };
        storage.migrate(migrations)?;
        Ok(storage)
    }

    /// The file this database was opened from is no longer at its path (deleted, or replaced
    /// by another file): what is written now goes nowhere anyone can read. Always false in
    /// memory.
    pub fn vanished(&self) -> bool {
        match &self.file {
            Some((path, opened)) => match std::fs::metadata(path) {
                Ok(m) => (m.dev(), m.ino()) != *opened,
                Err(e) => e.kind() == std::io::ErrorKind::NotFound,
            },
            None => false,
        }
    }

    /// The path this database was opened from (`None` in memory).
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(p, _)| p.as_path())
    }

    /// Bytes the database takes now: (pages in use, total) plus the WAL file, or the
    /// in-memory pages. Pages in use exclude the free list, which new rows reuse.
    pub fn bytes(&self) -> Result<DbBytes, StorageError> {
        // Cached statements: the writer asks after every batch, and parsing a pragma each time
        // cost more than running it.
        let pragma = |sql: &str| -> Result<u64, StorageError> {
            let v: i64 = self.conn.prepare_cached(sql)?.query_row([], |r| r.get(0))?;
            Ok(u64::try_from(v).unwrap_or(0))
        };
        let page = self.page_size;
        let pages = pragma("PRAGMA page_count")?;
        let free = pragma("PRAGMA freelist_count")?;
        let wal = match &self.file {
            Some((path, _)) => {
                let mut wal = path.clone().into_os_string();
                wal.push("-wal");
                std::fs::metadata(wal).map_or(0, |m| m.len())
            }
            None => 0,
        };
        Ok(DbBytes {
            used: pages.saturating_sub(free) * page,
            file: pages * page,
            wal,
        })
    }

    /// Keeps the WAL small next to `max_db_bytes`: a checkpoint every ~1/32 of it (at most
    /// `WAL_CHECKPOINT_PAGES`) and the WAL file truncated back after a checkpoint.
    pub fn bound_wal(&self, max_db_bytes: Option<u64>) -> Result<(), StorageError> {
        if !self.persistent {
            return Ok(());
        }
        let page: i64 = self.conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
        let pages = match max_db_bytes {
            Some(max) => (max as i64 / page.max(512) / 32).clamp(16, WAL_CHECKPOINT_PAGES),
            None => WAL_CHECKPOINT_PAGES,
        };
        self.conn.pragma_update(None, "wal_autocheckpoint", pages)?;
        self.conn.pragma_update(None, "journal_size_limit", pages * page * 2)?;
        Ok(())
    }

    /// How long a write waits on a database locked by someone else before failing.
    pub fn set_busy_timeout(&self, timeout: std::time::Duration) -> Result<(), StorageError> {
        Ok(self.conn.busy_timeout(timeout)?)
    }

    /// Whether data survives the process.
    pub fn persistent(&self) -> bool {
        self.persistent
    }

    pub fn schema_version(&self) -> Result<usize, StorageError> {
        let version: i64 = self.conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        Ok(usize::try_from(version).unwrap_or(0))
    }

    fn migrate(&mut self, migrations: &[&str]) -> Result<(), StorageError> {
        let current = self.schema_version()?;
        if current > migrations.len() {
            return Err(StorageError(format!(
                "database schema version {current} is newer than this rotor ({}); refusing to touch it",
                migrations.len()
            )));
        }
        for (i, sql) in migrations.iter().enumerate().skip(current) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)
                .map_err(|e| StorageError(format!("migration {} failed: {e}", i + 1)))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// The connection, for subsystems' own queries (control thread only).
    pub fn conn(&mut self) -> &mut Connection {
        &mut self.conn
    }

    fn conn_and_labels(&mut self) -> (&mut Connection, &mut labels::LabelCache) {
        (&mut self.conn, &mut self.labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_run_once_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/rotor.db");
        let first = ["CREATE TABLE a (x INTEGER);"];
        let s = Storage::open_with(Some(&path), &first).unwrap();
        assert_eq!(s.schema_version().unwrap(), 1);
        drop(s);
        let both = ["CREATE TABLE a (x INTEGER);", "CREATE TABLE b (y INTEGER);"];
        let mut s = Storage::open_with(Some(&path), &both).unwrap();
        assert_eq!(s.schema_version().unwrap(), 2);
        let mode: String = s.conn().pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        drop(s);
        assert!(
            Storage::open_with(Some(&path), &first).is_err(),
            "a newer schema is refused"
        );
    }

    #[test]
    fn a_deleted_or_replaced_file_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        let s = Storage::open(Some(&path)).unwrap();
        assert!(!s.vanished());
        assert!(s.bytes().unwrap().file > 0);
        std::fs::remove_file(&path).unwrap();
        assert!(s.vanished(), "deleted");
        let other = Storage::open(Some(&path)).unwrap();
        assert!(!other.vanished());
        assert!(s.vanished(), "replaced by another file at the same path");
    }

    #[test]
    fn in_memory_has_the_full_schema() {
        let s = Storage::open(None).unwrap();
        assert!(!s.persistent());
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len());
    }

    /// Many small commits (as the log writer makes) never leave the WAL much past
    /// `WAL_CHECKPOINT_PAGES`: each commit past it checkpoints, and the next writes over the
    /// WAL from its start. 16 MB of rows in 256 commits; at SQLite's default the WAL would reach
    /// 1,000 pages (4 MB).
    #[test]
    fn the_wal_stays_near_its_checkpoint_size_under_small_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let migrations = ["CREATE TABLE t (v BLOB);"];
        let mut s = Storage::open_with(Some(&path), &migrations).unwrap();
        s.bound_wal(None).unwrap();
        let pages: i64 = s
            .conn()
            .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
            .unwrap();
        assert_eq!(pages, WAL_CHECKPOINT_PAGES);
        let row = vec![7u8; 4096];
        let mut largest_wal = 0;
        for _ in 0..256 {
            let tx = s.conn.transaction().unwrap();
            for _ in 0..16 {
                tx.execute("INSERT INTO t (v) VALUES (?1)", [&row]).unwrap();
            }
            tx.commit().unwrap();
            largest_wal = largest_wal.max(s.bytes().unwrap().wal);
        }
        let page = s.page_size;
        // The checkpoint size, plus the commit that passed it (16 rows of a page or two each),
        // plus the WAL's header and frame headers.
        let bound = (WAL_CHECKPOINT_PAGES as u64 + 48) * (page + 24) + 32;
        assert!(largest_wal > 0, "the WAL is in use");
        assert!(largest_wal <= bound, "WAL reached {largest_wal} bytes, bound {bound}");
        assert!(s.bytes().unwrap().file >= 16 << 20, "the rows reached the database");
    }
}
