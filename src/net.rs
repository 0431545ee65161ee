//! Socket helpers shared by the downstream server and the upstream client: owned-buffer reads
//! that append to a `BytesMut` (timed by a per-connection [`ReadTimer`], an entry in the
//! worker's deadline wheel),
//! small read buffers rewound in place between requests, and writes that hand the buffer back.
//! Invariant: a read or write that timed out leaves its stream unusable (io_uring may have
//! consumed bytes into the dropped buffer), so callers close the stream after any error here.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use monoio::buf::{IoBuf, IoBufMut, SliceMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::BufResult;

use crate::deadline::{Deadline, Group};
use crate::health::clock::Moment;

/// Smallest free space offered to the kernel per read.
pub const READ_RESERVE: usize = 8 * 1024;

/// Reads once, appending to `buf` and offering the kernel at least `free` bytes. Returns the
/// number of bytes read; 0 means the peer closed. An idle keep-alive connection waits with a
/// small buffer (its read pins the buffer for as long as the client stays silent).
pub async fn read_more_reserving<R: AsyncReadRent>(io: &mut R, buf: &mut BytesMut, free: usize) -> io::Result<usize> {
    buf.reserve(free);
    let owned = std::mem::take(buf);
    let start = owned.len();
    let (result, slice) = io.read(owned.slice_mut(start..)).await;
    *buf = slice.into_inner();
    result
}

/// `read_more_reserving` bounded by `limit`; a timeout is `io::ErrorKind::TimedOut`. Takes a
/// deadline for this one read: a connection that reads often keeps a [`ReadTimer`] and calls
/// [`read_more_timed`] instead.
pub async fn read_more_reserving_within<R: AsyncReadRent>(
    io: &mut R,
    buf: &mut BytesMut,
    free: usize,
    limit: Duration,
) -> io::Result<usize> {
    let mut deadline = Deadline::new();
    deadline.arm(limit);
    read_more_before(io, buf, free, &mut deadline).await
}

/// `read_more_reserving` bounded by `limit`, timed by `timer` (re-armed for this read, as it
/// is called). This and the other timed reads below are plain functions returning
/// `read_more_before`'s future, not `async fn`s: a wrapper future around it cost its own
/// state, a move of the inner future into it and a resume on every poll.
pub fn read_more_timed<'a, R: AsyncReadRent>(
    io: &'a mut R,
    buf: &'a mut BytesMut,
    free: usize,
    timer: &'a mut ReadTimer,
    limit: Duration,
) -> impl Future<Output = io::Result<usize>> + 'a {
    read_more_before(io, buf, free, timer.arm(limit))
}

/// One connection's read deadline, re-armed for each timed read: arming is a clock read and a
/// store in this worker's deadline wheel (`crate::deadline`), where a fresh monoio `sleep` per
/// read was a 640-byte allocation, a timer-wheel insert and remove, and its polling. A read
/// gets exactly now + its limit, and times out no earlier than that and at most the wheel's
/// slack later (a tick, 2.1 ms, plus scheduling; see `crate::deadline`). A read
/// that completes leaves it armed (as monoio's timer was): it may wake its task once at that
/// deadline, a spurious wake every future tolerates, unless a read re-arms it first; a pooled
/// connection's is disarmed (`idle`). Any task may poll it (the waker follows the task that
/// polls), so it can stay with a pooled connection.
#[derive(Default)]
pub struct ReadTimer(Deadline);

impl ReadTimer {
    pub const fn new() -> Self {
        ReadTimer(Deadline::new())
    }

    /// The deadline, set to fire `limit` from now.
    pub fn arm(&mut self, limit: Duration) -> &mut Deadline {
        self.0.arm(limit);
        &mut self.0
    }

    /// The deadline, set to fire `limit` from now or when `group` is fired.
    pub fn arm_in(&mut self, limit: Duration, group: &Group) -> &mut Deadline {
        self.0.arm_in(limit, group);
        &mut self.0
    }

    /// The deadline, set to fire at `at` (no clock read).
    pub fn arm_at(&mut self, at: Moment) -> &mut Deadline {
        self.0.arm_at(at);
        &mut self.0
    }

    /// Disarmed and holding no waker: its connection goes idle in a pool.
    pub fn idle(&mut self) {
        self.0.idle();
    }
}

/// `read_more_reserving` raced against `deadline`, written out where it is awaited: the reads
/// every request makes (a connection's idle wait, an upstream's head and body pieces) are
/// built and polled inside their own `async fn`'s state. Behind the `async fn`
/// `read_more_before` each read was one more state machine (a resume on every poll, its
/// arguments moved in): chat 19,552/19,557 -> 19,226/19,228 instructions per request written
/// out (callgrind, issue 18). A future struct returned by a plain function instead was copied
/// into the awaiting state twice per read (chat 19,598-19,765 against 19,575-19,641).
///
/// `$io: &mut impl AsyncReadRent`; `$buf: &mut BytesMut`, appended to (empty after a timeout:
/// the buffer went with the read, which io_uring may still write into); `$deadline: &mut
/// Deadline`, left armed when the read completes (the next read re-arms it with a store, where
/// disarming cost a wheel access per read and a re-filing at the next arm: chat 28,701-28,766
/// with it, 28,572-28,581 without; it may then wake its task once, spuriously). Evaluates to
/// `io::Result<usize>`, 0 when the peer closed; a timeout is `io::ErrorKind::TimedOut`.
macro_rules! read_before {
    ($io:expr, $buf:expr, $free:expr, $deadline:expr) => {{
        let buf: &mut ::bytes::BytesMut = $buf;
        let read = ::std::pin::pin!(::monoio::io::AsyncReadRent::read($io, $crate::net::rent(buf, $free)));
        $crate::net::returned(buf, $crate::net::before_deadline(read, $deadline).await)
    }};
}
pub(crate) use read_before;

/// `read_more_reserving` raced against `deadline`, for the reads off the request's usual path
/// (a head in several pieces, a body, a linger); see [`read_before!`].
async fn read_more_before<R: AsyncReadRent>(
    io: &mut R,
    buf: &mut BytesMut,
    free: usize,
    deadline: &mut Deadline,
) -> io::Result<usize> {
    read_before!(io, buf, free, deadline)
}

/// The free part of `buf` (at least `free` bytes, reserved first), for a read to fill: `buf`
/// stays empty until [`returned`] gives the whole buffer back.
#[inline(always)]
pub(crate) fn rent(buf: &mut BytesMut, free: usize) -> SliceMut<BytesMut> {
    buf.reserve(free);
    let owned = std::mem::take(buf);
    let start = owned.len();
    owned.slice_mut(start..)
}

/// A rented read's outcome: its buffer back in `buf`, or `TimedOut` (`None`: the deadline
/// passed first, and the buffer went with the read).
#[inline(always)]
pub(crate) fn returned(buf: &mut BytesMut, read: Option<BufResult<usize, SliceMut<BytesMut>>>) -> io::Result<usize> {
    match read {
        Some((result, slice)) => {
            *buf = slice.into_inner();
            result
        }
        None => Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out")),
    }
}

/// `op`'s output, or `None` when `deadline` passes first. `op` stays pinned where its owner
/// built it: nothing is moved per wait (what [`Within`] costs, as it owns its future). The
/// `poll_fn` itself is returned (an `async fn` around it was one more future per wait).
pub fn before_deadline<'a, F: Future>(
    mut op: Pin<&'a mut F>,
    deadline: &'a mut Deadline,
) -> impl Future<Output = Option<F::Output>> + 'a {
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(out) = op.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        deadline.poll_elapsed(cx).map(|()| None)
    })
}

/// `read_more_reserving` with the usual reserve, bounded by `limit`; a timeout is `io::ErrorKind::TimedOut`.
pub async fn read_more_within<R: AsyncReadRent>(io: &mut R, buf: &mut BytesMut, limit: Duration) -> io::Result<usize> {
    read_more_reserving_within(io, buf, READ_RESERVE, limit).await
}

/// `read_more_reserving` with the usual reserve, bounded by `at`: the fixed deadline of a
/// wait that may take several reads (a head), read from the clock once, when the wait began.
/// Deriving each read's limit from it cost an `Instant` reading and subtraction per read on
/// top of the clock read that arming one takes.
pub fn read_more_until<'a, R: AsyncReadRent>(
    io: &'a mut R,
    buf: &'a mut BytesMut,
    timer: &'a mut ReadTimer,
    at: Moment,
) -> impl Future<Output = io::Result<usize>> + 'a {
    read_more_before(io, buf, READ_RESERVE, timer.arm_at(at))
}

/// Makes the whole allocation behind the empty `buf` usable again, in place, when nothing else
/// shares it any more (the previous request's bytes were all dropped) and it is at most `max`
/// bytes. False otherwise, and the caller drops `buf`: a shared or larger allocation is never
/// kept (it could pin a large body's buffer on an idle connection).
pub fn reclaim_small(buf: &mut BytesMut, max: usize) -> bool {
    // Asking for one byte more than is free forces the reclaim path, which (only when this is
    // the last handle and bytes before it were consumed) rewinds to the allocation's start and
    // reports its whole capacity; it never allocates.
    buf.is_empty() && buf.try_reclaim(buf.capacity() + 1) && buf.capacity() <= max
}

/// `limit` passed before `fut` finished (`fut` was dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// `fut` bounded by `limit`, like `monoio::time::timeout`, but timed by this worker's deadline
/// wheel (one timer system for every wait with a limit; the entry is a few bytes, where
/// monoio's is 640 aligned to 128 and made every future around it that large). A plain
/// struct, not an `async fn`: an async fn would keep `fut` twice (as its argument and as the
/// polled value).
pub fn within<F: Future>(limit: Duration, fut: F) -> Within<F> {
    let mut deadline = Deadline::new();
    deadline.arm(limit);
    Within { fut, deadline }
}

pin_project_lite::pin_project! {
    /// The future [`within`] returns.
    pub struct Within<F> {
        #[pin]
        fut: F,
        deadline: Deadline,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        this.deadline.poll_elapsed(cx).map(|()| Err(Elapsed))
    }
}

/// [`write_all_buf`] written out where it is awaited, for the upstream request every
/// attempt sends (`upstream::Exchange::round_trip`): the write's future is pinned in the
/// awaiting function's own state, with no `write_all_buf` state machine between them (its
/// resume on every poll, its set-up and drop). `$io: &mut impl AsyncWriteRent`, `$buf: &mut
/// BytesMut`, handed back cleared with its capacity kept, written or not. Evaluates to
/// `io::Result<()>`.
macro_rules! write_in_place {
    ($io:expr, $buf:expr) => {{
        let io = $io;
        let buf: &mut ::bytes::BytesMut = $buf;
        let len = buf.len();
        if len == 0 {
            Ok(())
        } else {
            let (wrote, mut owned) =
                ::std::pin::pin!(::monoio::io::AsyncWriteRent::write(&mut *io, ::std::mem::take(buf))).await;
            let result = match wrote {
                Ok(n) if n == len => Ok(()),
                first => Box::pin($crate::net::write_rest(io, &mut owned, first)).await,
            };
            owned.clear();
            *buf = owned;
            result
        }
    }};
}
pub(crate) use write_in_place;

/// Writes all of `buf`, then clears it for reuse (its capacity is kept). The first write
/// takes the whole buffer as it is (no slice around it) and almost always writes it all; a
/// short write's rest goes on in [`write_rest`], boxed, so the loop and its second write
/// future are not part of every caller's state (every streamed piece and rotor's own answers
/// pass here; a relayed whole answer takes `server::send_whole!`, which writes in place).
pub async fn write_all_buf<W: AsyncWriteRent>(io: &mut W, buf: &mut BytesMut) -> io::Result<()> {
    write_in_place!(io, buf)
}

/// The rest of `write_all_buf` after a first write that did not take everything (`first`:
/// what it wrote, or its error). Each write is pinned where it is built: awaiting
/// `write_all`'s future moved it (160 bytes) into this one first.
pub(crate) async fn write_rest<W: AsyncWriteRent>(
    io: &mut W,
    owned: &mut BytesMut,
    first: io::Result<usize>,
) -> io::Result<()> {
    let len = owned.len();
    let mut wrote = first;
    let mut written = 0;
    loop {
        match wrote {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "failed to write whole buffer")),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if written >= len {
            return Ok(());
        }
        let (next, slice) = std::pin::pin!(io.write(std::mem::take(owned).slice(written..len))).await;
        *owned = slice.into_inner();
        wrote = next;
    }
}

#[cfg(test)]
#[path = "net_tests.rs"]
mod tests;
