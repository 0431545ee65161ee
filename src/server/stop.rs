//! A per-worker stop signal that ends idle connections' waits, so shutdown closes them inside
//! the runtime instead of leaving their sockets open after it. Single-threaded (`Rc`, `Cell`):
//! it never leaves its worker.
//! Invariant: an idle wait arms its read deadline in the signal's group (`idle_group`), so
//! `trigger` fires it at once; nothing is registered per wait, so nothing accumulates.

use std::cell::Cell;
use std::rc::Rc;

use crate::deadline::Group;

#[derive(Clone, Default)]
pub struct StopSignal(Rc<State>);

#[derive(Default)]
struct State {
    stopped: Cell<bool>,
    idle: Group,
}

impl StopSignal {
    /// Marks the worker stopping and ends every idle wait armed in `idle_group` (their reads
    /// time out now). Waits armed later must check `is_stopped` first.
    pub fn trigger(&self) {
        self.0.stopped.set(true);
        self.0.idle.fire();
    }

    pub fn is_stopped(&self) -> bool {
        self.0.stopped.get()
    }

    /// The group an idle wait arms its deadline in: replaces a stop future polled beside every
    /// keep-alive read (its poll, waker registration and removal, and the `select!` around
    /// both cost about 200 instructions per request, callgrind).
    pub fn idle_group(&self) -> &Group {
        &self.0.idle
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::task::Poll;
    use std::time::{Duration, Instant};

    use super::StopSignal;
    use crate::config::Driver;
    use crate::deadline::Deadline;

    fn on(driver: Driver, test: impl std::future::Future<Output = ()>) {
        let mut test = Some(test);
        crate::runtime::run_on_driver(driver, || test.take().expect("once")).expect("runtime");
    }

    fn elapsed_now(deadline: &mut Deadline) -> impl std::future::Future<Output = bool> + '_ {
        poll_fn(|cx| Poll::Ready(deadline.poll_elapsed(cx).is_ready()))
    }

    /// `trigger` wakes a task waiting on an idle deadline at once (not at its minute), leaves
    /// deadlines outside its group alone (another server's, or one re-armed for a head read),
    /// and later triggers find nothing to fire.
    fn trigger_ends_idle_waits(driver: Driver) {
        on(driver, async {
            let signal = StopSignal::default();
            let other = StopSignal::default();
            let mut idle = Deadline::new();
            idle.arm_in(Duration::from_secs(60), signal.idle_group());
            let mut foreign = Deadline::new();
            foreign.arm_in(Duration::from_secs(60), other.idle_group());
            let mut reading = Deadline::new();
            reading.arm_in(Duration::from_secs(60), signal.idle_group());
            reading.arm(Duration::from_secs(60));
            assert!(!elapsed_now(&mut foreign).await);
            assert!(!elapsed_now(&mut reading).await);
            let started = Instant::now();
            let waiter = monoio::spawn(async move {
                poll_fn(|cx| idle.poll_elapsed(cx)).await;
                idle
            });
            let stopper = signal.clone();
            monoio::spawn(async move {
                crate::deadline::sleep(Duration::from_millis(30)).await;
                assert!(!stopper.is_stopped());
                stopper.trigger();
            });
            let mut idle = waiter.await;
            assert!(signal.is_stopped());
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "woken by the stop, not the deadline"
            );
            assert!(elapsed_now(&mut idle).await, "stays elapsed until armed again");
            assert!(!elapsed_now(&mut foreign).await, "another signal's wait goes on");
            assert!(!elapsed_now(&mut reading).await, "a re-armed deadline left the group");
            signal.trigger();
            assert!(!other.is_stopped());
        });
    }

    #[test]
    fn trigger_ends_idle_waits_on_the_default_driver() {
        trigger_ends_idle_waits(Driver::Auto);
    }

    #[test]
    fn trigger_ends_idle_waits_on_the_legacy_driver() {
        trigger_ends_idle_waits(Driver::Legacy);
    }
}
