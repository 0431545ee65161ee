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
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};

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

/// `read_more_reserving` bounded by `limit`; a timeout is `io::ErrorKind::TimedOut`. The read
/// is polled where it was built, next to its timer (not wrapped in a [`Within`]: that moved
/// the read's future into the wrapper and the wrapper into this future, on every read).
pub async fn read_more_reserving_within<R: AsyncReadRent>(
    io: &mut R,
    buf: &mut BytesMut,
    free: usize,
    limit: Duration,
) -> io::Result<usize> {
    buf.reserve(free);
    let owned = std::mem::take(buf);
    let start = owned.len();
    let mut timer = crate::heap::pin_in_place(|| monoio::time::sleep(limit));
    let read = std::pin::pin!(io.read(owned.slice_mut(start..)));
    match before_timer(read, timer.as_mut()).await {
        Some((result, slice)) => {
            *buf = slice.into_inner();
            result
        }
        // The buffer went with the read (io_uring may still write into it): `buf` is empty.
        None => Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out")),
    }
}

/// `op`'s output, or `None` when `timer` fires first. Both stay pinned where their owners built
/// them: nothing is moved per wait (what [`Within`] costs, as it owns its future).
pub async fn before_timer<F: Future>(
    mut op: Pin<&mut F>,
    mut timer: Pin<&mut monoio::time::Sleep>,
) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = op.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
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

/// Writes all of `buf`, then clears it for reuse (its capacity is kept). Each write is pinned
/// where it is built: awaiting `write_all`'s future moved it (160 bytes) into this one first.
pub async fn write_all_buf<W: AsyncWriteRent>(io: &mut W, buf: &mut BytesMut) -> io::Result<()> {
    let mut owned = std::mem::take(buf);
    let len = owned.len();
    let mut written = 0;
    let mut result = Ok(());
    while written < len {
        let (wrote, slice) = std::pin::pin!(io.write(owned.slice(written..len))).await;
        owned = slice.into_inner();
        match wrote {
            Ok(0) => {
                result = Err(io::Error::new(io::ErrorKind::WriteZero, "failed to write whole buffer"));
                break;
            }
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    owned.clear();
    *buf = owned;
    result
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use bytes::BytesMut;
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    use monoio::net::{TcpListener, TcpStream};

    use super::{read_more_reserving_within, write_all_buf};

    fn run(test: impl std::future::Future<Output = ()>) {
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        rt.block_on(test);
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect_addr(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    }

    /// A timed read appends what arrives (after what the buffer held) and a silent peer is a
    /// `TimedOut` after the limit, not before, with the buffer left empty.
    #[test]
    fn timed_read_appends_or_times_out() {
        run(async {
            let (mut client, mut server) = pair().await;
            let mut buf = BytesMut::from(&b"held:"[..]);
            let (wrote, _) = server.write_all(b"hello".to_vec()).await;
            wrote.expect("write");
            let n = read_more_reserving_within(&mut client, &mut buf, 64, Duration::from_secs(5)).await;
            assert_eq!(n.expect("read"), 5);
            assert_eq!(&buf[..], b"held:hello");
            let started = Instant::now();
            let silent = read_more_reserving_within(&mut client, &mut buf, 64, Duration::from_millis(50)).await;
            assert_eq!(silent.expect_err("timed out").kind(), std::io::ErrorKind::TimedOut);
            assert!(started.elapsed() >= Duration::from_millis(50));
            assert!(buf.is_empty(), "the buffer went with the timed-out read");
        });
    }

    /// `write_all_buf` writes a buffer larger than one write takes, whole and in order, then
    /// hands it back cleared with its capacity kept.
    #[test]
    fn write_all_buf_writes_everything_and_clears() {
        run(async {
            let (mut client, mut server) = pair().await;
            let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
            let expected = data.clone();
            let reader = monoio::spawn(async move {
                let mut got = Vec::with_capacity(expected.len());
                while got.len() < expected.len() {
                    let (n, back) = server.read(vec![0u8; 64 * 1024]).await;
                    let n = n.expect("read");
                    assert!(n > 0, "closed early");
                    got.extend_from_slice(&back[..n]);
                }
                assert!(got == expected, "bytes arrive whole and in order");
            });
            let mut buf = BytesMut::from(&data[..]);
            let capacity = buf.capacity();
            write_all_buf(&mut client, &mut buf).await.expect("write");
            assert!(buf.is_empty() && buf.capacity() == capacity);
            reader.await;
        });
    }
}
