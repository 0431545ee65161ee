//! Limit-window snapshots: one row per window (`limiter` = `LimiterId::storage_name`), its live
//! buckets as a blob of `(bucket start unix ms: i64 LE, count: u32 LE)` pairs. Wall-clock
//! times on disk, because the limiter clock is per process; converted on save and restore.
//! Invariant: only changed windows are written, in one transaction per snapshot, so a snapshot
//! every second costs nothing when traffic is idle and a crash loses at most that second.

use ahash::AHashMap;
use rusqlite::params;

use super::{Storage, StorageError};
use crate::limits::{LimiterId, WindowSnapshot};

/// Rows not refreshed for this long belong to windows that no longer exist (every window is
/// at most a day long).
const STALE_MS: i64 = 2 * 86_400_000;
const PAIR: usize = 12;

/// The control thread's writer for window snapshots: remembers what it last wrote.
#[derive(Default)]
pub struct WindowStore {
    written: AHashMap<String, Vec<u8>>,
}

/// Unix ms now (wall clock).
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl WindowStore {
    /// Writes the windows that changed since the last call. `offset` = unix ms - limiter ms
    /// now. Returns the number of rows written or deleted.
    pub fn save(
        &mut self,
        storage: &mut Storage,
        snapshots: &[WindowSnapshot],
        offset: i64,
        unix_now: u64,
    ) -> Result<usize, StorageError> {
        let mut changes: Vec<(String, u64, Option<Vec<u8>>)> = Vec::new();
        let mut seen = ahash::AHashSet::with_capacity(snapshots.len());
        for s in snapshots {
            let name = s.id.storage_name();
            let blob = encode(&s.buckets, offset);
            seen.insert(name.clone());
            let before = self.written.get(&name);
            if s.buckets.is_empty() {
                if before.is_some_and(|b| !b.is_empty()) {
                    changes.push((name, s.bucket_ms, None));
                }
            } else if before != Some(&blob) {
                changes.push((name, s.bucket_ms, Some(blob)));
            }
        }
        if changes.is_empty() {
            return Ok(0);
        }
        let tx = storage.conn().transaction()?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO limit_windows (limiter, bucket_ms, saved_unix_ms, buckets) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (limiter) DO UPDATE SET bucket_ms = ?2, saved_unix_ms = ?3, buckets = ?4",
            )?;
            let mut delete = tx.prepare_cached("DELETE FROM limit_windows WHERE limiter = ?1")?;
            for (name, bucket_ms, blob) in &changes {
                match blob {
                    Some(blob) => upsert.execute(params![name, *bucket_ms as i64, unix_now as i64, blob])?,
                    None => delete.execute(params![name])?,
                };
            }
            tx.execute(
                "DELETE FROM limit_windows WHERE saved_unix_ms < ?1",
                params![unix_now as i64 - STALE_MS],
            )?;
        }
        tx.commit()?;
        let count = changes.len();
        for (name, _, blob) in changes {
            self.written.insert(name, blob.unwrap_or_default());
        }
        self.written.retain(|name, _| seen.contains(name));
        Ok(count)
    }

    /// Every saved window, in limiter time (`offset` = unix ms - limiter ms now). Buckets that
    /// would fall before limiter time 0 are older than any window and are dropped.
    pub fn load(&mut self, storage: &mut Storage, offset: i64) -> Result<Vec<WindowSnapshot>, StorageError> {
        let conn = storage.conn();
        let mut stmt = conn.prepare("SELECT limiter, bucket_ms, buckets FROM limit_windows")?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, bucket_ms, blob) = row?;
            let Some(id) = LimiterId::parse(&name) else { continue };
            self.written.insert(name, blob.clone());
            out.push(WindowSnapshot {
                id,
                bucket_ms: u64::try_from(bucket_ms).unwrap_or(0),
                buckets: decode(&blob, offset),
            });
        }
        Ok(out)
    }
}

fn encode(buckets: &[(u64, u32)], offset: i64) -> Vec<u8> {
    let mut blob = Vec::with_capacity(buckets.len() * PAIR);
    for (start, count) in buckets {
        let unix = *start as i64 + offset;
        blob.extend_from_slice(&unix.to_le_bytes());
        blob.extend_from_slice(&count.to_le_bytes());
    }
    blob
}

fn decode(blob: &[u8], offset: i64) -> Vec<(u64, u32)> {
    blob.chunks_exact(PAIR)
        .filter_map(|pair| {
            let unix = i64::from_le_bytes(pair[..8].try_into().ok()?);
            let count = u32::from_le_bytes(pair[8..].try_into().ok()?);
            u64::try_from(unix - offset).ok().map(|start| (start, count))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyId;
    use crate::limits::{Kind, Scope};

    fn snap(buckets: Vec<(u64, u32)>) -> WindowSnapshot {
        WindowSnapshot {
            id: LimiterId {
                scope: Scope::Key(KeyId(7)),
                kind: Kind::Rpm,
            },
            bucket_ms: 1_000,
            buckets,
        }
    }

    #[test]
    fn saves_changes_only_and_loads_in_the_new_clock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rotor.db");
        let mut storage = Storage::open(Some(&path)).unwrap();
        let mut store = WindowStore::default();
        let offset = 1_700_000_000_000 - 200_000;
        let unix = 1_700_000_000_000;
        assert_eq!(
            store
                .save(&mut storage, &[snap(vec![(199_000, 3)])], offset, unix)
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .save(&mut storage, &[snap(vec![(199_000, 3)])], offset, unix)
                .unwrap(),
            0
        );
        drop(storage);
        // A new process whose limiter clock reads 100_000 ten seconds of wall time later.
        let mut storage = Storage::open(Some(&path)).unwrap();
        let new_offset = unix as i64 + 10_000 - 100_000;
        let loaded = WindowStore::default().load(&mut storage, new_offset).unwrap();
        assert_eq!(loaded, vec![snap(vec![(89_000, 3)])]);
        // Emptied windows are deleted.
        let mut store = WindowStore::default();
        store.load(&mut storage, new_offset).unwrap();
        assert_eq!(store.save(&mut storage, &[snap(vec![])], new_offset, unix).unwrap(), 1);
        assert!(WindowStore::default()
            .load(&mut storage, new_offset)
            .unwrap()
            .is_empty());
    }
}
