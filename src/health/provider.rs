//! Provider health, shared by every worker: when any of the provider's keys last answered, a
//! short tally of recent failures across its keys, and the provider's circuit breaker (closed,
//! open until a moment, then half-open with one probe request in flight). These are the
//! mechanisms; when to open the breaker or quarantine a key is decided in `proxy::classify`.
//! Invariants: a healthy request writes nothing here but `last_ok` (at most once per
//! millisecond) and, only while failures are being tallied, one counter; at most one half-open
//! probe request is in flight per provider.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::metrics::health::HealthCounters;

/// What the breaker lets through right now.
#[derive(Debug)]
pub enum Gate<'a> {
    Closed,
    /// Half-open: this request carries the one probe; dropping the permit frees the slot.
    Probe(ProbePermit<'a>),
    /// Open until this health-clock ms (or half-open with its probe already in flight).
    Open(u64),
}

/// The half-open probe slot, released on drop (however the probe request ends).
#[derive(Debug)]
pub struct ProbePermit<'a>(&'a AtomicBool);

impl Drop for ProbePermit<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Failures and answers seen recently, over up to two windows (the current and the previous).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub failures: u32,
    pub answers: u32,
    /// Distinct keys among the failures (by key index modulo 64).
    pub keys: u32,
}

#[derive(Debug, Default)]
struct Slot {
    /// `now / window + 1` of the window this slot counts; 0 = empty.
    epoch: AtomicU64,
    failures: AtomicU32,
    answers: AtomicU32,
    keys: AtomicU64,
}

impl Slot {
    /// Makes the slot count `epoch`, clearing an older window's counts. Two workers may race
    /// here; a count lost in that instant only delays a breaker by one failure.
    fn enter(&self, epoch: u64) {
        let seen = self.epoch.load(Ordering::Acquire);
        if seen != epoch
            && self
                .epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.failures.store(0, Ordering::Relaxed);
            self.answers.store(0, Ordering::Relaxed);
            self.keys.store(0, Ordering::Relaxed);
        }
    }
}

#[derive(Debug, Default)]
pub struct ProviderHealth {
    /// Health-clock ms of the last answer any key of the provider gave.
    last_ok: AtomicU64,
    /// 0 = closed; else open until this health-clock ms, half-open after it.
    open_until: AtomicU64,
    /// When the breaker last opened or closed: older attempts say nothing about its state.
    changed_at: AtomicU64,
    probing: AtomicBool,
    slots: [Slot; 2],
    /// Taken only to quarantine a key (never on a healthy request), so two keys cannot both
    /// conclude the other one is still usable, and one key is not quarantined twice at once.
    quarantine_lock: Mutex<()>,
    /// Quarantines, restores, breaker openings and relay failures, for `/metrics`.
    pub counters: HealthCounters,
}

impl ProviderHealth {
    /// Whether requests may use the provider now. Closed costs one atomic load.
    pub fn gate(&self, now: u64) -> Gate<'_> {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Gate::Closed;
        }
        if now < until {
            return Gate::Open(until);
        }
        match self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Gate::Probe(ProbePermit(&self.probing)),
            Err(_) => Gate::Open(until),
        }
    }

    /// `open`, `half_open` or `closed`, for status pages and metrics.
    pub fn breaker_state(&self, now: u64) -> &'static str {
        match self.open_until.load(Ordering::Acquire) {
            0 => "closed",
            until if now < until => "open",
            _ => "half_open",
        }
    }

    /// Open (or half-open) until when; `None` when closed.
    pub fn open_until(&self) -> Option<u64> {
        Some(self.open_until.load(Ordering::Acquire)).filter(|&u| u != 0)
    }

    /// When the breaker last opened or closed (0 = never).
    pub fn changed_at(&self) -> u64 {
        self.changed_at.load(Ordering::Acquire)
    }

    /// Opens (or re-opens, after a failed probe) the breaker until `until`. True when it was
    /// closed before (a new opening, worth a log line and a count).
    pub fn open(&self, now: u64, until: u64) -> bool {
        let before = self.open_until.swap(until.max(1), Ordering::AcqRel);
        self.changed_at.fetch_max(now, Ordering::AcqRel);
        self.clear_tally();
        if before == 0 {
            self.counters.breaker_opens.fetch_add(1, Ordering::Relaxed);
        }
        before == 0
    }

    /// Closes the breaker. True when it was open (worth a log line).
    pub fn close(&self, now: u64) -> bool {
        let before = self.open_until.swap(0, Ordering::AcqRel);
        if before != 0 {
            self.changed_at.fetch_max(now, Ordering::AcqRel);
            self.clear_tally();
        }
        before != 0
    }

    /// Any key of the provider answered (the provider is up, whatever the status said).
    pub fn note_answer(&self, now: u64, window_ms: u64) {
        // One shared write per millisecond at most, however many answers arrive in it.
        if self.last_ok.load(Ordering::Relaxed) < now {
            self.last_ok.fetch_max(now, Ordering::Relaxed);
        }
        // Answers are counted only while failures are: the ratio matters only then.
        let epoch = now / window_ms.max(1) + 1;
        if self.recent_failures(epoch) {
            let slot = &self.slots[(epoch % 2) as usize];
            slot.enter(epoch);
            slot.answers.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Health-clock ms of the provider's last answer.
    pub fn last_answer(&self) -> u64 {
        self.last_ok.load(Ordering::Relaxed)
    }

    /// Counts a failure of key `key`; returns the tally including it.
    pub fn note_failure(&self, now: u64, window_ms: u64, key: usize) -> Tally {
        let epoch = now / window_ms.max(1) + 1;
        let slot = &self.slots[(epoch % 2) as usize];
        slot.enter(epoch);
        slot.failures.fetch_add(1, Ordering::Relaxed);
        slot.keys.fetch_or(1 << (key % 64), Ordering::Relaxed);
        self.tally_at(epoch)
    }

    /// The tally of the current and the previous window.
    pub fn tally(&self, now: u64, window_ms: u64) -> Tally {
        self.tally_at(now / window_ms.max(1) + 1)
    }

    fn tally_at(&self, epoch: u64) -> Tally {
        let mut tally = Tally::default();
        let mut keys = 0u64;
        for slot in &self.slots {
            let e = slot.epoch.load(Ordering::Acquire);
            if e != 0 && (e == epoch || e + 1 == epoch) {
                tally.failures += slot.failures.load(Ordering::Relaxed);
                tally.answers += slot.answers.load(Ordering::Relaxed);
                keys |= slot.keys.load(Ordering::Relaxed);
            }
        }
        tally.keys = keys.count_ones();
        tally
    }

    fn recent_failures(&self, epoch: u64) -> bool {
        self.slots.iter().any(|slot| {
            let e = slot.epoch.load(Ordering::Relaxed);
            e != 0 && (e == epoch || e + 1 == epoch) && slot.failures.load(Ordering::Relaxed) > 0
        })
    }

    fn clear_tally(&self) {
        for slot in &self.slots {
            slot.epoch.store(0, Ordering::Release);
            slot.failures.store(0, Ordering::Relaxed);
            slot.answers.store(0, Ordering::Relaxed);
            slot.keys.store(0, Ordering::Relaxed);
        }
    }

    /// Runs `decide` alone among this provider's quarantine decisions.
    pub fn serialized<R>(&self, decide: impl FnOnce() -> R) -> R {
        let _held = self.quarantine_lock.lock();
        decide()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_then_lets_one_probe_through_and_closes() {
        let p = ProviderHealth::default();
        assert!(matches!(p.gate(10), Gate::Closed));
        assert!(p.open(10, 1_010));
        assert!(!p.open(20, 1_010), "already open: not a new opening");
        assert!(matches!(p.gate(500), Gate::Open(1_010)));
        assert_eq!(p.breaker_state(500), "open");
        let probe = p.gate(1_010);
        assert!(matches!(probe, Gate::Probe(_)));
        assert!(matches!(p.gate(1_020), Gate::Open(1_010)), "one probe at a time");
        assert_eq!(p.breaker_state(1_020), "half_open");
        drop(probe);
        assert!(
            matches!(p.gate(1_030), Gate::Probe(_)),
            "a dropped probe frees the slot"
        );
        assert!(p.close(1_040));
        assert!(matches!(p.gate(1_050), Gate::Closed));
        assert_eq!(p.changed_at(), 1_040);
        assert_eq!(p.counters.breaker_opens.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_tally_spans_two_windows_and_counts_answers_only_while_failing() {
        let p = ProviderHealth::default();
        p.note_answer(100, 1_000);
        assert_eq!(
            p.tally(100, 1_000),
            Tally::default(),
            "no failures: answers not counted"
        );
        assert_eq!(p.last_answer(), 100);
        p.note_failure(200, 1_000, 0);
        p.note_answer(300, 1_000);
        let t = p.note_failure(1_200, 1_000, 65);
        assert_eq!(
            t,
            Tally {
                failures: 2,
                answers: 1,
                keys: 2
            }
        );
        // Two windows later the first window's counts are gone.
        assert_eq!(p.tally(2_100, 1_000).failures, 1);
        assert_eq!(p.tally(3_100, 1_000), Tally::default());
        // Opening clears the tally: the next failures start afresh.
        p.note_failure(3_200, 1_000, 1);
        p.open(3_300, 4_300);
        assert_eq!(p.tally(3_300, 1_000), Tally::default());
    }
}
