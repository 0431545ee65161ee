//! The response cache (`[cache]`, DESIGN 1.3): answers stored by exact request, shared by every
//! worker core. It owns the entries, their LRU order and the cache counters; the request path
//! (`proxy::cached`) decides what is looked up and stored.
//! Invariant: the bytes held (request key material plus answer, per entry) stay under
//! `cache.max_bytes` split over `SHARDS` shards; each shard's mutex is held only for a map
//! lookup or insert, never across an `.await`; an expired entry is never served.

pub mod tee;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use ahash::AHashMap;
use bytes::Bytes;
use parking_lot::Mutex;

/// Parts the store is split in (each with its own lock and `max_bytes / SHARDS` bytes).
pub const SHARDS: usize = 16;
/// Bookkeeping counted per entry on top of its bytes.
const ENTRY_OVERHEAD: usize = 96;

/// What a request is looked up by: its hash, and the material compared on a hit (so a hash
/// collision is a miss, never a wrong answer).
pub struct CacheKey {
    hash: u64,
    /// client, model, path and the stream flag, NUL-separated.
    meta: Bytes,
    body: Bytes,
}

impl CacheKey {
    /// Exact match on the client's name, the client-visible model, the path (the Gemini door
    /// names model and method there), the stream flag and the exact body bytes.
    pub fn new(client: &str, model: &str, path: &str, stream: bool, body: Bytes) -> Self {
        let mut meta = Vec::with_capacity(client.len() + model.len() + path.len() + 4);
        for part in [client.as_bytes(), model.as_bytes(), path.as_bytes()] {
            meta.extend_from_slice(part);
            meta.push(0);
        }
        meta.push(u8::from(stream));
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        meta.hash(&mut hasher);
        body.hash(&mut hasher);
        CacheKey {
            hash: hasher.finish(),
            meta: Bytes::from(meta),
            body,
        }
    }

    fn size(&self) -> usize {
        self.meta.len() + self.body.len()
    }

    /// SHA-256 of everything the key compares: the name of its entry in the fleet's shared
    /// cache (`cluster::remote_cache`), where no key material is stored to compare on a hit.
    pub fn digest(&self) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&(self.meta.len() as u64).to_be_bytes());
        ctx.update(&self.meta);
        ctx.update(&self.body);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}

/// A stored answer, as the client got it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Replayed as a stream (SSE) or as a whole body.
    pub streamed: bool,
    pub content_type: &'static [u8],
    pub body: Bytes,
}

struct Entry {
    key: CacheKey,
    answer: Arc<Answer>,
    expires_ms: u64,
    tick: u64,
    size: usize,
}

#[derive(Default)]
struct Shard {
    map: AHashMap<u64, Entry>,
    /// LRU order: last use tick -> hash.
    order: BTreeMap<u64, u64>,
    bytes: usize,
}

impl Shard {
    fn remove(&mut self, hash: u64) -> Option<Entry> {
        let entry = self.map.remove(&hash)?;
        self.order.remove(&entry.tick);
        self.bytes -= entry.size;
        Some(entry)
    }
}

/// Outcomes counted in `rotor_cache_requests_total{outcome}`.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    Hit,
    Miss,
    Bypass,
    Store,
    Evict,
}

const OUTCOMES: [&str; 5] = ["hit", "miss", "bypass", "store", "evict"];

#[derive(Default)]
pub struct Cache {
    shards: [Mutex<Shard>; SHARDS],
    tick: AtomicU64,
    counts: [AtomicU64; 5],
    bytes: AtomicI64,
}

impl Cache {
    pub fn count(&self, outcome: Outcome) {
        self.counts[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn shard(&self, key: &CacheKey) -> &Mutex<Shard> {
        &self.shards[(key.hash >> 60) as usize % SHARDS]
    }

    /// The live answer stored for `key`, marked as just used. An expired one is dropped.
    pub fn get(&self, key: &CacheKey, now_ms: u64) -> Option<Arc<Answer>> {
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        let mut shard = self.shard(key).lock();
        let entry = shard.map.get_mut(&key.hash)?;
        if entry.key.meta != key.meta || entry.key.body != key.body {
            return None;
        }
        if entry.expires_ms <= now_ms {
            if let Some(gone) = shard.remove(key.hash) {
                self.bytes.fetch_sub(gone.size as i64, Ordering::Relaxed);
            }
            return None;
        }
        let old = std::mem::replace(&mut entry.tick, tick);
        let answer = entry.answer.clone();
        shard.order.remove(&old);
        shard.order.insert(tick, key.hash);
        Some(answer)
    }

    /// Stores an answer, evicting the least recently used entries of its shard to stay under
    /// `max_bytes / SHARDS`. Returns false (nothing stored) when it cannot fit a shard.
    pub fn put(&self, key: CacheKey, answer: Arc<Answer>, now_ms: u64, ttl_ms: u64, max_bytes: u64) -> bool {
        let size = key.size() + answer.body.len() + ENTRY_OVERHEAD;
        let bound = (max_bytes / SHARDS as u64) as usize;
        if size > bound {
            return false;
        }
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        let hash = key.hash;
        let mut freed = 0usize;
        let mut evicted = 0u64;
        let mut shard = self.shard(&key).lock();
        if let Some(old) = shard.remove(hash) {
            freed += old.size;
        }
        while shard.bytes + size > bound {
            let Some((_, oldest)) = shard.order.pop_first() else {
                break;
            };
            // `order` no longer has it; `remove` finds nothing there to drop again.
            if let Some(gone) = shard.map.remove(&oldest) {
                shard.bytes -= gone.size;
                freed += gone.size;
                evicted += 1;
            }
        }
        shard.bytes += size;
        shard.order.insert(tick, hash);
        let entry = Entry {
            key,
            answer,
            expires_ms: now_ms.saturating_add(ttl_ms),
            tick,
            size,
        };
        shard.map.insert(hash, entry);
        drop(shard);
        self.bytes.fetch_add(size as i64 - freed as i64, Ordering::Relaxed);
        self.counts[Outcome::Evict as usize].fetch_add(evicted, Ordering::Relaxed);
        self.count(Outcome::Store);
        true
    }

    /// Bytes held now (entries' key material, answers and bookkeeping).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed).max(0) as u64
    }

    /// `rotor_cache_requests_total{outcome}` and `rotor_cache_bytes`, Prometheus text.
    pub fn write_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP rotor_cache_requests_total Response cache lookups (hit, miss, bypass) and entries stored and evicted.\n# TYPE rotor_cache_requests_total counter"
        );
        for (name, n) in OUTCOMES.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "rotor_cache_requests_total{{outcome=\"{name}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP rotor_cache_bytes Bytes held by the response cache.\n# TYPE rotor_cache_bytes gauge\nrotor_cache_bytes {}",
            self.bytes()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(n: usize) -> Arc<Answer> {
        Arc::new(Answer {
            status: 200,
            streamed: false,
            content_type: b"application/json",
            body: Bytes::from(vec![b'x'; n]),
        })
    }

    fn key(body: &str) -> CacheKey {
        CacheKey::new(
            "c",
            "m",
            "/v1/chat/completions",
            false,
            Bytes::copy_from_slice(body.as_bytes()),
        )
    }

    #[test]
    fn stores_finds_expires_and_stays_under_its_bound() {
        let cache = Cache::default();
        assert!(cache.put(key("a"), answer(10), 0, 1000, 1 << 20));
        assert_eq!(cache.get(&key("a"), 999).map(|a| a.body.len()), Some(10));
        assert!(cache.get(&key("b"), 0).is_none());
        assert!(cache.get(&key("a"), 1000).is_none(), "expired");
        assert_eq!(cache.bytes(), 0);
        let max = 16 << 10;
        for i in 0..500 {
            cache.put(key(&i.to_string()), answer(200), 0, 1000, max);
        }
        assert!(cache.bytes() <= max);
        assert!(cache.counts[Outcome::Evict as usize].load(Ordering::Relaxed) > 0);
        assert!(!cache.put(key("big"), answer(2000), 0, 1000, max), "over one shard");
    }

    #[test]
    fn different_clients_streams_and_bodies_are_different_entries() {
        let a = CacheKey::new("a", "m", "/p", false, Bytes::from_static(b"{}"));
        let b = CacheKey::new("b", "m", "/p", false, Bytes::from_static(b"{}"));
        let s = CacheKey::new("a", "m", "/p", true, Bytes::from_static(b"{}"));
        assert_ne!(a.hash, b.hash);
        assert_ne!(a.hash, s.hash);
        assert_ne!(a.digest(), b.digest());
        assert_ne!(a.digest(), s.digest());
        let moved = CacheKey::new("a", "m", "/p", false, Bytes::from_static(b"{}"));
        assert_eq!(a.digest(), moved.digest(), "the same request, the same entry");
    }
}
