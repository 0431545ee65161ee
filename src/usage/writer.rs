//! The request-log writer, on the control thread: drains the record queue into SQLite in
//! batched transactions and answers the admin API's storage queries; `storage::keeper` keeps
//! the database open and bounded around it.
//! Invariant: a storage failure never reaches the workers; the records of a failed batch are
//! counted as dropped and the failure is visible in `/health` for `storage.health_window_ms`.

use serde::Serialize;

use crate::runtime::commands::{Command, Reply};
use crate::runtime::Gateway;
use crate::storage::keeper::{batch_rows, Keeper};
use crate::storage::requests;
use crate::storage::Storage;
use crate::usage::record::RequestRecord;

#[derive(Default)]
pub struct LogWriter {
    keeper: Keeper,
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

    /// Writes what the workers queued since the last tick, then prunes.
    pub fn tick(&mut self, gateway: &Gateway, storage: &mut Option<Storage>) {
        let config = gateway.current().config.clone();
        let settings = &config.storage;
        let health = &gateway.storage_status;
        self.keeper.keep_open(settings, health, storage);
        let batch_max = batch_rows(settings);
        loop {
            let batch = gateway.records.drain(batch_max);
            if batch.is_empty() {
                break;
            }
            match self.write_rows(gateway, storage, &batch) {
                Ok(()) => gateway.records.burst_over(),
                Err(e) => {
                    let e = format!("request log write failed: {e}");
                    gateway.records.count_dropped(batch.len() as u64, &e);
                    health.failed(e);
                    break;
                }
            }
            if batch.len() < batch_max {
                break;
            }
        }
        if let Some(storage) = storage.as_mut() {
            self.keeper.bound(settings, health, storage);
        }
    }

    /// Inserts `batch`; when the file turns out to have vanished under the write, the batch
    /// went nowhere: the database is created again and the batch written there.
    fn write_rows(
        &mut self,
        gateway: &Gateway,
        storage: &mut Option<Storage>,
        batch: &[RequestRecord],
    ) -> Result<(), String> {
        let config = gateway.current().config.clone();
        for _ in 0..2 {
            let Some(s) = storage.as_mut() else {
                return Err("storage is not open (retrying)".to_owned());
            };
            requests::insert(s, batch).map_err(|e| e.to_string())?;
            if !s.vanished() {
                return Ok(());
            }
            self.keeper.keep_open(&config.storage, &gateway.storage_status, storage);
        }
        Err("the database file vanished again while writing".to_owned())
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
