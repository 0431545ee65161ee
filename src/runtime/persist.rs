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
    storage: Option<Storage>,
    windows: WindowStore,
    last: Instant,
    failing: bool,
}

/// unix ms - limiter ms, now.
fn clock_offset() -> i64 {
    unix_now_ms() as i64 - limits::now() as i64
}

impl Persist {
    /// Opens `storage.path` (in memory when unset) and restores saved windows.
    pub(super) fn open(gateway: &Gateway) -> Persist {
        let path = gateway.current().config.storage.path.clone();
        let mut windows = WindowStore::default();
        let storage = match Storage::open(path.as_deref()) {
            Ok(mut storage) => {
                if storage.persistent() {
                    match windows.load(&mut storage, clock_offset()) {
                        Ok(saved) => {
                            let restored = gateway.limits.restore(&saved, limits::now());
                            tracing::info!(restored, "limit windows restored from storage");
                        }
                        Err(e) => tracing::error!("cannot read saved limit windows: {e}"),
                    }
                }
                Some(storage)
            }
            Err(e) => {
                let shown = path.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
                tracing::error!("storage {shown} unavailable, limits will not survive a restart: {e}");
                None
            }
        };
        Persist {
            storage,
            windows,
            last: Instant::now(),
            failing: false,
        }
    }

    /// Called every control tick; snapshots once a second.
    pub(super) fn tick(&mut self, gateway: &Gateway) {
        if self.last.elapsed() >= SNAPSHOT_EVERY {
            self.last = Instant::now();
            self.snapshot(gateway);
        }
    }

    /// The last snapshot, after the workers have stopped (waits for them up to the grace
    /// period plus a margin, then saves what there is).
    #[allow(clippy::disallowed_methods)] // the control thread may sleep
    pub(super) fn finish(&mut self, gateway: &Gateway) {
        let grace = gateway.current().config.server.shutdown_grace + Duration::from_secs(2);
        let started = Instant::now();
        while !gateway.workers_stopped.load(std::sync::atomic::Ordering::Acquire) && started.elapsed() < grace {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.snapshot(gateway);
    }

    fn snapshot(&mut self, gateway: &Gateway) {
        let Some(storage) = self.storage.as_mut().filter(|s| s.persistent()) else {
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
