//! Where key health lives across reloads: keyed by the stable `KeyId`, so a key that stays in
//! the config keeps its cooling, quarantine and counters; removed keys are forgotten.

use std::sync::Arc;

use ahash::AHashMap;
use parking_lot::Mutex;

use super::KeyHealth;
use crate::config::Config;

#[derive(Default)]
pub struct HealthRegistry {
    /// Only touched when a generation is prepared (start, reload), never per request.
    keys: Mutex<AHashMap<crate::config::KeyId, Arc<KeyHealth>>>,
}

/// Per generation: `[provider index][key index]` -> the key's shared health.
#[derive(Debug, Default)]
pub struct KeyHealthTable(pub Vec<Vec<Arc<KeyHealth>>>);

impl KeyHealthTable {
    pub fn get(&self, provider: usize, key: usize) -> Option<&Arc<KeyHealth>> {
        self.0.get(provider).and_then(|keys| keys.get(key))
    }

    pub fn provider(&self, provider: usize) -> &[Arc<KeyHealth>] {
        self.0.get(provider).map_or(&[], Vec::as_slice)
    }
}

impl HealthRegistry {
    /// The table for `config`, reusing the health of keys already known.
    pub fn table_for(&self, config: &Config) -> KeyHealthTable {
        let mut known = self.keys.lock();
        let mut next = AHashMap::with_capacity(known.len());
        let table = config
            .providers
            .iter()
            .map(|provider| {
                provider
                    .keys
                    .iter()
                    .map(|key| {
                        let health = known
                            .remove(&key.id)
                            .or_else(|| next.get(&key.id).cloned())
                            .unwrap_or_else(|| Arc::new(KeyHealth::new(key.id, key.secret.masked())));
                        next.insert(key.id, health.clone());
                        health
                    })
                    .collect()
            })
            .collect();
        *known = next;
        KeyHealthTable(table)
    }
}
