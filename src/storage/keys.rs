//! The runtime key pool on disk (`keys::PoolState`): keys added through `POST /admin/keys`
//! and config keys disabled through `DELETE /admin/keys`, restored at start.
//! Invariant: a save replaces both tables in one transaction, so a crash leaves either the
//! old pool or the new one, never a mix. Secrets are stored as given (the export shows them).

use rusqlite::params;

use super::{Storage, StorageError};
use crate::config::{KeyId, KeyOrigin, Secret};
use crate::keys::{DisabledKey, PoolState, RuntimeKey};

pub const MIGRATION: &str = "CREATE TABLE runtime_keys (
        seq INTEGER PRIMARY KEY,
        provider TEXT NOT NULL,
        secret TEXT NOT NULL
    ) STRICT;
    CREATE TABLE disabled_keys (
        provider TEXT NOT NULL,
        key_id INTEGER NOT NULL,
        masked TEXT NOT NULL,
        origin TEXT NOT NULL,
        fingerprint INTEGER NOT NULL
    ) STRICT;";

/// Replaces the stored pool with `state`.
pub fn save(storage: &mut Storage, state: &PoolState) -> Result<(), StorageError> {
    let tx = storage.conn().transaction()?;
    tx.execute("DELETE FROM runtime_keys", [])?;
    tx.execute("DELETE FROM disabled_keys", [])?;
    {
        let mut insert = tx.prepare("INSERT INTO runtime_keys (provider, secret) VALUES (?1, ?2)")?;
        for key in &state.runtime {
            insert.execute(params![key.provider, key.secret.expose()])?;
        }
        let mut insert = tx.prepare(
            "INSERT INTO disabled_keys (provider, key_id, masked, origin, fingerprint) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for d in &state.disabled {
            // Ids and fingerprints are u64 bit patterns; SQLite integers are i64.
            insert.execute(params![
                d.provider,
                d.id.0 as i64,
                d.masked,
                d.origin.name(),
                d.fingerprint as i64
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The stored pool (empty in a new database).
pub fn load(storage: &mut Storage) -> Result<PoolState, StorageError> {
    let conn = storage.conn();
    let mut state = PoolState::default();
    let mut select = conn.prepare("SELECT provider, secret FROM runtime_keys ORDER BY seq")?;
    let rows = select.query_map([], |row| {
        Ok(RuntimeKey {
            provider: row.get(0)?,
            secret: Secret::new(row.get::<_, String>(1)?),
        })
    })?;
    for row in rows {
        state.runtime.push(row?);
    }
    let mut select = conn.prepare("SELECT provider, key_id, masked, origin, fingerprint FROM disabled_keys")?;
    let rows = select.query_map([], |row| {
        let origin: String = row.get(3)?;
        Ok(DisabledKey {
            provider: row.get(0)?,
            id: KeyId(row.get::<_, i64>(1)? as u64),
            masked: row.get(2)?,
            origin: if origin == "keys_file" {
                KeyOrigin::KeysFile
            } else {
                KeyOrigin::Config
            },
            fingerprint: row.get::<_, i64>(4)? as u64,
        })
    })?;
    for row in rows {
        state.disabled.push(row?);
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MIGRATIONS;

    #[test]
    fn a_saved_pool_loads_back_whole() {
        let mut storage = Storage::open_with(None, MIGRATIONS).unwrap();
        let state = PoolState {
            runtime: vec![
                RuntimeKey {
                    provider: "p".into(),
                    secret: Secret::new("sk-one-0001"),
                },
                RuntimeKey {
                    provider: "q".into(),
                    secret: Secret::new("sk-two-0002"),
                },
            ],
            disabled: vec![DisabledKey {
                provider: "p".into(),
                id: KeyId(u64::MAX - 3),
                masked: "…0003".into(),
                origin: KeyOrigin::KeysFile,
                fingerprint: u64::MAX,
            }],
        };
        save(&mut storage, &state).unwrap();
        save(&mut storage, &state).unwrap();
        let back = load(&mut storage).unwrap();
        let secrets: Vec<&str> = back.runtime.iter().map(|k| k.secret.expose()).collect();
        assert_eq!(secrets, ["sk-one-0001", "sk-two-0002"]);
        assert_eq!(back.disabled.len(), 1);
        assert_eq!(back.disabled[0].id, KeyId(u64::MAX - 3));
        assert_eq!(back.disabled[0].fingerprint, u64::MAX);
        assert_eq!(back.disabled[0].origin, KeyOrigin::KeysFile);
    }
}
