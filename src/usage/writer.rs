//! The request-log writer, on the control thread: drains the record queue into SQLite in
//! batched transactions, applies retention, and answers the admin API's storage queries.
//! Invariant: a storage failure never reaches the workers; the records of a failed batch are
//! counted as dropped and the failure is visible in `/health` until a write succeeds again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;

use crate::gateway::commands::{Command, Reply};
use crate::gateway::Gateway;
use crate::storage::requests;
use crate::storage::Storage;

/// Records per transaction; one transaction per tick keeps fsyncs rare.
const BATCH: usize = 10_000;
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// A locked database makes the writer wait this long at most per attempt.
const BUSY_TIMEOUT: Duration = Duration::from_millis(250);

/// Storage health as `/health` shows it.
#[derive(Default)]
pub struct StorageStatus {
    failing: AtomicBool,
    last_error: Mutex<String>,
}

impl StorageStatus {
    pub fn ok(&self) -> bool {
        !self.failing.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> String {
        self.last_error.lock().clone()
    }

    fn set(&self, result: Result<(), String>) {
        match result {
            Ok(()) => self.failing.store(false, Ordering::Relaxed),
            Err(e) => {
                *self.last_error.lock() = e;
                self.failing.store(true, Ordering::Relaxed);
            }
        }
    }
}

pub struct LogWriter {
    last_retention: Instant,
}

impl Default for LogWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl LogWriter {
    /// Opens the database at `storage.path` (in memory when unset), the one the control thread
    /// owns for every storage duty. A failure leaves rotor without storage: proxying goes on and
    /// records are counted as dropped.
    pub fn open_storage(gateway: &Gateway) -> Option<Storage> {
        let config = gateway.current().config.clone();
        match Storage::open(config.storage.path.as_deref()) {
            Ok(s) => {
                // Bounded waits on a locked file: the control thread has other work.
                let _ = s.set_busy_timeout(BUSY_TIMEOUT);
                gateway.storage_status.set(Ok(()));
                Some(s)
            }
            Err(e) => {
                tracing::error!("storage unavailable: {e}");
                gateway.storage_status.set(Err(e.to_string()));
                None
            }
        }
    }

    pub fn new() -> LogWriter {
        let long_ago = Instant::now().checked_sub(RETENTION_EVERY).unwrap_or_else(Instant::now);
        LogWriter {
            last_retention: long_ago,
        }
    }

    /// Writes what the workers queued since the last tick.
    pub fn tick(&mut self, gateway: &Gateway, storage: &mut Option<Storage>) {
        loop {
            let batch = gateway.records.drain(BATCH);
            if batch.is_empty() {
                break;
            }
            let result = match storage.as_mut() {
                Some(storage) => requests::insert(storage, &batch).map_err(|e| e.to_string()),
                None => Err("storage is not open".to_owned()),
            };
            match &result {
                Ok(()) => gateway.records.burst_over(),
                Err(e) => gateway
                    .records
                    .count_dropped(batch.len() as u64, &format!("request log write failed: {e}")),
            }
            let failed = result.is_err();
            gateway.storage_status.set(result);
            if failed || batch.len() < BATCH {
                break;
            }
        }
        if self.last_retention.elapsed() >= RETENTION_EVERY {
            self.last_retention = Instant::now();
            let days = gateway.current().config.storage.retention_days;
            let cutoff = now_unix_ms() - i64::from(days) * 86_400_000;
            if let Some(storage) = storage.as_mut() {
                match requests::expire(storage, cutoff) {
                    Ok(n) if n > 0 => tracing::info!(deleted = n, "request records past retention deleted"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("retention failed: {e}"),
                }
            }
        }
    }

    /// Runs an admin storage command (after flushing queued records, so a log query sees every
    /// request answered before it).
    pub fn execute(&mut self, command: Command, gateway: &Gateway, storage: &mut Option<Storage>) -> Reply {
        self.tick(gateway, storage);
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
            } => json(requests::stats(storage, period, group, since_ms, until_ms).map(|data| StatsPage { data })),
            Command::Overview { since_ms, until_ms } => json(requests::overview(storage, since_ms, until_ms)),
            Command::Reload => return Err((500, "reload is not a storage command".to_owned())),
        };
        result.map_err(|e| (500, format!("storage query failed: {e}")))
    }
}

#[derive(Serialize)]
struct StatsPage {
    data: Vec<requests::StatsRow>,
}

fn json<T: Serialize, E: std::fmt::Display>(value: Result<T, E>) -> Result<Vec<u8>, String> {
    let value = value.map_err(|e| e.to_string())?;
    sonic_rs::to_vec(&value).map_err(|e| e.to_string())
}

fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
