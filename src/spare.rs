//! A worker's spare write buffers: a downstream answer's write buffer comes from here and goes
//! back here when its connection goes idle, instead of one allocation (and a free) per request,
//! which grew from empty as the answer was written (~650 instructions a chat request with the
//! frees, callgrind, issue 18). An upstream connection keeps its read buffer itself
//! (`upstream::Exchange`), so only write buffers are kept here.
//! Invariants: a buffer handed out is empty and no other handle can write into its spare
//! capacity (a write buffer is never split, so nothing shares it); each thread keeps at most
//! `KEPT` buffers of at most `MAX_BYTES` each (256 KiB in all), so an idle worker pins little;
//! the oldest goes first when full, and `trim` frees what an idle worker keeps.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use bytes::BytesMut;

/// Buffers kept per thread: a request in flight holds one (its answer's write buffer), and
/// the callgrind workload runs 8 connections on one worker.
const KEPT: usize = 16;
/// Larger buffers are never kept (a large answer's buffer is freed, as before).
const MAX_BYTES: usize = 16 * 1024;

/// A kept buffer and the `trim` period it was given back in.
type Kept = VecDeque<(BytesMut, u32)>;

thread_local! {
    static WRITE: RefCell<Kept> = const { RefCell::new(VecDeque::new()) };
    /// `trim` calls so far on this thread.
    static PERIOD: Cell<u32> = const { Cell::new(0) };
}

/// An empty buffer: the oldest kept one (it grew to the answers this worker sends), else a new
/// one without an allocation.
pub fn take() -> BytesMut {
    WRITE
        .with_borrow_mut(|kept| kept.pop_front().map(|(buf, _)| buf))
        .unwrap_or_default()
}

/// Keeps `buf` for a later `take` when it is empty and small enough (dropping the oldest kept
/// one when full); drops it otherwise.
pub fn give(buf: BytesMut) {
    if !buf.is_empty() || buf.capacity() == 0 || buf.capacity() > MAX_BYTES {
        return;
    }
    let period = PERIOD.get();
    WRITE.with_borrow_mut(|kept| {
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back((buf, period));
    });
}

/// Frees the buffers not given back since the previous call: called once a second by every
/// worker, so a worker gone idle holds none after two seconds (an idle rotor's footprint is
/// unchanged).
pub fn trim() {
    let period = PERIOD.get().wrapping_add(1);
    PERIOD.set(period);
    WRITE.with_borrow_mut(|kept| kept.retain(|(_, given)| given.wrapping_add(1) == period));
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::{give, take, trim, KEPT, MAX_BYTES};

    /// A buffer given back is handed out again (same allocation, emptied), and large or
    /// non-empty ones never. (Each test runs on its own thread: its spares start empty.)
    #[test]
    fn buffers_are_reused_only_when_empty_and_small() {
        let mut buf = BytesMut::with_capacity(8192);
        buf.extend_from_slice(b"answer");
        buf.clear();
        let at = buf.as_ptr();
        give(buf);
        let again = take();
        assert_eq!(again.as_ptr(), at, "the kept buffer is handed out again");
        assert!(again.is_empty() && again.capacity() >= 8192);
        assert_eq!(take().capacity(), 0, "none kept: a new one, unallocated");

        give(BytesMut::with_capacity(MAX_BYTES * 2));
        let mut full = BytesMut::with_capacity(64);
        full.extend_from_slice(b"x");
        give(full);
        assert_eq!(take().capacity(), 0, "neither a large nor a non-empty buffer is kept");

        for _ in 0..KEPT + 4 {
            give(BytesMut::with_capacity(64));
        }
        let kept = (0..KEPT + 4).filter(|_| take().capacity() >= 64).count();
        assert_eq!(kept, KEPT, "at most KEPT buffers per thread");
    }

    /// A buffer given back since the last trim survives one trim; none survives two.
    #[test]
    fn an_idle_thread_keeps_no_buffer_after_two_trims() {
        give(BytesMut::with_capacity(64));
        trim();
        give(BytesMut::with_capacity(128));
        trim();
        let kept = take();
        assert_eq!(
            kept.capacity(),
            128,
            "given in the last period: kept; the older one freed"
        );
        assert_eq!(take().capacity(), 0);
        give(kept);
        trim();
        trim();
        assert_eq!(take().capacity(), 0);
    }
}
