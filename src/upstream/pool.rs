//! Per-core keep-alive pool of upstream connections, keyed by scheme, host, port and TLS
//! settings: one [`Shelf`] of idle connections per key. Invariant: only connections whose last
//! response was completely framed, with no stray bytes and no `Connection: close`, come back
//! here; idle ones past `pool_idle_timeout`, and ones whose socket received anything while
//! idle, are never handed out (and are reaped or closed). An idle connection is stamped with
//! the thread's latest clock reading (`health::clock::latest`, taken as its answer ended):
//! never later than the truth, so it can only expire early, never late. A shelf stays in the
//! map while any exchange holds it (its way back), so a release never puts a connection on a
//! shelf the pool no longer has.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use crate::health::clock::{self, Moment};

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

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

/// One key's idle connections, most recently used last. An exchange holds its key's shelf from
/// checkout (or connect) to release and puts its connection straight back on it: the lookup
/// by key at every release (a hash probe and a key comparison) and the key's clone in every
/// exchange cost about 130 instructions per chat request (callgrind, issue 18).
#[derive(Clone, Default)]
pub struct Shelf(Rc<RefCell<Vec<Idle>>>);

pub struct Pool {
    /// Hashed by the hash each `PoolKey` carries (`KeyHash`).
    idle: RefCell<HashMap<PoolKey, Shelf, BuildHasherDefault<KeyHash>>>,
    /// The shelf the last checkout looked up, with its key: a core's requests mostly go to
    /// the host the one before went to, and a checkout that finds its key here takes no hash
    /// probe (about 40 instructions a chat request, callgrind, issue 18). Forgotten at every
    /// reap, so it keeps no shelf in the map that the reap would drop.
    last: RefCell<Option<(PoolKey, Shelf)>>,
    max_idle_per_host: Cell<usize>,
    idle_timeout: Cell<Duration>,
}

/// The pool map's hasher: a `PoolKey` hashes as the one `u64` it computed when built, which is
/// taken as it is (no hashing per checkout and release).
#[derive(Default)]
pub struct KeyHash(u64);

impl Hasher for KeyHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `PoolKey`; anything else is folded in all the same.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// Idle for less than `timeout` at `now`.
fn fresh(entry: &Idle, timeout: Duration, now: Moment) -> bool {
    now < entry.since + timeout
}

impl Pool {
    pub fn new(max_idle_per_host: usize, idle_timeout: Duration) -> Self {
        Pool {
            idle: RefCell::new(HashMap::default()),
            last: RefCell::new(None),
            max_idle_per_host: Cell::new(max_idle_per_host),
            idle_timeout: Cell::new(idle_timeout),
        }
    }

    /// Applies new sizes after a reload; pooled connections stay.
    pub fn resize(&self, max_idle_per_host: usize, idle_timeout: Duration) {
        self.max_idle_per_host.set(max_idle_per_host);
        self.idle_timeout.set(idle_timeout);
    }

    /// The most recently used live connection for `key` (LIFO keeps a warm set small), with
    /// the shelf it goes back to.
    pub fn take(&self, key: &PoolKey) -> Option<(Box<Io>, ReadTimer, Shelf)> {
        let timeout = self.idle_timeout.get();
        let mut last = self.last.borrow_mut();
        if !matches!(&*last, Some((known, _)) if known == key) {
            let shelf = self.idle.borrow().get(key)?.clone();
            *last = Some((key.clone(), shelf));
        }
        let (_, shelf) = last.as_ref()?;
        let mut list = shelf.0.borrow_mut();
        if list.is_empty() {
            return None;
        }
        let now = clock::read();
        while let Some(entry) = list.pop() {
            // A socket with bytes, a FIN or an error waiting was closed by the upstream or
            // sent something nobody asked for: either way it is not at a message boundary.
            if fresh(&entry, timeout, now) && entry.io.socket_quiet() {
                return Some((entry.io, entry.timer, shelf.clone()));
            }
        }
        None
    }

    /// The shelf of `key`, made for a host's first connection: a fresh connection's way back.
    pub(super) fn shelf(&self, key: &PoolKey) -> Shelf {
        let mut idle = self.idle.borrow_mut();
        match idle.get(key) {
            Some(shelf) => shelf.clone(),
            // Looked up before inserting: the key is cloned only for a host's first connection.
            None => idle.entry(key.clone()).or_default().clone(),
        }
    }

    /// Only `Exchange::release` puts connections back (after its checks), with their disarmed
    /// deadline, on the shelf its checkout gave it.
    pub(super) fn put(&self, shelf: &Shelf, io: Box<Io>, timer: ReadTimer) {
        let max = self.max_idle_per_host.get();
        if max == 0 {
            return;
        }
        let entry = Idle {
            io,
            timer,
            since: clock::latest(),
        };
        let mut list = shelf.0.borrow_mut();
        if list.len() >= max {
            list.remove(0);
        }
        list.push(entry);
    }

    /// Drops connections idle past the timeout, and the shelves left empty that no exchange
    /// holds; called once a second per core.
    pub fn reap(&self) {
        let timeout = self.idle_timeout.get();
        self.last.borrow_mut().take();
        let mut idle = self.idle.borrow_mut();
        let now = Moment::now();
        idle.retain(|_, shelf| {
            let mut list = shelf.0.borrow_mut();
            list.retain(|entry| fresh(entry, timeout, now));
            !list.is_empty() || Rc::strong_count(&shelf.0) > 1
        });
    }

    /// Shelves in the map, held or not.
    #[cfg(test)]
    pub(super) fn shelves(&self) -> usize {
        self.idle.borrow().len()
    }

    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(|shelf| shelf.0.borrow().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::hash::BuildHasherDefault;
    use std::sync::Arc;

    use super::{KeyHash, PoolKey};
    use crate::config::Scheme;

    /// A key built elsewhere (a probe's, a follow-up's: another `Arc` of the host) finds the
    /// provider's connections; a key differing in any field finds none.
    #[test]
    fn keys_match_by_content_whichever_arc_holds_the_host() {
        let key = |scheme, host: &str, port, tls| PoolKey::new(scheme, Arc::from(host), port, tls);
        let mut map: HashMap<PoolKey, u32, BuildHasherDefault<KeyHash>> = HashMap::default();
        map.insert(key(Scheme::Http, "api.example", 80, 0), 1);
        assert_eq!(map.get(&key(Scheme::Http, "api.example", 80, 0)), Some(&1));
        for other in [
            key(Scheme::Https, "api.example", 80, 0),
            key(Scheme::Http, "api.example2", 80, 0),
            key(Scheme::Http, "api.example", 81, 0),
            key(Scheme::Http, "api.example", 80, 3),
        ] {
            assert_eq!(map.get(&other), None, "{other:?}");
            assert_ne!(other, key(Scheme::Http, "api.example", 80, 0));
        }
    }
}
