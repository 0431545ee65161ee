//! Keeps the control thread's database open and bounded. Opens it (and retries with backoff
//! when it cannot), notices a file deleted or replaced under rotor and creates it again, and
//! prunes request rows oldest first in small steps so the log stays under
//! `storage.max_records`, `storage.max_db_bytes` and `storage.retention_days`; folds minute
//! rollups into hours and expires them after `storage.rollup_retention_days`.
//! Invariant: no step holds the write lock long (a prune deletes at most `PRUNE_STEP` rows per
//! statement), every pruned row is counted in `rotor_log_pruned_total`, and a store that is
//! closed or lost shows in `/health` until it is open again.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::health::{PruneReason, StorageHealth};
use super::{requests, rollups, DbBytes, Storage, StorageError};
use crate::config::Storage as Settings;

/// Rows deleted per statement: a few ms of lock at most.
pub const PRUNE_STEP: u64 = 10_000;
/// Prune statements per tick at most (so the control thread gets on with its other work).
const PRUNE_STEPS_PER_TICK: usize = 4;
/// Pruning by size keeps the pages in use under this fraction of `max_db_bytes`, leaving room
/// for a batch in flight and the WAL.
const SIZE_TARGET: f64 = 0.8;
/// Retention (rows and rollups) and folding minute rollups into hours are checked this often,
/// and stepped every tick while there is work.
const RETENTION_EVERY: Duration = Duration::from_secs(60);
const DAY_MS: i64 = 86_400_000;
/// Past this many row labels, those no row uses any more are deleted (a scan of the rows).
const MAX_LABELS: u64 = 10_000;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// A locked database makes a write wait this long at most per attempt.
const BUSY_TIMEOUT: Duration = Duration::from_millis(250);
/// What one written row can add to the pages in use, at most: its blob (`packed::MAX_BYTES`,
/// about 1.2 kB), a new label with its unique-index entry (seven fields of up to
/// `MAX_FIELD_BYTES`, twice: 14 kB) and a page for each that a b-tree split may open. A loose
/// bound (rows take about 60 bytes): it only decides when measuring can wait.
const ROW_BYTES_BOUND: u64 = 32 * 1024;

/// The log as `bound` last measured it, and the rows written since: upper bounds of the rows
/// and pages in use now, since only this writer adds rows and deletions only lower both.
#[derive(Debug, Clone, Copy)]
struct Measured {
    rows: u64,
    used_bytes: u64,
    added_rows: u64,
}

pub struct Keeper {
    next_open: Instant,
    backoff: Duration,
    /// The database was open once: opening it again counts as a reopen.
    was_open: bool,
    last_retention: Option<Instant>,
    /// Warned that pruning every row still leaves the file over `max_db_bytes`.
    warned_full: bool,
    /// `None` until `bound` measured this database, and after a failed `bound`.
    measured: Option<Measured>,
}

impl Default for Keeper {
    fn default() -> Self {
        Keeper {
            next_open: Instant::now() + FIRST_RETRY,
            backoff: FIRST_RETRY,
            was_open: false,
            last_retention: None,
            warned_full: false,
            measured: None,
        }
    }
}

impl Keeper {
    /// Opens the database now; a failure is shown in `/health` and retried by `keep_open`.
    pub fn open(&mut self, settings: &Settings, health: &StorageHealth) -> Option<Storage> {
        self.measured = None;
        match open(settings) {
            Ok(storage) => {
                health.opened(self.was_open);
                // A new database is measured (and its retention stepped) at once.
                self.last_retention = None;
                if self.was_open {
                    tracing::warn!("storage is open again");
                }
                self.was_open = true;
                self.backoff = FIRST_RETRY;
                Some(storage)
            }
            Err(e) => {
                tracing::error!("storage unavailable (retrying in {:?}): {e}", self.backoff);
                health.closed(format!("storage unavailable: {e}"));
                self.next_open = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_RETRY);
                None
            }
        }
    }

    /// Called before every write: a vanished file is closed and created again at once; a
    /// database that failed to open is retried when its backoff is up.
    pub fn keep_open(&mut self, settings: &Settings, health: &StorageHealth, storage: &mut Option<Storage>) {
        if let Some(s) = storage.as_ref() {
            if !s.vanished() {
                return;
            }
            let path = s.path().map(|p| p.display().to_string()).unwrap_or_default();
            tracing::error!("the database file {path} vanished (deleted or replaced); creating it again");
            health.failed(format!("database file {path} vanished; created again"));
            // Closing first lets SQLite finish with the old inode and its WAL before a new
            // file takes the path.
            *storage = None;
            self.next_open = Instant::now();
        }
        if Instant::now() >= self.next_open {
            *storage = self.open(settings, health);
        }
    }

    /// A retention step is due (so `bound` has work even when nothing was written).
    pub fn retention_due(&self) -> bool {
        self.last_retention.is_none_or(|t| t.elapsed() >= RETENTION_EVERY)
    }

    /// Counts `rows` just written and says whether `bound` must run now: not while the last
    /// measurement plus `ROW_BYTES_BOUND` a row written since stays within every bound (so
    /// nothing could be pruned) and no retention step is due. So a busy log is measured about
    /// once a second (the rollup flush bounds it) instead of after every batch: the two index
    /// lookups and two pragmas cost ~20 k instructions, 116 a row at 170-row batches
    /// (callgrind, 2026-12-04). The gauges they refresh lag by that second at most.
    pub fn needs_bound(&mut self, settings: &Settings, rows: usize) -> bool {
        let Some(m) = self.measured.as_mut() else {
            return true;
        };
        m.added_rows = m.added_rows.saturating_add(rows as u64);
        let rows_at_most = m.rows.saturating_add(m.added_rows);
        let used_at_most = m
            .used_bytes
            .saturating_add(m.added_rows.saturating_mul(ROW_BYTES_BOUND));
        let rows_fit = settings.max_records.is_none_or(|max| rows_at_most <= max);
        let bytes_fit = settings
            .max_db_bytes
            .is_none_or(|max| used_at_most as f64 <= max as f64 * SIZE_TARGET);
        !(rows_fit && bytes_fit) || self.retention_due()
    }

    /// One round of pruning and the size gauges. Cheap when nothing is over: two index
    /// lookups and three pragmas.
    pub fn bound(&mut self, settings: &Settings, health: &StorageHealth, storage: &mut Storage) {
        if let Err(e) = self.bound_inner(settings, health, storage) {
            self.measured = None;
            tracing::warn!("pruning the request log failed (will retry): {e}");
        }
    }

    fn bound_inner(
        &mut self,
        settings: &Settings,
        health: &StorageHealth,
        storage: &mut Storage,
    ) -> Result<(), StorageError> {
        // The last count and sizes measured, while no deletion has made them stale: the gauges
        // reuse them instead of asking SQLite again (each size pragma is parsed anew).
        let mut fresh: Option<(u64, Option<DbBytes>)> = None;
        for _ in 0..PRUNE_STEPS_PER_TICK {
            let rows = requests::row_count(storage)?;
            fresh = Some((rows, None));
            let over_count = settings.max_records.map_or(0, |max| rows.saturating_sub(max));
            if over_count > 0 {
                let n = requests::prune_oldest(storage, over_count.min(PRUNE_STEP))?;
                health.count_pruned(PruneReason::MaxRecords, n as u64);
                fresh = None;
                continue;
            }
            let Some(max_bytes) = settings.max_db_bytes else { break };
            let bytes = storage.bytes()?;
            fresh = Some((rows, Some(bytes)));
            if (bytes.used as f64) <= max_bytes as f64 * SIZE_TARGET {
                self.warned_full = false;
                break;
            }
            if rows == 0 {
                if !self.warned_full {
                    self.warned_full = true;
                    tracing::warn!(
                        "the database is over storage.max_db_bytes with no request rows left to prune \
                         (stats rollups and limit windows are kept)"
                    );
                }
                break;
            }
            // A slice of the rows, so the step shrinks the file in proportion.
            let n = requests::prune_oldest(storage, (rows / 10).clamp(1, PRUNE_STEP))?;
            health.count_pruned(PruneReason::MaxDbBytes, n as u64);
            fresh = None;
        }
        if self.retention_due() {
            let now = now_unix_ms();
            let cutoff = now - i64::from(settings.retention_days) * DAY_MS;
            let n = requests::prune_before(storage, cutoff, PRUNE_STEP)?;
            health.count_pruned(PruneReason::Retention, n as u64);
            let labels = requests::prune_labels(storage, MAX_LABELS)?;
            let folded = rollups::fold_oldest_hour(storage, now - rollups::FOLD_AFTER_MS)?;
            let expired = rollups::expire(storage, now - i64::from(settings.rollup_retention_days) * DAY_MS)?;
            // One step of each per tick; keep stepping next tick while there is more.
            if n == 0 && !folded && expired == 0 {
                self.last_retention = Some(Instant::now());
            }
            if n > 0 || labels > 0 || folded || expired > 0 {
                fresh = None;
            }
        }
        let (rows, bytes) = match fresh {
            Some((rows, Some(bytes))) => (rows, bytes),
            Some((rows, None)) => (rows, storage.bytes()?),
            None => (requests::row_count(storage)?, storage.bytes()?),
        };
        health.set_size(rows, bytes.file + bytes.wal);
        self.measured = Some(Measured {
            rows,
            used_bytes: bytes.used,
            added_rows: 0,
        });
        Ok(())
    }
}

/// Rows per write transaction: small next to a small `max_db_bytes` or `max_records`, so a
/// batch (and the WAL it fills before the checkpoint) stays a small part of the bound, and the
/// pages it needs before the next prune (which an in-memory database never gives back) too.
pub fn batch_rows(settings: &Settings) -> usize {
    let by_bytes = settings.max_db_bytes.map_or(10_000, |max| max / 4096);
    let by_rows = settings.max_records.map_or(10_000, |max| max / 10);
    by_bytes.min(by_rows).clamp(64, 10_000) as usize
}

fn open(settings: &Settings) -> Result<Storage, StorageError> {
    let storage = Storage::open(settings.path.as_deref())?;
    // Bounded waits on a locked file: the control thread has other work.
    storage.set_busy_timeout(BUSY_TIMEOUT)?;
    storage.bound_wal(settings.max_db_bytes)?;
    Ok(storage)
}

pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Keeper, Settings, StorageHealth, ROW_BYTES_BOUND, SIZE_TARGET};
    use crate::storage::{requests, Storage};
    use crate::usage::record::RequestRecord;

    fn settings(max_records: Option<u64>, max_db_bytes: Option<u64>) -> Settings {
        Settings {
            path: None,
            log_requests: true,
            retention_days: 30,
            max_records,
            max_db_bytes,
            sample_rate: 1.0,
            rollup_retention_days: 400,
            max_stat_models: 10_000,
            health_window: Duration::from_secs(30),
            max_pins: 100_000,
            pin_retention_days: 30,
            writer_class: crate::config::WriterClass::Auto,
        }
    }

    #[test]
    fn measuring_waits_only_while_no_bound_could_be_crossed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Storage::open(Some(&dir.path().join("k.db"))).unwrap();
        let now = super::now_unix_ms();
        let rows: Vec<RequestRecord> = (0..10)
            .map(|i| RequestRecord {
                ts_ms: now + i,
                ..Default::default()
            })
            .collect();
        requests::insert(&mut s, &rows).unwrap();
        let health = StorageHealth::default();
        let by_rows = settings(Some(15), None);
        let mut keeper = Keeper::default();
        assert!(keeper.needs_bound(&by_rows, 10), "nothing measured yet");
        keeper.bound(&by_rows, &health, &mut s);
        assert!(!keeper.retention_due(), "the first bound stepped retention");
        assert_eq!(health.size().0, 10);
        assert!(!keeper.needs_bound(&by_rows, 3), "13 rows at most");
        assert!(!keeper.needs_bound(&by_rows, 2), "15 rows at most");
        assert!(keeper.needs_bound(&by_rows, 1), "16 rows could be one over");
        keeper.bound(&by_rows, &health, &mut s);
        assert!(!keeper.needs_bound(&by_rows, 5), "measured again: 10 rows");

        let used = s.bytes().unwrap().used;
        let room_for = |rows: u64| (used + rows * ROW_BYTES_BOUND) as f64 / SIZE_TARGET;
        let by_bytes = settings(None, Some(room_for(4).ceil() as u64));
        keeper.bound(&by_bytes, &health, &mut s);
        assert!(!keeper.needs_bound(&by_bytes, 4));
        assert!(keeper.needs_bound(&by_bytes, 1), "a fifth row could cross max_db_bytes");
        let unbounded = settings(None, None);
        keeper.bound(&unbounded, &health, &mut s);
        assert!(!keeper.needs_bound(&unbounded, 1_000_000));
        keeper.open(&unbounded, &health);
        assert!(keeper.needs_bound(&unbounded, 1), "another database is measured first");
    }
}
