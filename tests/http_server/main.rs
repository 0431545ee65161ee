//! The downstream HTTP/1.1 server: authentication, body checks, limits, framing attacks,
//! connection management and timeouts, driven with raw bytes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/mod.rs"]
mod common;
mod connection;

use std::time::{Duration, Instant};

use common::*;

fn small_limits() -> Conf {
    Conf {
        server:
            "max_body_bytes = 4096\nmax_header_bytes = 2048\nheader_read_timeout_ms = 300\nkeepalive_timeout_ms = 400"
                .into(),
        ..Default::default()
    }
}

#[test]
fn missing_or_invalid_key_is_401_and_both_header_styles_work() {
    let h = Harness::start(Conf::default());
    let body = chat("gpt-4o-mini");
    let json = ("content-type", "application/json");

    let r = h
        .client()
        .request("POST", "/v1/chat/completions", &[json], body.as_bytes());
    assert_eq!(r.status, 401, "{}", r.text());
    let (message, kind) = r.openai_error();
    assert_eq!(kind, "authentication_error");
    assert!(message.contains("missing"), "{message}");
    assert!(r.header("x-request-id").is_some());

    let r = h.client().request(
        "POST",
        "/v1/chat/completions",
        &[("authorization", "Bearer sk-wrong-key-0000"), json],
        body.as_bytes(),
    );
    assert_eq!(r.status, 401);
    assert!(!r.text().contains("sk-wrong-key"), "error must not echo the key");

    let r = h.client().request(
        "POST",
        "/v1/chat/completions",
        &[("x-api-key", "sk-wrong-key-0000"), json],
        body.as_bytes(),
    );
    assert_eq!(r.status, 401);

    // A prefix of the real key is not the key.
    let prefix = format!("Bearer {}", &CLIENT_KEY[..CLIENT_KEY.len() - 1]);
    let r = h.client().request(
        "POST",
        "/v1/chat/completions",
        &[("authorization", &prefix), json],
        body.as_bytes(),
    );
    assert_eq!(r.status, 401);

    let bearer = format!("Bearer {CLIENT_KEY}");
    let r = h.client().request(
        "POST",
        "/v1/chat/completions",
        &[("authorization", &bearer), json],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = h.client().request(
        "POST",
        "/v1/chat/completions",
        &[("x-api-key", CLIENT_KEY), json],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.recorded().len(), 2, "only authenticated requests reach the upstream");

    // /v1/models needs a key too; /health does not.
    assert_eq!(h.client().request("GET", "/v1/models", &[], b"").status, 401);
    assert_eq!(h.client().request("GET", "/health", &[], b"").status, 200);
}

#[test]
fn malformed_json_and_duplicate_model_are_400() {
    let h = Harness::start(Conf::default());
    for (body, what) in [
        (r#"{"model":"gpt-4o-mini","messages":["#, "truncated JSON"),
        (r#"not json at all"#, "not JSON"),
        (
            r#"{"model":"gpt-4o-mini","model":"gpt-3.5","messages":[]}"#,
            "duplicate model",
        ),
        (r#"{"messages":[]}"#, "no model"),
        (r#"{"model":42,"messages":[]}"#, "model not a string"),
        (r#"["gpt-4o-mini"]"#, "not an object"),
    ] {
        let r = h.post("/v1/chat/completions", body, &[]);
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        let (_, kind) = r.openai_error();
        assert_eq!(kind, "invalid_request_error", "{what}");
    }
    let r = h.post("/v1/chat/completions", "", &[]);
    assert_eq!(r.status, 400, "empty body: {}", r.text());
    assert!(h.recorded().is_empty(), "nothing invalid reaches the upstream");
}

#[test]
fn unknown_path_is_404_and_wrong_method_is_405() {
    let h = Harness::start(Conf::default());
    let r = h.client().get("/nope", &[]);
    assert_eq!(r.status, 404);
    r.openai_error();
    let r = h.client().get("/v1/chat/completions", &[]);
    assert_eq!(r.status, 405, "{}", r.text());
    r.openai_error();
}

/// Sends `raw` on a fresh connection; returns the response and whether the server closed.
fn attack(h: &Harness, raw: &[u8]) -> (Response, bool) {
    let mut c = h.client();
    let _ = c.try_send_raw(raw);
    let r = c
        .try_read_response()
        .unwrap_or_else(|| panic!("no response to {:?}", String::from_utf8_lossy(raw)));
    let closed = c.closed_within(Duration::from_secs(1));
    (r, closed)
}

#[test]
fn declared_oversized_body_is_413_before_the_body_is_sent() {
    let h = Harness::start(small_limits());
    let bearer = format!("Bearer {CLIENT_KEY}");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: {bearer}\r\ncontent-type: application/json\r\ncontent-length: 100000000\r\n\r\n"
    );
    let started = Instant::now();
    let (r, closed) = attack(&h, head.as_bytes());
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "413 must not wait for the body"
    );
    r.openai_error();
    assert!(closed);

    // With Expect: 100-continue, no 100 is sent for a body that will be refused.
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: {bearer}\r\nexpect: 100-continue\r\ncontent-length: 5000\r\n\r\n"
    );
    let (r, closed) = attack(&h, head.as_bytes());
    assert_eq!(r.status, 413);
    assert!(closed);

    // A chunked body that grows past the limit is refused as well.
    let mut raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: {bearer}\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..5 {
        raw.extend_from_slice(b"400\r\n");
        raw.extend_from_slice(&[b'a'; 0x400]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let (r, closed) = attack(&h, &raw);
    assert_eq!(r.status, 413);
    assert!(closed);
    assert!(h.recorded().is_empty());
}

#[test]
fn chunked_request_body_is_decoded_and_forwarded_with_a_length() {
    let h = Harness::start(Conf::default());
    let body = chat("gpt-4o-mini");
    let (a, b) = body.split_at(10);
    let mut c = h.client();
    let bearer = format!("Bearer {CLIENT_KEY}");
    c.send_raw(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: {bearer}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x};ext=1\r\n{a}\r\n",
            a.len()
        )
        .as_bytes(),
    );
    sleep_ms(50);
    c.send_raw(format!("{:x}\r\n{b}\r\n0\r\nx-trailer: t\r\n\r\n", b.len()).as_bytes());
    let r = c.read_response();
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = h.recorded();
    assert_eq!(String::from_utf8_lossy(&rec[0].body), body);
    assert_eq!(rec[0].header("content-length"), Some(body.len().to_string().as_str()));
    assert!(rec[0].header("transfer-encoding").is_none());
    assert!(rec[0].header("x-trailer").is_none());
    // Keep-alive still works after a chunked request.
    assert_eq!(c.post("/v1/chat/completions", &body, &[]).status, 200);
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let h = Harness::start(Conf::default());
    let body = chat("gpt-4o-mini");
    let bearer = format!("Bearer {CLIENT_KEY}");
    let mut c = h.client();
    c.send_raw(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: {bearer}\r\ncontent-type: application/json\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let (status, _, _) = c.read_head();
    assert_eq!(status, 100, "100 Continue must come before the body is sent");
    c.send_raw(body.as_bytes());
    let r = c.read_response();
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = h.recorded();
    assert!(rec[0].header("expect").is_none(), "Expect is hop-by-hop for rotor");
}

#[test]
fn framing_attacks_are_rejected_and_the_connection_closed() {
    let h = Harness::start(small_limits());
    let auth = format!("authorization: Bearer {CLIENT_KEY}\r\n");
    let post = |extra: &str, body: &str| -> Vec<u8> {
        format!("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n{auth}{extra}\r\n{body}").into_bytes()
    };
    let json = chat("gpt-4o-mini");
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "CL + TE",
            post(
                &format!("content-length: {}\r\ntransfer-encoding: chunked\r\n", json.len()),
                &json,
            ),
            400,
        ),
        (
            "two Content-Lengths",
            post(
                &format!("content-length: {0}\r\ncontent-length: {0}\r\n", json.len()),
                &json,
            ),
            400,
        ),
        (
            "comma list Content-Length",
            post(&format!("content-length: {0}, {0}\r\n", json.len()), &json),
            400,
        ),
        ("Content-Length: +5", post("content-length: +5\r\n", "hello"), 400),
        ("Content-Length: 5x", post("content-length: 5x\r\n", "hello"), 400),
        ("Content-Length: -1", post("content-length: -1\r\n", ""), 400),
        (
            "malformed chunk size",
            post("transfer-encoding: chunked\r\n", "zz\r\nhello\r\n0\r\n\r\n"),
            400,
        ),
        (
            "chunk size overflow",
            post(
                "transfer-encoding: chunked\r\n",
                "fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            ),
            400,
        ),
        (
            "chunk data without CRLF",
            post("transfer-encoding: chunked\r\n", "5\r\nhelloXX0\r\n\r\n"),
            400,
        ),
        ("unknown transfer-coding", post("transfer-encoding: gzip\r\n", ""), 501),
        (
            "chunked twice",
            post("transfer-encoding: chunked, chunked\r\n", "0\r\n\r\n"),
            400,
        ),
        (
            "NUL in a header value",
            post("x-evil: a\0b\r\ncontent-length: 0\r\n", ""),
            400,
        ),
        (
            "bare CR in a header value",
            post("x-evil: a\rb\r\ncontent-length: 0\r\n", ""),
            400,
        ),
        ("space before colon", post("content-length : 5\r\n", "hello"), 400),
        ("obs-fold", post("x-folded: a\r\n b\r\ncontent-length: 0\r\n", ""), 400),
        (
            "header block over max_header_bytes",
            post(&format!("x-big: {}\r\n", "a".repeat(4000)), ""),
            431,
        ),
        (
            "header block over max_header_bytes, many fields",
            post(&"x-many: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(80), ""),
            431,
        ),
        (
            "absolute-form target",
            b"GET http://evil/health HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "two Host headers",
            b"GET /health HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n".to_vec(),
            400,
        ),
    ];
    let mut failures = Vec::new();
    for (name, raw, want) in cases {
        let (r, closed) = attack(&h, &raw);
        if r.status != want || !closed {
            failures.push(format!("{name}: got {} (closed: {closed}), want {want}", r.status));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(h.recorded().is_empty(), "no attack reached the upstream");
}

#[test]
fn missing_host_is_400() {
    let h = Harness::start(Conf::default());
    let (r, closed) = attack(&h, b"GET /health HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 400);
    assert!(closed);
}
