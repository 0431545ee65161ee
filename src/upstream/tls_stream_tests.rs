//! `TlsStream` against a blocking rustls server on a real loopback socket, with a certificate
//! of a CA made for the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::sync::Arc;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use super::tls_stream::TlsStream;

/// A server config for `localhost` signed by a fresh CA, and a client config trusting that CA.
fn configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    configs_of(rustls::DEFAULT_VERSIONS)
}

/// `configs`, the server speaking only `versions`.
fn configs_of(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.der().to_vec())).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// Byte `i` of a test message.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// How the test server ends its side once it has answered.
#[derive(Clone, Copy)]
enum Ending {
    CloseNotify,
    TcpOnly,
    /// `close_notify`, then bytes that are no record, in the same write.
    CloseNotifyThenJunk,
}

type ServerStream = rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream>;

/// A one-connection server on a thread of its own, running `script` over the TLS stream it
/// accepts. Returns its address.
fn serve_with(
    config: Arc<rustls::ServerConfig>,
    script: impl FnOnce(&mut ServerStream) + Send + 'static,
) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let mut tls = rustls::StreamOwned::new(rustls::ServerConnection::new(config).unwrap(), tcp);
        script(&mut tls);
    });
    addr
}

/// A `TlsStream` to `addr`, handshake done, its server named `localhost`.
async fn connect(client: Arc<rustls::ClientConfig>, addr: std::net::SocketAddr) -> TlsStream {
    handshake(client, addr).await.unwrap()
}

/// The handshake with `addr` as `TlsStream::connect` ends it.
async fn handshake(client: Arc<rustls::ClientConfig>, addr: std::net::SocketAddr) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect_addr(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let session = rustls::client::UnbufferedClientConnection::new(client, name).unwrap();
    TlsStream::connect(tcp, session).await
}

/// A one-connection server: reads `request` bytes, checks them, writes `answer` bytes, ends
/// as `ending` says. Returns its address.
fn serve_once(
    config: Arc<rustls::ServerConfig>,
    request: usize,
    answer: usize,
    ending: Ending,
) -> std::net::SocketAddr {
    serve_with(config, move |tls| {
        let mut got = vec![0u8; request];
        tls.read_exact(&mut got).unwrap();
        assert_eq!(got, pattern(request, 1), "the request arrived intact");
        tls.write_all(&pattern(answer, 2)).unwrap();
        tls.flush().unwrap();
        match ending {
            Ending::CloseNotify => tls.conn.send_close_notify(),
            Ending::TcpOnly => {}
            Ending::CloseNotifyThenJunk => {
                tls.conn.send_close_notify();
                let mut wire = Vec::new();
                tls.conn.write_tls(&mut wire).unwrap();
                wire.extend_from_slice(&[b'j'; 8000]);
                tls.sock.write_all(&wire).unwrap();
            }
        }
        tls.flush().unwrap();
        // Dropped when the script ends: the TCP connection closes.
    })
}

/// Connects, sends `request` bytes, then reads with `room` bytes a read until the stream
/// ends: what was read, and how it ended.
async fn exchange(
    client: Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
    request: usize,
    room: usize,
) -> (Vec<u8>, std::io::Result<usize>) {
    let mut stream = connect(client, addr).await;
    let (written, _) = stream.write_all(pattern(request, 1)).await;
    written.unwrap();
    let mut answer = Vec::new();
    loop {
        let (read, buf) = stream.read(Vec::with_capacity(room)).await;
        match read {
            Ok(0) => return (answer, Ok(0)),
            Ok(n) => {
                assert!(n <= room);
                answer.extend_from_slice(&buf);
            }
            Err(e) => return (answer, Err(e)),
        }
    }
}

fn on_monoio<F: std::future::Future<Output = ()>>(test: F) {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
        .block_on(test);
}

/// Runs the test `make` builds on io_uring (the fusion driver takes it where the kernel has
/// it, as here) and again on the legacy epoll driver, rotor's fallback.
fn on_each_driver<F: std::future::Future<Output = ()>>(make: impl Fn() -> F) {
    on_monoio(make());
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
        .block_on(make());
}

/// A request several records long goes out whole (a record's worth a write), and an answer
/// several records long comes back whole and in order through reads far smaller than a record
/// (what rustls decrypted and the caller had no room for waits in the session); a clean close
/// reads as the end (`Ok(0)`). On io_uring and on the legacy driver.
#[test]
fn long_messages_pass_whole_through_small_reads_and_a_clean_close_ends_them() {
    let (server, client) = configs();
    // 700 bytes: below a read's least, so ciphertext goes through the stream's own buffer;
    // 2 KiB and 8 KiB (a stream's and an exchange's reads): decrypted in the caller's buffer,
    // each 16 KiB record arriving over several reads.
    for room in [700, 2048, 8192] {
        on_each_driver(|| {
            let (server, client) = (server.clone(), client.clone());
            async move {
                let addr = serve_once(server, 100_000, 70_000, Ending::CloseNotify);
                let (answer, end) = exchange(client, addr, 100_000, room).await;
                assert_eq!(answer.len(), 70_000, "room {room}");
                assert!(
                    answer == pattern(70_000, 2),
                    "the answer arrived intact and in order (room {room})"
                );
                assert_eq!(end.unwrap(), 0);
            }
        });
    }
}

/// An event stream: many short records, each written on its own or several at once, read
/// with a stream's 2 KiB (several records decrypted in place by one read), into a `Vec` and a
/// `BytesMut` in turn, on io_uring and on the legacy driver. Every event arrives in order, and
/// once all are read the stream holds no buffer while the peer is silent.
#[test]
fn short_records_are_read_in_place_and_nothing_is_held_after() {
    on_each_driver(|| {
        let (server, client) = configs();
        let events: Vec<Vec<u8>> = (0..300).map(|i| pattern(40 + (i * 37) % 400, i as u8)).collect();
        let expected: Vec<u8> = events.concat();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let addr = serve_with(server, move |tls| {
            let mut request = [0u8; 10];
            tls.read_exact(&mut request).unwrap();
            for (i, event) in events.iter().enumerate() {
                tls.write_all(event).unwrap();
                if i % 3 != 0 {
                    tls.flush().unwrap();
                }
            }
            tls.flush().unwrap();
            let _ = wait.recv();
        });
        async move {
            let mut stream = connect(client, addr).await;
            stream.write_all(pattern(10, 1)).await.0.unwrap();
            // Every other read into a `BytesMut`, whose init only ever grows: its length must
            // come out as the plaintext's, not the ciphertext's read into it.
            let mut answer = Vec::new();
            for i in 0.. {
                if answer.len() >= expected.len() {
                    break;
                }
                let (read, bytes) = if i % 2 == 0 {
                    stream.read(Vec::with_capacity(2048)).await
                } else {
                    let (read, buf) = stream.read(bytes::BytesMut::with_capacity(2048)).await;
                    (read, buf.to_vec())
                };
                let n = read.unwrap();
                assert!(
                    n > 0 && n == bytes.len(),
                    "the events go on: read {n}, {} bytes",
                    bytes.len()
                );
                answer.extend_from_slice(&bytes);
            }
            assert!(answer == expected, "every event, in order");
            assert_eq!(stream.held_bytes(), 0, "nothing is held once every event is read");
            assert!(stream.nothing_buffered());
            done.send(()).unwrap();
        }
    });
}

/// Bytes after the peer's `close_notify`, arriving with it, are not read: the stream ends
/// cleanly (rustls takes nothing after a close, so a read that kept offering them would spin
/// for ever: the client runs on a thread of its own, waited for with a deadline).
#[test]
fn bytes_after_a_close_notify_are_dropped() {
    let (server, client) = configs();
    let (ended, end) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        on_monoio(async move {
            let addr = serve_once(server, 10, 3_000, Ending::CloseNotifyThenJunk);
            let _ = ended.send(exchange(client, addr, 10, 8192).await);
        })
    });
    let (answer, end) = end
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the stream ended");
    assert!(answer == pattern(3_000, 2));
    assert_eq!(end.unwrap(), 0);
}

/// A peer that closes TCP without `close_notify` after its answer: the answer is read whole,
/// then the read fails as an unexpected end (a truncation rotor must not take for an end).
#[test]
fn a_close_without_close_notify_is_an_unexpected_end() {
    let (server, client) = configs();
    on_monoio(async move {
        let addr = serve_once(server, 10, 20_000, Ending::TcpOnly);
        let (answer, end) = exchange(client, addr, 10, 8192).await;
        assert!(answer == pattern(20_000, 2));
        assert_eq!(end.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
    });
}

/// Check-in's probe: plaintext left in the session (a read with less room than arrived) is
/// "something buffered"; once it is read, nothing is. No IO either way: the probe answers at
/// once on a connection whose peer is still open and silent.
#[test]
fn the_probe_sees_plaintext_left_in_the_session() {
    let (server, client) = configs();
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let addr = serve_with(server, move |tls| {
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).unwrap();
        tls.write_all(b"0123456789").unwrap();
        tls.flush().unwrap();
        let _ = wait.recv();
    });
    on_monoio(async move {
        let mut stream = connect(client, addr).await;
        let (written, _) = stream.write_all(b"x".to_vec()).await;
        written.unwrap();
        assert_eq!(stream.held_bytes(), 0, "nothing is held once the request is out");
        let (read, first) = stream.read(Vec::with_capacity(4)).await;
        assert_eq!(read.unwrap(), 4);
        assert_eq!(first, b"0123");
        assert!(!stream.nothing_buffered(), "six bytes are still in the session");
        assert!(
            (6..=64).contains(&stream.held_bytes()),
            "the six bytes are kept, no more"
        );
        let (read, rest) = stream.read(Vec::with_capacity(64)).await;
        assert_eq!(read.unwrap(), 6);
        assert_eq!(rest, b"456789");
        assert!(stream.nothing_buffered());
        assert_eq!(stream.held_bytes(), 0, "every buffer is let go of once read");
        done.send(()).unwrap();
    });
}

/// A server that speaks only TLS 1.2: the same exchange, whole and in order.
#[test]
fn a_tls12_server_is_spoken_to() {
    let (server, client) = configs_of(&[&rustls::version::TLS12]);
    on_monoio(async move {
        let addr = serve_once(server, 5_000, 30_000, Ending::CloseNotify);
        let (answer, end) = exchange(client, addr, 5_000, 2048).await;
        assert!(answer == pattern(30_000, 2), "the answer arrived intact and in order");
        assert_eq!(end.unwrap(), 0);
    });
}

/// The server rolls its keys in the middle of an answer (a TLS 1.3 `KeyUpdate` asking for the
/// client's in return): the answer reads on whole, and the next request and answer pass.
#[test]
fn a_key_update_mid_answer_is_followed() {
    let (server, client) = configs();
    let addr = serve_with(server, move |tls| {
        let mut request = [0u8; 10];
        tls.read_exact(&mut request).unwrap();
        tls.write_all(&pattern(5_000, 2)).unwrap();
        tls.conn.refresh_traffic_keys().unwrap();
        tls.write_all(&pattern(5_000, 3)).unwrap();
        tls.flush().unwrap();
        tls.read_exact(&mut request).unwrap();
        assert_eq!(
            request.as_slice(),
            pattern(10, 4),
            "the second request, under the client's new keys"
        );
        tls.write_all(b"done").unwrap();
        tls.conn.send_close_notify();
        tls.flush().unwrap();
    });
    on_monoio(async move {
        let mut stream = connect(client, addr).await;
        stream.write_all(pattern(10, 1)).await.0.unwrap();
        let mut answer = Vec::new();
        while answer.len() < 10_000 {
            let (read, buf) = stream.read(Vec::with_capacity(2048)).await;
            assert!(read.unwrap() > 0, "the answer goes on");
            answer.extend_from_slice(&buf);
        }
        assert!(answer[..5_000] == pattern(5_000, 2) && answer[5_000..] == pattern(5_000, 3));
        stream.write_all(pattern(10, 4)).await.0.unwrap();
        let (read, done) = stream.read(Vec::with_capacity(64)).await;
        assert_eq!(read.unwrap(), 4);
        assert_eq!(done, b"done");
        assert_eq!(stream.read(Vec::with_capacity(64)).await.0.unwrap(), 0);
    });
}

/// A peer that sends one handshake message a byte a record (each record valid, the message
/// claiming 65,520 bytes) never makes the stream keep more than its bound of ciphertext
/// waiting for the message's end: the handshake fails with the bound's error (without the
/// bound it would read all 360,000 bytes and fail on the peer's close instead). On io_uring
/// and on the legacy driver.
#[test]
fn a_handshake_message_dribbled_a_byte_a_record_fails_at_the_bound() {
    const RECORDS: usize = 60_000;
    on_each_driver(|| async {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut tcp, _) = listener.accept().unwrap();
            let mut hello = [0u8; 4096];
            let _ = tcp.read(&mut hello).unwrap();
            // A ServerHello header claiming 0xfff0 bytes, then the body a byte a record.
            tcp.write_all(&[0x16, 0x03, 0x03, 0x00, 0x04, 0x02, 0x00, 0xff, 0xf0])
                .unwrap();
            let batch: Vec<u8> = [0x16, 0x03, 0x03, 0x00, 0x01, 0x00].repeat(1000);
            for _ in 0..RECORDS / 1000 {
                if tcp.write_all(&batch).is_err() {
                    break;
                }
            }
        });
        let Err(error) = handshake(configs().1, addr).await else {
            panic!("a handshake message that never ends cannot complete a handshake");
        };
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("no complete message"), "{error}");
        server.join().unwrap();
    });
}
