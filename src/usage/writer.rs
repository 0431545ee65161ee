//! The request-log writer, on the control thread: drains the record queue into SQLite in
//! batched transactions, counts the drained records in the stats rollups (`record_rollup`),
//! collects the rollups once a second (`FLUSH_EVERY`), and answers the admin API's storage
//! queries; `storage::keeper` keeps the database open and bounded around it.
//! Invariant: a storage failure never reaches the workers. A drained record counts in the
//! rollups before its row is written, so the rows of a failed batch are counted as dropped and
//! their requests still in the stats; rollup cells that could not be written stay pending
//! (bounded by `MAX_PENDING`, the excess counted) and are written exactly once when storage is
//! back. Either failure shows in `/health` for `storage.health_window_ms`.

use std::time::{Duration, Instant};

use ahash::AHashMap;
use serde::Serialize;

use crate::config::WriterClass;
use crate::gateway::commands::{Command, Reply};
use crate::gateway::Gateway;
use crate::storage::health::PruneReason;
use crate::storage::idle_class::IdleClass;
use crate::storage::keeper::{batch_rows, now_unix_ms, Keeper};
use crate::storage::memlog::{Bounds, MemLog};
use crate::storage::{requests, rollups, Storage, StorageError};
use crate::usage::record_rollup::RecordRollups;
use crate::usage::rollup::{Cell, RollupKey};

/// Rollups reach the database this often: what a crash can lose of the stats.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Rollup cells held while storage is down (a few hundred bytes each).
const MAX_PENDING: usize = 100_000;

pub struct LogWriter {
    keeper: Keeper,
    /// The drained records' stats, until the next collection.
    record_rollups: RecordRollups,
    /// Rollup cells collected and not yet committed.
    pending: AHashMap<RollupKey, Cell>,
    last_flush: Instant,
    /// The rows when the database is in memory (`storage.path = ""`); SQLite holds only the
    /// rollups then.
    memlog: MemLog,
    /// Something was written or deleted since the database was last bounded and measured.
    stale: bool,
    /// In memory: the SQLite side's bytes (rollups) as last measured; the size gauge adds the
    /// ring's bytes to this, never to its own previous value.
    sqlite_bytes: u64,
    /// The control thread's row writes and naps in the idle scheduling class while CPUs have
    /// room (`storage.writer_class`).
    idle_class: IdleClass,
}

/// The database lives in memory: rows go to the ring.
fn in_memory(storage: &Option<Storage>) -> bool {
    storage.as_ref().is_some_and(|s| !s.persistent())
}

impl Default for LogWriter {
    fn default() -> Self {
        LogWriter {
            keeper: Keeper::default(),
            record_rollups: RecordRollups::default(),
            pending: AHashMap::new(),
            last_flush: Instant::now(),
            memlog: MemLog::default(),
            stale: true,
            sqlite_bytes: 0,
            idle_class: IdleClass::probe(),
        }
    }
}

impl LogWriter {
    /// Opens the database at `storage.path` (in memory when unset), the one the control thread
    /// owns for every storage duty. A failure leaves rotor without storage until a retry
    /// succeeds: proxying goes on and records are counted as dropped.
    pub fn open_storage(&mut self, gateway: &Gateway) -> Option<Storage> {
        let config = gateway.current().config.clone();
        self.keeper.open(&config.storage, &gateway.storage_status)
    }

    pub fn new() -> LogWriter {
        LogWriter::default()
    }

    /// Runs `nap` (the control thread's wait for its next tick) in the idle scheduling class
    /// when requests are being logged (`logging`: the last look found records queued) and
    /// `storage.writer_class` and the machine allow: its wake-up then takes no CPU a worker
    /// wants. Its only lock is the thread's park.
    pub fn nap_in_idle_class(&mut self, gateway: &Gateway, logging: bool, nap: impl FnOnce()) {
        let class = gateway.current().config.storage.writer_class;
        let stretch = logging.then(|| self.idle_class.begin(class)).flatten();
        nap();
        self.idle_class.end(stretch);
    }

    /// Writes what the workers queued since the last tick, the rollups when due, then prunes.
    pub fn tick(&mut self, gateway: &Gateway, storage: &mut Option<Storage>) {
        self.write(gateway, storage, false);
    }

    /// Writes everything now, rollups included (before an admin query, and at shutdown).
    pub fn flush(&mut self, gateway: &Gateway, storage: &mut Option<Storage>) {
        self.write(gateway, storage, true);
    }

    fn write(&mut self, gateway: &Gateway, storage: &mut Option<Storage>, all: bool) {
        let config = gateway.current().config.clone();
        let settings = &config.storage;
        self.keeper.keep_open(settings, &gateway.storage_status, storage);
        let bounded = self.write_rows(gateway, storage);
        let mut rollups = false;
        if all || self.last_flush.elapsed() >= FLUSH_EVERY {
            self.last_flush = Instant::now();
            rollups = self.write_rollups(gateway, storage);
        }
        // Rows written this tick were bounded after their batch already; an idle tick with no
        // retention step due has nothing to bound (its sizes and row count cannot have moved).
        let needed = rollups || (!bounded && (all || self.stale || self.keeper.retention_due()));
        if let Some(storage) = storage.as_mut().filter(|_| needed) {
            self.keeper.bound(settings, &gateway.storage_status, storage);
            self.sqlite_bytes = gateway.storage_status.size().1;
        }
        self.stale = self.stale && storage.is_none();
        let idle_class = self.idle_class.usable() && settings.writer_class != WriterClass::Normal;
        gateway
            .storage_status
            .set_idle_class(idle_class, self.idle_class.starved());
        if in_memory(storage) {
            // The keeper measured the SQLite side (rollups) when it ran; the rows are in the
            // ring. On a tick it skipped, the gauge still holds last tick's sum, ring included.
            gateway
                .storage_status
                .set_size(self.memlog.len(), self.memlog.bytes() + self.sqlite_bytes);
        }
    }

    /// Returns whether the database was bounded after a batch (so the tick need not again).
    fn write_rows(&mut self, gateway: &Gateway, storage: &mut Option<Storage>) -> bool {
        let config = gateway.current().config.clone();
        let settings = &config.storage;
        let batch_max = batch_rows(settings);
        let mut bounded = false;
        loop {
            let batch = gateway.records.drain(batch_max);
            if batch.is_empty() {
                break;
            }
            self.record_rollups.count(&batch, &gateway.rollups);
            if in_memory(storage) {
                let bounds = Bounds {
                    max_rows: settings.max_records,
                    max_bytes: settings.max_db_bytes,
                    cutoff_ms: now_unix_ms() - i64::from(settings.retention_days) * 86_400_000,
                };
                // The ring is this thread's alone: no worker waits on it.
                let stretch = self.idle_class.begin(settings.writer_class);
                let evicted = self.memlog.append(&batch, &bounds);
                self.idle_class.end(stretch);
                let health = &gateway.storage_status;
                health.count_pruned(PruneReason::MaxRecords, evicted.rows);
                health.count_pruned(PruneReason::MaxDbBytes, evicted.bytes);
                health.count_pruned(PruneReason::Retention, evicted.age);
                gateway.records.burst_over();
                continue;
            }
            // SQLite's own locks only: no worker waits on them.
            let stretch = self.idle_class.begin(settings.writer_class);
            let written = self.checked(gateway, storage, |s| requests::insert(s, &batch));
            self.idle_class.end(stretch);
            match written {
                Ok(()) => {
                    gateway.records.burst_over();
                    // Bounded after every batch that could have crossed a bound, not once per
                    // tick: a tick can drain a full queue, many times a small `max_db_bytes`.
                    let needed = self.keeper.needs_bound(settings, batch.len());
                    if let Some(s) = storage.as_mut().filter(|_| needed) {
                        self.keeper.bound(settings, &gateway.storage_status, s);
                        bounded = true;
                    }
                }
                Err(e) => {
                    let e = format!("request log write failed: {e}");
                    gateway.records.count_dropped(batch.len() as u64, &e);
                    gateway.storage_status.failed(e);
                    break;
                }
            }
            if batch.len() < batch_max {
                break;
            }
        }
        bounded
    }

    /// Adds the collected cells (the workers' and the drained records') to the pending ones and
    /// commits them all in one transaction; on failure they stay pending for the next flush.
    /// Returns whether there were any.
    fn write_rollups(&mut self, gateway: &Gateway, storage: &mut Option<Storage>) -> bool {
        self.record_rollups.fold(&gateway.rollups);
        for (key, cell) in gateway.rollups.collect() {
            self.pending.entry(key).or_default().merge(&cell);
        }
        if self.pending.is_empty() {
            return false;
        }
        let cells: Vec<(RollupKey, Cell)> = self.pending.drain().collect();
        if let Err(e) = self.checked(gateway, storage, |s| rollups::add(s, &cells)) {
            gateway
                .storage_status
                .failed(format!("stats rollup write failed (kept for the next try): {e}"));
            self.pending.extend(cells);
            self.shed_pending(gateway);
        }
        true
    }

    /// Past `MAX_PENDING` cells, the excess is given up and its requests counted.
    fn shed_pending(&mut self, gateway: &Gateway) {
        let excess = self.pending.len().saturating_sub(MAX_PENDING);
        if excess == 0 {
            return;
        }
        let shed: Vec<RollupKey> = self.pending.keys().take(excess).cloned().collect();
        let mut requests = 0;
        for key in shed {
            requests += self.pending.remove(&key).map_or(0, |c| c.requests);
        }
        gateway.storage_status.count_rollups_dropped(requests);
        tracing::error!(requests, "storage down too long: stats rollups given up");
    }

    /// Runs `write` in the open database. When the file turns out to have vanished under the
    /// write, what it wrote went nowhere anyone can read: the database is created again and
    /// `write` runs once more there (so nothing is lost, and nothing counted twice in a file
    /// anyone can read).
    fn checked(
        &mut self,
        gateway: &Gateway,
        storage: &mut Option<Storage>,
        mut write: impl FnMut(&mut Storage) -> Result<(), StorageError>,
    ) -> Result<(), String> {
        let config = gateway.current().config.clone();
        for _ in 0..2 {
            let Some(s) = storage.as_mut() else {
                return Err("storage is not open (retrying)".to_owned());
            };
            write(s).map_err(|e| e.to_string())?;
            if !s.vanished() {
                return Ok(());
            }
            self.keeper.keep_open(&config.storage, &gateway.storage_status, storage);
        }
        Err("the database file vanished again while writing".to_owned())
    }

    /// The last write, after the workers stopped: rollups that cannot be written now are
    /// counted as lost (with the requests of records a failed write left queued).
    pub fn finish(&mut self, gateway: &Gateway, storage: &mut Option<Storage>) {
        self.flush(gateway, storage);
        let left = gateway.records.drain(usize::MAX);
        if !left.is_empty() {
            self.record_rollups.count(&left, &gateway.rollups);
            self.write_rollups(gateway, storage);
        }
        let lost: u64 = self.pending.drain().map(|(_, c)| c.requests).sum();
        if lost > 0 {
            gateway.storage_status.count_rollups_dropped(lost);
            tracing::error!(requests = lost, "stats rollups could not be written before exit");
        }
    }

    /// Runs an admin storage command (after flushing queued records and rollups, so a query
    /// sees every request answered before it).
    pub fn execute(&mut self, command: Command, gateway: &Gateway, storage: &mut Option<Storage>) -> Reply {
        self.flush(gateway, storage);
        // A deletion changes what the next tick measures.
        self.stale = true;
        if in_memory(storage) {
            match command {
                Command::Logs { filter, limit, offset } => {
                    return json(Ok::<_, String>(self.memlog.logs(&filter, limit, offset)))
                        .map_err(|e| (500, format!("storage query failed: {e}")))
                }
                Command::DeleteLogs => return Ok(format!("{{\"deleted\":{}}}", self.memlog.clear()).into_bytes()),
                _ => {}
            }
        }
        let Some(storage) = storage.as_mut() else {
            return Err((503, "request log storage is unavailable".to_owned()));
        };
        let result = match command {
            Command::Logs { filter, limit, offset } => json(requests::logs(storage, &filter, limit, offset)),
            Command::DeleteLogs => requests::clear(storage)
                .map(|n| format!("{{\"deleted\":{n}}}").into_bytes())
                .map_err(|e| e.to_string()),
            Command::Stats {
                period,
                group,
                since_ms,
                until_ms,
            } => json(rollups::stats(storage, period, group, since_ms, until_ms).map(|data| StatsPage { data })),
            Command::Overview { since_ms, until_ms } => json(rollups::overview(storage, since_ms, until_ms)),
            Command::Reload | Command::Keys(_) | Command::MintToken { .. } | Command::ClusterPool(_) => {
                return Err((500, "not a storage command".to_owned()))
            }
        };
        result.map_err(|e| (500, format!("storage query failed: {e}")))
    }
}

#[derive(Serialize)]
struct StatsPage {
    data: Vec<rollups::StatsRow>,
}

fn json<T: Serialize, E: std::fmt::Display>(value: Result<T, E>) -> Result<Vec<u8>, String> {
    let value = value.map_err(|e| e.to_string())?;
    sonic_rs::to_vec(&value).map_err(|e| e.to_string())
}
