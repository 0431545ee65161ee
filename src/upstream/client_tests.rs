//! Tests of `client`: release, pooled checkout, shelves and the round trip.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

use super::super::connect::Stream;
use super::super::{Io, Pool, PoolKey};
use super::{Exchange, ReadTimer, READ_BUFFER_BYTES};
use crate::config::Scheme;

pub(super) const SECOND: Duration = Duration::from_secs(1);

/// Runs `test` on a fresh runtime with a pool of 4 and a key of its own.
pub(super) fn on_a_pool<F: std::future::Future<Output = ()>>(test: impl FnOnce(Rc<Pool>, PoolKey) -> F) {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let pool = Rc::new(Pool::new(4, Duration::from_secs(60)));
        let key = PoolKey::new(Scheme::Http, Arc::from("127.0.0.1"), 1, 0);
        test(pool, key).await;
    });
}

/// An exchange over a fresh loopback connection, and the upstream's end of it.
pub(super) async fn exchange(pool: &Rc<Pool>, key: &PoolKey) -> (Exchange, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect_addr(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    let io = Box::new(Io::new(Stream::Plain(client)));
    (
        Exchange::new(io, ReadTimer::new(), false, Rc::downgrade(pool), pool.shelf(key)),
        server,
    )
}

/// Sends a request and has `upstream` answer it with `answer`; returns the body read.
async fn answered(exchange: &mut Exchange, upstream: &mut TcpStream, answer: &'static [u8]) -> Bytes {
    head_answered(exchange, upstream, answer).await;
    exchange.read_to_end(SECOND, 1024).await.expect("body")
}

/// `answered` up to the answer's head.
pub(super) async fn head_answered(exchange: &mut Exchange, upstream: &mut TcpStream, answer: &'static [u8]) {
    let mut head = BytesMut::from(&b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"[..]);
    let no_body = Bytes::new();
    let upstream_side = async {
        let (read, _) = upstream.read(Vec::with_capacity(1024)).await;
        assert!(read.expect("request read") > 0);
        let (written, _) = upstream.write_all(answer).await;
        written.expect("answer written");
    };
    let (trip, ()) = monoio::join!(exchange.round_trip(&mut head, &no_body, SECOND, false), upstream_side);
    trip.expect("head");
    assert!(head.is_empty(), "the lent buffer comes back empty");
}

/// `answered` with a body that arrives in one piece: that piece as read, in the exchange's
/// buffer.
async fn answered_in_place(exchange: &mut Exchange, upstream: &mut TcpStream, answer: &'static [u8]) -> Bytes {
    head_answered(exchange, upstream, answer).await;
    let piece = exchange.next_piece(SECOND).await.expect("body").expect("a piece");
    assert!(exchange.body_done(), "in one piece");
    piece
}

/// `release` (by `&mut`, so an answer's exchange can stay where it is while the relay
/// borrows it) hands a clean connection to the pool at once and only once, spends the
/// exchange, and closes a connection whose answer was not read to its end.
#[test]
fn release_by_reference_pools_a_clean_connection_once_and_spends_the_exchange() {
    on_a_pool(|pool, key| async move {
        let (mut clean, mut upstream) = exchange(&pool, &key).await;
        let body = answered(
            &mut clean,
            &mut upstream,
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        )
        .await;
        assert_eq!(&body[..], b"ok");
        clean.release();
        assert_eq!(pool.idle_count(), 1, "pooled at release, before the exchange drops");
        clean.release();
        assert_eq!(pool.idle_count(), 1, "a second release pools nothing");
        let mut lent = BytesMut::from(&b"x"[..]);
        let refused = clean.round_trip(&mut lent, &Bytes::new(), SECOND, false).await;
        assert!(refused.is_err(), "a released exchange writes nothing");
        assert!(lent.is_empty(), "and its lent buffer comes back empty");
        drop(clean);
        assert_eq!(
            pool.idle_count(),
            1,
            "the drop of a released exchange leaves the pool alone"
        );

        let (mut unread, mut upstream) = exchange(&pool, &key).await;
        let mut head = BytesMut::from(&b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"[..]);
        let no_body = Bytes::new();
        let upstream_side = async {
            let (read, _) = upstream.read(Vec::with_capacity(1024)).await;
            assert!(read.expect("request read") > 0);
            let (written, _) = upstream
                .write_all(&b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab"[..])
                .await;
            written.expect("answer written");
        };
        let (trip, ()) = monoio::join!(unread.round_trip(&mut head, &no_body, SECOND, false), upstream_side);
        trip.expect("head");
        unread.release();
        assert_eq!(pool.idle_count(), 1, "a body not read to its end is never pooled");
    });
}

/// `pooled` (the request path's checkout without a future) hands out a released connection
/// as reused, once, and finds nothing in an empty pool or under another key.
#[test]
fn pooled_hands_out_a_released_connection_once_and_marks_it_reused() {
    on_a_pool(|pool, key| async move {
        let other = PoolKey::new(Scheme::Http, Arc::from("127.0.0.1"), 2, 0);
        assert!(super::super::pooled(&pool, &key).is_none(), "an empty pool has nothing");
        let (mut clean, mut upstream) = exchange(&pool, &key).await;
        answered(
            &mut clean,
            &mut upstream,
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        )
        .await;
        assert!(!clean.reused, "a fresh connection is not reused");
        clean.release();
        assert!(
            super::super::pooled(&pool, &other).is_none(),
            "another key finds nothing"
        );
        let again = super::super::pooled(&pool, &key).expect("the released connection");
        assert!(again.reused, "a pooled connection is marked reused");
        assert_eq!(pool.idle_count(), 0, "taken out of the pool");
        assert!(super::super::pooled(&pool, &key).is_none(), "handed out once");
    });
}

/// An exchange holds its key's shelf from connect to release: a reap meanwhile (which drops
/// empty shelves) keeps it, so the release still pools the connection where the next
/// checkout finds it.
#[test]
fn a_reap_keeps_the_shelf_an_exchange_will_release_to() {
    on_a_pool(|pool, key| async move {
        let (mut exchange, mut upstream) = exchange(&pool, &key).await;
        pool.reap();
        answered(
            &mut exchange,
            &mut upstream,
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        )
        .await;
        exchange.release();
        assert_eq!(pool.idle_count(), 1, "pooled on the shelf the reap kept");
        assert!(super::super::pooled(&pool, &key).is_some(), "and found there by key");
    });
}

/// `round_trip` sends a body over `COALESCE_BODY_BYTES` apart from its head, whole and in
/// order, and reads a head that arrives in two pieces; the lent buffer comes back empty.
#[test]
fn round_trip_sends_a_large_body_apart_and_reads_a_head_in_pieces() {
    on_a_pool(|pool, key| async move {
        let (mut exchange, mut upstream) = exchange(&pool, &key).await;
        let head = b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 100000\r\n\r\n";
        let body: Bytes = (0..100_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
        assert!(body.len() > super::COALESCE_BODY_BYTES);
        let mut out = BytesMut::from(&head[..]);
        let expected = [&head[..], &body[..]].concat();
        let upstream_side = async {
            let mut got = Vec::new();
            while got.len() < expected.len() {
                let (n, back) = upstream.read(vec![0u8; 64 * 1024]).await;
                let n = n.expect("request read");
                assert!(n > 0, "closed early");
                got.extend_from_slice(&back[..n]);
            }
            assert!(got == expected, "head then body, whole and in order");
            let (written, _) = upstream.write_all(&b"HTTP/1.1 200 OK\r\ncontent-"[..]).await;
            written.expect("first piece");
            monoio::time::sleep(Duration::from_millis(20)).await;
            let (written, _) = upstream.write_all(&b"length: 2\r\n\r\nok"[..]).await;
            written.expect("second piece");
        };
        let (trip, ()) = monoio::join!(exchange.round_trip(&mut out, &body, SECOND, false), upstream_side);
        assert_eq!(trip.expect("head").status, 200);
        assert!(out.is_empty(), "the lent buffer comes back empty");
        let answer = exchange.read_to_end(SECOND, 1024).await.expect("body");
        assert_eq!(&answer[..], b"ok");
        exchange.release();
        assert_eq!(pool.idle_count(), 1, "a clean round trip pools its connection");
    });
}

/// `round_trip`'s waits for the head: an upstream that never answers is a first-byte timeout
/// no earlier than its limit, one that closes first is `ClosedBeforeHead` (which a reused
/// connection retries).
#[test]
fn round_trip_times_out_or_sees_a_close_before_the_head() {
    use super::super::UpstreamErrorKind;
    on_a_pool(|pool, key| async move {
        let (mut silent, _upstream) = exchange(&pool, &key).await;
        let mut out = BytesMut::from(&b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"[..]);
        let started = std::time::Instant::now();
        let limit = Duration::from_millis(60);
        let error = silent
            .round_trip(&mut out, &Bytes::new(), limit, false)
            .await
            .expect_err("no answer");
        assert_eq!(error.kind, UpstreamErrorKind::FirstByteTimeout);
        assert!(started.elapsed() >= limit, "not before its limit");
        assert!(out.is_empty());

        let (mut closed, upstream) = exchange(&pool, &key).await;
        drop(upstream);
        let mut out = BytesMut::from(&b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"[..]);
        let error = closed
            .round_trip(&mut out, &Bytes::new(), SECOND, false)
            .await
            .expect_err("closed");
        assert!(
            matches!(
                error.kind,
                UpstreamErrorKind::ClosedBeforeHead | UpstreamErrorKind::Send
            ),
            "{error:?}"
        );
        assert!(error.before_response());
    });
}

/// A connector for loopback upstreams (IP literals resolve without the control thread).
fn loopback_connector() -> super::super::Connector {
    let tls = super::super::tls::client_config(None).expect("tls config");
    super::super::Connector::new(
        Arc::new(super::super::dns::Resolver::default()),
        tls,
        0,
        std::iter::empty(),
    )
}

/// `send_pooled` builds the head before it takes a connection (a refused head opens none and
/// comes back as `Encode`), takes an idle pooled connection when there is one (reused), and
/// hands back the exchange with the answer's head and the lent buffer empty.
#[test]
fn send_pooled_builds_first_then_takes_a_pooled_connection() {
    use super::super::{send_pooled, Trip, UpstreamErrorKind};
    on_a_pool(|pool, _| async move {
        let connector = loopback_connector();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let key = PoolKey::new(Scheme::Http, Arc::from("127.0.0.1"), port, 0);
        let trip = || Trip {
            pool: &pool,
            connector: &connector,
            key: std::borrow::Cow::Borrowed(&key),
            connect_timeout: SECOND,
            first_byte_timeout: SECOND,
            head_request: false,
        };
        let mut out = BytesMut::new();
        let refused = send_pooled(
            trip(),
            &mut out,
            Bytes::new(),
            |_: &mut BytesMut| Err(super::UpstreamError::new(UpstreamErrorKind::Encode, "refused")),
            |_, _| panic!("nothing was sent"),
        )
        .await;
        assert_eq!(refused.err().map(|e| e.kind), Some(UpstreamErrorKind::Encode));

        let request = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
        let build = |out: &mut BytesMut| {
            out.extend_from_slice(request);
            Ok(())
        };
        let mut upstream = None;
        let no_body = Bytes::new();
        for round in 0..2 {
            let upstream_side = async {
                if upstream.is_none() {
                    upstream = Some(listener.accept().await.expect("accept").0);
                }
                let stream = upstream.as_mut().expect("upstream");
                let (read, _) = stream.read(Vec::with_capacity(1024)).await;
                assert!(read.expect("request read") > 0);
                let (written, _) = stream
                    .write_all(&b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"[..])
                    .await;
                written.expect("answer written");
            };
            let mut landed = None;
            let land = |exchange, head| landed = Some((exchange, head));
            let (sent, ()) = monoio::join!(
                send_pooled(trip(), &mut out, no_body.clone(), build, land),
                upstream_side
            );
            sent.expect("answered");
            let (mut exchange, head): (Exchange, _) = landed.expect("landed");
            assert_eq!(head.status, 200);
            assert!(out.is_empty(), "the lent buffer comes back empty");
            assert_eq!(exchange.reused, round == 1, "the second round takes the pooled one");
            assert_eq!(&exchange.read_to_end(SECOND, 1024).await.expect("body")[..], b"ok");
            exchange.release();
            assert_eq!(pool.idle_count(), 1);
        }
    });
}

/// A connection keeps its read buffer in the pool: the next exchange on it reads on from the
/// end of the last answer, in the same allocation, while that answer's body still lives; once
/// the bodies are gone the buffer is rewound in place when its free end runs short; and one
/// that grew for a large head is freed at release, not kept.
#[test]
fn a_pooled_connection_reads_on_in_its_own_buffer() {
    on_a_pool(|pool, key| async move {
        const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let (mut first, mut upstream) = exchange(&pool, &key).await;
        let body = answered_in_place(&mut first, &mut upstream, ANSWER).await;
        first.release();
        let mut next = super::super::pooled(&pool, &key).expect("pooled");
        assert_eq!(
            next.buf.as_ptr(),
            body.as_ptr().wrapping_add(body.len()),
            "read on right after the last answer, which still lives"
        );
        assert_eq!(next.buf.capacity(), READ_BUFFER_BYTES - ANSWER.len());
        let first_at = body.as_ptr();
        drop(body);
        // About 8 KiB of answers: the free end runs short and the buffer, no longer shared,
        // is rewound: an answer lands where the first one did.
        let mut rewound = false;
        for _ in 0..READ_BUFFER_BYTES / ANSWER.len() + 2 {
            let body = answered_in_place(&mut next, &mut upstream, ANSWER).await;
            assert_eq!(&body[..], b"ok");
            rewound |= body.as_ptr() == first_at;
            next.release();
            next = super::super::pooled(&pool, &key).expect("pooled");
        }
        assert!(rewound, "rewound in place once the answers were gone");

        let mut large = b"HTTP/1.1 200 OK\r\nx-large: ".to_vec();
        large.extend(std::iter::repeat_n(b'a', READ_BUFFER_BYTES + 100));
        large.extend_from_slice(b"\r\ncontent-length: 2\r\n\r\nok");
        let large: &'static [u8] = large.leak();
        assert_eq!(&answered(&mut next, &mut upstream, large).await[..], b"ok");
        assert!(next.not_kept, "the buffer grew for the head");
        next.release();
        let again = super::super::pooled(&pool, &key).expect("pooled");
        assert_eq!(
            again.buf.capacity(),
            READ_BUFFER_BYTES,
            "a grown buffer is freed: a new one of the usual size"
        );
    });
}

/// `buffered_body` takes a sized body the head's read brought along whole, as `next_piece`
/// would (the body is done and the connection pools clean); it takes nothing from a body
/// that is not all here yet, that is not shorter than its bound, or that is chunked, which
/// `next_piece` then reads as before.
#[test]
fn buffered_body_takes_only_a_sized_body_all_here() {
    on_a_pool(|pool, key| async move {
        const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        let (mut whole, mut upstream) = exchange(&pool, &key).await;
        head_answered(&mut whole, &mut upstream, ANSWER).await;
        assert!(whole.buffered_body(5).is_none(), "not shorter than the bound");
        assert_eq!(whole.buffered_body(6).as_deref(), Some(&b"hello"[..]));
        assert!(whole.body_done() && whole.reusable(), "done, nothing left over");
        assert!(whole.buffered_body(6).is_none(), "taken once");
        whole.release();
        assert_eq!(pool.idle_count(), 1, "pooled clean");

        let mut next = super::super::pooled(&pool, &key).expect("pooled");
        head_answered(
            &mut next,
            &mut upstream,
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhe",
        )
        .await;
        assert!(next.buffered_body(1024).is_none(), "two bytes of five");
        let (written, _) = upstream.write_all(&b"llo"[..]).await;
        written.expect("rest written");
        assert_eq!(&next.read_to_end(SECOND, 1024).await.expect("body")[..], b"hello");
        next.release();

        let mut chunked = super::super::pooled(&pool, &key).expect("pooled");
        const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        head_answered(&mut chunked, &mut upstream, CHUNKED).await;
        assert!(chunked.buffered_body(1024).is_none(), "chunked");
        assert_eq!(&chunked.read_to_end(SECOND, 1024).await.expect("body")[..], b"hello");
    });
}

/// A checkout finds its key's connections whichever key the one before it asked for (the
/// shelf it looked up last is kept only as a shortcut), and a reap still drops every empty
/// shelf no exchange holds, the last one looked up too.
#[test]
fn checkouts_find_each_keys_shelf_and_a_reap_drops_the_last_one_looked_up() {
    on_a_pool(|pool, key| async move {
        const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let other = PoolKey::new(Scheme::Http, Arc::from("127.0.0.1"), 2, 0);
        let (mut a, mut upstream_a) = exchange(&pool, &key).await;
        let (mut b, mut upstream_b) = exchange(&pool, &other).await;
        answered(&mut a, &mut upstream_a, ANSWER).await;
        answered(&mut b, &mut upstream_b, ANSWER).await;
        a.release();
        b.release();
        assert_eq!(pool.idle_count(), 2);
        for _ in 0..3 {
            for (k, upstream) in [(&key, &mut upstream_a), (&other, &mut upstream_b)] {
                let mut again = super::super::pooled(&pool, k).expect("this key's connection");
                assert!(super::super::pooled(&pool, k).is_none(), "handed out once");
                answered(&mut again, upstream, ANSWER).await;
                again.release();
            }
        }
        let mut twice = super::super::pooled(&pool, &other).expect("pooled");
        answered(&mut twice, &mut upstream_b, ANSWER).await;
        twice.release();
        assert!(super::super::pooled(&pool, &other).is_some(), "asked twice in a row");
        assert!(super::super::pooled(&pool, &key).is_some());
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(pool.shelves(), 2);
        // The spent exchanges still hold their shelves.
        drop((a, b, twice));
        pool.reap();
        assert_eq!(pool.shelves(), 0, "empty shelves nobody holds are dropped");
        assert!(super::super::pooled(&pool, &other).is_none());
    });
}

/// A chunked body's pieces are gathered into one buffer the exchange keeps: once the relay
/// dropped a piece, the next is gathered at the same address (no allocation per streamed
/// event), and a piece still held is never written over.
#[test]
fn chunked_pieces_reuse_one_buffer_once_dropped_and_never_overwrite_a_held_one() {
    on_a_pool(|pool, key| async move {
        const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        let (mut exchange, mut upstream) = exchange(&pool, &key).await;
        head_answered(&mut exchange, &mut upstream, HEAD).await;
        let mut next = async |chunk: &'static [u8]| {
            let (written, _) = upstream.write_all(chunk).await;
            written.expect("chunk written");
            exchange.next_piece(SECOND).await.expect("body").expect("a piece")
        };
        let first = next(b"8\r\ndata: a\n\r\n").await;
        let address = first.as_ptr();
        drop(first);
        // Takes the block a freed buffer would leave, so a new allocation could not land there.
        let occupant = Vec::<u8>::with_capacity(64);
        let second = next(b"8\r\ndata: b\n\r\n").await;
        assert_eq!((&second[..], second.as_ptr()), (&b"data: b\n"[..], address));
        let third = next(b"8\r\ndata: c\n\r\n").await;
        assert_eq!((&second[..], &third[..]), (&b"data: b\n"[..], &b"data: c\n"[..]));
        assert_ne!(third.as_ptr(), second.as_ptr());
        drop(occupant);
    });
}
