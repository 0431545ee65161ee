//! The control thread's storage duty for limits: open the database, put saved limit windows
//! back before any worker serves, snapshot changed windows every second, and once more after
//! the workers stopped. Runs only on the control thread.
//!
//! Crashes. A snapshot a second leaves up to a second of admissions unsaved when the process
//! dies (kill -9 once let 25 requests through against `rpm = 20`). So every window also counts
//! into the admission journal (`storage::journal`), which survives the process. At start:
//! - after a graceful stop (or on first start) the snapshots are exact and restored as saved;
//! - after a crash, each window also gets what the journal says it admitted after its last
//!   saved snapshot, counted at the restart (a little later than it happened: it frees up
//!   that much later, never earlier);
//! - when the journal cannot vouch (the machine restarted, or the file is damaged) or the saved
//!   windows cannot be read, each window is counted full from the restart, for one window
//!   length: the only choice that never admits more than a limit when nothing says what the
//!   lost second admitted.
//!
//! Invariant: a storage failure is logged and never stops the gateway; limits then simply
//! live in memory only. No window ever admits more than its limit across a restart, clean or
//! not, as long as the journal's pages reached the kernel (any process death does that).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::gateway::Gateway;
use crate::limits;
use crate::storage::journal::{self, Journal, Previous};
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

/// What the start log says of the saved windows: a fresh store is not "0 restored", and windows
/// dropped because their key or limit left the config are named as such.
fn restore_summary(saved: usize, restored: usize) -> &'static str {
    if saved == 0 {
        "no saved limit windows: every limit starts empty"
    } else if restored == saved {
        "limit windows restored from storage"
    } else {
        "limit windows restored from storage; the dropped ones belong to keys or limits no longer configured"
    }
}

impl Persist {
    /// Restores saved windows from `storage` (the control thread's one open database), adds
    /// what an unclean stop left unsaved, and starts this run's admission journal.
    pub(super) fn open(gateway: &Gateway, storage: Option<&mut Storage>) -> Persist {
        let mut persist = Persist {
            windows: WindowStore::default(),
            last: Instant::now(),
            failing: false,
        };
        let db = gateway.current().config.storage.path.clone();
        match (storage, db) {
            (Some(storage), Some(db)) if storage.persistent() => {
                persist.restore(gateway, storage, &journal::path_for(&db));
                persist.snapshot(gateway, Some(storage));
            }
            (Some(_), _) => {}
            (None, _) => tracing::error!("storage unavailable: limits will not survive a restart"),
        }
        persist
    }

    fn restore(&mut self, gateway: &Gateway, storage: &mut Storage, journal_path: &Path) {
        let boot = journal::boot_id();
        let mut previous = journal::read_previous(journal_path, boot);
        match self.windows.load(storage, clock_offset()) {
            Ok(saved) => {
                let restored = gateway.limits.restore(&saved, limits::now());
                let dropped = saved.len().saturating_sub(restored);
                let summary = restore_summary(saved.len(), restored);
                if saved.is_empty() {
                    tracing::info!("{summary}");
                } else {
                    tracing::info!(restored, dropped, "{summary}");
                }
            }
            Err(e) => {
                tracing::error!("cannot read saved limit windows: {e}");
                previous = Previous::Unknown(format!("its saved limit windows cannot be read ({e})"));
            }
        }
        let unsaved = gateway.limits.restore_unsaved(&previous, limits::now());
        let units: u64 = unsaved.values().sum();
        match &previous {
            Previous::Clean => {}
            Previous::Crashed(_) => tracing::warn!(
                windows = unsaved.len(),
                units,
                "rotor did not stop cleanly: counted what its windows admitted after their last saved snapshot"
            ),
            Previous::Unknown(why) => tracing::warn!(
                windows = unsaved.len(),
                "rotor cannot tell what its windows admitted before this start ({why}): every limit window is counted full for one window length"
            ),
        }
        let created = gateway
            .limits
            .attach_journal(&unsaved, |windows| Journal::create(journal_path, boot, windows));
        if let Err(e) = created {
            tracing::error!(
                "cannot create the admission journal {}: {e}; after a crash, limits will only know the last saved second",
                journal_path.display()
            );
        }
    }

    /// Called every control tick; snapshots once a second.
    pub(super) fn tick(&mut self, gateway: &Gateway, storage: Option<&mut Storage>) {
        if self.last.elapsed() >= SNAPSHOT_EVERY {
            self.last = Instant::now();
            self.snapshot(gateway, storage);
        }
    }

    /// A snapshot now (the last one, after the workers stopped). True when it was saved.
    pub(super) fn snapshot(&mut self, gateway: &Gateway, storage: Option<&mut Storage>) -> bool {
        let Some(storage) = storage.filter(|s| s.persistent()) else {
            return false;
        };
        let snapshot = gateway.limits.snapshot(limits::now());
        match self
            .windows
            .save(storage, &snapshot.windows, clock_offset(), unix_now_ms())
        {
            Ok(_) => {
                snapshot.commit();
                if self.failing {
                    self.failing = false;
                    tracing::info!("limit-window snapshots are being saved again");
                }
                true
            }
            Err(e) => {
                if !self.failing {
                    self.failing = true;
                    tracing::error!("cannot save limit windows (will keep trying): {e}");
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::restore_summary;

    #[test]
    fn the_restore_summary_tells_a_fresh_store_from_a_restore_and_names_dropped_windows() {
        assert_eq!(
            restore_summary(0, 0),
            "no saved limit windows: every limit starts empty"
        );
        assert_eq!(restore_summary(3, 3), "limit windows restored from storage");
        assert!(restore_summary(3, 1).contains("no longer configured"));
    }
}
