//! The worker side of shared windows: one `LeaseCell` per limited window when `[cluster]` is
//! on. Workers admit from the cell's atomics only (never Redis): a lease is a number of slots
//! the cluster thread drew from Redis, usable until `valid_until`. The cluster thread
//! (`cluster::leases`) renews leases, returns what was not used, and turns refunds and TPM
//! settlements into Redis corrections.
//! Invariant: a slot is taken from a lease only by a CAS on `word` that also checks the lease
//! generation, so a slot of an expired or replaced lease is never used; every slot handed
//! back goes either into the live lease's credit or to the ring of its own generation (which
//! the cluster thread returns to the Redis bucket that lease was counted in), or is dropped
//! (the safe direction: under-admission, never over-admission).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{Mode, Shared};

/// Generations whose late refunds can still go back to Redis (a lease lives `lease_ms`, so
/// 64 cover more than the one-minute windows at the default 2 s).
pub const RING: usize = 64;

fn pack(gen: u32, units: u32) -> u64 {
    (u64::from(gen) << 32) | u64::from(units)
}

pub fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

#[derive(Debug)]
pub struct LeaseCell {
    pub(super) shared: Arc<Shared>,
    /// `(lease generation, slots left)`; generation 0 = no lease yet.
    pub(super) word: AtomicU64,
    /// Limiter time the current lease ends (`limits::now` clock).
    pub(super) valid_until: AtomicU64,
    /// Redis said the window is full until this limiter time (0 = not denied).
    pub(super) denied_until: AtomicU64,
    /// Largest single cost a starved request asked for since the last draw.
    pub(super) want: AtomicU64,
    /// Slots handed back per generation, `(gen, units)` at `gen % RING`.
    pub(super) returns: [AtomicU64; RING],
    /// Units to count in Redis without a lease: TPM above the estimate, fallback admissions.
    pub(super) debt: AtomicU64,
}

/// What a cell says about one admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Taken from lease `gen`.
    Lease(u32),
    /// No lease in hand; one is being drawn (wait briefly and try again).
    Wait,
    /// Redis said the window is full until this limiter time.
    Full(u64),
    /// Redis is down and `on_redis_down = "local"`: admit locally within `limit / live`.
    Local(u64),
    /// Redis is down and `on_redis_down = "refuse"`.
    Refused,
}

impl LeaseCell {
    pub fn new(shared: Arc<Shared>) -> Self {
        LeaseCell {
            shared,
            word: AtomicU64::new(0),
            valid_until: AtomicU64::new(0),
            denied_until: AtomicU64::new(0),
            want: AtomicU64::new(0),
            returns: std::array::from_fn(|_| AtomicU64::new(0)),
            debt: AtomicU64::new(0),
        }
    }

    /// Puts a lease of `units` slots valid until `valid_until` in the cell, as the cluster
    /// thread does after a draw (benches and tests drive cells without Redis with it).
    #[doc(hidden)]
    pub fn install_for_test(&self, gen: u32, units: u32, valid_until: u64) {
        self.word.store(pack(gen, units), Ordering::Release);
        self.valid_until.store(valid_until, Ordering::Release);
    }

    /// Takes `cost` slots at `now` (limiter time) for a window of `limit`.
    pub fn take(&self, cost: u64, limit: u64, now: u64) -> Take {
        match self.shared.mode() {
            Mode::Shared => {}
            Mode::Local => {
                self.shared
                    .counters
                    .decisions_without_redis
                    .fetch_add(1, Ordering::Relaxed);
                return Take::Local((limit / self.shared.live()).max(1));
            }
            Mode::Refuse => {
                self.shared
                    .counters
                    .decisions_without_redis
                    .fetch_add(1, Ordering::Relaxed);
                return Take::Refused;
            }
        }
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let (gen, left) = unpack(word);
            if u64::from(left) < cost || now >= self.valid_until.load(Ordering::Acquire) {
                break;
            }
            let next = pack(gen, left - cost as u32);
            match self
                .word
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Take::Lease(gen),
                Err(seen) => word = seen,
            }
        }
        let denied = self.denied_until.load(Ordering::Acquire);
        self.want.fetch_max(cost.max(1), Ordering::AcqRel);
        self.shared.wake();
        if denied > now {
            return Take::Full(denied);
        }
        Take::Wait
    }

    /// Gives back `units` taken from lease `gen` (a refund, or a TPM estimate above real use).
    pub fn give_back(&self, gen: u32, units: u64) {
        if units == 0 {
            return;
        }
        if gen == 0 {
            // Admitted locally while Redis was down: it is still owed to Redis, minus this.
            let _ = self
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| Some(d.saturating_sub(units)));
            return;
        }
        let units = units.min(u64::from(u32::MAX)) as u32;
        let mut word = self.word.load(Ordering::Acquire);
        while unpack(word).0 == gen {
            let (_, left) = unpack(word);
            let next = pack(gen, left.saturating_add(units));
            match self
                .word
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(seen) => word = seen,
            }
        }
        self.to_redis(gen, units);
    }

    /// Gives `units` of lease `gen` back to Redis itself (not to this instance's lease), so
    /// other instances can draw them: a TPM estimate above what the upstream really used.
    /// No wake: nearly every TPM request settles, and waking the cluster thread for each cost
    /// a futex wake per request and a pass per request; the thread ticks every few ms while it
    /// holds the lease and flushes corrections at most every `FLUSH_MS` anyway.
    pub fn settle_back(&self, gen: u32, units: u64) {
        if gen == 0 {
            self.give_back(0, units);
        } else if units > 0 {
            self.to_redis(gen, units.min(u64::from(u32::MAX)) as u32);
        }
    }

    /// Queues `units` of lease `gen` for the cluster thread to give back to that lease's bucket.
    fn to_redis(&self, gen: u32, units: u32) {
        let slot = &self.returns[gen as usize % RING];
        let mut held = slot.load(Ordering::Acquire);
        while unpack(held).0 == gen {
            let next = pack(gen, unpack(held).1.saturating_add(units));
            match slot.compare_exchange_weak(held, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(seen) => held = seen,
            }
        }
        self.shared
            .counters
            .returns_lost
            .fetch_add(u64::from(units), Ordering::Relaxed);
    }

    /// Units used beyond what any lease covered (TPM above the estimate; a fallback admission):
    /// counted in Redis at the next draw.
    pub fn owe(&self, units: u64) {
        if units > 0 {
            self.debt.fetch_add(units, Ordering::AcqRel);
            self.shared.note_debt();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell() -> LeaseCell {
        LeaseCell::new(Arc::new(Shared::for_test("t")))
    }

    #[test]
    fn slots_come_only_from_a_live_lease() {
        let c = cell();
        assert_eq!(c.take(1, 10, 100), Take::Wait, "no lease yet: wait for one");
        assert_eq!(c.want.load(Ordering::Acquire), 1, "the demand is noted");
        c.install_for_test(3, 2, 200);
        assert_eq!(c.take(1, 10, 100), Take::Lease(3));
        assert_eq!(c.take(1, 10, 100), Take::Lease(3));
        assert_eq!(c.take(1, 10, 100), Take::Wait, "used up");
        c.install_for_test(4, 5, 200);
        assert_eq!(c.take(1, 10, 200), Take::Wait, "expired at its end");
        c.denied_until.store(5_000, Ordering::Release);
        assert_eq!(c.take(1, 10, 300), Take::Full(5_000), "Redis said full");
    }

    #[test]
    fn give_backs_go_to_their_own_lease_or_its_ring_slot_never_to_another() {
        let c = cell();
        c.install_for_test(7, 0, 1_000);
        c.give_back(7, 2);
        assert_eq!(unpack(c.word.load(Ordering::Acquire)), (7, 2), "the live lease gets it");
        // Lease 8 replaced 7: a late refund of 7 waits in 7's ring slot for the cluster thread.
        c.returns[7 % RING].store(pack(7, 0), Ordering::Release);
        c.install_for_test(8, 0, 1_000);
        c.give_back(7, 3);
        assert_eq!(
            unpack(c.word.load(Ordering::Acquire)),
            (8, 0),
            "never into another lease"
        );
        assert_eq!(unpack(c.returns[7 % RING].load(Ordering::Acquire)), (7, 3));
        // A generation whose slot was reused: dropped and counted (under-admission only).
        c.give_back(7 + RING as u32, 4);
        assert_eq!(c.shared.counters.returns_lost.load(Ordering::Relaxed), 4);
        // Settlements skip the live lease and go back to Redis.
        c.returns[8 % RING].store(pack(8, 0), Ordering::Release);
        c.settle_back(8, 5);
        assert_eq!(unpack(c.word.load(Ordering::Acquire)), (8, 0));
        assert_eq!(unpack(c.returns[8 % RING].load(Ordering::Acquire)), (8, 5));
        assert!(
            !c.shared.take_wanted(),
            "a settlement does not wake the cluster thread (its tick flushes it)"
        );
        // Generation 0 = admitted without Redis: a refund lowers what is owed.
        c.owe(6);
        c.give_back(0, 2);
        assert_eq!(c.debt.load(Ordering::Acquire), 4);
    }
}
