//! Connection management and timeouts of the downstream server (a submodule of `http_server`,
//! split to keep files small, sharing its helpers): `Connection: close`, HTTP/1.0, pipelining,
//! slow heads, idle and silent connections, stalled bodies, and one keep-alive connection
//! carrying requests of every size.

use super::*;

#[test]
fn connection_close_is_honoured() {
    let h = Harness::start(Conf::default());
    let mut c = h.client();
    let r = c.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[("connection", "close")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        c.closed_within(Duration::from_secs(1)),
        "server must close after Connection: close"
    );
}

#[test]
fn http10_request_works_and_closes() {
    let h = Harness::start(Conf::default());
    let body = chat("gpt-4o-mini");
    let mut c = h.client();
    c.send_raw(
        format!(
            "POST /v1/chat/completions HTTP/1.0\r\nauthorization: Bearer {CLIENT_KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let r = c.read_response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.chunked, "no chunked framing for an HTTP/1.0 client");
    assert!(
        c.closed_within(Duration::from_secs(1)),
        "HTTP/1.0 without keep-alive closes"
    );
}

#[test]
fn http10_streamed_answer_is_not_chunked() {
    let h = Harness::start(Conf::default());
    // A streamed answer to an HTTP/1.0 client cannot use chunked framing either.
    let body = chat_stream("gpt-4o-mini");
    let mut c = h.client();
    c.send_raw(
        format!(
            "POST /v1/chat/completions HTTP/1.0\r\nauthorization: Bearer {CLIENT_KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert!(
        !r.chunked,
        "HTTP/1.0 clients do not understand chunked: {:?}",
        r.headers
    );
    assert!(r.text().ends_with("data: [DONE]\n\n"), "{}", r.text());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let h = Harness::start(Conf::default());
    let mut c = h.client();
    let (name, value) = auth();
    let body = chat("gpt-4o-mini");
    let mut raw = build_request(
        "POST",
        "/v1/chat/completions",
        &[
            (name, &value),
            ("x-request-id", "first-req"),
            ("x-mock-latency-ms", "100"),
        ],
        body.as_bytes(),
    );
    raw.extend(build_request("GET", "/health", &[("x-request-id", "second-req")], b""));
    raw.extend(build_request(
        "POST",
        "/v1/embeddings",
        &[(name, &value), ("x-request-id", "third-req")],
        br#"{"model":"text-embedding-3-small","input":"x"}"#,
    ));
    c.send_raw(&raw);
    let ids: Vec<(u16, String)> = (0..3)
        .map(|_| {
            let r = c.read_response();
            (r.status, r.header("x-request-id").unwrap_or("").to_owned())
        })
        .collect();
    assert_eq!(
        ids,
        [
            (200, "first-req".to_owned()),
            (200, "second-req".to_owned()),
            (200, "third-req".to_owned())
        ]
    );
}

#[test]
fn slow_header_times_out() {
    let h = Harness::start(small_limits());
    let mut c = h.client();
    let started = Instant::now();
    c.send_raw(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-le");
    let response = c.try_read_response();
    let elapsed = started.elapsed();
    if let Some(r) = &response {
        assert_eq!(r.status, 408, "{}", r.text());
    }
    assert!(c.closed_within(Duration::from_secs(1)));
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_millis(1500),
        "header timeout 300 ms took {elapsed:?}"
    );
}

#[test]
fn silent_and_idle_connections_are_closed() {
    let h = Harness::start(small_limits());
    // Never sends a byte: closed after the header timeout.
    let mut silent = h.client();
    let started = Instant::now();
    assert!(silent.closed_within(Duration::from_secs(2)));
    assert!(started.elapsed() < Duration::from_millis(1500));

    // Idle after a response: closed after the keep-alive timeout.
    let mut c = h.client();
    assert_eq!(c.get("/health", &[]).status, 200);
    let started = Instant::now();
    assert!(c.closed_within(Duration::from_secs(2)));
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_millis(300),
        "closed after {idle:?}, keepalive is 400 ms"
    );
}

#[test]
fn stalled_body_times_out() {
    let h = Harness::start(small_limits());
    let mut c = h.client();
    c.send_raw(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\ncontent-length: 100\r\n\r\n{{\"model\""
        )
        .as_bytes(),
    );
    let started = Instant::now();
    if let Some(r) = c.try_read_response() {
        assert_eq!(r.status, 408);
    }
    assert!(c.closed_within(Duration::from_secs(1)));
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert!(h.recorded().is_empty());
}

/// One keep-alive connection carries requests of every size in turn (its small read buffer is
/// rewound and kept between small requests, and dropped after a large one) and forwards each
/// body intact, and its one re-armed read timer still enforces each limit: a head split across
/// writes is read whole, and a head left unfinished after answered requests gets its 408 after
/// the header timeout (300 ms), not the keep-alive one.
#[test]
fn one_connection_keeps_bodies_and_limits_across_requests() {
    let h = Harness::start(small_limits());
    let mut c = h.client();
    let big = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(3000)
    );
    let other = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"bye"}]}"#.to_owned();
    let bodies = [chat("gpt-4o-mini"), big, other, chat("gpt-4o-mini")];
    for body in &bodies {
        let r = c.post("/v1/chat/completions", body, &[]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let raw = build_request("GET", "/health", &[], b"");
    c.send_raw(&raw[..10]);
    sleep_ms(50);
    c.send_raw(&raw[10..]);
    assert_eq!(c.read_response().status, 200);
    let sent: Vec<String> = h
        .recorded()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(sent, bodies, "every body reached the upstream intact, in order");

    let started = Instant::now();
    c.send_raw(b"GET /health HTTP/1.1\r\nhost: x\r\n");
    if let Some(r) = c.try_read_response() {
        assert_eq!(r.status, 408, "{}", r.text());
    }
    assert!(c.closed_within(Duration::from_secs(2)));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_millis(1500),
        "header timeout 300 ms took {elapsed:?}"
    );
}
