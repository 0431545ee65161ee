//! Socket helpers shared by the downstream server and the upstream client: owned-buffer reads
//! that append to a `BytesMut`, and writes that hand the buffer back.
//! Invariant: a read or write that timed out leaves its stream unusable (io_uring may have
//! consumed bytes into the dropped buffer), so callers close the stream after any error here.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

/// Smallest free space offered to the kernel per read.
const READ_RESERVE: usize = 8 * 1024;

/// Reads once, appending to `buf`. Returns the number of bytes read; 0 means the peer closed.
pub async fn read_more<R: AsyncReadRent>(io: &mut R, buf: &mut BytesMut) -> io::Result<usize> {
    read_more_reserving(io, buf, READ_RESERVE).await
}

/// `read_more` offering the kernel at least `free` bytes. An idle keep-alive connection waits
/// with a small buffer (its read pins the buffer for as long as the client stays silent).
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
    match monoio::time::timeout(limit, read_more_reserving(io, buf, free)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out")),
    }
}

/// `read_more` bounded by `limit`; a timeout is `io::ErrorKind::TimedOut`.
pub async fn read_more_within<R: AsyncReadRent>(io: &mut R, buf: &mut BytesMut, limit: Duration) -> io::Result<usize> {
    match monoio::time::timeout(limit, read_more(io, buf)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out")),
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
