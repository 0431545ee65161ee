//! Tests of `net` over real sockets: timed reads, a read timer re-armed for each read, reads
//! before a deadline written in place, the small read buffer's reclaim, and whole-buffer writes
//! that clear the buffer (split from `net.rs` to keep files small).

use std::time::{Duration, Instant};

use bytes::BytesMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

use super::{read_more_reserving_within, read_more_timed, reclaim_small, write_all_buf, ReadTimer};

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

/// One `ReadTimer` times read after read, each with its own limit: a later deadline is
/// kept (the earlier registration does not fire), an earlier one fires on time, and after
/// firing the timer is armed again for the next read.
#[test]
fn read_timer_is_rearmed_for_each_read() {
    run(async {
        let mut timer = ReadTimer::new();
        let (mut client, mut server) = pair().await;
        let mut buf = BytesMut::new();
        let (wrote, _) = server.write_all(b"a".to_vec()).await;
        wrote.expect("write");
        let n = read_more_timed(&mut client, &mut buf, 64, &mut timer, Duration::from_millis(100)).await;
        assert_eq!(n.expect("read"), 1);
        // Extended from 100 ms to 400 ms: data at ~200 ms is read, no timeout at 100 ms.
        let writer = monoio::spawn(async move {
            monoio::time::sleep(Duration::from_millis(200)).await;
            let (wrote, _) = server.write_all(b"bc".to_vec()).await;
            wrote.expect("write");
            server
        });
        let n = read_more_timed(&mut client, &mut buf, 64, &mut timer, Duration::from_millis(400)).await;
        assert_eq!(n.expect("read after the first deadline"), 2);
        assert_eq!(&buf[..], b"abc");
        let _server = writer.await;
        // Shortened from the armed deadline: fires at 50 ms, not later.
        let started = Instant::now();
        let silent = read_more_timed(&mut client, &mut buf, 64, &mut timer, Duration::from_millis(50)).await;
        assert_eq!(silent.expect_err("timed out").kind(), std::io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(50) && waited < Duration::from_millis(350),
            "{waited:?}"
        );
        // Fired, then armed again: waits for its own limit.
        let (mut client, _server) = pair().await;
        let started = Instant::now();
        let silent = read_more_timed(&mut client, &mut buf, 64, &mut timer, Duration::from_millis(80)).await;
        assert_eq!(silent.expect_err("timed out").kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(80));
    });
}

/// An empty buffer is rewound in place only when it is the last handle on its allocation
/// and that allocation is small; a large or still shared one is refused.
#[test]
fn reclaim_small_keeps_only_small_unshared_buffers() {
    let mut buf = BytesMut::with_capacity(1024);
    buf.extend_from_slice(&[7u8; 300]);
    let request = buf.split_to(300).freeze();
    assert!(
        !reclaim_small(&mut buf, 1024),
        "the request still shares the allocation"
    );
    drop(request);
    assert!(reclaim_small(&mut buf, 1024));
    assert_eq!(buf.capacity(), 1024);
    let at = buf.as_ptr();
    buf.reserve(1024);
    assert_eq!(buf.as_ptr(), at, "the next read reuses it without allocating");

    let mut big = BytesMut::with_capacity(64 * 1024);
    big.extend_from_slice(&vec![1u8; 64 * 1024 - 100]);
    drop(big.split_to(64 * 1024 - 100));
    assert!(!reclaim_small(&mut big, 1024), "a large allocation is never kept");

    let mut fresh = BytesMut::new();
    assert!(!reclaim_small(&mut fresh, 1024));
    let mut held = BytesMut::from(&b"pipelined"[..]);
    assert!(!reclaim_small(&mut held, 1024), "a buffer with bytes is not rewound");
}

/// `read_before!` (the request path's reads, written out in place) appends what arrives
/// and times out on a silent peer no earlier than its deadline, the buffer gone with the
/// read; its deadline stays armed, and the next read re-arms it.
#[test]
fn read_before_in_place_appends_or_times_out() {
    run(async {
        let (mut client, mut server) = pair().await;
        let mut timer = ReadTimer::new();
        let mut buf = BytesMut::from(&b"held:"[..]);
        let (wrote, _) = server.write_all(b"hello".to_vec()).await;
        wrote.expect("write");
        let n = super::read_before!(&mut client, &mut buf, 64, timer.arm(Duration::from_secs(5)));
        assert_eq!(n.expect("read"), 5);
        assert_eq!(&buf[..], b"held:hello");
        let started = Instant::now();
        let silent = super::read_before!(&mut client, &mut buf, 64, timer.arm(Duration::from_millis(50)));
        assert_eq!(silent.expect_err("timed out").kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(buf.is_empty(), "the buffer went with the timed-out read");
        drop(server);
        let closed = super::read_before!(&mut client, &mut buf, 64, timer.arm(Duration::from_secs(5)));
        assert_eq!(closed.expect("a clean close"), 0);
    });
}

/// `write_all_buf` hands the buffer back cleared (its capacity kept) when the write fails
/// too, and writes nothing for an empty buffer.
#[test]
fn write_all_buf_clears_on_failure_and_skips_an_empty_buffer() {
    run(async {
        let (mut client, server) = pair().await;
        let mut buf = BytesMut::with_capacity(64);
        write_all_buf(&mut client, &mut buf).await.expect("nothing to write");
        assert_eq!(buf.capacity(), 64);
        drop(server);
        let mut failed = None;
        // The peer's reset reaches the socket after a write or two.
        for _ in 0..100 {
            buf.extend_from_slice(&[b'x'; 64]);
            let capacity = buf.capacity();
            if let Err(e) = write_all_buf(&mut client, &mut buf).await {
                failed = Some(e);
            }
            assert!(buf.is_empty() && buf.capacity() == capacity);
            if failed.is_some() {
                break;
            }
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(failed.is_some(), "writing to a closed peer fails");
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
