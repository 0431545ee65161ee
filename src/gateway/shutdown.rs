//! Graceful shutdown: one signal that every worker awaits, and per-worker drain.
//! Invariant: once triggered, stays triggered; subscribers after the trigger fire at once.

use std::sync::atomic::{AtomicBool, Ordering};

use futures_channel::oneshot;
use parking_lot::Mutex;

#[derive(Default)]
pub struct Shutdown {
    stopping: AtomicBool,
    waiters: Mutex<Vec<oneshot::Sender<()>>>,
}

impl Shutdown {
    /// A future-side handle that completes when shutdown starts.
    pub fn subscribe(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut waiters = self.waiters.lock();
        if self.stopping.load(Ordering::Acquire) {
            let _ = tx.send(());
        } else {
            waiters.push(tx);
        }
        rx
    }

    pub fn trigger(&self) {
        let mut waiters = self.waiters.lock();
        self.stopping.store(true, Ordering::Release);
        for tx in waiters.drain(..) {
            let _ = tx.send(());
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}
