//! Socket helpers shared by the downstream server and the upstream client: owned-buffer reads
//! that append to a `BytesMut`, and writes that hand the buffer back.
//! Invariant: a read or write that timed out leaves its stream unusable (io_uring may have
//! consumed bytes into the dropped buffer), so callers close the stream after any error here.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

/// Smallest free space offered to the kernel per read.
const READ_RESERVE: usize = 8 * 1024;

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

/// `read_more_reserving` bounded by `limit`; a timeout is `io::ErrorKind::TimedOut`.
pub async fn read_more_reserving_within<R: AsyncReadRent>(
    io: &mut R,
    buf: &mut BytesMut,
    free: usize,
    limit: Duration,
) -> io::Result<usize> {
    within(limit, read_more_reserving(io, buf, free))
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out")))
}

/// `read_more_reserving` with the usual reserve, bounded by `limit`; a timeout is `io::ErrorKind::TimedOut`.
pub async fn read_more_within<R: AsyncReadRent>(io: &mut R, buf: &mut BytesMut, limit: Duration) -> io::Result<usize> {
    read_more_reserving_within(io, buf, READ_RESERVE, limit).await
}

/// Time left until `deadline`, which is set to now + `limit` on the first call (that call reads
/// the clock once and returns `limit`; later calls read it once each).
pub fn time_left(deadline: &mut Option<std::time::Instant>, limit: Duration) -> Duration {
    match deadline {
        Some(at) => at.saturating_duration_since(std::time::Instant::now()),
        None => {
            *deadline = Some(std::time::Instant::now() + limit);
            limit
        }
    }
}

/// `limit` passed before `fut` finished (`fut` was dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// `fut` bounded by `limit`, like `monoio::time::timeout`, but with the timer in its own
/// allocation. monoio's timer entry is 640 bytes aligned to 128; kept inline, it makes every
/// future that awaits a timed read that much larger and 128-aligned, and the request path
/// builds and moves such futures several times per request (memmove was 12 % of a proxy
/// core's time under load; `perf record`, issue 7). A plain struct, not an `async fn`: an
/// async fn would keep `fut` twice (as its argument and as the polled value).
pub fn within<F: Future>(limit: Duration, fut: F) -> Within<F> {
    Within {
        fut,
        // Built in its allocation: no 640-byte copy from the stack per timed read.
        timer: crate::heap::pin_in_place(|| monoio::time::sleep(limit)),
    }
}

pin_project_lite::pin_project! {
    /// The future [`within`] returns.
    pub struct Within<F> {
        #[pin]
        fut: F,
        timer: Pin<Box<monoio::time::Sleep>>,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        this.timer.as_mut().poll(cx).map(|()| Err(Elapsed))
    }
}

/// Writes all of `buf`, then clears it for reuse (its capacity is kept).
pub async fn write_all_buf<W: AsyncWriteRent>(io: &mut W, buf: &mut BytesMut) -> io::Result<()> {
    let owned = std::mem::take(buf);
    let (result, mut back) = io.write_all(owned).await;
    back.clear();
    *buf = back;
    result.map(|_| ())
}
