//! A worker's spare I/O buffers: a response's write buffer and an upstream exchange's read
//! buffer come from here and go back here when their request is done, instead of one
//! allocation (and a free) each per request: about -330 instructions per proxied chat
//! (callgrind, 30,395 -> 30,065 on the branch it was built on; the two buffers grew from empty,
//! ~650 with the frees, and a take or give costs ~90, mostly the thread-local's access).
//! Invariants: a buffer handed out is empty and no other handle can write into its spare
//! capacity (a `BytesMut` owns its capacity even while its allocation is shared with `Bytes`
//! split off it earlier); each thread keeps at most `KEPT` buffers of at most `MAX_BYTES`
//! each per kind (512 KiB in all), so an idle worker pins little; the oldest goes first when
//! full, and `trim` frees what an idle worker keeps.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use bytes::BytesMut;

/// Buffers kept per thread and kind: a request in flight holds one of each (its answer's write
/// buffer, its upstream exchange's read buffer), a read buffer waits at the back while the body
/// it read still lives, and the callgrind workload runs 8 connections on one worker.
const KEPT: usize = 16;
/// Larger buffers are never kept (a large body's buffer is freed, as before).
const MAX_BYTES: usize = 16 * 1024;
/// Kept buffers looked at per `take` before giving up and allocating.
const LOOKS: usize = 2;

/// Which use a buffer serves. Kept apart because they come back differently: a written
/// answer's buffer is its own again at once; a read buffer comes back still shared with the
/// body it read, and is whole again only once that body is dropped (later, as the answer goes
/// out), so it waits at the back of its queue meanwhile.
#[derive(Clone, Copy)]
pub enum Kind {
    /// A downstream answer's write buffer.
    Write,
    /// An upstream exchange's read buffer.
    Read,
}

/// A kept buffer and the `trim` period it was given back in.
type Kept = VecDeque<(BytesMut, u32)>;

thread_local! {
    static WRITE: RefCell<Kept> = const { RefCell::new(VecDeque::new()) };
    static READ: RefCell<Kept> = const { RefCell::new(VecDeque::new()) };
    /// `trim` calls so far on this thread.
    static PERIOD: Cell<u32> = const { Cell::new(0) };
}

fn with<R>(kind: Kind, f: impl FnOnce(&mut Kept) -> R) -> R {
    match kind {
        Kind::Write => WRITE.with_borrow_mut(f),
        Kind::Read => READ.with_borrow_mut(f),
    }
}

/// An empty buffer with at least `want` bytes of capacity: kept for `kind` when one of the
/// oldest kept fits (one still shared with a body of its last request fits only with what it
/// owns), else a new one (no allocation for a `want` of 0).
pub fn take(kind: Kind, want: usize) -> BytesMut {
    with(kind, |kept| {
        for _ in 0..LOOKS.min(kept.len()) {
            let (mut buf, period) = kept.pop_front()?;
            if buf.capacity() >= want || reclaimed(&mut buf, want) {
                return Some(buf);
            }
            kept.push_back((buf, period));
        }
        None
    })
    .unwrap_or_else(|| BytesMut::with_capacity(want))
}

/// Keeps `buf` for a later `take` of `kind` when it is empty and small enough (dropping the
/// oldest kept one when full); drops it otherwise.
pub fn give(kind: Kind, buf: BytesMut) {
    if !buf.is_empty() || buf.capacity() == 0 || buf.capacity() > MAX_BYTES {
        return;
    }
    let period = PERIOD.get();
    with(kind, |kept| {
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back((buf, period));
    });
}

/// Frees the buffers not given back since the previous call: called once a second by every
/// worker, so a worker gone idle holds none after two seconds (an idle rotor's footprint is
/// unchanged), and a buffer still shared with a long-lived body is not kept on.
pub fn trim() {
    let period = PERIOD.get().wrapping_add(1);
    PERIOD.set(period);
    for kind in [Kind::Write, Kind::Read] {
        with(kind, |kept| kept.retain(|(_, given)| given.wrapping_add(1) == period));
    }
}

/// `buf`'s whole allocation made usable again when the `Bytes` that shared it are all gone,
/// and it then holds `want`.
fn reclaimed(buf: &mut BytesMut, want: usize) -> bool {
    crate::net::reclaim_small(buf, MAX_BYTES) && buf.capacity() >= want
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::{give, take, trim, Kind, KEPT, MAX_BYTES};

    /// A buffer given back is handed out again (same allocation, emptied), one still shared
    /// with a live `Bytes` only once that is dropped, and large or non-empty ones never.
    /// (Each test runs on its own thread: its spares start empty.)
    #[test]
    fn buffers_are_reused_only_when_empty_small_and_their_own() {
        let mut buf = BytesMut::with_capacity(8192);
        buf.extend_from_slice(b"answer");
        buf.clear();
        let at = buf.as_ptr();
        give(Kind::Write, buf);
        assert_eq!(take(Kind::Read, 0).capacity(), 0, "kinds are kept apart");
        let again = take(Kind::Write, 8192);
        assert_eq!(again.as_ptr(), at, "the kept buffer is handed out again");
        assert!(again.is_empty() && again.capacity() >= 8192);

        let mut read = BytesMut::with_capacity(8192);
        read.extend_from_slice(&[1u8; 500]);
        let body = read.split_to(500).freeze();
        let at_read = body.as_ptr();
        give(Kind::Read, read);
        let fresh = take(Kind::Read, 8192);
        assert!(fresh.capacity() >= 8192, "a new one when none fits");
        assert_ne!(fresh.as_ptr(), at_read, "its tail is too small while the body lives");
        drop(body);
        let reclaimed = take(Kind::Read, 8192);
        assert_eq!(reclaimed.as_ptr(), at_read, "whole again once the body is gone");
        assert!(reclaimed.capacity() >= 8192);

        give(Kind::Write, BytesMut::with_capacity(MAX_BYTES * 2));
        let mut full = BytesMut::with_capacity(64);
        full.extend_from_slice(b"x");
        give(Kind::Write, full);
        assert_eq!(
            take(Kind::Write, 0).capacity(),
            0,
            "neither a large nor a non-empty buffer is kept"
        );

        for _ in 0..KEPT + 4 {
            give(Kind::Write, BytesMut::with_capacity(64));
        }
        let kept = (0..KEPT + 4).filter(|_| take(Kind::Write, 0).capacity() >= 64).count();
        assert_eq!(kept, KEPT, "at most KEPT buffers per thread and kind");
    }

    /// A buffer given back since the last trim survives one trim; none survives two.
    #[test]
    fn an_idle_thread_keeps_no_buffer_after_two_trims() {
        give(Kind::Write, BytesMut::with_capacity(64));
        trim();
        give(Kind::Read, BytesMut::with_capacity(64));
        trim();
        assert_eq!(take(Kind::Write, 0).capacity(), 0, "given two periods ago: freed");
        assert!(take(Kind::Read, 0).capacity() >= 64, "given in the last period: kept");
        give(Kind::Read, BytesMut::with_capacity(64));
        trim();
        trim();
        assert_eq!(take(Kind::Read, 0).capacity(), 0);
    }
}
