//! The control thread's storage duty for limits: open the database, put saved limit windows
//! back before any worker serves, snapshot changed windows every second, and once more after
//! the workers stopped. Runs only on the control thread.
//! Invariant: a storage failure is logged and never stops the gateway; limits then simply
//! live in memory only.

use std::time::{Duration, Instant};

use super::Gateway;
use crate::limits;
use crate::storage::windows::{unix_now_ms, WindowStore};
use crate::storage::Storage;

const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

pub(super) struct Persist {
    windows: WindowStore,
    last: Instant,
    failing: bool,
}

/// unix ms - limiter ms, now.
fn clock_offset() -> i64 {
    unix_now_ms() as i64 - limits::now() as i64
}

impl Persist {
    /// Restores saved windows from `storage` (the control thread's one open database).
    pub(super) fn open(gateway: &Gateway, storage: Option<&mut Storage>) -> Persist {
        let mut windows = WindowStore::default();
        match storage {
            Some(storage) if storage.persistent() => match windows.load(storage, clock_offset()) {
                Ok(saved) => {
                    let restored = gateway.limits.restore(&saved, limits::now());
                    tracing::info!(restored, "limit windows restored from storage");
                }
                Err(e) => tracing::error!("cannot read saved limit windows: {e}"),
            },
            Some(_) => {}
            None => tracing::error!("storage unavailable: limits will not survive a restart"),
        }
        Persist {
            windows,
            last: Instant::now(),
            failing: false,
        }
    }

    /// Called every control tick; snapshots once a second.
    pub(super) fn tick(&mut self, gateway: &Gateway, storage: Option<&mut Storage>) {
        if self.last.elapsed() >= SNAPSHOT_EVERY {
            self.last = Instant::now();
            self.snapshot(gateway, storage);
        }
    }

    /// A snapshot now (the last one, after the workers stopped).
    pub(super) fn snapshot(&mut self, gateway: &Gateway, storage: Option<&mut Storage>) {
        let Some(storage) = storage.filter(|s| s.persistent()) else {
            return;
        };
        let snapshots = gateway.limits.snapshot(limits::now());
        match self.windows.save(storage, &snapshots, clock_offset(), unix_now_ms()) {
            Ok(_) if self.failing => {
                self.failing = false;
                tracing::info!("limit-window snapshots are being saved again");
            }
            Ok(_) => {}
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::error!("cannot save limit windows (will keep trying): {e}");
            }
            Err(_) => {}
        }
    }
}
