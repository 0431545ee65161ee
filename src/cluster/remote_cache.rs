//! The shared response cache (`[cache]` and `[cluster]` both on, `cluster.cache_wait_ms > 0`):
//! the second level behind each instance's local cache. Entries live in Redis as
//! `{prefix}:c:{sha256 of the request key}` with Redis keeping their TTL (`PX`); a bookkeeping
//! sorted set (`{prefix}:c:index`, by expiry) and size hash keep the fleet's entries under
//! `cluster.cache_max_entries` and `cache_max_bytes`, the oldest given up first.
//! Where it sits: a worker that misses locally queues a lookup here and awaits its answer at
//! most `cluster.cache_wait_ms` (`lookup`); a stored answer is queued for publication
//! (`offer`). The `rotor-cluster-data` thread does the Redis calls (`serve`).
//! Invariant: a worker never calls Redis and never waits past its deadline; every queue is
//! bounded and what does not fit is counted (`rotor_cluster_cache_total{outcome="shed"}`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use crossbeam_queue::ArrayQueue;
use futures_channel::oneshot;
use redis::{Connection, Script, Value};

use crate::cache::Answer;

/// Lookups waiting for the data thread (more are answered as misses at once).
const GETS: usize = 1_024;
/// Answers waiting to be published (more are kept locally only).
const PUTS: usize = 256;
/// Lookups sent to Redis in one pipeline.
const BATCH: usize = 256;

/// An answer found in Redis and the milliseconds it has left there.
pub type Found = Option<(Answer, u64)>;

/// Outcomes of `rotor_cluster_cache_total{outcome}`.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    Hit,
    Miss,
    /// The deadline passed before Redis answered: the request went upstream.
    Timeout,
    /// A queue was full, or an answer was over `cache_max_entry_bytes`.
    Shed,
    /// Redis unreachable or a call failed.
    Error,
    Store,
    /// Entries the fleet's bound pushed out.
    Evict,
}

const OUTCOMES: [&str; 7] = ["hit", "miss", "timeout", "shed", "error", "store", "evict"];

pub struct Put {
    digest: [u8; 32],
    value: Bytes,
    ttl_ms: u64,
}

#[derive(Default)]
pub struct RemoteCache {
    gets: Option<ArrayQueue<([u8; 32], oneshot::Sender<Found>)>>,
    puts: Option<ArrayQueue<Put>>,
    counts: [AtomicU64; 7],
}

impl std::fmt::Debug for RemoteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCache").finish_non_exhaustive()
    }
}

impl RemoteCache {
    pub fn new() -> Self {
        RemoteCache {
            gets: Some(ArrayQueue::new(GETS)),
            puts: Some(ArrayQueue::new(PUTS)),
            counts: Default::default(),
        }
    }

    pub fn count(&self, outcome: Outcome, n: u64) {
        self.counts[outcome as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Whether anything waits for the data thread.
    pub fn pending(&self) -> bool {
        self.gets.as_ref().is_some_and(|q| !q.is_empty()) || self.puts.as_ref().is_some_and(|q| !q.is_empty())
    }

    /// Asks Redis for `digest`, waiting at most `wait` (worker side; `wake` the data thread).
    pub async fn lookup(&self, digest: [u8; 32], wait: Duration, wake: impl FnOnce()) -> Found {
        let Some(gets) = &self.gets else { return None };
        let (tx, rx) = oneshot::channel();
        if gets.push((digest, tx)).is_err() {
            self.count(Outcome::Shed, 1);
            return None;
        }
        wake();
        match crate::net::within(wait, rx).await {
            Ok(Ok(found)) => {
                self.count(if found.is_some() { Outcome::Hit } else { Outcome::Miss }, 1);
                found
            }
            // The data thread gave up on it (Redis unreachable): counted there.
            Ok(Err(_)) => None,
            Err(_) => {
                self.count(Outcome::Timeout, 1);
                None
            }
        }
    }

    /// Queues a stored answer for the fleet (worker side; never waits).
    pub fn offer(&self, digest: [u8; 32], answer: &Answer, ttl_ms: u64, max_entry_bytes: u64) {
        let Some(puts) = &self.puts else { return };
        if answer.body.len() as u64 + 32 > max_entry_bytes {
            self.count(Outcome::Shed, 1);
            return;
        }
        let value = encode(answer);
        if puts.push(Put { digest, value, ttl_ms }).is_err() {
            self.count(Outcome::Shed, 1);
        }
    }

    /// Data thread: Redis is unreachable; answer every waiting lookup as a miss at once.
    pub fn fail_all(&self) {
        let mut failed = 0;
        while let Some((_, tx)) = self.gets.as_ref().and_then(ArrayQueue::pop) {
            let _ = tx.send(None);
            failed += 1;
        }
        while self.puts.as_ref().and_then(ArrayQueue::pop).is_some() {
            failed += 1;
        }
        self.count(Outcome::Error, failed);
    }

    /// Data thread: one batch of lookups (one pipeline), then the queued stores.
    pub fn serve(&self, conn: &mut Connection, store: &Store, prefix: &str) -> redis::RedisResult<()> {
        let (Some(gets), Some(puts)) = (&self.gets, &self.puts) else {
            return Ok(());
        };
        let mut batch = Vec::new();
        while batch.len() < BATCH {
            let Some(get) = gets.pop() else { break };
            if !get.1.is_canceled() {
                batch.push(get);
            }
        }
        if !batch.is_empty() {
            let mut pipe = redis::pipe();
            for (digest, _) in &batch {
                let key = entry_key(prefix, digest);
                pipe.cmd("GET").arg(&key).cmd("PTTL").arg(&key);
            }
            let replies: Vec<Value> = match pipe.query(conn) {
                Ok(r) => r,
                Err(e) => {
                    self.count(Outcome::Error, batch.len() as u64);
                    return Err(e);
                }
            };
            let mut replies = replies.into_iter();
            for (_, tx) in batch {
                let found = match (replies.next(), replies.next()) {
                    (Some(Value::BulkString(v)), Some(Value::Int(ttl))) if ttl > 0 => {
                        decode(Bytes::from(v)).map(|a| (a, ttl as u64))
                    }
                    _ => None,
                };
                let _ = tx.send(found);
            }
        }
        for _ in 0..PUTS {
            let Some(put) = puts.pop() else { break };
            let evicted = store
                .put(conn, prefix, &put)
                .inspect_err(|_| self.count(Outcome::Error, 1))?;
            self.count(Outcome::Store, 1);
            self.count(Outcome::Evict, evicted);
        }
        Ok(())
    }

    /// `rotor_cluster_cache_total{outcome}`, Prometheus text.
    pub fn write_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP rotor_cluster_cache_total Shared response cache (Redis) lookups after a local miss (hit, miss, timeout, shed, error) and entries stored and evicted by the fleet bound.\n# TYPE rotor_cluster_cache_total counter"
        );
        for (name, n) in OUTCOMES.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "rotor_cluster_cache_total{{outcome=\"{name}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }
}

fn entry_key(prefix: &str, digest: &[u8; 32]) -> String {
    let mut key = format!("{prefix}:c:");
    for b in digest {
        key.push_str(&format!("{b:02x}"));
    }
    key
}

/// `status (2) | streamed (1) | content type (1: 0 json, 1 sse) | body`.
fn encode(answer: &Answer) -> Bytes {
    let mut out = BytesMut::with_capacity(answer.body.len() + 4);
    out.put_u16(answer.status);
    out.put_u8(u8::from(answer.streamed));
    out.put_u8(u8::from(answer.content_type == b"text/event-stream"));
    out.extend_from_slice(&answer.body);
    out.freeze()
}

fn decode(value: Bytes) -> Option<Answer> {
    let head = value.get(..4)?;
    let status = u16::from_be_bytes([head[0], head[1]]);
    let content_type: &'static [u8] = match head[3] {
        0 => b"application/json",
        1 => b"text/event-stream",
        _ => return None,
    };
    if !(200..300).contains(&status) || head[2] > 1 {
        return None;
    }
    Some(Answer {
        status,
        streamed: head[2] == 1,
        content_type,
        body: value.slice(4..),
    })
}

/// Stores one entry and keeps the fleet's entries under their bounds (oldest out first).
/// Entry keys other than the stored one are named from the prefix inside the script: rotor
/// needs a single Redis (or a replicated pair), not Redis Cluster.
const PUT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local max_entries = tonumber(ARGV[3])
local max_bytes = tonumber(ARGV[4])
local member = ARGV[5]
local size = string.len(ARGV[1])
local bytes = tonumber(redis.call('GET', KEYS[4]) or '0')
local function forget(m)
  bytes = bytes - tonumber(redis.call('HGET', KEYS[3], m) or '0')
  redis.call('HDEL', KEYS[3], m)
end
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do forget(m) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZREM', KEYS[2], member) == 1 then forget(member) end
local evicted = 0
while redis.call('ZCARD', KEYS[2]) > 0 and (redis.call('ZCARD', KEYS[2]) >= max_entries or bytes + size > max_bytes) do
  local first = redis.call('ZPOPMIN', KEYS[2])
  forget(first[1])
  redis.call('DEL', ARGV[6] .. first[1])
  evicted = evicted + 1
end
if bytes < 0 then bytes = 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZADD', KEYS[2], now + ttl, member)
redis.call('HSET', KEYS[3], member, size)
redis.call('SET', KEYS[4], bytes + size, 'PX', ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
return evicted
"#;

/// The store script and the fleet's bounds.
pub struct Store {
    script: Script,
    pub max_entries: u64,
    pub max_bytes: u64,
}

impl Store {
    pub fn new(max_entries: u64, max_bytes: u64) -> Self {
        Store {
            script: Script::new(PUT),
            max_entries,
            max_bytes,
        }
    }

    fn put(&self, conn: &mut Connection, prefix: &str, put: &Put) -> redis::RedisResult<u64> {
        let key = entry_key(prefix, &put.digest);
        let member = &key[prefix.len() + 3..];
        self.script
            .key(&key)
            .key(format!("{prefix}:c:index"))
            .key(format!("{prefix}:c:sizes"))
            .key(format!("{prefix}:c:bytes"))
            .arg(put.value.as_ref())
            .arg(put.ttl_ms.max(1))
            .arg(self.max_entries)
            .arg(self.max_bytes)
            .arg(member)
            .arg(format!("{prefix}:c:"))
            .invoke(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip_and_foreign_values_are_refused() {
        let answer = Answer {
            status: 200,
            streamed: true,
            content_type: b"text/event-stream",
            body: Bytes::from_static(b"data: x\n\n"),
        };
        let back = decode(encode(&answer)).unwrap();
        assert_eq!(
            (back.status, back.streamed, back.content_type),
            (200, true, &b"text/event-stream"[..])
        );
        assert_eq!(back.body, answer.body);
        assert!(
            decode(Bytes::from_static(b"\x01\xf4\x00\x00{}")).is_none(),
            "500 is never served"
        );
        assert!(decode(Bytes::from_static(b"xx")).is_none());
        assert!(entry_key("rotor", &[0xab; 32]).starts_with("rotor:c:abab"));
    }
}
