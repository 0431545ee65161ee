//! Dashboard sessions and the failed-login throttle, shared by every worker (one
//! `parking_lot::Mutex` each; admin is never the hot path).
//! Invariants: at most `MAX_SESSIONS` sessions (the oldest is evicted, and counted) and at most
//! `MAX_THROTTLED_SOURCES` remembered login sources; a session is only ever found by its full
//! random id and is dead after its expiry or logout.

use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Dashboard sessions alive at once; a new login past this evicts the oldest.
pub const MAX_SESSIONS: usize = 64;
/// Login sources (IP addresses) whose failures are remembered.
pub const MAX_THROTTLED_SOURCES: usize = 4096;
/// Failed logins from one source allowed before it must wait.
const FREE_FAILURES: u32 = 3;
/// The longest wait a source is given (the wait doubles per failure up to this).
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A source's failures are forgotten after this long without a new one.
const FAILURE_MEMORY: Duration = Duration::from_secs(900);

/// A logged-in dashboard: its cookie id and the CSRF token its state-changing calls carry.
#[derive(Clone)]
pub struct Session {
    pub csrf: String,
    pub expires: Instant,
    /// A digest of the admin credentials at login: a session ends when they change.
    pub credentials: u64,
    created: Instant,
}

#[derive(Default)]
pub struct AdminState {
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    /// Sessions dropped to make room for a new one.
    pub sessions_evicted: AtomicU64,
    /// Login attempts refused because their source was waiting out failed attempts.
    pub logins_throttled: AtomicU64,
    pub logins_failed: AtomicU64,
}

struct Failures {
    count: u32,
    last: Instant,
    blocked_until: Instant,
}

impl AdminState {
    /// Opens a session valid for `ttl`; returns its cookie id and session. `None` when the
    /// system has no randomness to give (the login then fails with a 500).
    pub fn open(&self, ttl: Duration, credentials: u64) -> Option<(String, Session)> {
        let now = Instant::now();
        let id = random_token()?;
        let session = Session {
            csrf: random_token()?,
            expires: now + ttl,
            credentials,
            created: now,
        };
        let mut sessions = self.sessions.lock();
        sessions.retain(|_, s| s.expires > now);
        while sessions.len() >= MAX_SESSIONS {
            let oldest = sessions.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| k.clone());
            let Some(oldest) = oldest else { break };
            sessions.remove(&oldest);
            self.sessions_evicted.fetch_add(1, Ordering::Relaxed);
        }
        sessions.insert(id.clone(), session.clone());
        Some((id, session))
    }

    /// The live session with this cookie id.
    pub fn find(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut sessions = self.sessions.lock();
        match sessions.get(id) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                sessions.remove(id);
                None
            }
            None => None,
        }
    }

    pub fn close(&self, id: &str) {
        self.sessions.lock().remove(id);
    }

    pub fn live_sessions(&self) -> usize {
        let now = Instant::now();
        self.sessions.lock().values().filter(|s| s.expires > now).count()
    }

    /// The `rotor_admin_*` families of `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let families: [(&str, &str, &str, u64); 4] = [
            (
                "rotor_admin_sessions",
                "gauge",
                "Dashboard sessions alive now.",
                self.live_sessions() as u64,
            ),
            (
                "rotor_admin_sessions_evicted_total",
                "counter",
                "Dashboard sessions ended early to make room (at most MAX_SESSIONS live).",
                self.sessions_evicted.load(Ordering::Relaxed),
            ),
            (
                "rotor_admin_logins_failed_total",
                "counter",
                "Dashboard logins refused for wrong credentials.",
                self.logins_failed.load(Ordering::Relaxed),
            ),
            (
                "rotor_admin_logins_throttled_total",
                "counter",
                "Dashboard logins refused unjudged while their source waits out failed ones.",
                self.logins_throttled.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
    }

    /// How long `source` must still wait before its next login attempt is judged.
    pub fn wait_for(&self, source: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let failures = self.failures.lock();
        let wait = failures.get(&source)?.blocked_until.checked_duration_since(now)?;
        self.logins_throttled.fetch_add(1, Ordering::Relaxed);
        Some(wait)
    }

    /// Records a failed login: after `FREE_FAILURES`, each failure doubles the wait.
    pub fn failed(&self, source: IpAddr) {
        self.logins_failed.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut failures = self.failures.lock();
        if failures.len() >= MAX_THROTTLED_SOURCES && !failures.contains_key(&source) {
            failures.retain(|_, f| now.duration_since(f.last) < FAILURE_MEMORY);
            if failures.len() >= MAX_THROTTLED_SOURCES {
                let oldest = failures.iter().min_by_key(|(_, f)| f.last).map(|(ip, _)| *ip);
                if let Some(oldest) = oldest {
                    failures.remove(&oldest);
                }
            }
        }
        let entry = failures.entry(source).or_insert(Failures {
            count: 0,
            last: now,
            blocked_until: now,
        });
        if now.duration_since(entry.last) >= FAILURE_MEMORY {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        if entry.count > FREE_FAILURES {
            let doublings = (entry.count - FREE_FAILURES - 1).min(16);
            let wait = Duration::from_secs(1u64 << doublings).min(MAX_BACKOFF);
            entry.blocked_until = now + wait;
        }
    }

    /// A successful login forgets the source's failures.
    pub fn succeeded(&self, source: IpAddr) {
        self.failures.lock().remove(&source);
    }
}

/// 32 random bytes from the kernel, hex-encoded. `/dev/urandom` never blocks once the system
/// has booted, so reading it on a worker is safe.
fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom").ok()?.read_exact(&mut bytes).ok()?;
    let mut out = String::with_capacity(64);
    for b in bytes {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sessions_are_bounded_and_oldest_go_first() {
        let state = AdminState::default();
        let (first, _) = state.open(Duration::from_secs(60), 0).unwrap();
        for _ in 0..MAX_SESSIONS {
            state.open(Duration::from_secs(60), 0).unwrap();
        }
        assert!(state.find(&first).is_none());
        assert_eq!(state.live_sessions(), MAX_SESSIONS);
        assert_eq!(state.sessions_evicted.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn expired_and_closed_sessions_are_gone() {
        let state = AdminState::default();
        let (id, session) = state.open(Duration::from_secs(60), 0).unwrap();
        assert_eq!(id.len(), 64);
        assert_ne!(id, session.csrf);
        assert!(state.find(&id).is_some());
        state.close(&id);
        assert!(state.find(&id).is_none());
        let (short, _) = state.open(Duration::ZERO, 0).unwrap();
        assert!(state.find(&short).is_none());
    }

    #[test]
    fn failures_past_the_free_ones_make_a_source_wait() {
        let state = AdminState::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            state.failed(ip);
        }
        assert!(state.wait_for(ip).is_none());
        state.failed(ip);
        assert!(state.wait_for(ip).is_some_and(|w| w <= Duration::from_secs(1)));
        state.failed(ip);
        assert!(state.wait_for(ip).is_some_and(|w| w > Duration::from_secs(1)));
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(state.wait_for(other).is_none());
        state.succeeded(ip);
        assert!(state.wait_for(ip).is_none());
    }
}
