//! Tests of `client`'s lean reads: a relayed SSE stream reads into a buffer of its own, not
//! the connection's, and that buffer is not kept with the connection.

#![allow(clippy::unwrap_used)]

use monoio::io::AsyncWriteRentExt;

use super::tests::{exchange, head_answered, on_a_pool, SECOND};
use super::{READ_BUFFER_BYTES, STREAM_BUFFER_BYTES};

/// An SSE chunk of `data: {text}\n\n`.
fn event(text: &str) -> Vec<u8> {
    let data = format!("data: {text}\n\n");
    format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
}

/// After `lean_reads`, what was buffered is read as before; the next read swaps in a buffer of
/// `STREAM_BUFFER_BYTES`; an event several times that size still arrives whole and in order;
/// and at release the connection pools without it (its next exchange gets a buffer of the
/// usual size).
#[test]
fn a_relayed_stream_reads_into_a_small_buffer_not_kept_with_the_connection() {
    on_a_pool(|pool, key| async move {
        const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
            transfer-encoding: chunked\r\n\r\n9\r\ndata: a\n\n\r\n";
        let (mut stream, mut upstream) = exchange(&pool, &key).await;
        head_answered(&mut stream, &mut upstream, HEAD).await;
        stream.lean_reads();
        let first = stream.next_piece(SECOND).await.unwrap().unwrap();
        assert_eq!(&first[..], b"data: a\n\n", "buffered with the head");

        let (written, _) = upstream.write_all(event("b")).await;
        written.unwrap();
        let second = stream.next_piece(SECOND).await.unwrap().unwrap();
        assert_eq!(&second[..], b"data: b\n\n");
        assert!(
            stream.buf.capacity() <= STREAM_BUFFER_BYTES,
            "read into the stream's own buffer, not the connection's {READ_BUFFER_BYTES} bytes: {}",
            stream.buf.capacity()
        );

        let large = "x".repeat(3 * STREAM_BUFFER_BYTES);
        let mut rest = event(&large);
        rest.extend(event("c"));
        rest.extend_from_slice(b"0\r\n\r\n");
        let (written, _) = upstream.write_all(rest).await;
        written.unwrap();
        let mut read = Vec::new();
        while let Some(piece) = stream.next_piece(SECOND).await.unwrap() {
            read.extend_from_slice(&piece);
        }
        assert_eq!(read, format!("data: {large}\n\ndata: c\n\n").into_bytes());
        assert!(stream.reusable(), "read to its end");

        stream.release();
        assert_eq!(pool.idle_count(), 1, "pooled, not closed");
        let next = super::super::pooled(&pool, &key).unwrap();
        assert_eq!(next.buf.capacity(), READ_BUFFER_BYTES, "a new buffer of the usual size");
    });
}
