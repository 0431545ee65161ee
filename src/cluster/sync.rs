//! Shared key health, key pool and fleet view, polled by the cluster thread every
//! `cluster.sync_ms` (so a change reaches every instance within about two polls):
//! - health: the thread compares each key's cooling deadline and quarantine with what it saw
//!   last; a change made here (a 429 with Retry-After, a quarantine, a restore) is appended to
//!   the Redis stream `{prefix}:events`; entries from other instances are applied to the same
//!   key (by its stable `KeyId`). The stream is capped (`MAXLEN ~ 10000`) and replayed at
//!   start, so an instance that restarts learns cooldowns still running.
//! - key pool: after an admin change here the whole pool is written to `{prefix}:pool` and a
//!   `pool` event appended; other instances read it and hand it to their control thread, which
//!   persists it and builds a generation with it. Redis holds the pool across restarts of any
//!   instance; concurrent admin changes on two instances are last-writer-wins.
//! - heartbeat: a sorted set `{prefix}:instances` scored by expiry (Redis time), trimmed on
//!   every beat; its size is the live instance count used for the `limit / live` fallback.
//!
//! Invariant: a change applied from another instance is recorded as seen before it could be
//! noticed as a local change, so events never echo between instances.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ahash::AHashMap;
use redis::{Connection, Script};
use serde::{Deserialize, Serialize};

use super::{Instance, Shared};
use crate::config::{KeyId, KeyOrigin, Secret};
use crate::gateway::commands::Command;
use crate::gateway::Gateway;
use crate::health::{now_ms, KeyHealth};
use crate::keys::care::unix_ms;
use crate::keys::{DisabledKey, PoolState, RuntimeKey};

const STREAM_MAXLEN: usize = 10_000;
const READ_BATCH: usize = 512;

const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 10)
return redis.call('ZRANGE', KEYS[1], 0, 1000, 'WITHSCORES')
"#;

#[derive(Clone, Copy, PartialEq, Eq)]
struct Seen {
    cooling_until: u64,
    quarantined: bool,
}

pub struct Sync {
    prefix: String,
    /// This process's name on the stream: instance id + a per-boot nonce, so a restarted
    /// instance applies what its previous life published.
    origin: String,
    last_id: String,
    seen: AHashMap<KeyId, Seen>,
    index: AHashMap<KeyId, Arc<KeyHealth>>,
    indexed_generation: u64,
    heartbeat: Script,
    pub pool_dirty: bool,
    started: bool,
}

impl Sync {
    pub fn new(prefix: &str, instance_id: &str) -> Self {
        Sync {
            prefix: prefix.to_owned(),
            origin: format!("{instance_id}#{:016x}", fastrand::u64(..)),
            last_id: "0".into(),
            seen: AHashMap::new(),
            index: AHashMap::new(),
            indexed_generation: 0,
            heartbeat: Script::new(HEARTBEAT),
            pool_dirty: false,
            started: false,
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// Publishes this instance's heartbeat and reads the live ones.
    pub fn beat(&self, conn: &mut Connection, shared: &Shared, ttl_ms: u64) -> redis::RedisResult<()> {
        let live: Vec<(String, f64)> = self
            .heartbeat
            .key(self.key("instances"))
            .arg(&shared.instance_id)
            .arg(ttl_ms)
            .invoke(conn)?;
        shared.set_live(live.len() as u64);
        *shared.instances.lock() = live
            .into_iter()
            .map(|(id, expires)| Instance {
                id,
                expires_unix_ms: expires as u64,
            })
            .collect();
        Ok(())
    }

    /// Leaves the fleet (graceful stop).
    pub fn leave(&self, conn: &mut Connection, shared: &Shared) {
        let _: redis::RedisResult<i64> = redis::cmd("ZREM")
            .arg(self.key("instances"))
            .arg(&shared.instance_id)
            .query(conn);
    }

    /// One poll: publish local health and pool changes, apply other instances' events.
    pub fn poll(&mut self, conn: &mut Connection, gateway: &Gateway, shared: &Shared) -> redis::RedisResult<()> {
        self.reindex(gateway);
        if !self.started {
            // First contact: take the fleet's pool, or give it ours when it has none.
            self.started = true;
            let stored: Option<String> = redis::cmd("GET").arg(self.key("pool")).query(conn)?;
            match stored.as_deref().map(decode_pool) {
                Some(Some(state)) => gateway.commands.post(Command::ClusterPool(state)),
                Some(None) => tracing::warn!("the shared key pool in Redis cannot be read; keeping ours"),
                None if !gateway.keys.snapshot().is_empty() => self.pool_dirty = true,
                None => {}
            }
        }
        if self.pool_dirty {
            self.publish_pool(conn, gateway)?;
            self.pool_dirty = false;
        }
        self.publish_health(conn, shared)?;
        self.read_events(conn, gateway, shared)
    }

    fn reindex(&mut self, gateway: &Gateway) {
        let generation = gateway.current();
        if generation.id == self.indexed_generation {
            return;
        }
        self.indexed_generation = generation.id;
        self.index.clear();
        for p in 0..generation.config.providers.len() {
            for health in generation.key_health.provider(p) {
                self.index.insert(health.id, health.clone());
            }
        }
        self.seen.retain(|id, _| self.index.contains_key(id));
    }

    fn publish_pool(&self, conn: &mut Connection, gateway: &Gateway) -> redis::RedisResult<()> {
        let encoded = encode_pool(&gateway.keys.snapshot());
        redis::cmd("SET").arg(self.key("pool")).arg(encoded).exec(conn)?;
        self.append(conn, "pool", 0, 0)
    }

    fn append(&self, conn: &mut Connection, kind: &str, key: u64, until: u64) -> redis::RedisResult<()> {
        redis::cmd("XADD")
            .arg(self.key("events"))
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAXLEN)
            .arg("*")
            .arg("origin")
            .arg(&self.origin)
            .arg("kind")
            .arg(kind)
            .arg("key")
            .arg(format!("{key:016x}"))
            .arg("until")
            .arg(until)
            .exec(conn)
    }

    /// Compares every key's health with what was seen last and publishes the changes.
    fn publish_health(&mut self, conn: &mut Connection, shared: &Shared) -> redis::RedisResult<()> {
        let now = now_ms();
        let mut changes: Vec<(&'static str, u64, u64)> = Vec::new();
        for (id, health) in &self.index {
            let current = Seen {
                cooling_until: health.cooling_until(),
                quarantined: health.is_quarantined(),
            };
            let Some(before) = self.seen.insert(*id, current) else {
                continue;
            };
            if current.cooling_until > before.cooling_until && current.cooling_until > now {
                let until = unix_ms() + (current.cooling_until - now);
                changes.push(("cool", id.0, until));
            }
            if current.quarantined != before.quarantined {
                changes.push((if current.quarantined { "quarantine" } else { "restore" }, id.0, 0));
            }
        }
        for (kind, key, until) in changes {
            self.append(conn, kind, key, until)?;
            shared.counters.events_published.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn read_events(&mut self, conn: &mut Connection, gateway: &Gateway, shared: &Shared) -> redis::RedisResult<()> {
        type Entries = Vec<(String, Vec<String>)>;
        let reply: Option<Vec<(String, Entries)>> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_BATCH)
            .arg("STREAMS")
            .arg(self.key("events"))
            .arg(&self.last_id)
            .query(conn)?;
        let mut pool_changed = false;
        for (_, entries) in reply.into_iter().flatten() {
            for (id, fields) in entries {
                self.last_id = id;
                let field = |name: &str| {
                    fields
                        .chunks(2)
                        .find(|pair| pair.first().map(String::as_str) == Some(name))
                        .and_then(|pair| pair.get(1))
                        .map(String::as_str)
                        .unwrap_or("")
                };
                if field("origin") == self.origin {
                    continue;
                }
                if field("kind") == "pool" {
                    pool_changed = true;
                    continue;
                }
                let key = u64::from_str_radix(field("key"), 16).ok().map(KeyId);
                let until = field("until").parse::<u64>().unwrap_or(0);
                if let Some(health) = key.and_then(|k| self.index.get(&k).cloned()) {
                    self.apply(&health, field("kind"), until, gateway);
                    shared.counters.events_applied.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if pool_changed {
            let stored: Option<String> = redis::cmd("GET").arg(self.key("pool")).query(conn)?;
            if let Some(state) = stored.as_deref().and_then(decode_pool) {
                gateway.commands.post(Command::ClusterPool(state));
                shared.counters.pool_syncs.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Applies another instance's health change, and records it as seen (no echo).
    fn apply(&mut self, health: &KeyHealth, kind: &str, until_unix: u64, gateway: &Gateway) {
        let now = now_ms();
        match kind {
            "cool" => {
                let left = until_unix.saturating_sub(unix_ms());
                if left > 0 {
                    health.cool_until(now + left, now);
                }
            }
            "quarantine" if !health.is_quarantined() => {
                let base = gateway.current().config.retry.quarantine.as_millis() as u64;
                health.quarantine(now, base);
            }
            "restore" if health.is_quarantined() => health.restore(now),
            _ => {}
        }
        self.seen.insert(
            health.id,
            Seen {
                cooling_until: health.cooling_until(),
                quarantined: health.is_quarantined(),
            },
        );
    }
}

#[derive(Serialize, Deserialize)]
struct PoolJson {
    runtime: Vec<RuntimeJson>,
    disabled: Vec<DisabledJson>,
}

#[derive(Serialize, Deserialize)]
struct RuntimeJson {
    provider: String,
    secret: String,
}

#[derive(Serialize, Deserialize)]
struct DisabledJson {
    provider: String,
    id: String,
    masked: String,
    origin: String,
    fingerprint: String,
}

/// The pool as stored in Redis (secrets as given: the pool must reach every instance).
pub fn encode_pool(state: &PoolState) -> String {
    let json = PoolJson {
        runtime: state
            .runtime
            .iter()
            .map(|k| RuntimeJson {
                provider: k.provider.clone(),
                secret: k.secret.expose().to_owned(),
            })
            .collect(),
        disabled: state
            .disabled
            .iter()
            .map(|d| DisabledJson {
                provider: d.provider.clone(),
                id: format!("{:016x}", d.id.0),
                masked: d.masked.clone(),
                origin: d.origin.name().to_owned(),
                fingerprint: format!("{:016x}", d.fingerprint),
            })
            .collect(),
    };
    sonic_rs::to_string(&json).unwrap_or_default()
}

pub fn decode_pool(text: &str) -> Option<PoolState> {
    let json: PoolJson = sonic_rs::from_str(text).ok()?;
    let mut state = PoolState::default();
    for k in json.runtime {
        state.runtime.push(RuntimeKey {
            provider: k.provider,
            secret: Secret::new(k.secret),
        });
    }
    for d in json.disabled {
        state.disabled.push(DisabledKey {
            provider: d.provider,
            id: KeyId(u64::from_str_radix(&d.id, 16).ok()?),
            masked: d.masked,
            origin: if d.origin == "keys_file" {
                KeyOrigin::KeysFile
            } else {
                KeyOrigin::Config
            },
            fingerprint: u64::from_str_radix(&d.fingerprint, 16).ok()?,
        });
    }
    Some(state)
}
