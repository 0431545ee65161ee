//! Upstream key health, shared by every worker: cooling after a 429, quarantine after 401/403
//! or repeated failures, in-flight and outcome counters. All atomics: a worker reads and updates
//! a key's state without locks on the request path.
//! Invariants: a cooling deadline only ever moves later (a second 429 cannot shorten it); a
//! quarantined key serves no traffic until a background probe succeeds.

mod clock;
mod registry;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub use clock::now_ms;
pub use registry::{HealthRegistry, KeyHealthTable};

use crate::config::KeyId;

/// Longest quarantine after repeated failed probes.
const MAX_QUARANTINE_MS: u64 = 3_600_000;

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
    in_flight: AtomicU32,
    successes: AtomicU64,
    failures: AtomicU64,
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
            in_flight: AtomicU32::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
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
    pub fn cool_until(&self, until: u64) {
        self.cooling_until.fetch_max(until, Ordering::AcqRel);
    }

    /// An answer that shows the key works.
    pub fn record_success(&self) {
        self.successes.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.quarantine_streak.store(0, Ordering::Relaxed);
    }

    /// A failure that may be the key's (5xx, timeout, connect error). Quarantines the key after
    /// `threshold` in a row.
    pub fn record_failure(&self, now: u64, threshold: u32, base_ms: u64) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let in_a_row = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if in_a_row >= threshold {
            self.quarantine(now, base_ms);
        }
    }

    /// The provider rejected the key (401/403) or a probe failed: no traffic until a probe
    /// succeeds, first after `base_ms`, doubling with each quarantine in a row.
    pub fn quarantine(&self, now: u64, base_ms: u64) {
        let streak = self.quarantine_streak.fetch_add(1, Ordering::AcqRel).min(16);
        let length = base_ms.saturating_mul(1 << streak).min(MAX_QUARANTINE_MS);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.quarantined_until
            .store(now.saturating_add(length).max(1), Ordering::Release);
    }

    /// A probe succeeded: back in rotation.
    pub fn restore(&self) {
        self.quarantined_until.store(0, Ordering::Release);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.quarantine_streak.store(0, Ordering::Relaxed);
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
        k.cool_until(5_000);
        k.cool_until(2_000);
        assert_eq!(k.state(1_000), KeyState::Cooling(5_000));
        assert_eq!(k.state(5_000), KeyState::Active);
    }

    #[test]
    fn failures_in_a_row_quarantine_and_success_resets() {
        let k = key();
        k.record_failure(0, 3, 1_000);
        k.record_failure(0, 3, 1_000);
        k.record_success();
        k.record_failure(0, 3, 1_000);
        k.record_failure(0, 3, 1_000);
        assert!(k.available(0));
        k.record_failure(0, 3, 1_000);
        assert_eq!(k.state(0), KeyState::Quarantined(1_000));
        assert!(!k.probe_due(999));
        assert!(k.probe_due(1_000));
        // Quarantine does not lapse by time alone.
        assert!(!k.available(10_000));
        k.restore();
        assert!(k.available(10_000));
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
