//! The cluster thread's side of shared windows: per window, when to draw a lease from Redis,
//! how big, and the Redis corrections (unused slots of ended leases, late refunds, TPM
//! settlements, admissions made while Redis was down), all in one atomic Lua call per window.
//!
//! Redis model: one hash per window, `{prefix}:w:{window name}`, field = bucket number
//! (`redis TIME / bucket_ms`, the same 1/60 buckets as the local windows), value = slots
//! counted in it. A bucket `x` is live while `x >= now_bucket - 60`, and is deleted after.
//! A lease drawn at Redis time `T` for `lease_ms` is counted in the bucket of `T + lease_ms`,
//! and the instance uses it only until `sent + lease_ms` on its own clock (`sent <= T`), so
//! every slot it admits stays counted for at least a full window after its admission: the
//! script's "used + grant <= limit" check then bounds every window, aligned or not, across all
//! instances. The price: a slot frees up to `lease_ms` + one bucket later than locally.
//!
//! Lease size adapts: 1.5 x what the last lease's lifetime consumed, at least `GROWTH` x the
//! last lease when that one ran dry before its end (requests waited), at least what the starved
//! request needs, at most `limit / (8 x live instances)` (but never below that request's
//! cost); a window with no use and no demand lets its lease end and holds nothing.

use std::sync::atomic::Ordering;

use ahash::AHashMap;
use redis::{Connection, Script};

use super::lease::{unpack, LeaseCell, RING};
use super::Shared;
use crate::gateway::Gateway;
use crate::limits::Window;
use crate::limits::{self, LimiterId};
use std::sync::Arc;

/// Corrections (returns, debts) not riding on a draw are flushed at most this often.
const FLUSH_MS: u64 = 250;
/// A window Redis called full is asked again at most this often while requests want it.
const DENIED_RETRY_MS: u64 = 1_000;
/// A lease that ran dry before its end is followed by one at least this many times bigger.
const GROWTH: u64 = 4;

const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local bms = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local debt = tonumber(ARGV[5])
local nret = tonumber(ARGV[6])
local e = math.floor(now / bms)
local oldest = e - 60
for i = 0, nret - 1 do
  local b = ARGV[7 + 2 * i]
  local u = tonumber(ARGV[8 + 2 * i])
  if tonumber(b) >= oldest then
    local c = tonumber(redis.call('HGET', KEYS[1], b) or '0')
    local back = math.min(c, u)
    if back >= c and c > 0 then
      redis.call('HDEL', KEYS[1], b)
    elseif back > 0 then
      redis.call('HINCRBY', KEYS[1], b, -back)
    end
  end
end
local h = redis.call('HGETALL', KEYS[1])
local used = 0
local live = {}
for i = 1, #h, 2 do
  local b = tonumber(h[i])
  local c = tonumber(h[i + 1])
  if b < oldest then
    redis.call('HDEL', KEYS[1], h[i])
  else
    used = used + c
    live[#live + 1] = {b, c}
  end
end
local target = math.floor((now + lease) / bms)
if debt > 0 then
  redis.call('HINCRBY', KEYS[1], target, debt)
  used = used + debt
end
local grant = 0
local free_at = 0
if want > 0 then
  local room = limit - used
  if room >= want then
    grant = want
  elseif room > 0 and tonumber(ARGV[7 + 2 * nret]) <= room then
    grant = room
  end
  if grant > 0 then
    redis.call('HINCRBY', KEYS[1], target, grant)
  else
    table.sort(live, function(a, b) return a[1] < b[1] end)
    local needed = tonumber(ARGV[7 + 2 * nret]) - room
    local freed = 0
    free_at = (e + 61) * bms
    for _, bc in ipairs(live) do
      freed = freed + bc[2]
      if freed >= needed then
        free_at = (bc[1] + 61) * bms
        break
      end
    end
  end
end
redis.call('PEXPIRE', KEYS[1], bms * 62 + lease)
return {grant, target, now, free_at}
"#;

/// One window's lease as the cluster thread knows it.
struct Held {
    window: Arc<Window>,
    /// Limiter time the last lease ended: late refunds may come back for a window after it.
    ended: u64,
    /// Generation of the lease in the cell (0 = none).
    gen: u32,
    next_gen: u32,
    /// Redis bucket the current lease is counted in.
    bucket: i64,
    granted: u64,
    /// Limiter time the draw was sent, and the lease's end.
    sent: u64,
    expires: u64,
    /// Redis bucket of each recent generation, for late returns (`gen % RING`).
    buckets: Vec<(u32, i64)>,
    /// `(bucket, units)` to give back with the next call.
    returns: Vec<(i64, u64)>,
    last_call: u64,
    retry_at: u64,
}

impl Held {
    fn new(window: Arc<Window>) -> Self {
        Held {
            window,
            ended: 0,
            gen: 0,
            next_gen: 0,
            bucket: 0,
            granted: 0,
            sent: 0,
            expires: 0,
            buckets: Vec::new(),
            returns: Vec::new(),
            last_call: 0,
            retry_at: 0,
        }
    }

    /// Refunds of its past leases may still arrive (they go back while their bucket is live).
    fn buckets_live(&self, now: u64) -> bool {
        now < self.ended + self.window.bucket_ms() * 62
    }
}

pub struct Leases {
    held: AHashMap<LimiterId, Held>,
    windows: Vec<(LimiterId, Arc<Window>)>,
    generation: u64,
    script: Script,
    prefix: String,
    lease_ms: u64,
}

impl Leases {
    pub fn new(prefix: &str, lease_ms: u64) -> Self {
        Leases {
            held: AHashMap::new(),
            windows: Vec::new(),
            generation: 0,
            script: Script::new(SCRIPT),
            prefix: prefix.to_owned(),
            lease_ms,
        }
    }

    /// Whether any lease or correction is in hand (the thread then looks every few ms).
    pub fn busy(&self) -> bool {
        !self.held.is_empty()
    }

    /// Redis went away: every lease in hand is dropped (Redis drains its counts in time) and
    /// the cells start over once it is back.
    pub fn reset(&mut self) {
        for (_, window) in &self.windows {
            if let Some(cell) = window.lease() {
                cell.word.store(0, Ordering::Release);
                cell.valid_until.store(0, Ordering::Release);
                cell.denied_until.store(0, Ordering::Release);
            }
        }
        // Generations keep counting up: a late refund of a lease from before the outage must
        // never land in a new lease that happens to reuse its number.
        for held in self.held.values_mut() {
            let next_gen = held.next_gen;
            *held = Held::new(held.window.clone());
            held.next_gen = next_gen;
            held.ended = limits::now();
        }
    }

    /// One pass: every window this thread holds something for (a lease, corrections), and,
    /// when `all` (a worker asked, or the periodic sweep), every shared window with demand or
    /// debt. No allocation for quiet windows; the window list is refreshed per generation.
    pub fn tick(
        &mut self,
        conn: &mut Connection,
        gateway: &Gateway,
        shared: &Shared,
        all: bool,
    ) -> redis::RedisResult<()> {
        let generation = gateway.current().id;
        if generation != self.generation {
            self.generation = generation;
            self.windows = gateway.limits.windows();
            let live: ahash::AHashSet<&LimiterId> = self.windows.iter().map(|(id, _)| id).collect();
            self.held
                .retain(|id, held| live.contains(id) || !held.returns.is_empty());
        }
        let mut active: Vec<(LimiterId, Arc<Window>)> = Vec::new();
        if all {
            for (id, window) in &self.windows {
                let Some(cell) = window.lease() else { continue };
                if self.held.contains_key(id)
                    || cell.want.load(Ordering::Acquire) > 0
                    || cell.debt.load(Ordering::Acquire) > 0
                {
                    active.push((id.clone(), window.clone()));
                }
            }
        } else {
            active.extend(self.held.iter().map(|(id, held)| (id.clone(), held.window.clone())));
        }
        for (id, window) in active {
            let Some(cell) = window.lease() else { continue };
            let held = self.held.entry(id.clone()).or_insert_with(|| Held::new(window.clone()));
            let Some(plan) = plan(held, cell, window.limit(), shared.live(), self.lease_ms) else {
                continue;
            };
            let key = format!("{}:w:{}", self.prefix, id.storage_name());
            call(
                &self.script,
                conn,
                &key,
                held,
                cell,
                window.bucket_ms(),
                window.limit(),
                self.lease_ms,
                plan,
                shared,
            )?;
        }
        // Forget windows with nothing in hand and nothing pending (a quiet window holds nothing).
        self.held
            .retain(|_, h| h.gen != 0 || !h.returns.is_empty() || h.buckets_live(limits::now()));
        Ok(())
    }
}

/// What one call for a window asks.
#[derive(Clone, Copy)]
struct Plan {
    /// Slots to draw (0 = corrections only), and the least worth drawing.
    size: u64,
    need: u64,
    debt: u64,
    sent: u64,
}

/// Decides whether this window needs a call now, and collects its corrections.
fn plan(held: &mut Held, cell: &LeaseCell, limit: u64, live: u64, lease_ms: u64) -> Option<Plan> {
    let now = limits::now();
    // Late refunds of earlier generations.
    for slot in &cell.returns {
        let word = slot.load(Ordering::Acquire);
        let (gen, units) = unpack(word);
        if units == 0 {
            continue;
        }
        if slot
            .compare_exchange(word, u64::from(gen) << 32, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            if let Some((_, bucket)) = held.buckets.iter().find(|(g, _)| *g == gen) {
                held.returns.push((*bucket, u64::from(units)));
            }
        }
    }
    let (gen, left) = unpack(cell.word.load(Ordering::Acquire));
    let left = if gen == held.gen && gen != 0 {
        u64::from(left)
    } else {
        0
    };
    let want = cell.want.swap(0, Ordering::AcqRel).min(limit);
    let active = held.gen != 0;
    let expired = active && now >= held.expires;
    let consumed = held.granted.saturating_sub(left);
    // Renew ahead only a lease in use that still has slots and is near its end or its last
    // quarter: a quiet window (or a used-up small lease) draws on demand instead.
    let soon = active
        && !expired
        && consumed > 0
        && left > 0
        && (now + lease_ms / 4 >= held.expires || left * 4 < held.granted);
    let denied = cell.denied_until.load(Ordering::Acquire) > now && now < held.retry_at;
    let starved = want > 0 && (left < want || !active || expired) && !denied;
    if want > 0 && denied {
        // Keep the demand for when the retry is due.
        cell.want.fetch_max(want, Ordering::AcqRel);
    }
    if expired {
        // The lease ended (no worker can take from it any more): whatever it did not use,
        // refunds included, goes back to its bucket.
        let (old_gen, old_left) = unpack(cell.word.swap(0, Ordering::AcqRel));
        if old_gen == held.gen && old_left > 0 {
            held.returns.push((held.bucket, u64::from(old_left)));
        }
        held.gen = 0;
        held.ended = now;
    }
    let debt = cell.debt.swap(0, Ordering::AcqRel);
    let corrections = !held.returns.is_empty() || debt > 0;
    let flush_due = corrections && now >= held.last_call + FLUSH_MS;
    if !(starved || soon || flush_due || (expired && corrections)) {
        if debt > 0 {
            cell.debt.fetch_add(debt, Ordering::AcqRel);
        }
        return None;
    }
    let size = if starved || soon {
        let elapsed = now.saturating_sub(held.sent).max(1);
        let rate = consumed as f64 / elapsed.min(lease_ms) as f64;
        let mut next = (rate * lease_ms as f64 * 1.5).ceil() as u64;
        if starved && active && !expired {
            // The lease ran dry before its end: its rate only counts what it admitted, not the
            // requests left waiting, so grow it geometrically (a ramp from 1 slot reaches
            // thousands in a few draws instead of following the throttled rate up slowly).
            next = next.max(held.granted.saturating_mul(GROWTH));
        }
        let cap = (limit / (8 * live.max(1))).max(1).max(want);
        next.max(want).max(1).min(cap)
    } else {
        0
    };
    Some(Plan {
        size,
        need: want.max(1).min(size.max(1)),
        debt,
        sent: now,
    })
}

#[allow(clippy::too_many_arguments)]
fn call(
    script: &Script,
    conn: &mut Connection,
    key: &str,
    held: &mut Held,
    cell: &LeaseCell,
    bucket_ms: u64,
    limit: u64,
    lease_ms: u64,
    plan: Plan,
    shared: &Shared,
) -> redis::RedisResult<()> {
    let counters = &shared.counters;
    let mut invocation = script.key(key);
    invocation
        .arg(bucket_ms)
        .arg(limit)
        .arg(lease_ms)
        .arg(plan.size)
        .arg(plan.debt)
        .arg(held.returns.len());
    let returned: u64 = held.returns.iter().map(|(_, u)| u).sum();
    for (bucket, units) in &held.returns {
        invocation.arg(*bucket).arg(*units);
    }
    invocation.arg(plan.need);
    counters.redis_calls.fetch_add(1, Ordering::Relaxed);
    let reply = invocation.invoke(conn);
    tracing::debug!(key, size = plan.size, debt = plan.debt, returned, "lease call");
    let (grant, target, redis_now, free_at): (u64, i64, u64, u64) = match reply {
        Ok(reply) => reply,
        Err(e) => {
            // Not given back: put the debt where the next call finds it.
            cell.owe(plan.debt);
            return Err(e);
        }
    };
    held.returns.clear();
    held.last_call = plan.sent;
    counters.slots_returned.fetch_add(returned, Ordering::Relaxed);
    if plan.size == 0 {
        return Ok(());
    }
    counters.lease_draws.fetch_add(1, Ordering::Relaxed);
    if grant == 0 {
        counters.lease_denied.fetch_add(1, Ordering::Relaxed);
        let now = limits::now();
        let wait = free_at.saturating_sub(redis_now).max(1);
        cell.denied_until.store(now + wait, Ordering::Release);
        held.retry_at = now + DENIED_RETRY_MS.min(wait);
        return Ok(());
    }
    counters.slots_leased.fetch_add(grant, Ordering::Relaxed);
    install(held, cell, grant, target, plan.sent, lease_ms);
    Ok(())
}

/// Puts a granted lease in the cell; what the previous lease left goes back to its bucket.
fn install(held: &mut Held, cell: &LeaseCell, grant: u64, bucket: i64, sent: u64, lease_ms: u64) {
    let expires = sent + lease_ms;
    held.next_gen = held.next_gen.wrapping_add(1).max(1);
    let gen = held.next_gen;
    let slot = &cell.returns[gen as usize % RING];
    let (stale_gen, stale) = unpack(slot.swap(u64::from(gen) << 32, Ordering::AcqRel));
    if stale > 0 {
        if let Some((_, b)) = held.buckets.iter().find(|(g, _)| *g == stale_gen) {
            held.returns.push((*b, u64::from(stale)));
        }
    }
    held.buckets.retain(|(g, _)| *g != stale_gen);
    held.buckets.push((gen, bucket));
    if held.buckets.len() > RING {
        held.buckets.remove(0);
    }
    let grant = grant.min(u64::from(u32::MAX));
    let old = cell.word.swap((u64::from(gen) << 32) | grant, Ordering::AcqRel);
    cell.valid_until.store(expires, Ordering::Release);
    cell.denied_until.store(0, Ordering::Release);
    let (old_gen, old_left) = unpack(old);
    if old_gen != 0 && old_gen == held.gen && old_left > 0 {
        held.returns.push((held.bucket, u64::from(old_left)));
    }
    held.gen = gen;
    held.bucket = bucket;
    held.granted = grant;
    held.expires = expires;
    held.sent = sent;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::lease::Take;

    #[test]
    fn a_lease_that_ran_dry_before_its_end_is_followed_by_a_bigger_one() {
        let cell = LeaseCell::new(Arc::new(Shared::for_test("t")));
        let mut held = Held::new(Arc::new(Window::new(60_000, 1_000_000)));
        let now = limits::now();
        // Drawn 1.9 s ago: its 10 slots over 1.9 s are a throttled rate of 16 per lease.
        install(&mut held, &cell, 10, 5, now - 1_900, 2_000);
        for _ in 0..10 {
            assert!(matches!(cell.take(1, 1_000_000, now), Take::Lease(_)));
        }
        assert_eq!(cell.take(1, 1_000_000, now), Take::Wait, "used up: a request waits");
        let size = plan(&mut held, &cell, 1_000_000, 1, 2_000).map(|p| p.size);
        assert!(
            size.is_some_and(|s| s >= 10 * GROWTH),
            "the next lease grows at least {GROWTH}x, not with the throttled rate: {size:?}"
        );
        // A lease capped by limit / (8 x live) stays capped.
        let cell = LeaseCell::new(Arc::new(Shared::for_test("t")));
        let mut held = Held::new(Arc::new(Window::new(60_000, 160)));
        install(&mut held, &cell, 10, 5, now, 2_000);
        for _ in 0..10 {
            assert!(matches!(cell.take(1, 160, now), Take::Lease(_)));
        }
        assert_eq!(cell.take(1, 160, now), Take::Wait);
        assert_eq!(
            plan(&mut held, &cell, 160, 2, 2_000).map(|p| p.size),
            Some(10),
            "160 / (8 x 2)"
        );
    }
}
