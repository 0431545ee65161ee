//! Window roll-over with an injected clock, refunds, restore, and exactness under threads.

use std::sync::Arc;

use super::*;

const MIN: u64 = 60_000;
const DAY: u64 = 86_400_000;
/// A clock value far from 0, like `limits::now`.
const T0: u64 = 10 * DAY;

fn admitted(w: &Window, cost: u64, now: u64) -> bool {
    matches!(w.try_admit(cost, now), Admit::Yes { .. })
}

#[test]
fn rpm_window_rolls_over_after_a_full_minute() {
    let w = Window::new(MIN, 3);
    assert!(admitted(&w, 1, T0));
    assert!(admitted(&w, 1, T0 + 10_000));
    assert!(admitted(&w, 1, T0 + 59_000));
    // Full: the first slot frees once its bucket is a whole window old (61 s after its start).
    assert_eq!(w.try_admit(1, T0 + 59_500), Admit::Full { free_at: T0 + 61_000 });
    assert!(!admitted(&w, 1, T0 + 60_999));
    assert!(admitted(&w, 1, T0 + 61_000));
    assert!(!admitted(&w, 1, T0 + 61_000));
    // The 10 s admission leaves at 71 s.
    assert!(!admitted(&w, 1, T0 + 70_999));
    assert!(admitted(&w, 1, T0 + 71_000));
    assert_eq!(w.used(T0 + 71_000), 3);
    // Long quiet: everything expires.
    assert_eq!(w.used(T0 + 10 * MIN), 0);
    assert!(admitted(&w, 1, T0 + 10 * MIN));
}

#[test]
fn rpd_window_rolls_over_in_24_minute_buckets() {
    let w = Window::new(DAY, 2);
    assert_eq!(w.bucket_ms(), 24 * MIN);
    assert!(admitted(&w, 1, T0));
    assert!(admitted(&w, 1, T0 + 12 * 3_600_000));
    assert_eq!(
        w.try_admit(1, T0 + 23 * 3_600_000),
        Admit::Full {
            free_at: T0 + DAY + 24 * MIN
        }
    );
    assert!(!admitted(&w, 1, T0 + DAY));
    assert!(admitted(&w, 1, T0 + DAY + 24 * MIN));
}

#[test]
fn tpm_window_counts_tokens_and_rolls_over() {
    let w = Window::new(MIN, 1_000);
    assert!(admitted(&w, 600, T0));
    assert!(!admitted(&w, 500, T0 + 1_000));
    assert!(admitted(&w, 400, T0 + 30_000));
    // 500 more need the 600 from t=0 gone.
    assert_eq!(w.try_admit(500, T0 + 40_000), Admit::Full { free_at: T0 + 61_000 });
    assert!(admitted(&w, 500, T0 + 61_000));
    assert_eq!(w.used(T0 + 61_000), 900);
}

#[test]
fn no_sixty_second_span_ever_holds_more_than_the_limit() {
    // Admit greedily every 100 ms for 5 minutes, then check every 60 s span.
    let w = Window::new(MIN, 7);
    let mut times = Vec::new();
    let mut t = T0;
    while t < T0 + 5 * MIN {
        if admitted(&w, 1, t) {
            times.push(t);
        }
        t += 100;
    }
    for (i, start) in times.iter().enumerate() {
        let in_span = times[i..].iter().take_while(|x| **x < start + MIN).count();
        assert!(in_span <= 7, "{in_span} admissions in the minute from {start}");
    }
    assert!(times.len() >= 5 * 7 - 7, "the limiter admits steadily: {}", times.len());
}

#[test]
fn refund_gives_back_only_what_is_still_counted() {
    let w = Window::new(MIN, 2);
    let Admit::Yes { epoch } = w.try_admit(1, T0) else {
        panic!()
    };
    assert!(admitted(&w, 1, T0));
    w.refund(epoch, 1);
    assert!(admitted(&w, 1, T0 + 1));
    assert!(!admitted(&w, 1, T0 + 2));
    // A refund after the bucket left the window changes nothing.
    assert!(admitted(&w, 1, T0 + 2 * MIN));
    w.refund(epoch, 1);
    assert_eq!(w.used(T0 + 2 * MIN), 1);
    assert!(admitted(&w, 1, T0 + 2 * MIN));
    assert!(!admitted(&w, 1, T0 + 2 * MIN));
}

#[test]
fn restore_never_moves_counts_earlier() {
    let w = Window::new(MIN, 5);
    // A bucket that started 30.5 s ago in the old process's grid lands in the next bucket.
    let now = T0 + 100_000;
    w.restore(now - 30_500, 5, now);
    assert!(!admitted(&w, 1, now));
    assert_eq!(w.snapshot(now), vec![(now - 30_000, 5)]);
    assert!(!admitted(&w, 1, now - 30_000 + 60_999));
    assert!(admitted(&w, 1, now - 30_000 + 61_000));
    // Too old to matter: ignored.
    let fresh = Window::new(MIN, 5);
    fresh.restore(now - 2 * MIN, 5, now);
    assert_eq!(fresh.used(now), 0);
}

#[test]
fn threads_contending_admit_exactly_the_limit() {
    let w = Arc::new(Window::new(MIN, 1_000));
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let w = w.clone();
            std::thread::spawn(move || (0..1_000).filter(|j| admitted(&w, 1, T0 + (i * 7 + j) % 900)).count())
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    assert_eq!(total, 1_000);
    assert_eq!(w.used(T0 + 900), 1_000);
}
