//! Key admission during selection: walk a provider's keys from the strategy's starting point
//! and take the first that is healthy and whose windows admit the request. A key whose window
//! is full is skipped like a cooling key (its soonest free moment is reported); a key with a
//! limit of 0, or a known balance at zero or below, is skipped like a quarantined one.
//! Invariant: a key is returned only with its reservation taken, so the attempt it serves is
//! already counted on every core.

use std::sync::Arc;

use super::{to_health_ms, Admission, LimitSet, Reservation};
use crate::health::{KeyHealth, KeyState};

/// What one pick looks at.
pub struct PickInput<'a> {
    pub health: &'a [Arc<KeyHealth>],
    /// Same length as `health` (a missing entry means unlimited).
    pub limits: &'a [LimitSet],
    /// The strategy's first choice.
    pub start: usize,
    /// Keys already tried for this request.
    pub tried: &'a [usize],
    /// Reserved against TPM.
    pub tokens: u64,
    /// `health::now_ms` clock.
    pub now: u64,
    /// `limits::now` clock.
    pub limits_now: u64,
}

/// Why keys were passed over, for the answer when none is picked.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// The earliest moment (health clock) a cooling or full key frees up.
    pub soonest: Option<u64>,
    /// `[cluster]`: a key had no lease in hand yet (one is being drawn).
    pub leasing: bool,
    /// `[cluster]`: a key's shared windows are unavailable (Redis down, `refuse`).
    pub unavailable: bool,
}

/// The chosen key index and what it reserved, or `None`; `skipped` learns why others were
/// passed over.
pub fn pick_key(input: &PickInput<'_>, skipped: &mut Skipped) -> Option<(usize, Reservation)> {
    let n = input.health.len();
    let soonest = &mut skipped.soonest;
    let mut note = |until: u64| *soonest = Some(soonest.map_or(until, |s| s.min(until)));
    let (mut leasing, mut unavailable) = (false, false);
    for offset in 0..n {
        let index = (input.start + offset) % n;
        if input.tried.contains(&index) {
            continue;
        }
        match input.health.get(index).map(|h| h.state(input.now)) {
            Some(KeyState::Active) | None => {}
            Some(KeyState::Cooling(until)) => {
                note(until);
                continue;
            }
            Some(KeyState::Quarantined(_)) => continue,
        }
        if input.health.get(index).is_some_and(|h| h.care.is_broke()) {
            continue;
        }
        // A key without a limit set (or with only unlimited gates) has nothing to reserve.
        let Some(limits) = input.limits.get(index).filter(|l| !l.is_unlimited()) else {
            return Some((index, Reservation::default()));
        };
        match limits.admit(input.tokens, input.limits_now) {
            Admission::Admitted(reservation) => return Some((index, reservation)),
            Admission::Full { free_at, .. } => note(to_health_ms(free_at)),
            Admission::Disabled(_) => {}
            Admission::Leasing(_) => leasing = true,
            Admission::Unavailable(_) => unavailable = true,
        }
    }
    skipped.leasing |= leasing;
    skipped.unavailable |= unavailable;
    None
}

/// Keys with the fewest in flight whose RPM windows `least_used` compares (the first found in
/// rotation order from the strategy's cursor): bounds the cost of a pick where many keys tie
/// (a large idle pool) to `TIE_SAMPLE` window reads of 61 buckets each.
const TIE_SAMPLE: usize = 4;

/// `key_strategy = "least-used"`: the untried, available key with the fewest requests in
/// flight; among those (the first `TIE_SAMPLE` from `input.start`, in rotation order), the
/// fewest requests in its RPM window. Both are shared atomics, so exact over cores. One pass
/// over the keys (one in-flight load each), then at most `TIE_SAMPLE` window reads. Falls
/// back to `input.start` when every key was tried.
pub fn least_used(input: &PickInput<'_>) -> usize {
    let n = input.health.len();
    let mut fewest = u32::MAX;
    let mut tied: smallvec::SmallVec<[usize; TIE_SAMPLE]> = smallvec::SmallVec::new();
    for offset in 0..n {
        let index = (input.start + offset) % n;
        let Some(health) = input.health.get(index) else {
            continue;
        };
        if input.tried.contains(&index) || !health.available(input.now) {
            continue;
        }
        let in_flight = health.in_flight();
        if in_flight < fewest {
            fewest = in_flight;
            tied.clear();
        }
        if in_flight == fewest && tied.len() < TIE_SAMPLE {
            tied.push(index);
        }
    }
    let mut best: Option<(u64, usize)> = None;
    for &index in &tied {
        let used = input.limits.get(index).map_or(0, |l| l.rpm_used(input.limits_now));
        if best.is_none_or(|(u, _)| used < u) {
            best = Some((used, index));
        }
        if used == 0 {
            break;
        }
    }
    best.map_or(input.start, |(_, index)| index)
}

/// `key_strategy = "highest-balance"`: the untried, available key with the highest known
/// balance (keys without a known balance come after every known one, in index order). One
/// atomic load per key. Falls back to `fallback` when no key qualifies.
pub fn highest_balance(input: &PickInput<'_>, fallback: usize) -> usize {
    let mut best: Option<(i64, usize)> = None;
    for (index, health) in input.health.iter().enumerate() {
        if input.tried.contains(&index) || !health.available(input.now) {
            continue;
        }
        let balance = health.care.balance_micros().unwrap_or(i64::MIN);
        if best.is_none_or(|(b, _)| balance > b) {
            best = Some((balance, index));
        }
    }
    best.map_or(fallback, |(_, index)| index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyId;
    use crate::limits::{Gate, Kind, Window, CLOCK_BASE_MS};

    fn keys(n: usize, rpm: u64) -> (Vec<Arc<KeyHealth>>, Vec<LimitSet>) {
        let health = (0..n)
            .map(|i| Arc::new(KeyHealth::new(KeyId(i as u64), format!("…{i}"))))
            .collect();
        let limits = (0..n)
            .map(|_| LimitSet {
                gates: [
                    Gate::Max(Arc::new(Window::new(Kind::Rpm.window_ms(), rpm))),
                    Gate::Unlimited,
                    Gate::Unlimited,
                ],
            })
            .collect();
        (health, limits)
    }

    #[test]
    fn full_keys_are_skipped_and_report_when_they_free() {
        let (health, limits) = keys(2, 1);
        let now = CLOCK_BASE_MS + 5_000;
        let input = |start| PickInput {
            health: &health,
            limits: &limits,
            start,
            tried: &[],
            tokens: 0,
            now: 5_000,
            limits_now: now,
        };
        let mut skipped = Skipped::default();
        assert_eq!(pick_key(&input(0), &mut skipped).map(|p| p.0), Some(0));
        assert_eq!(pick_key(&input(0), &mut skipped).map(|p| p.0), Some(1));
        assert_eq!(pick_key(&input(0), &mut skipped), None);
        // Admitted in the bucket starting at 5 s: free once that bucket is a window old.
        assert_eq!(skipped.soonest, Some(5_000 + 61_000));
    }

    #[test]
    fn least_used_prefers_fewest_in_flight_then_fewest_in_the_rpm_window() {
        let (health, limits) = keys(3, 100);
        let now = CLOCK_BASE_MS + 5_000;
        let input = |tried: &'static [usize]| PickInput {
            health: &health,
            limits: &limits,
            start: 0,
            tried,
            tokens: 0,
            now: 5_000,
            limits_now: now,
        };
        let _busy = health[0].enter();
        // Keys 1 and 2 idle; key 1 has used more of its RPM window.
        let _ = limits[1].admit(0, now);
        assert_eq!(least_used(&input(&[])), 2);
        assert_eq!(least_used(&input(&[2])), 1);
        assert_eq!(least_used(&input(&[1, 2])), 0, "the busy key is still better than none");
        let all_tried = PickInput {
            start: 1,
            ..input(&[0, 1, 2])
        };
        assert_eq!(least_used(&all_tried), 1, "nothing usable: the cursor");
        // Ties rotate with the cursor.
        let _ = limits[2].admit(0, now);
        let from = |start| PickInput { start, ..input(&[]) };
        assert_eq!((least_used(&from(1)), least_used(&from(2))), (1, 2));
    }

    #[test]
    fn highest_balance_goes_first_and_a_broke_key_is_skipped() {
        let (health, limits) = keys(3, 100);
        let input = |tried: &'static [usize]| PickInput {
            health: &health,
            limits: &limits,
            start: 0,
            tried,
            tokens: 0,
            now: 5_000,
            limits_now: CLOCK_BASE_MS + 5_000,
        };
        assert_eq!(highest_balance(&input(&[]), 9), 0, "nothing known: index order");
        health[1].care.set_balance(3.0, 1, 0);
        health[2].care.set_balance(7.5, 1, 0);
        assert_eq!(highest_balance(&input(&[]), 9), 2);
        assert_eq!(highest_balance(&input(&[2]), 9), 1);
        health[2].care.set_balance(0.0, 2, 0);
        assert_eq!(highest_balance(&input(&[]), 9), 1);
        let mut skipped = Skipped::default();
        let start = PickInput { start: 2, ..input(&[]) };
        assert_eq!(
            pick_key(&start, &mut skipped).map(|p| p.0),
            Some(0),
            "the broke key is skipped"
        );
    }
}
