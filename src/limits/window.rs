//! One rolling-window limiter (RPM, RPD or TPM of one key or client), shared by every worker.
//!
//! Algorithm. The window `W` is cut into 60 buckets of `B = W / 60`; time `t` (ms, from
//! `limits::now`) falls in bucket `e = t / B`. Two kinds of atomics:
//! - `used`: the admission counter. Admission is a CAS loop `used -> used + cost`, taken only
//!   while `used + cost <= limit`. It is the only place that grows `used` under the limit, so
//!   `used <= limit` holds after every admission, whatever the interleaving across cores.
//! - 61 slots, each one `AtomicU64` packing `(bucket epoch: u32, count: u32)`. After its CAS on
//!   `used`, an admission adds its cost to the slot of its bucket `e % 61`.
//!
//! A slot's count is subtracted from `used` ("drained") only once its bucket `x` satisfies
//! `x <= e_now - 61`: the bucket ended at `(x + 1) * B <= (e_now - 60) * B <= t_now - W`, so every
//! admission in it is at least a full window old. Draining is a CAS on the slot word (count -> 0),
//! so each count leaves `used` exactly once, even when several cores drain at once.
//!
//! Why it is exact: at any time, `used` >= the cost of every admission made less than `W` ago
//! (they sit in live slots or are between their two CASes). An admission at time `t` succeeds
//! only if `used + cost <= limit`, so all admissions in `(t - W, t]` sum to at most `limit`.
//! Any window `[s, s + W)` lies inside `(t - W, t]` for its last admission `t`, so no window of
//! length `W`, aligned or not, ever admits more than `limit`. The price is conservatism: a slot
//! frees up to one bucket (1/60 of the window) late, never early.
//!
//! Refunds (a reservation that never reached upstream, or a TPM estimate above real usage)
//! decrement the exact slot they were added to with a CAS, and only then `used`, so a count is
//! never subtracted twice. Draining happens lazily, only when an admission finds the window
//! full, so the uncontended fast path is two CASes.
//!
//! Crash safety. With storage on, each window also has a `JournalCell` in a shared file
//! mapping: every admission adds its cost there after counting it (one more atomic add), so a
//! restart after kill -9 knows exactly what the unsaved last second admitted (see `journal`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use super::journal::JournalCell;

/// Buckets per window (the issue asks for granularity no coarser than 1/60).
pub const BUCKETS: u64 = 60;
/// Live slots: the 60 buckets of the window plus the one in progress.
pub const SLOTS: usize = BUCKETS as usize + 1;

#[derive(Debug)]
pub struct Window {
    /// Bucket width in ms (`window / 60`).
    bucket_ms: u64,
    /// The limit (set again on reload; windows keep their counts).
    limit: AtomicU64,
    used: AtomicU64,
    slots: [AtomicU64; SLOTS],
    /// Set once storage opened the admission journal (before any worker serves).
    journal: OnceLock<&'static JournalCell>,
    /// `[cluster]` on: the slots this instance may use, drawn from Redis (`cluster::lease`).
    lease: OnceLock<crate::cluster::lease::LeaseCell>,
}

/// Outcome of `Window::try_admit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Admitted in bucket `epoch` (keep it to refund or settle).
    Yes { epoch: u32 },
    /// Full until this time (`limits::now` ms): the soonest moment `cost` fits again.
    Full { free_at: u64 },
}

fn pack(epoch: u32, count: u32) -> u64 {
    (u64::from(epoch) << 32) | u64::from(count)
}

fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

impl Window {
    pub fn new(window_ms: u64, limit: u64) -> Self {
        Window {
            bucket_ms: (window_ms / BUCKETS).max(1),
            limit: AtomicU64::new(limit),
            used: AtomicU64::new(0),
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
            journal: OnceLock::new(),
            lease: OnceLock::new(),
        }
    }

    /// Shares this window across instances (a second call keeps the first cell).
    pub fn attach_lease(&self, cell: crate::cluster::lease::LeaseCell) {
        let _ = self.lease.set(cell);
    }

    /// The window's lease cell when `[cluster]` is on.
    pub fn lease(&self) -> Option<&crate::cluster::lease::LeaseCell> {
        self.lease.get()
    }

    /// Gives the window its journal cell (a second call keeps the first cell).
    pub fn attach(&self, cell: &'static JournalCell) {
        let _ = self.journal.set(cell);
    }

    /// The journal's count, read before a snapshot of the buckets (see `JournalCell::mark`).
    pub fn journal_mark(&self) -> Option<(&'static JournalCell, u64)> {
        self.journal.get().map(|cell| (*cell, cell.mark()))
    }

    /// The registry forgot this window (its key or client left the config): a restore must
    /// not hand its counts to a later window of the same name, which starts empty.
    pub fn retire_journal(&self) {
        if let Some(cell) = self.journal.get() {
            cell.retire();
        }
    }

    fn journal_note(&self, cost: u64) {
        if let Some(cell) = self.journal.get() {
            cell.note(cost);
        }
    }

    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    pub fn bucket_ms(&self) -> u64 {
        self.bucket_ms
    }

    fn epoch(&self, now: u64) -> u32 {
        (now / self.bucket_ms).min(u64::from(u32::MAX)) as u32
    }

    /// Admits `cost` at `now` if the window has room for it.
    pub fn try_admit(&self, cost: u64, now: u64) -> Admit {
        self.try_admit_within(cost, now, self.limit())
    }

    /// `try_admit` against `limit` instead of the window's own (a cluster instance without
    /// Redis admits within its share of the limit).
    pub fn try_admit_within(&self, cost: u64, now: u64, limit: u64) -> Admit {
        let epoch = self.epoch(now);
        let mut drained = false;
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            if used.saturating_add(cost) <= limit {
                match self
                    .used
                    .compare_exchange_weak(used, used + cost, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => {
                        self.add_to_slot(epoch, cost);
                        self.journal_note(cost);
                        return Admit::Yes { epoch };
                    }
                    Err(seen) => used = seen,
                }
                continue;
            }
            // Full as counted: release expired buckets once, then decide.
            if drained {
                return Admit::Full {
                    free_at: self.free_at(epoch, used.saturating_add(cost).saturating_sub(limit)),
                };
            }
            drained = true;
            self.drain(epoch);
            used = self.used.load(Ordering::Acquire);
        }
    }

    /// Counts `cost` at `now` without checking the limit: tokens the upstream really used
    /// beyond the estimate (they were spent; the window must know).
    pub fn force(&self, cost: u64, now: u64) {
        if cost == 0 {
            return;
        }
        let epoch = self.epoch(now);
        self.used.fetch_add(cost, Ordering::AcqRel);
        self.add_to_slot(epoch, cost);
        self.journal_note(cost);
    }

    /// Counts whatever room is left at `now` as used (a restore that cannot know what an
    /// unclean stop admitted); returns the units added.
    pub fn fill(&self, now: u64) -> u64 {
        let room = self.limit().saturating_sub(self.used(now));
        if room > 0 {
            let epoch = self.epoch(now);
            self.used.fetch_add(room, Ordering::AcqRel);
            self.add_to_slot(epoch, room);
        }
        room
    }

    /// Gives back up to `cost` admitted in bucket `epoch`. A bucket already drained (older
    /// than the window) gives nothing back: its count already left `used`.
    pub fn refund(&self, epoch: u32, cost: u64) {
        if cost == 0 {
            return;
        }
        let slot = &self.slots[epoch as usize % SLOTS];
        let mut word = slot.load(Ordering::Acquire);
        loop {
            let (at, count) = unpack(word);
            if at != epoch || count == 0 {
                return;
            }
            let back = cost.min(u64::from(count)) as u32;
            match slot.compare_exchange_weak(word, pack(at, count - back), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.used.fetch_sub(u64::from(back), Ordering::AcqRel);
                    return;
                }
                Err(seen) => word = seen,
            }
        }
    }

    /// Adds `cost` admitted in bucket `epoch` to its slot.
    fn add_to_slot(&self, epoch: u32, cost: u64) {
        let cost = cost.min(u64::from(u32::MAX)) as u32;
        let slot = &self.slots[epoch as usize % SLOTS];
        let mut word = slot.load(Ordering::Acquire);
        loop {
            let (at, count) = unpack(word);
            let next = if at == epoch {
                pack(at, count.saturating_add(cost))
            } else if at < epoch {
                // A stale bucket still in the slot: drain it (its count leaves `used`) and
                // take the slot for this bucket in the same CAS.
                pack(epoch, cost)
            } else {
                // The slot already serves a newer bucket: this admission is older than the
                // window (the thread stalled for a minute), so it no longer counts.
                self.used.fetch_sub(u64::from(cost), Ordering::AcqRel);
                return;
            };
            match slot.compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    if at < epoch && count > 0 {
                        self.used.fetch_sub(u64::from(count), Ordering::AcqRel);
                    }
                    return;
                }
                Err(seen) => word = seen,
            }
        }
    }

    /// Drains every slot whose bucket is older than the window at `epoch`.
    fn drain(&self, epoch: u32) {
        let oldest_live = epoch.saturating_sub(BUCKETS as u32);
        for slot in &self.slots {
            let mut word = slot.load(Ordering::Acquire);
            loop {
                let (at, count) = unpack(word);
                if count == 0 || at >= oldest_live {
                    break;
                }
                match slot.compare_exchange_weak(word, pack(at, 0), Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        self.used.fetch_sub(u64::from(count), Ordering::AcqRel);
                        break;
                    }
                    Err(seen) => word = seen,
                }
            }
        }
    }

    /// When `needed` more units will have left the window: walk live buckets oldest first.
    fn free_at(&self, epoch: u32, needed: u64) -> u64 {
        let mut live = self.live(epoch);
        live.sort_unstable_by_key(|(at, _)| *at);
        let mut freed = 0u64;
        for (at, count) in &live {
            freed += u64::from(*count);
            if freed >= needed {
                return (u64::from(*at) + SLOTS as u64) * self.bucket_ms;
            }
        }
        // More than the live buckets hold (cost above the limit, or counts in transit): one
        // full window from now is the honest answer.
        (u64::from(epoch) + SLOTS as u64) * self.bucket_ms
    }

    /// Non-empty live buckets at `epoch`: `(bucket epoch, count)`.
    fn live(&self, epoch: u32) -> Vec<(u32, u32)> {
        let oldest_live = epoch.saturating_sub(BUCKETS as u32);
        self.slots
            .iter()
            .map(|s| unpack(s.load(Ordering::Acquire)))
            .filter(|(at, count)| *count > 0 && *at >= oldest_live && *at <= epoch)
            .collect()
    }

    /// Units counted in the window at `now` (status pages, `least-used`).
    pub fn used(&self, now: u64) -> u64 {
        // No allocation: `least-used` reads this on the request path.
        let epoch = self.epoch(now);
        let oldest_live = epoch.saturating_sub(BUCKETS as u32);
        self.slots
            .iter()
            .map(|s| unpack(s.load(Ordering::Acquire)))
            .filter(|(at, count)| *count > 0 && *at >= oldest_live && *at <= epoch)
            .map(|(_, count)| u64::from(count))
            .sum()
    }

    /// Live buckets as `(bucket start ms, count)`, for snapshots.
    pub fn snapshot(&self, now: u64) -> Vec<(u64, u32)> {
        let mut live: Vec<(u64, u32)> = self
            .live(self.epoch(now))
            .into_iter()
            .map(|(at, count)| (u64::from(at) * self.bucket_ms, count))
            .collect();
        live.sort_unstable();
        live
    }

    /// Counts restored from a snapshot: `start` is the bucket start in this process's clock.
    /// The counts go to the bucket holding `start + B - 1` (never earlier), capped at `now`'s
    /// bucket, so a restored count never expires before it would have without the restart.
    pub fn restore(&self, start: u64, count: u32, now: u64) {
        let epoch = self
            .epoch(start.saturating_add(self.bucket_ms - 1))
            .min(self.epoch(now));
        if u64::from(epoch) + BUCKETS < u64::from(self.epoch(now)) {
            return;
        }
        self.used.fetch_add(u64::from(count), Ordering::AcqRel);
        self.add_to_slot(epoch, u64::from(count));
    }
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;
