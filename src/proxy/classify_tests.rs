//! Unit tests of `settle`: key faults against provider faults, the breaker's cycle, the last
//! usable key, and stale attempts.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::KeyId;
use crate::health::{Gate, KeyState};

fn retry(breaker: bool) -> Retry {
    Retry {
        max_attempts: 3,
        backoff: Duration::ZERO,
        cooldown: Duration::from_secs(60),
        wait_for_key: Duration::ZERO,
        quarantine_after_failures: 5,
        quarantine: Duration::from_secs(30),
        breaker: breaker.then_some(Breaker {
            failures: 5,
            window: Duration::from_secs(2),
            open: Duration::from_secs(1),
        }),
    }
}

struct Pool {
    keys: Vec<Arc<KeyHealth>>,
    provider: ProviderHealth,
}

impl Pool {
    fn new(n: usize) -> Pool {
        Pool {
            keys: (0..n)
                .map(|i| Arc::new(KeyHealth::new(KeyId(i as u64), format!("…000{i}"))))
                .collect(),
            provider: ProviderHealth::default(),
        }
    }

    /// An attempt on `key` sent at `started` and judged at `now`.
    fn settle(&self, key: usize, verdict: Verdict, retry: &Retry, started: u64, now: u64) -> Option<u64> {
        let subject = Subject {
            provider: "p",
            provider_health: &self.provider,
            keys: &self.keys,
            key,
            started,
        };
        settle(&subject, verdict, retry, now)
    }

    fn quarantined(&self) -> Vec<usize> {
        (0..self.keys.len())
            .filter(|&i| self.keys[i].is_quarantined())
            .collect()
    }
}

const FAIL: Verdict = Verdict::Retry(Penalty::Failure);
const OK: Verdict = Verdict::Deliver { key_ok: true };

#[test]
fn a_burst_across_keys_opens_the_breaker_and_quarantines_no_key() {
    let pool = Pool::new(3);
    let retry = retry(true);
    for i in 0..12u64 {
        pool.settle((i % 3) as usize, FAIL, &retry, 100 + i, 101 + i);
    }
    assert!(pool.quarantined().is_empty(), "provider fault, not the keys'");
    assert_eq!(pool.provider.breaker_state(500), "open");
    assert_eq!(pool.provider.counters.breaker_opens.load(Ordering::Relaxed), 1);
    // Half-open: one probe; it fails, so the breaker reopens for another second.
    let probe = pool.provider.gate(1_200);
    assert!(matches!(probe, Gate::Probe(_)));
    pool.settle(0, FAIL, &retry, 1_200, 1_250);
    drop(probe);
    assert!(matches!(pool.provider.gate(1_300), Gate::Open(2_250)));
    // The next probe succeeds: closed, and no key carries a strike from the burst.
    let probe = pool.provider.gate(2_250);
    assert!(matches!(probe, Gate::Probe(_)));
    pool.settle(1, OK, &retry, 2_250, 2_260);
    assert!(matches!(pool.provider.gate(2_270), Gate::Closed));
    // Slow attempts from the burst that fail after recovery count for nothing.
    for i in 0..6 {
        pool.settle(0, FAIL, &retry, 1_000 + i, 2_300 + i);
    }
    assert_eq!(pool.provider.breaker_state(2_400), "closed");
    assert_eq!(
        pool.keys[0].strike(2_500, 2_500),
        Strike::Counted {
            in_a_row: 1,
            since: 2_500
        }
    );
}

#[test]
fn a_key_failing_while_others_answer_is_quarantined() {
    let pool = Pool::new(3);
    let retry = retry(true);
    for i in 0..5u64 {
        let t = 100 + i * 10;
        pool.settle(0, FAIL, &retry, t, t + 1);
        pool.settle(1 + (i % 2) as usize, OK, &retry, t + 2, t + 3);
        pool.settle(1 + (i % 2) as usize, OK, &retry, t + 4, t + 5);
    }
    assert_eq!(pool.quarantined(), vec![0]);
    assert_eq!(pool.keys[0].state(200), KeyState::Quarantined(101 + 40 + 30_000));
    assert_eq!(pool.provider.breaker_state(200), "closed");
    assert_eq!(pool.provider.counters.quarantines.load(Ordering::Relaxed), 1);
}

#[test]
fn failures_without_another_key_answering_quarantine_nothing() {
    let pool = Pool::new(3);
    let retry = retry(false);
    for i in 0..10u64 {
        pool.settle(0, FAIL, &retry, 100 + i, 101 + i);
    }
    assert!(pool.quarantined().is_empty(), "no evidence that the provider works");
}

#[test]
fn the_last_usable_key_is_not_quarantined_for_failures_but_is_for_a_401() {
    let pool = Pool::new(2);
    let retry = retry(false);
    pool.settle(0, FAIL, &retry, 100, 100);
    pool.settle(1, OK, &retry, 150, 150);
    pool.settle(1, Verdict::Retry(Penalty::Reject(401)), &retry, 160, 160);
    for t in [170, 180, 190, 200, 210, 220] {
        pool.settle(0, FAIL, &retry, t, t);
    }
    assert_eq!(pool.quarantined(), vec![1], "key 0 is the last usable key");
    pool.settle(0, Verdict::Retry(Penalty::Reject(403)), &retry, 230, 230);
    assert_eq!(pool.quarantined(), vec![0, 1], "a rejected key goes, last or not");
}

#[test]
fn attempts_sent_before_a_cooldown_add_no_strike() {
    let pool = Pool::new(2);
    let retry = retry(false);
    let until = pool.settle(
        0,
        Verdict::Retry(Penalty::Cool(Duration::from_secs(5))),
        &retry,
        1_000,
        1_000,
    );
    assert_eq!(until, Some(6_000));
    for t in 0..8u64 {
        // Other keys answer, but these slow attempts were all sent before the 429.
        pool.settle(1, OK, &retry, 1_100 + t * 10, 1_101 + t * 10);
        pool.settle(0, FAIL, &retry, 900 + t, 1_105 + t * 10);
    }
    assert!(pool.quarantined().is_empty());
    assert_eq!(pool.keys[0].failures(), 8, "still counted as failures");
}
