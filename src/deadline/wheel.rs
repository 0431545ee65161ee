//! The deadline wheel itself, with no clock and no runtime: a slab of entries {deadline, waker}
//! (each shared with its `Deadline` through cells: `Entry`)
//! filed lazily in a hashed wheel of coarse ticks, and the pass that wakes expired entries.
//! Invariants: an entry fires only when a pass is given a `now` at or past its deadline (never
//! early); every filed entry sits in exactly one slot's list and that slot's occupied bit (and
//! its word's bit in `occupied_words`) is set while the list is non-empty; removing an entry unlinks it in O(1) and leaves nothing behind
//! (the slab's size is the peak number of live entries, the lists hold only live entries).

use std::cell::Cell;
use std::rc::Rc;
use std::task::Waker;

/// A tick is 2^21 ns (2.1 ms): the ticker wakes at the end of the tick holding a deadline, so
/// this is the slack a deadline gets on top of monoio's own (it rounds up to the next ms).
pub const TICK_SHIFT: u32 = 21;
/// Slots of the hashed wheel: one turn is 4096 ticks (8.8 s). A deadline further away than one
/// turn sits in its slot and is passed over (kept) once per turn until its turn comes.
const SLOTS: u64 = 4096;
const WORDS: usize = (SLOTS / 64) as usize;
// `Wheel::occupied_words` has one bit per word and is searched by rotating it.
const _: () = assert!(WORDS == 64);
/// No entry: the end of a list, an empty slot, the end of the free list.
pub const NIL: u32 = u32::MAX;
/// An entry's deadline when it is not armed, and its `filed` when it is in no slot.
pub const NEVER: u64 = u64::MAX;

/// One entry, shared by the wheel and its `Deadline` (`Wheel::shared`): the deadline re-arms it
/// later, reads whether it fired and swaps its waker through these cells without reaching the
/// thread's wheel, which it needs only to file the entry in an earlier slot (see
/// `Deadline::poll_elapsed`).
pub struct Entry {
    /// Nanoseconds on the `Moment` clock; `NEVER` when disarmed.
    deadline: Cell<u64>,
    /// The deadline tick it was filed under (its slot is that tick's), `NEVER` when unfiled.
    /// The wheel visits the slot at or before this tick, so a later deadline needs no re-filing.
    filed: Cell<u64>,
    prev: Cell<u32>,
    /// The next entry in its slot, or in the free list.
    next: Cell<u32>,
    /// A pass found it expired, or its group was fired; cleared by the next `arm`.
    fired: Cell<bool>,
    /// The group that may fire it early (`fire_group`), 0 for none; set by every `arm`.
    group: Cell<u32>,
    waker: Cell<Option<Waker>>,
}

impl Entry {
    fn new() -> Entry {
        Entry {
            deadline: Cell::new(NEVER),
            filed: Cell::new(NEVER),
            prev: Cell::new(NIL),
            next: Cell::new(NIL),
            fired: Cell::new(false),
            group: Cell::new(0),
            waker: Cell::new(None),
        }
    }

    /// Re-arms a filed entry for a deadline in its filed tick or later, without the wheel
    /// (which re-files it when it reaches the old slot). False, and nothing changed, when the
    /// deadline is earlier than the filed tick or the entry is not filed: `Wheel::arm` then.
    #[inline]
    pub fn rearm_later(&self, deadline: u64, group: u32) -> bool {
        if deadline >> TICK_SHIFT < self.filed.get() {
            return false;
        }
        self.deadline.set(deadline);
        self.fired.set(false);
        self.group.set(group);
        true
    }

    /// The deadline of an armed entry that has not fired and is in no slot (only after
    /// `Wheel::drop_ticker`: a pass unfiles only fired and disarmed entries).
    #[inline]
    pub fn armed_unfiled(&self) -> Option<u64> {
        let deadline = self.deadline.get();
        (self.filed.get() == NEVER && deadline != NEVER && !self.fired.get()).then_some(deadline)
    }

    /// The group that may fire it early.
    pub fn group(&self) -> u32 {
        self.group.get()
    }

    /// `Wheel::poll` of this entry, without the wheel: whether it fired, and if not, `waker`
    /// is the one it wakes (a replaced waker is handed back, to drop with no borrow held).
    #[inline]
    pub fn poll(&self, waker: &Waker) -> (bool, Option<Waker>) {
        if self.fired.get() {
            return (true, None);
        }
        let kept = self.waker.take();
        if kept.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.waker.set(kept);
            return (false, None);
        }
        self.waker.set(Some(waker.clone()));
        (false, kept)
    }

    /// `Wheel::disarm` and `Wheel::forget_waker` of this entry, without the wheel.
    #[inline]
    pub fn idle(&self) -> Option<Waker> {
        self.deadline.set(NEVER);
        self.fired.set(false);
        self.waker.take()
    }

    /// Wakes the entry's task, if it has one.
    fn wake(&self) {
        let waker = self.waker.take();
        if let Some(waker) = &waker {
            waker.wake_by_ref();
        }
        self.waker.set(waker);
    }
}

pub struct Wheel {
    /// The slab: a freed entry stays allocated here for the next `insert`.
    entries: Vec<Rc<Entry>>,
    free: u32,
    /// First entry of each slot; allocated at the first filing (a thread that never times a read
    /// keeps none).
    heads: Vec<u32>,
    occupied: [u64; WORDS],
    /// Bit `w` is set while `occupied[w]` is not 0: a search for the next occupied slot skips
    /// empty words in one step instead of reading all 64 of them (a pass with its next deadline
    /// a turn away read them all, about 600 instructions).
    occupied_words: u64,
    /// The first tick not yet passed over for good (the slot at `cursor` may still hold
    /// entries of that tick that were not due yet).
    cursor: u64,
    /// The ticker's waker, and the tick at whose end it will next run (`NEVER`: parked).
    ticker: Option<Waker>,
    ticker_at: u64,
    pub ticker_alive: bool,
    /// Counts tickers started, so a stale ticker's end cannot mark a newer one gone.
    pub ticker_generation: u64,
    /// Passes run (tests check that an idle ticker runs none).
    #[cfg(test)]
    pub passes: u64,
}

impl Wheel {
    pub const fn new() -> Wheel {
        Wheel {
            entries: Vec::new(),
            free: NIL,
            heads: Vec::new(),
            occupied: [0; WORDS],
            occupied_words: 0,
            cursor: 0,
            ticker: None,
            ticker_at: NEVER,
            ticker_alive: false,
            ticker_generation: 0,
            #[cfg(test)]
            passes: 0,
        }
    }

    /// A new disarmed, unfiled entry (a free one reused when there is one).
    pub fn insert(&mut self) -> u32 {
        if self.free != NIL {
            let index = self.free;
            let entry = &self.entries[index as usize];
            self.free = entry.next.get();
            // Freed by `remove`: disarmed, unfiled and without a waker already.
            entry.next.set(NIL);
            entry.prev.set(NIL);
            entry.fired.set(false);
            entry.group.set(0);
            return index;
        }
        self.entries.push(Rc::new(Entry::new()));
        (self.entries.len() - 1) as u32
    }

    /// The entry at `index`, for its `Deadline` to hold.
    pub fn shared(&self, index: u32) -> Rc<Entry> {
        Rc::clone(&self.entries[index as usize])
    }

    /// Unlinks and frees `index`. Returns its waker for the caller to drop once the wheel is no
    /// longer borrowed (dropping a task's last waker drops the task, which may drop deadlines).
    #[must_use]
    pub fn remove(&mut self, index: u32) -> Option<Waker> {
        self.unfile(index);
        let entry = &self.entries[index as usize];
        entry.deadline.set(NEVER);
        entry.next.set(self.free);
        self.free = index;
        entry.waker.take()
    }

    /// Sets the deadline, and the group that may fire it early (0: none). A later deadline than
    /// the one filed is one store: the wheel re-files the entry when it reaches the old slot.
    /// An earlier one is re-filed now.
    pub fn arm(&mut self, index: u32, deadline: u64, group: u32) {
        let entry = &self.entries[index as usize];
        entry.deadline.set(deadline);
        entry.fired.set(false);
        entry.group.set(group);
        let tick = deadline >> TICK_SHIFT;
        if tick < entry.filed.get() {
            self.unfile(index);
            self.file(index, tick);
        }
    }

    /// No deadline (the wheel drops the entry from its slot when it gets there). The waker is
    /// kept: the same task usually arms it again.
    #[cfg(test)]
    pub fn disarm(&mut self, index: u32) {
        let entry = &self.entries[index as usize];
        entry.deadline.set(NEVER);
        entry.fired.set(false);
    }

    /// Fires now every armed entry of `group` (not 0) that has not fired: it wakes its task and
    /// leaves its slot, as if its deadline had passed. Visits the whole slab: run once per
    /// group (a server's shutdown), never on the request path. Returns how many it fired.
    pub fn fire_group(&mut self, group: u32) -> usize {
        let mut fired = 0;
        for index in 0..self.entries.len() {
            let entry = &self.entries[index];
            // Free entries are disarmed (`remove`), so they never match.
            if group == 0 || entry.group.get() != group || entry.deadline.get() == NEVER || entry.fired.get() {
                continue;
            }
            entry.fired.set(true);
            entry.wake();
            self.unfile(index as u32);
            fired += 1;
        }
        fired
    }

    /// Whether the entry fired; if not, `waker` is the one it will wake (replaced only when it
    /// would not wake the same task; a replaced waker is handed back, as by `remove`).
    pub fn poll(&mut self, index: u32, waker: &Waker) -> (bool, Option<Waker>) {
        self.entries[index as usize].poll(waker)
    }

    /// Registers the ticker's waker (a replaced one is handed back, as by `remove`).
    #[must_use]
    pub fn set_ticker(&mut self, waker: &Waker) -> Option<Waker> {
        if self.ticker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            return None;
        }
        self.ticker.replace(waker.clone())
    }

    /// Forgets the ticker (its task ended, or its runtime did); its waker is handed back.
    #[must_use]
    /// Every entry leaves its slot: with no ticker to reach them, filed entries would be
    /// re-armed later in place (`Entry::rearm_later`) and never fire; unfiled, the next poll of
    /// an armed one files it and starts a ticker.
    pub fn drop_ticker(&mut self) -> Option<Waker> {
        self.ticker_at = NEVER;
        self.ticker_alive = false;
        for entry in &self.entries {
            entry.filed.set(NEVER);
        }
        self.heads.fill(NIL);
        self.occupied = [0; WORDS];
        self.occupied_words = 0;
        self.ticker.take()
    }

    fn file(&mut self, index: u32, tick: u64) {
        if self.heads.is_empty() {
            self.heads = vec![NIL; SLOTS as usize];
        }
        // A deadline in a tick already passed over goes in the first one still to come.
        let tick = tick.max(self.cursor);
        let slot = (tick % SLOTS) as usize;
        let head = self.heads[slot];
        if head != NIL {
            self.entries[head as usize].prev.set(index);
        }
        let entry = &self.entries[index as usize];
        entry.filed.set(tick);
        entry.prev.set(NIL);
        entry.next.set(head);
        self.heads[slot] = index;
        self.occupied[slot / 64] |= 1 << (slot % 64);
        self.occupied_words |= 1 << (slot / 64);
        if tick < self.ticker_at {
            // The ticker sleeps past this deadline (or is parked): it runs and sleeps again.
            self.ticker_at = tick;
            if let Some(ticker) = &self.ticker {
                ticker.wake_by_ref();
            }
        }
    }

    fn unfile(&mut self, index: u32) {
        let entry = &self.entries[index as usize];
        if entry.filed.get() == NEVER {
            return;
        }
        let slot = (entry.filed.get() % SLOTS) as usize;
        let (prev, next) = (entry.prev.get(), entry.next.get());
        entry.filed.set(NEVER);
        if next != NIL {
            self.entries[next as usize].prev.set(prev);
        }
        if prev != NIL {
            self.entries[prev as usize].next.set(next);
        } else {
            self.heads[slot] = next;
            if next == NIL {
                self.occupied[slot / 64] &= !(1 << (slot % 64));
                if self.occupied[slot / 64] == 0 {
                    self.occupied_words &= !(1 << (slot / 64));
                }
            }
        }
    }

    /// Wakes every entry due at `now` (ns) in the ticks up to now's, re-files the ones whose
    /// deadline moved later and drops disarmed ones. Returns when the ticker should run next:
    /// the end of the first tick whose slot holds anything, or `None` (park) when none does.
    pub fn expire(&mut self, now: u64) -> Option<u64> {
        #[cfg(test)]
        {
            self.passes += 1;
        }
        let now_tick = now >> TICK_SHIFT;
        let count = (now_tick.saturating_sub(self.cursor) + 1).min(SLOTS);
        // No ticker wakes for entries re-filed by this pass: the ticker is the one running it.
        self.ticker_at = 0;
        let mut k = 0;
        while let Some(found) = self.next_occupied(self.cursor + k, count - k) {
            k += found;
            self.pass_slot(((self.cursor + k) % SLOTS) as usize, now);
            k += 1;
        }
        self.cursor = self.cursor.max(now_tick);
        self.ticker_at = match self.next_occupied(now_tick, SLOTS) {
            Some(ahead) => now_tick + ahead,
            None => NEVER,
        };
        (self.ticker_at != NEVER).then(|| (self.ticker_at + 1) << TICK_SHIFT)
    }

    /// Offset from `from` (a tick) of the first tick within `count` whose slot is occupied.
    fn next_occupied(&self, from: u64, count: u64) -> Option<u64> {
        let mut k = 0;
        while k < count {
            let slot = ((from + k) % SLOTS) as usize;
            let bits = self.occupied[slot / 64] >> (slot % 64);
            if bits != 0 {
                let found = k + u64::from(bits.trailing_zeros());
                return (found < count).then_some(found);
            }
            // The rest of this word is empty: on to the next occupied word, wrapping around.
            k += 64 - (slot % 64) as u64;
            let next_word = (slot / 64 + 1) % WORDS;
            let ahead = self.occupied_words.rotate_right(next_word as u32);
            if ahead == 0 {
                return None;
            }
            k += 64 * u64::from(ahead.trailing_zeros());
        }
        None
    }

    fn pass_slot(&mut self, slot: usize, now: u64) {
        let mut at = self.heads[slot];
        while at != NIL {
            let index = at;
            let entry = &self.entries[index as usize];
            at = entry.next.get();
            let deadline = entry.deadline.get();
            if deadline <= now {
                entry.fired.set(true);
                entry.wake();
                self.unfile(index);
            } else if deadline == NEVER {
                self.unfile(index);
            } else if (deadline >> TICK_SHIFT) % SLOTS != slot as u64 {
                self.unfile(index);
                self.file(index, deadline >> TICK_SHIFT);
            } else {
                entry.filed.set(deadline >> TICK_SHIFT);
            }
        }
    }

    /// Entries filed in some slot (for tests and the bound check).
    #[cfg(test)]
    pub fn filed(&self) -> usize {
        self.entries.iter().filter(|e| e.filed.get() != NEVER).count()
    }

    #[cfg(test)]
    pub fn slab_len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn ticker_at(&self) -> u64 {
        self.ticker_at
    }
}

#[cfg(test)]
#[path = "wheel_tests.rs"]
mod tests;
