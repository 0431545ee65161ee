//! `Responder`'s unit tests: the lent buffer, and a whole answer written by `send_whole!`
//! against `send_fields` on real sockets.
#![allow(clippy::unwrap_used)]

use monoio::io::AsyncReadRent;
use monoio::net::TcpListener;

use super::*;

/// A lent buffer comes back empty, and without a large request's allocation.
#[test]
fn a_lent_buffer_comes_back_empty_and_small() {
    let mut out = BytesMut::with_capacity(1024);
    Lent::Answer(&mut out).extend_from_slice(b"POST / HTTP/1.1\r\n\r\n");
    assert!(out.is_empty() && out.capacity() >= 1024, "kept for the answer");
    Lent::Answer(&mut out).extend_from_slice(&vec![b'x'; KEEP_LENT + 1]);
    assert_eq!(out.capacity(), 0, "a large request's buffer is freed");
}

/// What one whole answer put on the wire, and what the responder says about it afterwards.
#[derive(Debug, PartialEq)]
struct Sent {
    wire: Vec<u8>,
    status: u16,
    bytes_out: u64,
    reusable: bool,
}

/// Sends `body` as a whole 200 answer on a fresh connection, by `send_whole!` when `in_place`
/// or by `send_fields`, and reads everything the client receives until rotor's side closes.
async fn send_once(body: &Bytes, head_only: bool, in_place: bool) -> Sent {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = monoio::spawn(async move {
        let mut stream = TcpStream::connect_addr(addr).await.unwrap();
        let mut wire = Vec::new();
        loop {
            let (n, back) = stream.read(vec![0u8; 64 * 1024]).await;
            match n.unwrap() {
                0 => return wire,
                n => wire.extend_from_slice(&back[..n]),
            }
        }
    });
    let (mut stream, _) = listener.accept().await.unwrap();
    let mut res = Responder::new(&mut stream, BytesMut::new(), true, head_only, false);
    let fields = [("content-type", &b"application/json"[..])];
    let sent = match in_place {
        true => send_whole!(&mut res, 200, HeadFields::checked(&fields), body.clone()),
        false => res.send_fields(200, HeadFields::checked(&fields), body.clone()).await,
    };
    sent.unwrap();
    let (status, bytes_out) = (res.status(), res.bytes_out());
    let reusable = res.complete_and_reusable().await;
    assert!(
        res.send(200, &[], Bytes::new()).await.is_err(),
        "a second answer is refused"
    );
    drop(stream);
    Sent {
        wire: client.await,
        status,
        bytes_out,
        reusable,
    }
}

/// `send_whole!` (the relay's whole answers) puts the same bytes on the wire as
/// `send_fields` and leaves the responder in the same state: bodies coalesced behind the head
/// and bodies over `COALESCE_LIMIT` written apart, for GET and HEAD alike.
#[test]
fn send_whole_in_place_writes_what_send_fields_writes() {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        for len in [0, 277, COALESCE_LIMIT, COALESCE_LIMIT + 1, 300 * 1024] {
            let body = Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
            for head_only in [false, true] {
                let in_place = send_once(&body, head_only, true).await;
                let awaited = send_once(&body, head_only, false).await;
                assert_eq!(in_place, awaited, "{len} bytes, head only {head_only}");
                let sent_body = if head_only { 0 } else { len };
                assert!(in_place.wire.ends_with(&body[..sent_body]));
                assert_eq!(in_place.bytes_out, sent_body as u64);
                assert!(in_place.reusable && in_place.status == 200);
            }
        }
    });
}

/// A streamed answer does not keep the buffer a mid-sized request grew while lent (kept for a
/// whole answer, under `KEEP_LENT`): `lean_writes` frees it when it is over
/// `STREAM_WRITE_KEEP_BYTES` and empty, and keeps a small one; the stream's pieces still go
/// out.
#[test]
fn a_streamed_answer_drops_the_buffer_a_mid_sized_request_grew() {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect_addr(addr).await.unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut res = Responder::new(&mut stream, BytesMut::new(), true, false, false);
        res.lend().extend_from_slice(&vec![b'x'; STREAM_WRITE_KEEP_BYTES + 1]);
        assert!(res.out.capacity() > STREAM_WRITE_KEEP_BYTES, "kept when lent");
        res.lean_writes();
        assert_eq!(res.out.capacity(), 0, "freed for the stream");

        res.lend().extend_from_slice(&[b'x'; 512]);
        let small = res.out.capacity();
        res.lean_writes();
        assert_eq!(res.out.capacity(), small, "a small one is kept");

        res.start_held_fields(200, HeadFields::checked(&[]), None).unwrap();
        res.piece(b"data: a\n\n").await.unwrap();
        assert!(res.bytes_out() > 0);
    });
}
