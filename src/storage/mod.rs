//! The embedded SQLite file (`storage.path`; none = an in-memory database that dies with the
//! process): opened in WAL mode, brought to the latest schema by numbered migrations, and then
//! owned by the control thread, the only thread that ever touches it (workers never block on
//! disk). Each subsystem keeps its tables in its own file here (`windows` for limit-window
//! snapshots) and appends its migrations to `MIGRATIONS`.
//! Invariant: `PRAGMA user_version` = the number of migrations applied; a migration runs once,
//! in order, inside a transaction, so a crash mid-migration leaves the previous version.

pub mod journal;
pub mod keys;
pub mod requests;
pub mod windows;

use std::fmt;
use std::path::Path;

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
    requests::MIGRATION,
    // 3: the runtime key pool (see `keys`).
    keys::MIGRATION,
];

#[derive(Debug)]
pub struct StorageError(pub String);

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
}

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
        let mut storage = Storage {
            conn,
            persistent: path.is_some(),
        };
        storage.migrate(migrations)?;
        Ok(storage)
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
    fn in_memory_has_the_full_schema() {
        let s = Storage::open(None).unwrap();
        assert!(!s.persistent());
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len());
    }
}
