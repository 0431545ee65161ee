//! Per-core keep-alive pool of upstream connections, keyed by scheme, host, port and TLS
//! settings. Invariant: only connections whose last response was completely framed, with no
//! stray bytes and no `Connection: close`, come back here; idle ones past
//! `pool_idle_timeout`, and ones whose socket received anything while idle, are never handed
//! out (and are reaped or closed). An idle connection is stamped with the thread's latest
//! clock reading (`health::clock::latest`, taken as its answer ended): never later than the
//! truth, so it can only expire early, never late.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use crate::health::clock::{self, Moment};

use ahash::AHashMap;

use super::connect::Io;
use super::PoolKey;
use crate::net::ReadTimer;

struct Idle {
    io: Box<Io>,
    /// The connection's read deadline, kept with it (disarmed, holding no waker): the next
    /// exchange re-arms it instead of taking a new entry.
    timer: ReadTimer,
    since: Moment,
}

pub struct Pool {
    idle: RefCell<AHashMap<PoolKey, Vec<Idle>>>,
    max_idle_per_host: Cell<usize>,
    idle_timeout: Cell<Duration>,
}

/// Idle for less than `timeout` at `now`.
fn fresh(entry: &Idle, timeout: Duration, now: Moment) -> bool {
    now < entry.since + timeout
}

impl Pool {
    pub fn new(max_idle_per_host: usize, idle_timeout: Duration) -> Self {
        Pool {
            idle: RefCell::new(AHashMap::new()),
            max_idle_per_host: Cell::new(max_idle_per_host),
            idle_timeout: Cell::new(idle_timeout),
        }
    }

    /// Applies new sizes after a reload; pooled connections stay.
    pub fn resize(&self, max_idle_per_host: usize, idle_timeout: Duration) {
        self.max_idle_per_host.set(max_idle_per_host);
        self.idle_timeout.set(idle_timeout);
    }

    /// The most recently used live connection for `key` (LIFO keeps a warm set small).
    pub fn take(&self, key: &PoolKey) -> Option<(Box<Io>, ReadTimer)> {
        let timeout = self.idle_timeout.get();
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(key).filter(|list| !list.is_empty())?;
        let now = clock::read();
        while let Some(entry) = list.pop() {
            // A socket with bytes, a FIN or an error waiting was closed by the upstream or
            // sent something nobody asked for: either way it is not at a message boundary.
            if fresh(&entry, timeout, now) && entry.io.socket_quiet() {
                return Some((entry.io, entry.timer));
            }
        }
        None
    }

    /// Only `Exchange::release` puts connections back (after its checks), with their disarmed deadline.
    pub(super) fn put(&self, key: &PoolKey, io: Box<Io>, timer: ReadTimer) {
        let max = self.max_idle_per_host.get();
        if max == 0 {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(key.clone()).or_default();
        if list.len() >= max {
            list.remove(0);
        }
        list.push(Idle {
            io,
            timer,
            since: clock::latest(),
        });
    }

    /// Drops connections idle past the timeout; called once a second per core.
    pub fn reap(&self) {
        let timeout = self.idle_timeout.get();
        let mut idle = self.idle.borrow_mut();
        let now = Moment::now();
        idle.retain(|_, list| {
            list.retain(|entry| fresh(entry, timeout, now));
            !list.is_empty()
        });
    }

    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }
}
