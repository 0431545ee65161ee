//! Deadlines on real runtimes (io_uring when available, and the legacy driver): on time and
//! never early, the waker follows the task that polls, drop leaves nothing filed, and an idle
//! ticker runs no passes.

use std::future::{poll_fn, Future};
use std::task::Poll;
use std::time::{Duration, Instant};

use super::{with, Deadline};
use crate::config::Driver;

/// Runs `test` on a worker runtime of `driver`, as workers run (`run_on_driver`).
fn on(driver: Driver, test: impl std::future::Future<Output = ()>) {
    let mut test = Some(test);
    crate::runtime::run_on_driver(driver, || test.take().expect("once")).expect("runtime");
}

async fn elapsed(deadline: &mut Deadline) {
    poll_fn(|cx| deadline.poll_elapsed(cx)).await;
}

/// Waits until `limit` passed; panics (a failed test) if `what` is not done by then. Timed
/// outside the wheel under test (and worker runtimes on io_uring have no monoio timer).
async fn bounded<F: std::future::Future>(limit: Duration, what: F) -> F::Output {
    let mut what = std::pin::pin!(what);
    let mut limit = std::pin::pin!(wait_outside_the_wheel(limit));
    poll_fn(|cx| {
        if let Poll::Ready(out) = what.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        assert!(limit.as_mut().poll(cx).is_pending(), "the deadline never fired");
        Poll::Pending
    })
    .await
}

/// Waits `time` without filing anything in the wheel: a thread sleeps and sends.
async fn wait_outside_the_wheel(time: Duration) {
    let (tx, rx) = futures_channel::oneshot::channel::<()>();
    std::thread::spawn(move || {
        #[allow(clippy::disallowed_methods)] // its own thread, not a worker
        std::thread::sleep(time);
        let _ = tx.send(());
    });
    rx.await.expect("the sleeper thread sends");
}

fn fires_on_time(driver: Driver) {
    on(driver, async {
        for limit_ms in [1u64, 20, 75] {
            let limit = Duration::from_millis(limit_ms);
            let mut deadline = Deadline::new();
            let started = Instant::now();
            deadline.arm(limit);
            bounded(limit + Duration::from_secs(2), elapsed(&mut deadline)).await;
            let waited = started.elapsed();
            // The slack stated in the module doc (a tick and monoio's ms) plus a loaded machine.
            assert!(
                waited >= limit && waited < limit + Duration::from_millis(500),
                "{limit:?} fired after {waited:?}"
            );
        }
        // Re-armed later while waiting: the first deadline passes without firing.
        let mut deadline = Deadline::new();
        let started = Instant::now();
        deadline.arm(Duration::from_millis(10));
        let first = poll_fn(|cx| Poll::Ready(deadline.poll_elapsed(cx).is_ready())).await;
        assert!(!first);
        deadline.arm(Duration::from_millis(120));
        bounded(Duration::from_secs(3), elapsed(&mut deadline)).await;
        assert!(
            started.elapsed() >= Duration::from_millis(120),
            "fired at the old deadline"
        );
    });
}

#[test]
fn fires_on_time_on_the_default_driver() {
    fires_on_time(Driver::Auto);
}

#[test]
fn fires_on_time_on_the_legacy_driver() {
    fires_on_time(Driver::Legacy);
}

/// An entry polled by one task and then handed to another wakes the other: the waker is the
/// latest poller's (what lets a deadline stay with a pooled connection).
#[test]
fn waker_follows_the_polling_task() {
    on(Driver::Auto, async {
        let mut deadline = Deadline::new();
        deadline.arm(Duration::from_millis(60));
        // This task polls it first and registers its waker.
        let first = poll_fn(|cx| Poll::Ready(deadline.poll_elapsed(cx).is_ready())).await;
        assert!(!first);
        let other = monoio::spawn(async move {
            let started = Instant::now();
            elapsed(&mut deadline).await;
            started.elapsed()
        });
        // This task stays busy elsewhere; only the other one can see the deadline pass.
        let waited = bounded(Duration::from_secs(3), other).await;
        assert!(waited < Duration::from_secs(1), "{waited:?}");
    });
}

/// Dropping deadlines removes their entries at once; once nothing is filed the ticker parks
/// without a timer and runs no pass while the worker idles.
fn drop_removes_and_an_idle_ticker_parks(driver: Driver) {
    on(driver, async {
        let mut many: Vec<Deadline> = (0..1000).map(|_| Deadline::new()).collect();
        for (i, d) in many.iter_mut().enumerate() {
            d.arm(Duration::from_secs(60 + i as u64));
        }
        assert_eq!(with(|w| w.filed()), 0, "an arm reaches the wheel at the next poll");
        for d in &mut many {
            let fired = poll_fn(|cx| Poll::Ready(d.poll_elapsed(cx).is_ready())).await;
            assert!(!fired);
        }
        assert_eq!(with(|w| w.filed()), 1000);
        drop(many);
        assert_eq!(with(|w| w.filed()), 0, "dropped entries leave their slots at once");
        // One fires: the ticker's pass wakes it and finds nothing else filed.
        let mut short = Deadline::new();
        short.arm(Duration::from_millis(5));
        bounded(Duration::from_secs(2), elapsed(&mut short)).await;
        wait_outside_the_wheel(Duration::from_millis(20)).await;
        let (passes, parked) = with(|w| (w.passes, w.ticker_at() == super::wheel::NEVER));
        assert!(parked, "nothing filed: the ticker has no timer");
        wait_outside_the_wheel(Duration::from_millis(200)).await;
        assert_eq!(with(|w| w.passes), passes, "an idle worker's ticker ran passes");
        // Woken by the next filing, it times that one.
        let started = Instant::now();
        short.arm(Duration::from_millis(15));
        bounded(Duration::from_secs(2), elapsed(&mut short)).await;
        assert!(started.elapsed() >= Duration::from_millis(15));
    });
}

#[test]
fn an_idle_ticker_parks_on_the_default_driver() {
    drop_removes_and_an_idle_ticker_parks(Driver::Auto);
}

#[test]
fn an_idle_ticker_parks_on_the_legacy_driver() {
    drop_removes_and_an_idle_ticker_parks(Driver::Legacy);
}

/// `sleep` and `net::within` (the worker's `monoio::time::sleep` and `timeout`) never end
/// early and end within the stated slack; `within` hands back a result that came first.
fn sleep_and_timeout(driver: Driver) {
    on(driver, async {
        for limit_ms in [0u64, 3, 40] {
            let limit = Duration::from_millis(limit_ms);
            let started = Instant::now();
            bounded(limit + Duration::from_secs(2), super::sleep(limit)).await;
            let waited = started.elapsed();
            assert!(
                waited >= limit && waited < limit + Duration::from_millis(500),
                "sleep({limit:?}) took {waited:?}"
            );
        }
        let started = Instant::now();
        let late = crate::net::within(Duration::from_millis(30), super::sleep(Duration::from_secs(60))).await;
        let waited = started.elapsed();
        assert!(late.is_err(), "the limit came first");
        assert!(
            waited >= Duration::from_millis(30) && waited < Duration::from_millis(530),
            "timed out after {waited:?}"
        );
        let early = crate::net::within(Duration::from_secs(60), super::sleep(Duration::from_millis(5))).await;
        assert!(early.is_ok(), "the work came first");
    });
}

#[test]
fn sleep_and_timeout_on_the_default_driver() {
    sleep_and_timeout(Driver::Auto);
}

#[test]
fn sleep_and_timeout_on_the_legacy_driver() {
    sleep_and_timeout(Driver::Legacy);
}

/// An io_uring worker runs without monoio's time driver (its pass on every park is what the
/// deadline ticker's timerfd replaces); a legacy worker keeps it.
#[test]
fn only_the_legacy_worker_has_monoio_timers() {
    for (driver, expected) in [(Driver::Auto, !monoio::utils::detect_uring()), (Driver::Legacy, true)] {
        on(driver, async move {
            let made = std::panic::catch_unwind(|| drop(monoio::time::sleep(Duration::from_millis(1))));
            assert_eq!(made.is_ok(), expected, "{driver:?}");
        });
    }
}

/// A thread that runs one worker runtime after another gets a ticker in each.
#[test]
fn each_runtime_gets_its_ticker() {
    for driver in [Driver::Auto, Driver::Legacy, Driver::Auto] {
        on(driver, async {
            let mut deadline = Deadline::new();
            deadline.arm(Duration::from_millis(10));
            bounded(Duration::from_secs(2), elapsed(&mut deadline)).await;
        });
    }
}

/// A deadline re-armed later while filed stays in its slot (no wheel access: the wheel sees
/// only the first filing), still fires at the later time and never at the first; one re-armed
/// earlier is filed again; a pooled owner's `idle` drops its waker without the wheel.
#[test]
fn rearmed_later_in_place_fires_at_the_latest_arm() {
    on(Driver::Auto, async {
        let mut deadline = Deadline::new();
        deadline.arm(Duration::from_millis(20));
        let first = poll_fn(|cx| Poll::Ready(deadline.poll_elapsed(cx).is_ready())).await;
        assert!(!first);
        assert_eq!(with(|w| w.filed()), 1);
        let started = Instant::now();
        for _ in 0..5 {
            deadline.arm(Duration::from_millis(80));
            let fired = poll_fn(|cx| Poll::Ready(deadline.poll_elapsed(cx).is_ready())).await;
            assert!(!fired);
        }
        bounded(Duration::from_secs(3), elapsed(&mut deadline)).await;
        assert!(
            started.elapsed() >= Duration::from_millis(80),
            "fired before the latest arm"
        );
        // Earlier than its filed slot: filed again, fires at the earlier time.
        deadline.arm(Duration::from_secs(30));
        assert!(poll_fn(|cx| Poll::Ready(deadline.poll_elapsed(cx).is_pending())).await);
        let started = Instant::now();
        deadline.arm(Duration::from_millis(10));
        bounded(Duration::from_secs(3), elapsed(&mut deadline)).await;
        assert!(started.elapsed() < Duration::from_secs(2), "kept the later slot");
        // Idle: disarmed, no waker; armed again, it is filed and fires.
        deadline.idle();
        assert!(poll_fn(|cx| Poll::Ready(deadline.poll_elapsed(cx).is_pending())).await);
        deadline.arm(Duration::from_millis(5));
        bounded(Duration::from_secs(3), elapsed(&mut deadline)).await;
    });
}

/// Entries left filed when a ticker ends are unfiled with it, so a deadline re-armed later on
/// the next runtime of the thread (which alone would stay in its old slot, with no ticker to
/// reach it) files itself again and that runtime's ticker fires it.
#[test]
fn an_entry_outliving_its_runtime_fires_on_the_next() {
    let mut kept = Some(Deadline::new());
    for (driver, first) in [(Driver::Auto, true), (Driver::Legacy, false), (Driver::Auto, false)] {
        let mut deadline = kept.take().expect("kept");
        let (tx, rx) = std::sync::mpsc::channel();
        on(driver, async move {
            if !first {
                // Later than the slot it was filed in on the runtime before.
                deadline.arm(Duration::from_millis(150));
                let started = Instant::now();
                bounded(Duration::from_secs(3), elapsed(&mut deadline)).await;
                assert!(started.elapsed() >= Duration::from_millis(150));
            }
            // Filed when this runtime ends.
            deadline.arm(Duration::from_millis(100));
            assert!(poll_fn(|cx| Poll::Ready(deadline.poll_elapsed(cx).is_pending())).await);
            tx.send(deadline).expect("send");
        });
        super::forget_ticker();
        kept = Some(rx.recv().expect("the deadline back"));
    }
}
