//! Request bodies over real sockets (issue 12 item 3): a body slower than
//! `server.body_read_timeout_ms` gets 408, a declared length reserves nothing, bodies past a
//! worker's `server.max_body_bytes_in_flight` get 503 while small requests are still served,
//! every refusal is counted in `/metrics`, and the bytes in flight return to 0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests may block and pace a slow client: they are not worker threads.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;

/// A value from the gateway's `/metrics` (the first line starting with `series`).
fn metric(h: &Harness, series: &str) -> u64 {
    let r = h.client().get("/metrics", &[]);
    assert_eq!(r.status, 200);
    let text = r.text();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

fn in_flight(h: &Harness) -> u64 {
    metric(h, "rotor_request_body_bytes_in_flight ")
}

fn refused(h: &Harness, reason: &str) -> u64 {
    metric(
        h,
        &format!("rotor_request_bodies_refused_total{{reason=\"{reason}\"}} "),
    )
}

/// Polls `f` until it holds, for up to 5 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A chat request head declaring a body of `length` bytes.
fn head(length: usize) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    )
}

#[test]
fn a_body_slower_than_body_read_timeout_gets_408_and_is_counted() {
    // Each silence (100 ms) is far below the header timeout, which alone never cut it.
    let h = Harness::start(Conf {
        server: "body_read_timeout_ms = 600\nheader_read_timeout_ms = 2000".into(),
        ..Default::default()
    });
    let mut c = h.client();
    c.send_raw(head(1000).as_bytes());
    let started = Instant::now();
    let mut writer = c.stream.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        // One byte every 100 ms, until the server closes or 4 s pass.
        while started.elapsed() < Duration::from_secs(4) {
            if writer.write_all(b" ").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let r = c.read_response();
    let elapsed = started.elapsed();
    assert_eq!(r.status, 408, "{}", r.text());
    let (message, kind) = r.openai_error();
    assert!(message.contains("not received in time"), "{message}");
    assert_eq!(kind, "invalid_request_error");
    assert!(
        elapsed >= Duration::from_millis(550) && elapsed < Duration::from_millis(2000),
        "body_read_timeout_ms = 600 cut after {elapsed:?}"
    );
    assert!(c.closed_within(Duration::from_secs(2)));
    trickle.join().unwrap();
    assert_eq!(refused(&h, "timeout"), 1);
    assert_eq!(in_flight(&h), 0);
    assert!(h.recorded().is_empty(), "a cut body never reaches the upstream");
}

#[test]
fn a_declared_length_reserves_nothing_until_the_bytes_arrive() {
    let h = Harness::start(Conf {
        workers: 1,
        ..Default::default()
    });
    const CONNS: usize = 100;
    const SENT: usize = 20 * 1024;
    // Each declares the largest body allowed (32 MiB) and sends 20 KiB of it.
    let mut clients: Vec<Client> = (0..CONNS)
        .map(|_| {
            let mut c = h.client();
            let mut raw = head(32 * 1024 * 1024).into_bytes();
            raw.extend_from_slice(&[b' '; SENT]);
            c.send_raw(&raw);
            c
        })
        .collect();
    // Charged as the bytes arrive: more than nothing, far below 100 x 32 MiB.
    eventually("every connection's 20 KiB is buffered", || {
        in_flight(&h) as usize >= CONNS * (SENT - 8 * 1024)
    });
    let held = in_flight(&h) as usize;
    assert!(
        held <= CONNS * 64 * 1024,
        "{held} bytes held for {CONNS} x 20 KiB received: the declared length was reserved"
    );
    // Still serving.
    assert_eq!(h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    for c in &mut clients {
        c.shutdown_write();
    }
    drop(clients);
    eventually("the bytes in flight return to 0", || in_flight(&h) == 0);
}

#[test]
fn bodies_past_the_worker_budget_get_503_while_small_requests_are_served() {
    // One worker, a budget of exactly two 256 KiB bodies (their first 8 KiB are free).
    let h = Harness::start(Conf {
        workers: 1,
        server: "max_body_bytes = 262144\nmax_body_bytes_in_flight = 507904".into(),
        ..Default::default()
    });
    let partial = |c: &mut Client| {
        let mut raw = head(256 * 1024).into_bytes();
        raw.extend_from_slice(&[b' '; 200 * 1024]);
        c.send_raw(&raw);
    };
    // Two slow uploads take the budget (each stops 56 KiB short of its body).
    let mut holders = Vec::new();
    for i in 1..=2u64 {
        let mut c = h.client();
        partial(&mut c);
        eventually("an upload's bytes are charged", || in_flight(&h) >= i * 200 * 1024);
        holders.push(c);
    }
    assert_eq!(
        in_flight(&h),
        507_904,
        "two bodies grown to their 256 KiB hold the budget"
    );

    // With the budget spent, a large body is refused before it is asked for: no 100 Continue.
    let mut c = h.client();
    let started = Instant::now();
    c.send_raw(
        head(256 * 1024)
            .replace("\r\n\r\n", "\r\nexpect: 100-continue\r\n\r\n")
            .as_bytes(),
    );
    let r = c.read_response();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once, not queued"
    );

    // More of the same, sending their bytes, are refused as well.
    for _ in 0..3 {
        let mut c = h.client();
        partial(&mut c);
        let r = c.read_response();
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.header("retry-after"), Some("1"));
        let (message, kind) = r.openai_error();
        assert!(message.contains("busy"), "{message}");
        assert_eq!(kind, "server_error");
        assert!(c.closed_within(Duration::from_secs(2)));
    }
    assert_eq!(refused(&h, "busy"), 4);
    assert_eq!(in_flight(&h), 507_904, "refused bodies hold nothing");

    // A small request still gets through while the budget is spent.
    let r = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());

    // A body over max_body_bytes is 413, counted as too_large.
    let mut c = h.client();
    c.send_raw(head(300 * 1024).as_bytes());
    assert_eq!(c.read_response().status, 413);
    assert_eq!(refused(&h, "too_large"), 1);

    // The holders go away: their bytes come back, and a full-size body is read again.
    drop(holders);
    eventually("the bytes in flight return to 0", || in_flight(&h) == 0);
    let body = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "a".repeat(250 * 1024)
    );
    let r = h.post("/v1/chat/completions", &body, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        h.recorded().len(),
        2,
        "only the two accepted requests reached the upstream"
    );
    assert_eq!(in_flight(&h), 0);
}
