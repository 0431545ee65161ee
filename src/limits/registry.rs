//! Where limit windows live across reloads: keyed by a stable identity (the upstream `KeyId` or
//! the client's name, plus the kind), so a key or client that stays in the config keeps its
//! counts when its limit changes; windows of removed keys and clients are forgotten. Also the
//! snapshot/restore seam used by the control thread for persistence.

use std::sync::Arc;

use ahash::AHashMap;
use parking_lot::Mutex;

use super::{Gate, Kind, LimitSet, Window};
use crate::config::{Config, KeyId, Limit, Limits};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Key(KeyId),
    Client(String),
}

/// Stable identity of one window.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LimiterId {
    pub scope: Scope,
    pub kind: Kind,
}

impl LimiterId {
    /// The name under which the window is persisted: `key:<hex id>:rpm`, `client:<name>:tpm`.
    pub fn storage_name(&self) -> String {
        match &self.scope {
            Scope::Key(id) => format!("key:{:016x}:{}", id.0, self.kind.name()),
            Scope::Client(name) => format!("client:{name}:{}", self.kind.name()),
        }
    }

    pub fn parse(name: &str) -> Option<LimiterId> {
        let (rest, kind) = name.rsplit_once(':')?;
        let kind = Kind::from_name(kind)?;
        let scope = if let Some(hex) = rest.strip_prefix("key:") {
            Scope::Key(KeyId(u64::from_str_radix(hex, 16).ok()?))
        } else {
            Scope::Client(rest.strip_prefix("client:")?.to_owned())
        };
        Some(LimiterId { scope, kind })
    }
}

/// One window's live buckets, `(bucket start in limiter time, count)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSnapshot {
    pub id: LimiterId,
    pub bucket_ms: u64,
    pub buckets: Vec<(u64, u32)>,
}

#[derive(Default)]
pub struct LimitRegistry {
    /// Only touched when a generation is prepared and by the control thread's snapshots,
    /// never per request.
    windows: Mutex<AHashMap<LimiterId, Arc<Window>>>,
}

/// Per generation: the limits of every upstream key (`[provider][key]`) and every client
/// (by position in `Config::clients`).
#[derive(Debug, Default)]
pub struct LimitTable {
    pub keys: Vec<Vec<LimitSet>>,
    pub clients: Vec<LimitSet>,
    /// Some key or client has a TPM limit (only then is a token estimate computed).
    pub any_tpm: bool,
}

impl LimitTable {
    pub fn provider(&self, provider: usize) -> &[LimitSet] {
        self.keys.get(provider).map_or(&[], Vec::as_slice)
    }

    pub fn key(&self, provider: usize, key: usize) -> Option<&LimitSet> {
        self.keys.get(provider).and_then(|keys| keys.get(key))
    }
}

impl LimitRegistry {
    /// The table for `config`, reusing windows already known (with their limits updated).
    pub fn table_for(&self, config: &Config) -> LimitTable {
        let mut known = self.windows.lock();
        let mut next = AHashMap::with_capacity(known.len());
        let mut set_for = |scope: Scope, limits: &Limits| LimitSet {
            gates: Kind::ALL.map(|kind| match kind.of(limits) {
                Limit::Unlimited => Gate::Unlimited,
                Limit::Disabled => Gate::Disabled,
                Limit::Max(n) => {
                    let id = LimiterId {
                        scope: scope.clone(),
                        kind,
                    };
                    let window = known
                        .remove(&id)
                        .or_else(|| next.get(&id).cloned())
                        .unwrap_or_else(|| Arc::new(Window::new(kind.window_ms(), n)));
                    window.set_limit(n);
                    next.insert(id, window.clone());
                    Gate::Max(window)
                }
            }),
        };
        let keys: Vec<Vec<LimitSet>> = config
            .providers
            .iter()
            .map(|p| p.keys.iter().map(|k| set_for(Scope::Key(k.id), &p.limits)).collect())
            .collect();
        let clients: Vec<LimitSet> = config
            .clients
            .iter()
            .map(|c| set_for(Scope::Client(c.name.clone()), &c.limits))
            .collect();
        *known = next;
        let tpm = |set: &LimitSet| matches!(set.gates[2], Gate::Max(_) | Gate::Disabled);
        let any_tpm = clients.iter().any(tpm) || keys.iter().flatten().any(tpm);
        LimitTable { keys, clients, any_tpm }
    }

    /// Every window with counts in it at `now` (limiter time).
    pub fn snapshot(&self, now: u64) -> Vec<WindowSnapshot> {
        let windows = self.windows.lock();
        windows
            .iter()
            .map(|(id, w)| WindowSnapshot {
                id: id.clone(),
                bucket_ms: w.bucket_ms(),
                buckets: w.snapshot(now),
            })
            .collect()
    }

    /// Puts saved counts back into the windows that exist now. Windows no longer configured
    /// are ignored. Call before workers serve.
    pub fn restore(&self, saved: &[WindowSnapshot], now: u64) -> usize {
        let windows = self.windows.lock();
        let mut restored = 0;
        for snapshot in saved {
            let Some(window) = windows.get(&snapshot.id) else {
                continue;
            };
            for (start, count) in &snapshot.buckets {
                window.restore(*start, *count, now);
            }
            restored += 1;
        }
        restored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_names_round_trip() {
        for id in [
            LimiterId {
                scope: Scope::Key(KeyId(0xdead_beef)),
                kind: Kind::Rpm,
            },
            LimiterId {
                scope: Scope::Client("web:team".into()),
                kind: Kind::Tpm,
            },
        ] {
            assert_eq!(LimiterId::parse(&id.storage_name()), Some(id));
        }
        assert_eq!(LimiterId::parse("key:zz:rpm"), None);
        assert_eq!(LimiterId::parse("other:x:rpm"), None);
    }
}
