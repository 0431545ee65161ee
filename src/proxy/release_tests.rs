//! What a streamed request lets go of: the whole request path in one thread (a `Core`, its
//! answer written to a real loopback socket) against a hand-driven upstream, so the test can
//! look at the client's body while the stream is open.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

use super::Core;
use crate::config::{parse_str, ConfigSource};
use crate::gateway::Gateway;
use crate::server::{HeldBody, Request, Responder, Service};

fn config(upstream_port: u16) -> crate::config::Config {
    let text = format!(
        "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{upstream_port}/v1\"\nkeys = [\"sk-p-0001\"]\nmodels = [\"m\"]\n"
    );
    parse_str(&text, ConfigSource::Environment).unwrap()
}

fn request(body: Bytes) -> Request {
    use crate::codec::head::{parse_request_head, HeadLimits};
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut buf = BytesMut::from(raw.as_str());
    Request {
        head: parse_request_head(&mut buf, &HeadLimits::default()).unwrap().unwrap(),
        body: HeldBody::new(body),
        peer: SocketAddr::from(([127, 0, 0, 1], 1)),
        received_at: crate::health::clock::read(),
    }
}

/// Reads from `stream` into `seen` until `seen` holds `needle`.
async fn read_until(stream: &mut TcpStream, seen: &mut Vec<u8>, needle: &[u8]) {
    while !seen.windows(needle.len()).any(|w| w == needle) {
        let (read, buf) = stream.read(Vec::with_capacity(16 * 1024)).await;
        assert!(read.unwrap() > 0, "closed before {:?}", String::from_utf8_lossy(needle));
        seen.extend_from_slice(&buf);
    }
}

/// One SSE event as an HTTP chunk.
fn event_chunk(data: &str) -> String {
    let event = format!("data: {data}\n\n");
    format!("{:x}\r\n{event}\r\n", event.len())
}

/// Once a stream's first event reached the client, no attempt can follow: the client's body
/// and the body sent upstream are let go of (the test's own clone of the client's bytes is then
/// their only holder), while the request keeps its length for the log. The upstream got the
/// whole body, with the usage member rotor asks for in front.
#[test]
fn a_stream_lets_go_of_the_request_bodies_once_its_answer_starts() {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
        let core = Core::new(0, Gateway::new(config(upstream.local_addr().unwrap().port())).unwrap());
        let prompt = "x".repeat(20_000);
        let body = format!(r#"{{"model":"m","stream":true,"messages":[{{"role":"user","content":"{prompt}"}}]}}"#);
        let body_len = body.len();
        let client_bytes = Bytes::from(body);
        let req = request(client_bytes.clone());

        let downstream = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect_addr(downstream.local_addr().unwrap()).await.unwrap();
        let (mut served, _) = downstream.accept().await.unwrap();
        let (first_seen, first_seen_rx) = futures_channel::oneshot::channel::<bool>();

        let serve = async {
            let mut res = Responder::new(&mut served, BytesMut::new(), true, false, false);
            core.call(&req, &mut res).await;
        };
        let upstream_side = async {
            let (mut conn, _) = upstream.accept().await.unwrap();
            let mut seen = Vec::new();
            read_until(&mut conn, &mut seen, b"\r\n\r\n").await;
            let head_end = seen.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let head = String::from_utf8_lossy(&seen[..head_end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            while seen.len() < head_end + length {
                let (read, buf) = conn.read(Vec::with_capacity(16 * 1024)).await;
                assert!(read.unwrap() > 0);
                seen.extend_from_slice(&buf);
            }
            let sent = &seen[head_end..];
            assert!(sent.starts_with(br#"{"stream_options":{"include_usage":true},"model":"m""#));
            assert!(sent.ends_with(format!("{prompt}\"}}]}}").as_bytes()), "the whole body went upstream");
            let opening = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
            let first = event_chunk(r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}"#);
            let (written, _) = conn.write_all(format!("{opening}{first}").into_bytes()).await;
            written.unwrap();
            // The rest waits until the client has looked at the bodies mid-stream.
            assert!(first_seen_rx.await.unwrap());
            let usage = r#"{"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;
            let rest = format!("{}{}0\r\n\r\n", event_chunk(usage), event_chunk("[DONE]"));
            let (written, _) = conn.write_all(rest.into_bytes()).await;
            written.unwrap();
        };
        let client_side = async {
            let mut seen = Vec::new();
            read_until(&mut client, &mut seen, br#""content":"hi""#).await;
            let unique = client_bytes.is_unique();
            first_seen.send(true).unwrap();
            read_until(&mut client, &mut seen, b"[DONE]").await;
            (unique, seen)
        };
        let ((), (), (unique_mid_stream, seen)) = monoio::join!(serve, upstream_side, client_side);
        let seen = String::from_utf8_lossy(&seen);
        assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
        assert!(!seen.contains("\"usage\""), "the usage rotor asked for is hidden: {seen}");
        assert!(unique_mid_stream, "mid-stream, rotor still held the request's bytes");
        assert!(req.body.bytes().is_empty());
        assert_eq!(req.body.len(), body_len, "the length stays for the log's bytes_in");
    });
}
