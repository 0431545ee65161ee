//! A per-worker stop signal that idle connections can await, so shutdown closes them inside
//! the runtime instead of leaving their sockets open after it. Single-threaded (`Rc`, `Cell`):
//! it never leaves its worker.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Clone, Default)]
pub struct StopSignal(Rc<State>);

#[derive(Default)]
struct State {
    stopped: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl StopSignal {
    pub fn trigger(&self) {
        self.0.stopped.set(true);
        let waiters = std::mem::take(&mut *self.0.waiters.borrow_mut());
        for waker in waiters {
            waker.wake();
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.0.stopped.get()
    }

    /// Completes once `trigger` has been called.
    pub fn wait(&self) -> Stopped {
        Stopped(self.0.clone())
    }
}

pub struct Stopped(Rc<State>);

impl Future for Stopped {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.stopped.get() {
            return Poll::Ready(());
        }
        let mut waiters = self.0.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
