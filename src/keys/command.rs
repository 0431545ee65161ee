//! Key-pool changes, run on the control thread (they persist to storage and build a new
//! generation, both of which may block): add keys to a provider, remove or disable one, restore
//! the pool at start, persist it when `apply` pruned it.
//! Invariant: the pool in memory is persisted before the reply says the change happened; a
//! change that cannot build a generation is rolled back in memory and on disk.

use serde::Serialize;

use super::{DisabledKey, PoolState, RuntimeKey, MAX_RUNTIME_KEYS};
use crate::config::{KeyId, Provider, Secret};
use crate::gateway::commands::Reply;
use crate::gateway::Gateway;
use crate::storage::Storage;

#[derive(Debug)]
pub enum KeysCommand {
    Add { provider: String, secrets: Vec<Secret> },
    Remove { provider: String, secret: Secret },
}

/// Loads the stored pool and, when it holds anything, rebuilds the generation with it
/// (at start, before any worker serves).
pub fn restore(gateway: &Gateway, storage: Option<&mut Storage>) {
    let Some(storage) = storage else { return };
    match crate::storage::keys::load(storage) {
        Ok(state) if state.is_empty() => {}
        Ok(state) => {
            let (runtime, disabled) = (state.runtime.len(), state.disabled.len());
            gateway.keys.replace(state);
            match gateway.rebuild() {
                Ok(_) => tracing::info!(runtime, disabled, "key pool restored from storage"),
                Err(e) => tracing::error!("cannot apply the stored key pool: {e}"),
            }
        }
        Err(e) => tracing::error!("cannot read the stored key pool: {e}"),
    }
}

/// Persists the pool if merging it into a new generation pruned stale entries.
pub fn persist_if_dirty(gateway: &Gateway, storage: Option<&mut Storage>) {
    if !gateway.keys.take_dirty() {
        return;
    }
    if let Some(storage) = storage {
        if let Err(e) = crate::storage::keys::save(storage, &gateway.keys.snapshot()) {
            tracing::error!("cannot save the key pool: {e}");
        }
    }
}

pub fn execute(command: KeysCommand, gateway: &Gateway, storage: Option<&mut Storage>) -> Reply {
    let (base, fingerprint) = gateway.base_config();
    let provider_of = |name: &str| {
        base.providers
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .ok_or_else(|| (404, format!("no provider named {name:?}")))
    };
    let before = gateway.keys.snapshot();
    let body = match command {
        KeysCommand::Add { provider, secrets } => {
            let provider = provider_of(&provider)?;
            add(gateway, &provider, secrets)?
        }
        KeysCommand::Remove { provider, secret } => {
            let provider = provider_of(&provider)?;
            remove(gateway, &provider, &secret, fingerprint)?
        }
    };
    let mut storage = storage;
    let persisted = match storage.as_deref_mut() {
        Some(storage) => match crate::storage::keys::save(storage, &gateway.keys.snapshot()) {
            Ok(()) => storage.persistent(),
            Err(e) => {
                gateway.keys.replace(before);
                return Err((500, format!("cannot save the key pool, nothing changed: {e}")));
            }
        },
        None => false,
    };
    match gateway.rebuild() {
        Ok(generation) => {
            gateway
                .cluster_pool_changed
                .store(gateway.cluster.is_some(), std::sync::atomic::Ordering::Release);
            let mut out = body;
            out.generation = generation;
            out.persisted = persisted;
            sonic_rs::to_vec(&out).map_err(|e| (500, format!("cannot encode the answer: {e}")))
        }
        Err(e) => {
            gateway.keys.replace(before);
            if let Some(storage) = storage {
                let _ = crate::storage::keys::save(storage, &gateway.keys.snapshot());
            }
            Err((
                500,
                format!("cannot build a generation with this change, nothing changed: {e}"),
            ))
        }
    }
}

/// The fleet's pool from Redis (another instance changed it, or this one started): replaces
/// ours, is persisted here too, and serves from the next generation.
pub fn adopt(state: PoolState, gateway: &Gateway, storage: Option<&mut Storage>) {
    let before = gateway.keys.snapshot();
    if crate::cluster::same_pool(&before, &state) {
        return;
    }
    gateway.keys.replace(state);
    match gateway.rebuild() {
        Ok(generation) => {
            tracing::info!(generation, "key pool changed by another instance");
            if let Some(storage) = storage {
                if let Err(e) = crate::storage::keys::save(storage, &gateway.keys.snapshot()) {
                    tracing::error!("cannot save the key pool: {e}");
                }
            }
        }
        Err(e) => {
            gateway.keys.replace(before);
            tracing::error!("cannot apply the fleet's key pool, keeping ours: {e}");
        }
    }
}

#[derive(Serialize, Default)]
struct Changed {
    provider: String,
    /// Keys (masked) now in the pool.
    added: Vec<String>,
    /// Keys (masked) already in the provider's pool or repeated in the request: ignored.
    duplicates: Vec<String>,
    /// Keys (masked) removed (runtime keys).
    removed: Vec<String>,
    /// Config keys (masked) disabled until the config file changes.
    disabled: Vec<String>,
    generation: u64,
    /// False when storage is in memory only or unavailable (the change ends with the process).
    persisted: bool,
}

fn add(gateway: &Gateway, provider: &Provider, secrets: Vec<Secret>) -> Result<Changed, (u16, String)> {
    let mut out = Changed {
        provider: provider.name.clone(),
        ..Default::default()
    };
    if provider.vertex.is_some() {
        let why = "a Vertex provider's keys are its credentials (google_oauth / service_account in the config)";
        return Err((400, why.into()));
    }
    for secret in &secrets {
        let raw = secret.expose();
        if raw.is_empty() || raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err((
                400,
                "a key is empty or contains whitespace or control characters".into(),
            ));
        }
    }
    gateway.keys.update(|state: &mut PoolState| {
        if state.runtime.len() + secrets.len() > MAX_RUNTIME_KEYS {
            return Err((
                400,
                format!("the runtime key pool holds at most {MAX_RUNTIME_KEYS} keys"),
            ));
        }
        let mut seen: Vec<KeyId> = Vec::with_capacity(secrets.len());
        for secret in secrets {
            let id = KeyId::of(&provider.name, secret.expose());
            let masked = secret.masked();
            // A disabled config key given again is enabled again.
            if let Some(at) = state
                .disabled
                .iter()
                .position(|d| d.provider == provider.name && d.id == id)
            {
                state.disabled.remove(at);
                out.added.push(masked);
                continue;
            }
            let in_config = provider.keys.iter().any(|k| k.id == id);
            let in_runtime = state
                .runtime
                .iter()
                .any(|k| k.provider == provider.name && KeyId::of(&k.provider, k.secret.expose()) == id);
            if in_config || in_runtime || seen.contains(&id) {
                out.duplicates.push(masked);
                continue;
            }
            seen.push(id);
            state.runtime.push(RuntimeKey {
                provider: provider.name.clone(),
                secret,
            });
            out.added.push(masked);
        }
        Ok(())
    })?;
    Ok(out)
}

fn remove(gateway: &Gateway, provider: &Provider, secret: &Secret, fingerprint: u64) -> Result<Changed, (u16, String)> {
    let id = KeyId::of(&provider.name, secret.expose());
    let masked = secret.masked();
    let mut out = Changed {
        provider: provider.name.clone(),
        ..Default::default()
    };
    gateway.keys.update(|state| {
        let before = state.runtime.len();
        state
            .runtime
            .retain(|k| !(k.provider == provider.name && KeyId::of(&k.provider, k.secret.expose()) == id));
        if state.runtime.len() != before {
            out.removed.push(masked.clone());
            return Ok(());
        }
        let Some(key) = provider.keys.iter().find(|k| k.id == id) else {
            return Err((404, format!("provider {:?} has no key {masked}", provider.name)));
        };
        if !state.disabled.iter().any(|d| d.provider == provider.name && d.id == id) {
            state.disabled.push(DisabledKey {
                provider: provider.name.clone(),
                id,
                masked: masked.clone(),
                origin: key.origin,
                fingerprint,
            });
        }
        out.disabled.push(masked);
        Ok(())
    })?;
    Ok(out)
}
