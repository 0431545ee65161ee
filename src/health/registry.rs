//! Where key and provider health live across reloads: keys by their stable `KeyId`, providers
//! by name, so a key or provider that stays in the config keeps its cooling, quarantine,
//! breaker and counters; removed ones are forgotten.

use std::sync::Arc;

use ahash::AHashMap;
use parking_lot::Mutex;

use super::{KeyHealth, ProviderHealth};
use crate::config::Config;

#[derive(Default)]
pub struct HealthRegistry {
    /// Only touched when a generation is prepared (start, reload), never per request.
    keys: Mutex<AHashMap<crate::config::KeyId, Arc<KeyHealth>>>,
    providers: Mutex<AHashMap<String, Arc<ProviderHealth>>>,
}

/// Per generation: `[provider index][key index]` -> the key's shared health, and
/// `[provider index]` -> the provider's.
#[derive(Debug, Default)]
pub struct KeyHealthTable {
    keys: Vec<Vec<Arc<KeyHealth>>>,
    providers: Vec<Arc<ProviderHealth>>,
}

impl KeyHealthTable {
    pub fn get(&self, provider: usize, key: usize) -> Option<&Arc<KeyHealth>> {
        self.keys.get(provider).and_then(|keys| keys.get(key))
    }

    pub fn provider(&self, provider: usize) -> &[Arc<KeyHealth>] {
        self.keys.get(provider).map_or(&[], Vec::as_slice)
    }

    /// The provider's own health (breaker, recent failures, event counters).
    pub fn provider_health(&self, provider: usize) -> Option<&Arc<ProviderHealth>> {
        self.providers.get(provider)
    }
}

impl HealthRegistry {
    /// The table for `config`, reusing the health of keys and providers already known.
    pub fn table_for(&self, config: &Config) -> KeyHealthTable {
        let mut known = self.keys.lock();
        let mut next = AHashMap::with_capacity(known.len());
        let keys = config
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
        let mut known = self.providers.lock();
        let mut next = AHashMap::with_capacity(known.len());
        let providers = config
            .providers
            .iter()
            .map(|provider| {
                let health = known.remove(&provider.name).unwrap_or_default();
                next.insert(provider.name.clone(), health.clone());
                health
            })
            .collect();
        *known = next;
        KeyHealthTable { keys, providers }
    }
}
