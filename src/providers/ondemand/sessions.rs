//! The on-demand session table: which upstream session, created with which key, continues
//! which conversation. One table per provider, shared by every worker (an `Arc` in the
//! `Gateway`, a `parking_lot::Mutex` held for map operations only, never across an await), so
//! a follow-up turn finds its session whichever core it lands on.
//! Invariants: at most `max_sessions` entries per provider (the least recently used goes first,
//! counted as evicted); an entry is found only by the 128-bit keyed digest of the conversation
//! so far (scoped by client, provider and endpoint) and holds nothing of the conversation
//! itself, only the session id and the creating key's id; an entry idle past
//! `session_timeout_ms` is never returned (it is dropped and counted as expired).

use std::collections::BTreeMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use ahash::AHashMap;
use parking_lot::Mutex;

use crate::config::{KeyId, SessionLimits};

/// A keyed 128-bit digest of a conversation (two independently seeded `ahash` states).
pub type Digest = u128;

/// The digest of any hashable value. The seeds are drawn once per process, so digests are the
/// same on every core and unguessable from outside.
pub fn digest_of(value: impl Hash) -> Digest {
    static SEEDS: OnceLock<[ahash::RandomState; 2]> = OnceLock::new();
    let [a, b] = SEEDS.get_or_init(|| [ahash::RandomState::new(), ahash::RandomState::new()]);
    (u128::from(a.hash_one(&value)) << 64) | u128::from(b.hash_one(&value))
}

/// One more message on a conversation's digest chain.
pub fn chain(prev: Digest, role: &str, text: &str) -> Digest {
    digest_of((prev, role, text))
}

/// A live upstream session and the key that created it (the only key that may use it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub key: KeyId,
}

struct Entry {
    session: Session,
    used: Instant,
    seq: u64,
}

#[derive(Default)]
struct Inner {
    map: AHashMap<Digest, Entry>,
    /// `seq` -> digest, oldest use first (what eviction and the expiry sweep walk).
    order: BTreeMap<u64, Digest>,
    next_seq: u64,
}

/// One provider's sessions.
pub struct SessionTable {
    inner: Mutex<Inner>,
    limits: Mutex<SessionLimits>,
    pub created: AtomicU64,
    pub reused: AtomicU64,
    pub expired: AtomicU64,
    pub evicted: AtomicU64,
}

impl SessionTable {
    pub fn new(limits: SessionLimits) -> Self {
        SessionTable {
            inner: Mutex::new(Inner::default()),
            limits: Mutex::new(limits),
            created: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    fn limits(&self) -> SessionLimits {
        *self.limits.lock()
    }

    /// The live session continuing the conversation with this digest. One idle past the
    /// timeout is dropped (counted as expired) and not returned.
    pub fn find(&self, digest: Digest, now: Instant) -> Option<Session> {
        let timeout = self.limits().timeout;
        let mut inner = self.inner.lock();
        let entry = inner.map.get(&digest)?;
        if now.saturating_duration_since(entry.used) <= timeout {
            return Some(entry.session.clone());
        }
        inner.remove(digest);
        drop(inner);
        self.expired.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Records that `session` now continues the conversation `digest`, replacing the entry of
    /// the conversation it grew from. Expired entries go first, then the oldest while full.
    pub fn insert(&self, digest: Digest, session: Session, replaces: Option<Digest>, now: Instant) {
        let SessionLimits { timeout, max } = self.limits();
        let (mut expired, mut evicted) = (0, 0);
        {
            let mut inner = self.inner.lock();
            if let Some(old) = replaces {
                inner.remove(old);
            }
            inner.remove(digest);
            expired += inner.sweep(now, timeout);
            while inner.map.len() >= max.max(1) {
                let Some((_, oldest)) = inner.order.pop_first() else {
                    break;
                };
                inner.map.remove(&oldest);
                evicted += 1;
            }
            let seq = inner.next_seq;
            inner.next_seq += 1;
            inner.order.insert(seq, digest);
            inner.map.insert(
                digest,
                Entry {
                    session,
                    used: now,
                    seq,
                },
            );
        }
        self.expired.fetch_add(expired, Ordering::Relaxed);
        self.evicted.fetch_add(evicted, Ordering::Relaxed);
    }

    /// The upstream no longer knows this session (404): forget it, counted as expired.
    pub fn lost(&self, digest: Digest) {
        if self.inner.lock().remove(digest) {
            self.expired.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A turn on this session failed midway: its upstream history is uncertain, so the next
    /// turn starts a new session.
    pub fn forget(&self, digest: Digest) {
        self.inner.lock().remove(digest);
    }

    /// Sessions alive now (expired ones are swept first, and counted).
    pub fn live(&self, now: Instant) -> usize {
        let timeout = self.limits().timeout;
        let mut inner = self.inner.lock();
        let expired = inner.sweep(now, timeout);
        let live = inner.map.len();
        drop(inner);
        self.expired.fetch_add(expired, Ordering::Relaxed);
        live
    }
}

impl Inner {
    fn remove(&mut self, digest: Digest) -> bool {
        match self.map.remove(&digest) {
            Some(entry) => {
                self.order.remove(&entry.seq);
                true
            }
            None => false,
        }
    }

    /// Drops entries idle past `timeout` (oldest use first, so it stops at the first live one).
    fn sweep(&mut self, now: Instant, timeout: std::time::Duration) -> u64 {
        let mut n = 0;
        while let Some((&seq, &digest)) = self.order.first_key_value() {
            let stale = self
                .map
                .get(&digest)
                .is_none_or(|e| now.saturating_duration_since(e.used) > timeout);
            if !stale {
                break;
            }
            self.order.remove(&seq);
            self.map.remove(&digest);
            n += 1;
        }
        n
    }
}

/// Every on-demand provider's table, by provider name (kept across reloads, so a reload does
/// not end conversations).
#[derive(Default)]
pub struct SessionRegistry {
    tables: Mutex<AHashMap<String, Arc<SessionTable>>>,
}

impl SessionRegistry {
    /// The provider's table, with its current limits applied.
    pub fn table(&self, provider: &str, limits: SessionLimits) -> Arc<SessionTable> {
        let mut tables = self.tables.lock();
        if let Some(table) = tables.get(provider) {
            *table.limits.lock() = limits;
            return table.clone();
        }
        let table = Arc::new(SessionTable::new(limits));
        tables.insert(provider.to_owned(), table.clone());
        table
    }

    /// The `rotor_ondemand_*` families of `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let mut tables: Vec<(String, Arc<SessionTable>)> =
            self.tables.lock().iter().map(|(n, t)| (n.clone(), t.clone())).collect();
        if tables.is_empty() {
            return;
        }
        tables.sort_by(|a, b| a.0.cmp(&b.0));
        let now = Instant::now();
        let _ = writeln!(
            out,
            "# HELP rotor_ondemand_sessions on-demand sessions alive now (bounded by max_sessions).\n# TYPE rotor_ondemand_sessions gauge"
        );
        for (name, table) in &tables {
            let _ = writeln!(
                out,
                "rotor_ondemand_sessions{{provider=\"{name}\"}} {}",
                table.live(now)
            );
        }
        let _ = writeln!(
            out,
            "# HELP rotor_ondemand_session_events_total on-demand sessions created, reused for a follow-up turn, expired (timeout or upstream 404) and evicted (max_sessions).\n# TYPE rotor_ondemand_session_events_total counter"
        );
        for (name, table) in &tables {
            for (event, n) in [
                ("created", &table.created),
                ("reused", &table.reused),
                ("expired", &table.expired),
                ("evicted", &table.evicted),
            ] {
                let _ = writeln!(
                    out,
                    "rotor_ondemand_session_events_total{{provider=\"{name}\",event=\"{event}\"}} {}",
                    n.load(Ordering::Relaxed)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn session(id: &str) -> Session {
        Session {
            id: id.to_owned(),
            key: KeyId(7),
        }
    }

    fn limits(max: usize, timeout_ms: u64) -> SessionLimits {
        SessionLimits {
            timeout: Duration::from_millis(timeout_ms),
            max,
        }
    }

    #[test]
    fn bound_evicts_the_oldest_and_counts_it() {
        let table = SessionTable::new(limits(2, 60_000));
        let now = Instant::now();
        table.insert(1, session("a"), None, now);
        table.insert(2, session("b"), None, now);
        table.insert(3, session("c"), None, now);
        assert_eq!(table.find(1, now), None);
        assert_eq!(table.find(2, now).map(|s| s.id), Some("b".to_owned()));
        assert_eq!(table.find(3, now).map(|s| s.id), Some("c".to_owned()));
        assert_eq!(table.evicted.load(Ordering::Relaxed), 1);
        assert_eq!(table.live(now), 2);
    }

    #[test]
    fn idle_sessions_expire_and_replaced_entries_go() {
        let table = SessionTable::new(limits(10, 1_000));
        let start = Instant::now();
        table.insert(1, session("a"), None, start);
        table.insert(2, session("a"), Some(1), start);
        assert_eq!(table.find(1, start), None, "the grown conversation replaced its parent");
        let later = start + Duration::from_millis(1_001);
        assert_eq!(table.find(2, later), None);
        assert_eq!(table.expired.load(Ordering::Relaxed), 1);
        assert_eq!(table.live(later), 0);
    }

    #[test]
    fn digests_differ_by_role_and_text_boundaries() {
        let root = digest_of("endpoint");
        assert_ne!(chain(root, "user", "ab"), chain(root, "use", "rab"));
        assert_ne!(chain(root, "user", "a"), chain(root, "assistant", "a"));
        assert_eq!(chain(root, "user", "a"), chain(root, "user", "a"));
    }
}
