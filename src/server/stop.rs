//! A per-worker stop signal that idle connections can await, so shutdown closes them inside
//! the runtime instead of leaving their sockets open after it. Single-threaded (`Rc`, `Cell`):
//! it never leaves its worker.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use slab::Slab;

#[derive(Clone, Default)]
pub struct StopSignal(Rc<State>);

/// Invariant: `waiters` holds one waker per live, pending `Stopped` (each removes its own on
/// drop), so connections that come and go leave nothing behind, and registering is O(1).
#[derive(Default)]
struct State {
    stopped: Cell<bool>,
    waiters: RefCell<Slab<Waker>>,
}

impl StopSignal {
    pub fn trigger(&self) {
        self.0.stopped.set(true);
        let waiters: Vec<Waker> = self.0.waiters.borrow_mut().drain().collect();
        for waker in waiters {
            waker.wake();
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.0.stopped.get()
    }

    /// Completes once `trigger` has been called.
    pub fn wait(&self) -> Stopped {
        Stopped {
            state: self.0.clone(),
            slot: None,
        }
    }

    /// Wakers registered now (tests: nothing accumulates).
    #[cfg(test)]
    fn registered(&self) -> usize {
        self.0.waiters.borrow().len()
    }
}

pub struct Stopped {
    state: Rc<State>,
    /// This future's entry in `State::waiters` while it waits.
    slot: Option<usize>,
}

impl Future for Stopped {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.state.stopped.get() {
            return Poll::Ready(());
        }
        let mut waiters = self.state.waiters.borrow_mut();
        match self.slot.and_then(|slot| waiters.get_mut(slot)) {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            Some(waker) => *waker = cx.waker().clone(),
            None => {
                let slot = waiters.insert(cx.waker().clone());
                drop(waiters);
                self.slot = Some(slot);
            }
        }
        Poll::Pending
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            // Gone already when `trigger` drained the waiters.
            self.state.waiters.borrow_mut().try_remove(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn waiters_that_go_away_leave_nothing_registered() {
        let signal = StopSignal::default();
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..1000 {
            let mut wait = std::pin::pin!(signal.wait());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            assert_eq!(signal.registered(), 1, "a re-polled waiter registers once");
        }
        assert_eq!(signal.registered(), 0, "dropped waiters unregister");
    }

    #[test]
    fn trigger_wakes_every_waiter_and_later_waits_are_ready() {
        let signal = StopSignal::default();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let mut first = Box::pin(signal.wait());
        let mut second = Box::pin(signal.wait());
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        signal.trigger();
        assert_eq!(counter.0.load(Ordering::Relaxed), 2);
        assert!(first.as_mut().poll(&mut cx).is_ready());
        drop(second);
        assert!(Box::pin(signal.wait()).as_mut().poll(&mut cx).is_ready());
        assert_eq!(signal.registered(), 0);
    }
}
