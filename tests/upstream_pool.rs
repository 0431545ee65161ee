//! A pooled upstream connection is reused only from a clean message boundary: scripted raw
//! upstreams (plain TCP and TLS) that send bytes nobody asked for, after an answer or while the
//! connection is idle, or a short body, never get their connection handed to the next client,
//! who would otherwise read the previous client's answer (issue 12, item 2).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// What the upstream writes for the n-th request it reads (n counts over all connections).
struct Reply {
    /// Written at once.
    now: Vec<u8>,
    /// Written 50 ms later on the same connection, unasked (`stale_written` counts it).
    later: Option<Vec<u8>>,
}

type Script = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

struct Scripted {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stale_written: Arc<AtomicUsize>,
    /// The CA for a TLS upstream (kept alive for `upstream.ca_file`).
    ca: Option<tempfile::NamedTempFile>,
}

/// `{"n":N}` with a Content-Length.
fn answer(n: &str) -> Vec<u8> {
    let body = format!(r#"{{"n":{n}}}"#);
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn start(script: Script, tls: bool) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let stale_written = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (config, ca) = if tls {
        let (config, ca) = tls::server_config();
        (Some(config), Some(ca))
    } else {
        (None, None)
    };
    let (count, stale) = (accepted.clone(), stale_written.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let (config, stale, requests) = (config.clone(), stale.clone(), requests.clone());
            let script = script.clone();
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                conn.set_nodelay(true).unwrap();
                match config {
                    Some(config) => {
                        let session = rustls::ServerConnection::new(config).unwrap();
                        serve(rustls::StreamOwned::new(session, conn), &script, &requests, &stale);
                    }
                    None => serve(conn, &script, &requests, &stale),
                }
            });
        }
    });
    Scripted {
        addr,
        accepted,
        stale_written,
        ca,
    }
}

/// Reads requests (head plus Content-Length body) and writes the script's replies until EOF.
fn serve<S: Read + Write>(mut conn: S, script: &Script, requests: &AtomicUsize, stale: &AtomicUsize) {
    let mut buf = Vec::new();
    while next_request(&mut conn, &mut buf) {
        let reply = script(requests.fetch_add(1, Ordering::SeqCst));
        if conn.write_all(&reply.now).and_then(|()| conn.flush()).is_err() {
            return;
        }
        if let Some(later) = reply.later {
            sleep_ms(50);
            if conn.write_all(&later).and_then(|()| conn.flush()).is_err() {
                return;
            }
            stale.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn gateway(upstream: &Scripted) -> Harness {
    gateway_with(upstream, "")
}

/// `gateway` with more `[upstream]` lines.
fn gateway_with(upstream: &Scripted, more_upstream: &str) -> Harness {
    let scheme = if upstream.ca.is_some() {
        "https://localhost"
    } else {
        "http://127.0.0.1"
    };
    let url = format!("{scheme}:{}/v1", upstream.addr.port());
    let body = format!(
        r#"
[[clients]]
name = "tester"
key = "{CLIENT_KEY}"

[[providers]]
name = "scripted"
kind = "openai"
base_url = "{url}"
keys = ["{POOL_KEY}"]
models = ["gpt-4o-mini"]
"#
    );
    let upstream_conf = match &upstream.ca {
        Some(ca) => format!("ca_file = \"{}\"\nstream_idle_timeout_ms = 300", ca.path().display()),
        None => "stream_idle_timeout_ms = 300".to_owned(),
    } + "\n"
        + more_upstream;
    Harness::gateway_only(
        Conf {
            workers: 1,
            upstream: upstream_conf,
            ..Conf::with_body(&body)
        },
        &url,
    )
}

fn ask(h: &Harness) -> Response {
    h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[])
}

/// Replies: `first` for request 0, `{"n":N}` for every later one.
fn first_then_counted(first: Reply) -> Script {
    let first = parking_lot::Mutex::new(Some(first));
    Arc::new(move |n| match first.lock().take() {
        Some(reply) if n == 0 => reply,
        _ => Reply {
            now: answer(&n.to_string()),
            later: None,
        },
    })
}

/// The second client's request, after the first: its own answer, on a new connection.
fn assert_second_is_fresh(h: &Harness, upstream: &Scripted) {
    let second = ask(h);
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(second.text(), r#"{"n":1}"#, "the next client must get its own answer");
    assert_eq!(
        upstream.accepted.load(Ordering::SeqCst),
        2,
        "the first connection must not be reused"
    );
}

/// The first answer's connection gets an unasked second answer 50 ms later (what a request
/// split by CR/LF produced): the next client must get its own answer on a new connection.
fn stale_answer_while_idle(tls: bool) {
    let upstream = start(
        first_then_counted(Reply {
            now: answer("0"),
            later: Some(answer(r#""stale""#)),
        }),
        tls,
    );
    let h = gateway(&upstream);
    let first = ask(&h);
    assert_eq!((first.status, first.text()), (200, r#"{"n":0}"#.to_owned()));
    assert!(
        eventually(Duration::from_secs(5), || upstream.stale_written.load(Ordering::SeqCst)
            == 1),
        "the upstream wrote its stale answer"
    );
    assert_second_is_fresh(&h, &upstream);
}

#[test]
fn stale_answer_arriving_while_idle_is_never_handed_out_plain() {
    stale_answer_while_idle(false);
}

#[test]
fn stale_answer_arriving_while_idle_is_never_handed_out_tls() {
    stale_answer_while_idle(true);
}

/// `first` is followed, in the same write, by bytes nobody asked for.
fn extra_bytes_behind(first: Vec<u8>, tls: bool) {
    let upstream = start(
        first_then_counted(Reply {
            now: first,
            later: None,
        }),
        tls,
    );
    let h = gateway(&upstream);
    let first = ask(&h);
    assert_eq!((first.status, first.text()), (200, r#"{"n":0}"#.to_owned()));
    assert_second_is_fresh(&h, &upstream);
}

#[test]
fn extra_bytes_after_a_content_length_answer_close_the_connection() {
    let mut first = answer("0");
    first.extend_from_slice(&answer(r#""stale""#));
    extra_bytes_behind(first.clone(), false);
    extra_bytes_behind(first, true);
}

#[test]
fn extra_bytes_after_the_last_chunk_close_the_connection() {
    let body = r#"{"n":0}"#;
    let first = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\nx-trailer: 1\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        body.len()
    );
    extra_bytes_behind(first.clone().into_bytes(), false);
    extra_bytes_behind(first.into_bytes(), true);
}

/// An answer of exactly `total` bytes, head included: `{"n":0,"p":"xxx..."}`.
fn answer_of_size(total: usize) -> Vec<u8> {
    let head =
        |len: usize| format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n");
    let mut len = total - head(total).len();
    len = total - head(len).len();
    let body = format!(r#"{{"n":0,"p":"{}"}}"#, "x".repeat(len - r#"{"n":0,"p":""}"#.len()));
    let out = [head(body.len()).into_bytes(), body.into_bytes()].concat();
    assert_eq!(out.len(), total);
    out
}

/// The answer fills rotor's first 8 KiB read exactly, so over TLS the stale answer behind it
/// stays inside the TLS session, where only the check-in probe can see it (the socket is
/// already drained, rotor's buffer is empty and the body is exactly complete).
#[test]
fn extra_bytes_left_inside_the_tls_session_close_the_connection() {
    let mut first = answer_of_size(8 * 1024);
    first.extend_from_slice(&answer(r#""stale""#));
    let upstream = start(
        first_then_counted(Reply {
            now: first,
            later: None,
        }),
        true,
    );
    let h = gateway(&upstream);
    let r = ask(&h);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with(r#"{"n":0,"p":"xx"#), "{}", r.text());
    assert_second_is_fresh(&h, &upstream);
}

/// A body shorter than its Content-Length, then silence: the answer fails after
/// `stream_idle_timeout_ms` and its connection is closed, never pooled.
#[test]
fn a_short_body_never_returns_its_connection() {
    for tls in [false, true] {
        let short = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n{\"n\":0".to_vec();
        let upstream = start(
            first_then_counted(Reply {
                now: short,
                later: None,
            }),
            tls,
        );
        let h = gateway(&upstream);
        let mut c = h.client();
        c.send_request(
            "POST",
            "/v1/chat/completions",
            &[
                ("authorization", &format!("Bearer {CLIENT_KEY}")),
                ("content-type", "application/json"),
            ],
            chat("gpt-4o-mini").as_bytes(),
        );
        let first = c.try_read_response();
        assert!(
            first.as_ref().is_none_or(|r| r.status != 200 || !r.complete),
            "a short body must not look complete: {first:?}"
        );
        assert_second_is_fresh(&h, &upstream);
    }
}

/// The checks cost no reuse: clean answers keep one connection, over TLS too.
#[test]
fn clean_answers_keep_their_connection() {
    for tls in [false, true] {
        let upstream = start(
            Arc::new(|n| Reply {
                now: answer(&n.to_string()),
                later: None,
            }),
            tls,
        );
        let h = gateway(&upstream);
        for n in 0..4 {
            let r = ask(&h);
            assert_eq!((r.status, r.text()), (200, format!(r#"{{"n":{n}}}"#)), "tls: {tls}");
        }
        assert_eq!(upstream.accepted.load(Ordering::SeqCst), 1, "tls: {tls}");
    }
}

/// An idle connection is stamped when its answer ended (with the worker's latest clock reading,
/// not a reading of its own): reused while younger than `pool_idle_timeout_ms`, never after.
#[test]
#[allow(clippy::disallowed_methods)] // the test thread waits out the timeout, no worker sleeps
fn idle_connections_expire_after_the_pool_idle_timeout() {
    let upstream = start(
        Arc::new(|n| Reply {
            now: answer(&n.to_string()),
            later: None,
        }),
        false,
    );
    let h = gateway_with(&upstream, "pool_idle_timeout_ms = 1500");
    for n in 0..2 {
        let r = ask(&h);
        assert_eq!((r.status, r.text()), (200, format!(r#"{{"n":{n}}}"#)));
    }
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 1, "reused while young");
    // Past the timeout (the connection's stamp can only be early, never late).
    std::thread::sleep(Duration::from_millis(1700));
    let r = ask(&h);
    assert_eq!((r.status, r.text()), (200, r#"{"n":2}"#.to_owned()));
    assert_eq!(
        upstream.accepted.load(Ordering::SeqCst),
        2,
        "expired: a fresh connection"
    );
}
