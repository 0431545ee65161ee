//! Object pins on disk (`pins::Pins`): which provider and key created each account-scoped
//! object id, restored at start so reads, cancels and downloads after a restart still reach
//! the creating key. Written only by the control thread, in batches from `Pins::take_unsaved`.
//! Invariant: after `prune`, the table holds at most `max` rows, none older than the cutoff
//! (between prunes, at most one prune interval of new pins more).

use std::sync::Arc;

use rusqlite::params;

use super::{Storage, StorageError};
use crate::config::KeyId;
use crate::pins::Pin;

pub const MIGRATION: &str = "CREATE TABLE object_pins (
        id TEXT PRIMARY KEY NOT NULL,
        provider TEXT NOT NULL,
        key_id INTEGER NOT NULL,
        created_ms INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX object_pins_created ON object_pins (created_ms);";

/// Writes new pins (an id pinned again is replaced) in one transaction.
pub fn save(storage: &mut Storage, pins: &[(Box<str>, Pin)]) -> Result<(), StorageError> {
    let tx = storage.conn().transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR REPLACE INTO object_pins (id, provider, key_id, created_ms) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (id, pin) in pins {
            // Key ids are u64 bit patterns; SQLite integers are i64.
            insert.execute(params![&**id, &*pin.provider, pin.key.0 as i64, pin.created_ms as i64])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Drops rows older than `cutoff_ms` and all but the newest `max`; how many went.
pub fn prune(storage: &mut Storage, cutoff_ms: u64, max: usize) -> Result<usize, StorageError> {
    let conn = storage.conn();
    let old = conn.execute(
        "DELETE FROM object_pins WHERE created_ms < ?1",
        params![cutoff_ms as i64],
    )?;
    let over = conn.execute(
        "DELETE FROM object_pins WHERE id IN (SELECT id FROM object_pins ORDER BY created_ms DESC, rowid DESC LIMIT -1 OFFSET ?1)",
        params![max as i64],
    )?;
    Ok(old + over)
}

/// The stored pins, oldest first.
pub fn load(storage: &mut Storage) -> Result<Vec<(String, Pin)>, StorageError> {
    let conn = storage.conn();
    let mut select =
        conn.prepare("SELECT id, provider, key_id, created_ms FROM object_pins ORDER BY created_ms, rowid")?;
    let rows = select.query_map([], |row| {
        let provider: String = row.get(1)?;
        Ok((
            row.get::<_, String>(0)?,
            Pin {
                provider: Arc::from(provider),
                key: KeyId(row.get::<_, i64>(2)? as u64),
                created_ms: row.get::<_, i64>(3)? as u64,
            },
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_prune_and_load_keep_the_newest_within_retention() {
        let mut storage = Storage::open(None).unwrap();
        let pin = |t: u64| Pin {
            provider: Arc::from("mock"),
            key: KeyId(u64::MAX - t),
            created_ms: t,
        };
        let rows: Vec<(Box<str>, Pin)> = (1..=4u64).map(|t| (format!("file-{t}").into(), pin(t))).collect();
        save(&mut storage, &rows).unwrap();
        // file-1 is past retention; of the other three, the bound keeps the newest two.
        assert_eq!(prune(&mut storage, 2, 2).unwrap(), 2);
        let loaded = load(&mut storage).unwrap();
        let ids: Vec<&str> = loaded.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["file-3", "file-4"]);
        assert_eq!(loaded[1].1, pin(4), "key ids round-trip as u64 bit patterns");
    }
}
