//! What rotor knows about a key beyond its health: when it was last validated and how that
//! went, and its balance at the provider. Shared by every worker through the key's
//! `KeyHealth` (same `KeyId`, so it carries over reloads and pool changes).
//! Invariant: the request path reads only `balance_micros` (one atomic load, for
//! `highest-balance` and the zero-balance skip); everything else is written and read by
//! background validation and the admin API, the error text under a small lock.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU16, AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;

/// No balance known.
const UNKNOWN: i64 = i64::MIN;

#[derive(Debug)]
pub struct KeyCare {
    /// Unix ms of the last validation (0 = never).
    validated_at: AtomicU64,
    /// Status of the last validation answer (0 = none or no answer).
    last_status: AtomicU16,
    /// Disabled because the provider refused it (401/403/402) on validation.
    invalid: AtomicBool,
    /// Refusals in a row (for `remove_invalid`).
    refusals: AtomicU32,
    last_error: Mutex<Option<String>>,
    /// In millionths of the provider's currency unit.
    balance_micros: AtomicI64,
    /// Unix ms of the last balance fetch, successful or not (0 = never).
    balance_at: AtomicU64,
    /// The key's success count at that fetch (a change means the key was used since).
    balance_seen: AtomicU64,
}

impl Default for KeyCare {
    fn default() -> Self {
        KeyCare {
            validated_at: AtomicU64::new(0),
            last_status: AtomicU16::new(0),
            invalid: AtomicBool::new(false),
            refusals: AtomicU32::new(0),
            last_error: Mutex::new(None),
            balance_micros: AtomicI64::new(UNKNOWN),
            balance_at: AtomicU64::new(0),
            balance_seen: AtomicU64::new(0),
        }
    }
}

/// What one validation call said about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    /// 401, 403 or 402 (or an insufficient-balance answer): the provider refuses the key.
    Refused,
    /// No answer, or one that says nothing about the key (5xx, 429, ...).
    Unknown,
}

impl Verdict {
    pub fn of(status: Option<u16>, body: &[u8]) -> Verdict {
        match status {
            Some(200..=299) => Verdict::Valid,
            Some(401..=403) => Verdict::Refused,
            Some(400) if memchr::memmem::find(body, b"nsufficient").is_some() => Verdict::Refused,
            _ => Verdict::Unknown,
        }
    }
}

impl KeyCare {
    /// Records a validation at `unix_ms`; returns the refusals in a row.
    pub fn record(&self, verdict: Verdict, status: Option<u16>, error: Option<String>, unix_ms: u64) -> u32 {
        self.validated_at.store(unix_ms.max(1), Ordering::Release);
        self.last_status.store(status.unwrap_or(0), Ordering::Relaxed);
        *self.last_error.lock() = error;
        match verdict {
            Verdict::Valid => {
                self.invalid.store(false, Ordering::Release);
                self.refusals.store(0, Ordering::Relaxed);
                0
            }
            Verdict::Refused => {
                self.invalid.store(true, Ordering::Release);
                self.refusals.fetch_add(1, Ordering::AcqRel) + 1
            }
            Verdict::Unknown => self.refusals.load(Ordering::Acquire),
        }
    }

    pub fn is_invalid(&self) -> bool {
        self.invalid.load(Ordering::Acquire)
    }

    pub fn validated_at(&self) -> Option<u64> {
        Some(self.validated_at.load(Ordering::Acquire)).filter(|&t| t != 0)
    }

    pub fn last_status(&self) -> Option<u16> {
        Some(self.last_status.load(Ordering::Relaxed)).filter(|&s| s != 0)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// A fetched balance; `successes` is the key's success count when the fetch started.
    pub fn set_balance(&self, balance: f64, unix_ms: u64, successes: u64) {
        let micros = (balance * 1e6).clamp(-9e18, 9e18) as i64;
        self.balance_micros.store(micros.max(UNKNOWN + 1), Ordering::Release);
        self.balance_attempted(unix_ms, successes);
    }

    /// A fetch that read no balance: the last known one stays, the next try waits its turn.
    pub fn balance_attempted(&self, unix_ms: u64, successes: u64) {
        self.balance_at.store(unix_ms.max(1), Ordering::Release);
        self.balance_seen.store(successes, Ordering::Relaxed);
    }

    pub fn balance_seen_successes(&self) -> u64 {
        self.balance_seen.load(Ordering::Relaxed)
    }

    /// The balance in millionths (request path: one atomic load).
    #[inline]
    pub fn balance_micros(&self) -> Option<i64> {
        Some(self.balance_micros.load(Ordering::Relaxed)).filter(|&b| b != UNKNOWN)
    }

    pub fn balance(&self) -> Option<f64> {
        self.balance_micros().map(|m| m as f64 / 1e6)
    }

    pub fn balance_at(&self) -> Option<u64> {
        Some(self.balance_at.load(Ordering::Acquire)).filter(|&t| t != 0)
    }

    /// A known balance at zero or below: skipped like an exhausted key.
    #[inline]
    pub fn is_broke(&self) -> bool {
        self.balance_micros().is_some_and(|b| b <= 0)
    }
}

/// Unix time in ms.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_count_until_a_valid_answer() {
        let care = KeyCare::default();
        assert_eq!(Verdict::of(Some(401), b""), Verdict::Refused);
        assert_eq!(Verdict::of(Some(400), b"Insufficient Balance"), Verdict::Refused);
        assert_eq!(Verdict::of(Some(503), b""), Verdict::Unknown);
        assert_eq!(Verdict::of(None, b""), Verdict::Unknown);
        assert_eq!(care.record(Verdict::Refused, Some(401), None, 5), 1);
        assert_eq!(care.record(Verdict::Unknown, None, Some("timeout".into()), 6), 1);
        assert_eq!(care.record(Verdict::Refused, Some(403), None, 7), 2);
        assert!(care.is_invalid());
        assert_eq!(care.record(Verdict::Valid, Some(200), None, 8), 0);
        assert!(!care.is_invalid());
        assert_eq!(care.validated_at(), Some(8));
    }

    #[test]
    fn balances_round_trip_and_zero_is_broke() {
        let care = KeyCare::default();
        assert_eq!(care.balance(), None);
        assert!(!care.is_broke());
        care.set_balance(12.5, 1, 0);
        assert_eq!(care.balance(), Some(12.5));
        care.set_balance(0.0, 2, 0);
        assert!(care.is_broke());
    }
}
