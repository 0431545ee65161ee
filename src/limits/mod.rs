//! Rolling-window limits (RPM, RPD, TPM) for upstream keys and client keys, shared by every
//! worker as atomics (see `window` for the algorithm and why it is exact across cores).
//! Where it sits: `select` admits a key when the proxy picks it for an attempt (a reservation),
//! the client's own limits are admitted before any upstream work, and `finish` settles TPM to
//! the real usage. `learned` turns provider rate-limit headers into key cooling.
//! Invariant: no window of any limiter ever admits more than its limit; every count that
//! enters a window leaves it exactly once (drained when a full window old, or refunded).

pub mod estimate;
pub mod journal;
pub mod learned;
mod registry;
pub mod select;
pub mod window;

use std::sync::Arc;

pub use registry::{LimitRegistry, LimitTable, LimiterId, Scope, Snapshot, WindowSnapshot};
pub use window::{Admit, Window};

use crate::cluster::lease::Take;
use crate::config::{Limit, Limits};
use crate::health::now_ms;

const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 86_400_000;
/// Limiter time starts this far ahead of the process clock, so buckets restored from before a
/// restart (up to a day old for RPD) still have positive times.
pub const CLOCK_BASE_MS: u64 = 2 * DAY_MS;

/// Limiter time (monotonic ms, offset by `CLOCK_BASE_MS`).
pub fn now() -> u64 {
    from_health_ms(now_ms())
}

/// The `health::now_ms` clock -> limiter time (one clock read serves both).
pub fn from_health_ms(ms: u64) -> u64 {
    ms + CLOCK_BASE_MS
}

/// Limiter time -> the `health::now_ms` clock (cooling deadlines, `Attempts::note_cooling`).
pub fn to_health_ms(t: u64) -> u64 {
    t.saturating_sub(CLOCK_BASE_MS)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Rpm,
    Rpd,
    Tpm,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Rpm, Kind::Rpd, Kind::Tpm];

    pub fn window_ms(self) -> u64 {
        match self {
            Kind::Rpm | Kind::Tpm => MINUTE_MS,
            Kind::Rpd => DAY_MS,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Rpm => "rpm",
            Kind::Rpd => "rpd",
            Kind::Tpm => "tpm",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    fn of(self, limits: &Limits) -> Limit {
        match self {
            Kind::Rpm => limits.rpm,
            Kind::Rpd => limits.rpd,
            Kind::Tpm => limits.tpm,
        }
    }
}

/// One limit of one key or client, as this generation applies it.
#[derive(Debug, Clone)]
pub enum Gate {
    Unlimited,
    /// `0` in the config: nothing is ever admitted.
    Disabled,
    Max(Arc<Window>),
}

/// The three limits of one upstream key or one client, `[rpm, rpd, tpm]`.
#[derive(Debug, Clone)]
pub struct LimitSet {
    pub gates: [Gate; 3],
}

impl Default for LimitSet {
    fn default() -> Self {
        LimitSet {
            gates: [Gate::Unlimited, Gate::Unlimited, Gate::Unlimited],
        }
    }
}

/// What one admission took: the bucket of each limited window, and the tokens reserved.
/// Refund or settle it against the same `LimitSet` (the request holds its generation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reservation {
    epochs: [Option<u32>; 3],
    /// The cluster lease generation each window's slot came from (0 = none).
    leases: [u32; 3],
    pub tokens: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted(Reservation),
    /// Some window is full until `free_at` (limiter time).
    Full {
        free_at: u64,
        kind: Kind,
    },
    /// A limit is `0`.
    Disabled(Kind),
    /// `[cluster]`: no slot in hand yet; the cluster thread is drawing a lease. Try again
    /// shortly (up to `cluster.lease_wait_ms`), then answer as `Full`.
    Leasing(Kind),
    /// `[cluster]` with `on_redis_down = "refuse"` while Redis is unreachable.
    Unavailable(Kind),
}

impl LimitSet {
    /// True when nothing here limits (the common case; selection skips all atomics).
    pub fn is_unlimited(&self) -> bool {
        self.gates.iter().all(|g| matches!(g, Gate::Unlimited))
    }

    /// Admits one request that reserves `tokens` against TPM. All or nothing: when a later
    /// window refuses, the earlier ones are refunded. A token estimate above the TPM limit is
    /// capped at the limit, so a big request is not refused forever.
    pub fn admit(&self, tokens: u64, now: u64) -> Admission {
        let mut taken = Reservation::default();
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            let window = match &self.gates[i] {
                Gate::Unlimited => continue,
                Gate::Max(window) => window,
                Gate::Disabled => {
                    self.refund(&taken);
                    return Admission::Disabled(kind);
                }
            };
            let cost = match kind {
                Kind::Tpm => tokens.min(window.limit()),
                _ => 1,
            };
            let (lease, within) = match window.lease().map(|cell| cell.take(cost, window.limit(), now)) {
                None => (0, window.limit()),
                Some(Take::Lease(gen)) => (gen, window.limit()),
                Some(Take::Local(share)) => (0, share),
                Some(refused) => {
                    self.refund(&taken);
                    return match refused {
                        Take::Full(free_at) => Admission::Full { free_at, kind },
                        Take::Refused => Admission::Unavailable(kind),
                        _ => Admission::Leasing(kind),
                    };
                }
            };
            match window.try_admit_within(cost, now, within) {
                Admit::Yes { epoch } => {
                    taken.epochs[i] = Some(epoch);
                    taken.leases[i] = lease;
                    if kind == Kind::Tpm {
                        taken.tokens = cost;
                    }
                    if let (0, Some(cell)) = (lease, window.lease()) {
                        // Admitted without Redis: owed to it once it is back.
                        cell.owe(cost);
                    }
                }
                Admit::Full { free_at } => {
                    if let (true, Some(cell)) = (lease != 0, window.lease()) {
                        cell.give_back(lease, cost);
                    }
                    self.refund(&taken);
                    return Admission::Full { free_at, kind };
                }
            }
        }
        Admission::Admitted(taken)
    }

    /// Gives a reservation back whole (the request never reached the upstream).
    pub fn refund(&self, reservation: &Reservation) {
        for (i, epoch) in reservation.epochs.iter().enumerate() {
            if let (Some(epoch), Gate::Max(window)) = (epoch, &self.gates[i]) {
                let cost = if i == 2 { reservation.tokens } else { 1 };
                window.refund(*epoch, cost);
                if let Some(cell) = window.lease() {
                    cell.give_back(reservation.leases[i], cost);
                }
            }
        }
    }

    /// TPM: replaces the reserved estimate by the tokens really used.
    pub fn settle(&self, reservation: &Reservation, used_tokens: u64, now: u64) {
        let (Some(epoch), Gate::Max(window)) = (reservation.epochs[2], &self.gates[2]) else {
            return;
        };
        if used_tokens < reservation.tokens {
            window.refund(epoch, reservation.tokens - used_tokens);
            if let Some(cell) = window.lease() {
                cell.settle_back(reservation.leases[2], reservation.tokens - used_tokens);
            }
        } else {
            window.force(used_tokens - reservation.tokens, now);
            if let Some(cell) = window.lease() {
                cell.owe(used_tokens - reservation.tokens);
            }
        }
    }

    /// Requests counted in the RPM window at `now` (0 when RPM is not limited).
    pub fn rpm_used(&self, now: u64) -> u64 {
        match &self.gates[0] {
            Gate::Max(w) => w.used(now),
            _ => 0,
        }
    }

    /// `(kind, used, limit)` for each limited window (`limit` 0 = disabled), for status pages.
    pub fn usage(&self, now: u64) -> Vec<(Kind, u64, u64)> {
        Kind::ALL
            .into_iter()
            .zip(&self.gates)
            .filter_map(|(kind, gate)| match gate {
                Gate::Unlimited => None,
                Gate::Disabled => Some((kind, 0, 0)),
                Gate::Max(w) => Some((kind, w.used(now), w.limit())),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rpm: u64, tpm: u64) -> LimitSet {
        LimitSet {
            gates: [
                Gate::Max(Arc::new(Window::new(Kind::Rpm.window_ms(), rpm))),
                Gate::Unlimited,
                Gate::Max(Arc::new(Window::new(Kind::Tpm.window_ms(), tpm))),
            ],
        }
    }

    #[test]
    fn all_or_nothing_admission_refunds_earlier_windows() {
        let s = set(10, 100);
        let now = CLOCK_BASE_MS;
        let Admission::Admitted(first) = s.admit(100, now) else {
            panic!("first fits")
        };
        assert_eq!(first.tokens, 100);
        // TPM is full, so RPM must not keep the second request's count.
        assert!(matches!(s.admit(1, now), Admission::Full { kind: Kind::Tpm, .. }));
        assert_eq!(s.usage(now), vec![(Kind::Rpm, 1, 10), (Kind::Tpm, 100, 100)]);
    }

    #[test]
    fn settle_moves_tpm_to_real_usage() {
        let s = set(10, 100);
        let now = CLOCK_BASE_MS;
        let Admission::Admitted(r) = s.admit(60, now) else {
            panic!()
        };
        s.settle(&r, 20, now);
        assert_eq!(s.usage(now)[1], (Kind::Tpm, 20, 100));
        let Admission::Admitted(r2) = s.admit(50, now) else {
            panic!()
        };
        s.settle(&r2, 90, now);
        assert_eq!(s.usage(now)[1], (Kind::Tpm, 110, 100));
        assert!(matches!(s.admit(1, now), Admission::Full { .. }));
    }

    #[test]
    fn disabled_admits_nothing() {
        let s = LimitSet {
            gates: [Gate::Unlimited, Gate::Disabled, Gate::Unlimited],
        };
        assert_eq!(s.admit(1, CLOCK_BASE_MS), Admission::Disabled(Kind::Rpd));
    }

    #[test]
    fn estimate_is_capped_at_the_limit() {
        let s = set(10, 100);
        let Admission::Admitted(r) = s.admit(5_000, CLOCK_BASE_MS) else {
            panic!()
        };
        assert_eq!(r.tokens, 100);
    }
}
