//! The runtime key pool (DESIGN 1.3, `/admin/keys`): keys added through the admin API and
//! config keys disabled through it. Every compiled generation is the config file's providers
//! with this pool merged in (`apply`), so a reload keeps runtime keys, and an add or remove
//! swaps in a new generation built from the last loaded config plus the pool.
//! Invariants: key ids depend only on (provider name, secret), so a key that stays keeps its
//! limit windows and health across every such swap; a config key stays disabled only while the
//! config file is byte-for-byte the one it was disabled under ("until the file changes");
//! only the control thread changes the pool and persists it (`storage::keys`).

pub mod care;
pub mod command;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::config::{Config, ConfigSource, Key, KeyId, KeyOrigin, Secret};

/// Most runtime keys the pool holds over all providers (an add beyond it is refused).
pub const MAX_RUNTIME_KEYS: usize = 100_000;

/// A key added at run time.
#[derive(Debug, Clone)]
pub struct RuntimeKey {
    pub provider: String,
    pub secret: Secret,
}

/// A config key disabled through `DELETE /admin/keys`.
#[derive(Debug, Clone)]
pub struct DisabledKey {
    pub provider: String,
    pub id: KeyId,
    /// Masked to its last 4 characters, for `GET /admin/keys`.
    pub masked: String,
    pub origin: KeyOrigin,
    /// `fingerprint` of the config file it was disabled under.
    pub fingerprint: u64,
}

#[derive(Debug, Clone, Default)]
pub struct PoolState {
    /// In the order added.
    pub runtime: Vec<RuntimeKey>,
    pub disabled: Vec<DisabledKey>,
}

impl PoolState {
    pub fn is_empty(&self) -> bool {
        self.runtime.is_empty() && self.disabled.is_empty()
    }
}

#[derive(Default)]
pub struct KeyPool {
    /// Locked by the control thread to change or merge, by admin list calls to read; never on
    /// the request path.
    state: Mutex<PoolState>,
    /// Set when `apply` dropped stale entries: the control thread persists the pool again.
    dirty: AtomicBool,
}

impl KeyPool {
    pub fn snapshot(&self) -> PoolState {
        self.state.lock().clone()
    }

    pub fn replace(&self, state: PoolState) {
        *self.state.lock() = state;
    }

    /// Changes the pool under its lock.
    pub fn update<R>(&self, change: impl FnOnce(&mut PoolState) -> R) -> R {
        change(&mut self.state.lock())
    }

    /// True once after `apply` changed the pool on its own.
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }

    /// Merges the pool into `config` (loaded from a file whose bytes have `fingerprint`):
    /// disabled config keys are left out, runtime keys appended to their provider after its
    /// own keys (a runtime key the file now lists too stays the file's). Disabled entries
    /// recorded under another version of the file are forgotten.
    pub fn apply(&self, config: &mut Config, fingerprint: u64) {
        let mut state = self.state.lock();
        let before = state.disabled.len();
        state.disabled.retain(|d| d.fingerprint == fingerprint);
        if state.disabled.len() != before {
            self.dirty.store(true, Ordering::Release);
        }
        if state.is_empty() {
            return;
        }
        for provider in config.providers.iter_mut() {
            let ours = |name: &str| name == provider.name;
            let disabled: Vec<KeyId> = state
                .disabled
                .iter()
                .filter(|d| ours(&d.provider))
                .map(|d| d.id)
                .collect();
            let added: Vec<&RuntimeKey> = state.runtime.iter().filter(|k| ours(&k.provider)).collect();
            if disabled.is_empty() && added.is_empty() {
                continue;
            }
            let p = Arc::make_mut(provider);
            p.keys.retain(|k| !disabled.contains(&k.id));
            for key in added {
                let id = KeyId::of(&p.name, key.secret.expose());
                if !p.keys.iter().any(|k| k.id == id) {
                    p.keys.push(Key {
                        id,
                        secret: key.secret.clone(),
                        origin: KeyOrigin::Runtime,
                    });
                }
            }
        }
    }
}

/// A fixed hash of the config file's bytes (0 for the environment quick start or an unreadable
/// file; a remote config's is taken when it is fetched): what "the file changed" means for
/// disabled config keys. Reads the file: control thread or start-up only.
pub fn fingerprint(source: &ConfigSource) -> u64 {
    match source {
        ConfigSource::File(path) => std::fs::read(path)
            .map(|bytes| KeyId::of("config-file", &String::from_utf8_lossy(&bytes)).0)
            .unwrap_or(0),
        ConfigSource::Environment => 0,
        ConfigSource::Remote(remote) => remote.digest,
    }
}
