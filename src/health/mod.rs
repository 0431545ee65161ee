//! Upstream key health, shared by every worker: cooling after a 429, quarantine after 401/403
//! or the key's own repeated failures, in-flight and outcome counters; and provider health
//! (`provider`): the provider's circuit breaker and its recent failures across keys. All
//! atomics: a worker reads and updates state without locks on the request path. What a
//! failure means (key fault or provider fault) is decided in `proxy::classify`.
//! Invariants: a cooling deadline only ever moves later (a second 429 cannot shorten it); a
//! quarantined key serves no traffic until a background probe succeeds; an attempt that started
//! before the key's last cooling, quarantine or restore adds no strike (it says nothing about
//! the key as it is now).

pub mod clock;
mod provider;
mod registry;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub use clock::now_ms;
pub use provider::{Gate, ProbePermit, ProviderHealth, Tally};
pub use registry::{HealthRegistry, KeyHealthTable};

use crate::config::KeyId;

/// Longest quarantine after repeated failed probes.
const MAX_QUARANTINE_MS: u64 = 3_600_000;

/// What a failure did to the key's run of failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strike {
    /// The attempt started before the key's last state change: not counted against it.
    Stale,
    /// Counted: failures in a row now, and since when (health-clock ms of the first).
    Counted { in_a_row: u32, since: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Active,
    /// Rate limited until this monotonic ms.
    Cooling(u64),
    /// Failing; not used until a probe succeeds (after this monotonic ms).
    Quarantined(u64),
}

#[derive(Debug)]
pub struct KeyHealth {
    pub id: KeyId,
    /// The key masked to its last 4 characters, for status pages and logs.
    pub masked: String,
    cooling_until: AtomicU64,
    /// 0 = not quarantined; else the earliest time of the next probe.
    quarantined_until: AtomicU64,
    /// Quarantines in a row without a success (the next one lasts twice as long).
    quarantine_streak: AtomicU32,
    consecutive_failures: AtomicU32,
    /// When the current run of failures began (0 = none).
    streak_since: AtomicU64,
    /// When the key last started cooling, was quarantined or restored.
    changed_at: AtomicU64,
    in_flight: AtomicU32,
    successes: AtomicU64,
    failures: AtomicU64,
    /// Validation results and balance (`keys::care`).
    pub care: crate::keys::care::KeyCare,
}

impl KeyHealth {
    pub fn new(id: KeyId, masked: String) -> Self {
        KeyHealth {
            id,
            masked,
            cooling_until: AtomicU64::new(0),
            quarantined_until: AtomicU64::new(0),
            quarantine_streak: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            streak_since: AtomicU64::new(0),
            changed_at: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            care: crate::keys::care::KeyCare::default(),
        }
    }

    pub fn state(&self, now: u64) -> KeyState {
        let quarantined = self.quarantined_until.load(Ordering::Acquire);
        if quarantined != 0 {
            return KeyState::Quarantined(quarantined);
        }
        let cooling = self.cooling_until.load(Ordering::Acquire);
        if cooling > now {
            return KeyState::Cooling(cooling);
        }
        KeyState::Active
    }

    pub fn available(&self, now: u64) -> bool {
        self.state(now) == KeyState::Active
    }

    /// Cools the key until `until` (monotonic ms), unless it already cools longer.
    pub fn cool_until(&self, until: u64, now: u64) {
        if self.cooling_until.fetch_max(until, Ordering::AcqRel) < until {
            self.changed_at.fetch_max(now, Ordering::AcqRel);
        }
    }

    /// An answer that shows the key works. Writes only what changes (a shared cache line per
    /// key is written by every core).
    pub fn record_success(&self) {
        self.successes.fetch_add(1, Ordering::Relaxed);
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            self.streak_since.store(0, Ordering::Relaxed);
        }
        if self.quarantine_streak.load(Ordering::Relaxed) != 0 {
            self.quarantine_streak.store(0, Ordering::Relaxed);
        }
    }

    /// A failure that may be the key's (5xx, timeout, connect error) of an attempt that
    /// started at `started`. Counted in `failures` always, as a strike only when the attempt
    /// started after the key's last state change.
    pub fn strike(&self, now: u64, started: u64) -> Strike {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if started < self.changed_at.load(Ordering::Acquire) {
            return Strike::Stale;
        }
        let in_a_row = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if in_a_row == 1 {
            self.streak_since.store(now.max(1), Ordering::Relaxed);
        }
        let since = self.streak_since.load(Ordering::Relaxed);
        Strike::Counted {
            in_a_row,
            since: if since == 0 { now } else { since },
        }
    }

    /// A failure that was not the key's (the provider's, or from before the key's last change):
    /// counted in `failures`, and the run of failures so far is forgiven.
    pub fn excuse(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.forgive();
    }

    /// Forgets the run of failures (they turned out to be the provider's, not the key's).
    pub fn forgive(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            self.streak_since.store(0, Ordering::Relaxed);
        }
    }

    /// No traffic until a probe succeeds, first after `base_ms`, doubling with each
    /// quarantine in a row. Returns the wait before the probe.
    pub fn quarantine(&self, now: u64, base_ms: u64) -> u64 {
        let streak = self.quarantine_streak.fetch_add(1, Ordering::AcqRel).min(16);
        let length = base_ms.saturating_mul(1 << streak).min(MAX_QUARANTINE_MS);
        self.forgive();
        self.changed_at.fetch_max(now, Ordering::AcqRel);
        self.quarantined_until
            .store(now.saturating_add(length).max(1), Ordering::Release);
        length
    }

    /// The provider refused the key on validation: no traffic (and no probe) until a
    /// validation succeeds and calls `restore`.
    pub fn disable_invalid(&self, now: u64) {
        self.changed_at.fetch_max(now, Ordering::AcqRel);
        self.quarantined_until.store(u64::MAX, Ordering::Release);
        self.forgive();
    }

    /// A probe succeeded: back in rotation.
    pub fn restore(&self, now: u64) {
        self.changed_at.fetch_max(now, Ordering::AcqRel);
        self.quarantined_until.store(0, Ordering::Release);
        self.forgive();
        self.quarantine_streak.store(0, Ordering::Relaxed);
    }

    /// The cooling deadline (health clock; 0 or past = not cooling), for the cluster thread,
    /// which shares changes with other instances.
    pub fn cooling_until(&self) -> u64 {
        self.cooling_until.load(Ordering::Acquire)
    }

    pub fn is_quarantined(&self) -> bool {
        self.quarantined_until.load(Ordering::Acquire) != 0
    }

    /// Quarantined and past its probe time.
    pub fn probe_due(&self, now: u64) -> bool {
        let until = self.quarantined_until.load(Ordering::Acquire);
        until != 0 && now >= until
    }

    /// Counts a request on this key until the guard drops.
    pub fn enter(&self) -> InFlightGuard<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(self)
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn successes(&self) -> u64 {
        self.successes.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

pub struct InFlightGuard<'a>(&'a KeyHealth);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> KeyHealth {
        KeyHealth::new(KeyId(1), "…abcd".into())
    }

    #[test]
    fn cooling_only_moves_later() {
        let k = key();
        k.cool_until(5_000, 0);
        k.cool_until(2_000, 0);
        assert_eq!(k.state(1_000), KeyState::Cooling(5_000));
        assert_eq!(k.state(5_000), KeyState::Active);
    }

    #[test]
    fn strikes_run_until_a_success_and_quarantine_lasts_until_restored() {
        let k = key();
        assert_eq!(k.strike(10, 5), Strike::Counted { in_a_row: 1, since: 10 });
        assert_eq!(k.strike(20, 15), Strike::Counted { in_a_row: 2, since: 10 });
        k.record_success();
        assert_eq!(k.strike(30, 25), Strike::Counted { in_a_row: 1, since: 30 });
        assert_eq!(k.quarantine(40, 1_000), 1_000);
        assert_eq!(k.state(0), KeyState::Quarantined(1_040));
        assert!(!k.probe_due(1_039));
        assert!(k.probe_due(1_040));
        // Quarantine does not lapse by time alone.
        assert!(!k.available(10_000));
        k.restore(10_000);
        assert!(k.available(10_000));
        assert_eq!(k.failures(), 3);
    }

    #[test]
    fn an_attempt_older_than_the_keys_last_change_adds_no_strike() {
        let k = key();
        k.cool_until(2_000, 1_000);
        assert_eq!(k.strike(1_500, 900), Strike::Stale, "started before the cooldown");
        assert_eq!(
            k.strike(2_500, 2_100),
            Strike::Counted {
                in_a_row: 1,
                since: 2_500
            }
        );
        k.quarantine(3_000, 1_000);
        k.restore(4_000);
        assert_eq!(k.strike(4_100, 3_500), Strike::Stale, "started before the restore");
        assert_eq!(k.failures(), 3, "stale failures still count as failures");
    }

    #[test]
    fn quarantine_doubles_while_probes_fail() {
        let k = key();
        k.quarantine(0, 1_000);
        assert_eq!(k.state(0), KeyState::Quarantined(1_000));
        k.quarantine(1_000, 1_000);
        assert_eq!(k.state(0), KeyState::Quarantined(3_000));
        k.quarantine(3_000, 1_000);
        assert_eq!(k.state(0), KeyState::Quarantined(7_000));
    }
}
