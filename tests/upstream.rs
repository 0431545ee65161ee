//! The upstream side: TLS with a private CA, connection failures, timeouts, failover between
//! providers, stale pooled connections and status passthrough.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn provider_at(url: &str) -> String {
    format!(
        r#"
[[clients]]
name = "tester"
key = "{CLIENT_KEY}"

[[providers]]
name = "mock"
kind = "openai"
base_url = "{url}"
keys = ["{POOL_KEY}"]
models = ["gpt-4o-mini"]
"#
    )
}

#[test]
fn tls_upstream_with_private_ca() {
    let mock = start_mock();
    let tls = tls::start(mock.addr);
    let conf = Conf {
        upstream: format!("ca_file = \"{}\"", tls.ca_path()),
        ..Conf::with_body(&provider_at(&tls.base_url()))
    };
    let h = Harness::with_mock(mock, conf);
    let mut c = h.client();
    let r = c.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-rotor-provider"), Some("mock"));
    let r = c.post(
        "/v1/chat/completions",
        &chat_stream("gpt-4o-mini"),
        &[("x-mock-chunks", "3")],
    );
    assert_eq!(r.status, 200);
    assert!(r.complete && r.text().ends_with("data: [DONE]\n\n"), "{}", r.text());
    let rec = h.recorded();
    assert_eq!(rec.len(), 2);
    assert_eq!(
        rec[0].header("host"),
        Some(format!("localhost:{}", tls.addr.port()).as_str())
    );
    assert_eq!(rec[0].bearer(), Some(POOL_KEY));
}

#[test]
fn tls_upstream_without_the_ca_is_502() {
    let mock = start_mock();
    let tls = tls::start(mock.addr);
    let h = Harness::with_mock(mock, Conf::with_body(&provider_at(&tls.base_url())));
    let r = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    assert_eq!(r.status, 502, "{}", r.text());
    let (message, kind) = r.openai_error();
    assert_eq!(kind, "upstream_error");
    assert!(!message.is_empty());
    assert!(
        h.recorded().is_empty(),
        "nothing may be sent over an untrusted connection"
    );
}

#[test]
fn connection_refused_is_502() {
    let url = format!("http://{}/v1", closed_port());
    let h = Harness::gateway_only(Conf::with_body(&provider_at(&url)), &url);
    let started = Instant::now();
    let r = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    assert_eq!(r.status, 502, "{}", r.text());
    let (_, kind) = r.openai_error();
    assert_eq!(kind, "upstream_error");
    assert!(r.header("x-request-id").is_some());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_refused_provider_fails_over_to_the_next() {
    let dead = format!("http://{}/v1", closed_port());
    let body = format!(
        r#"
[[clients]]
name = "tester"
key = "{CLIENT_KEY}"

[[providers]]
name = "dead"
kind = "openai"
base_url = "{dead}"
keys = ["sk-dead-key-0001"]
weight = 5
models = ["gpt-4o-mini"]

[[providers]]
name = "alive"
kind = "openai"
base_url = "{{MOCK}}"
keys = ["{POOL_KEY}"]
models = ["gpt-4o-mini"]
"#
    );
    let h = Harness::start(Conf::with_body(&body));
    let r = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-rotor-provider"), Some("alive"));
    assert_eq!(r.header("x-rotor-attempts"), Some("2"));
}

#[test]
fn first_byte_timeout_is_504_quickly() {
    let h = Harness::start(Conf {
        upstream: "first_byte_timeout_ms = 200".into(),
        ..Default::default()
    });
    let started = Instant::now();
    let r = h.post(
        "/v1/chat/completions",
        &chat("gpt-4o-mini"),
        &[("x-mock-latency-ms", "1000")],
    );
    let elapsed = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    let (_, kind) = r.openai_error();
    assert_eq!(kind, "upstream_error");
    assert!(elapsed < Duration::from_millis(800), "504 took {elapsed:?}");
    assert_eq!(h.recorded().len(), 1, "a timed-out POST is not silently sent again");
}

#[test]
fn stream_idle_timeout_ends_the_stream_with_an_error_event() {
    let h = Harness::start(Conf {
        upstream: "stream_idle_timeout_ms = 200".into(),
        ..Default::default()
    });
    let mut c = h.client();
    let (name, value) = auth();
    c.send_request(
        "POST",
        "/v1/chat/completions",
        &[
            (name, &value),
            ("content-type", "application/json"),
            ("x-mock-interval-ms", "1500"),
        ],
        chat_stream("gpt-4o-mini").as_bytes(),
    );
    let started = Instant::now();
    let (status, _, _) = c.read_head();
    assert_eq!(status, 200);
    let (pieces, terminated) = c.read_chunks_timed();
    assert!(terminated, "the stream is ended (not left hanging)");
    let text: String = pieces
        .iter()
        .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
        .collect();
    assert!(text.contains("stream_interrupted") && text.contains("silent"), "{text}");
    assert!(
        !text.contains("[DONE]"),
        "an idle-timed-out stream must not look complete: {text}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "cut after {:?}",
        started.elapsed()
    );
}

#[test]
fn upstream_status_and_body_pass_through() {
    let h = Harness::start(Conf::default());
    let r = h.post(
        "/v1/chat/completions",
        &chat("gpt-4o-mini"),
        &[("x-mock-status", "400")],
    );
    assert_eq!(r.status, 400);
    let mut direct = Client::connect(h.mock().addr);
    let expected = direct.request("POST", "/v1/chat/completions", &[("x-mock-status", "400")], b"{}");
    assert_eq!(r.text(), expected.text());
    assert_eq!(r.header("x-rotor-provider"), Some("mock"));
    // The connection to the client and the pooled upstream connection both stay usable.
    let mut c = h.client();
    assert_eq!(
        c.post(
            "/v1/chat/completions",
            &chat("gpt-4o-mini"),
            &[("x-mock-status", "404")]
        )
        .status,
        404
    );
    assert_eq!(c.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
}

/// An upstream that answers one request per connection, claims keep-alive, then closes the
/// connection 50 ms later: every pooled connection to it goes stale.
fn closing_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    counting_upstream(|mut conn| {
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        if !next_request(&mut conn, &mut Vec::new()) {
            return;
        }
        let body = r#"{"ok":true}"#;
        let _ = conn.write_all(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        sleep_ms(50);
    })
}

#[test]
fn stale_pooled_connection_is_retried_on_a_fresh_one() {
    let (addr, accepted) = closing_upstream();
    let url = format!("http://{addr}/v1");
    let h = Harness::gateway_only(
        Conf {
            workers: 1,
            ..Conf::with_body(&provider_at(&url))
        },
        &url,
    );
    let mut c = h.client();
    assert_eq!(c.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    // Let the upstream close the pooled connection.
    sleep_ms(200);
    let r = c.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), r#"{"ok":true}"#);
    assert_eq!(
        r.header("x-rotor-attempts"),
        Some("1"),
        "the stale-connection retry is not an attempt"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[test]
fn server_errors_move_to_the_next_key() {
    let body = pool_body(&["sk-fail500-key-0001", "sk-good-key-00001"]);
    let h = Harness::start(Conf {
        workers: 1,
        ..Conf::with_body(&body)
    });
    let mut c = h.client();
    for i in 0..6 {
        let r = c.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
}

/// Every upstream read is timed afresh by its connection's re-armed deadline: a stream whose
/// events come every 100 ms outlives several 300 ms idle limits (each read gets its own), and
/// the next request, from another client connection (another task) on the same worker and so
/// on the stream's pooled connection and its kept deadline, still gets its 504 after the 300 ms
/// first-byte limit. (A monoio timer kept with the pooled connection failed this: it kept
/// waking the stream's task; a `crate::deadline` entry wakes whichever task polls it.)
#[test]
fn pooled_connection_times_every_read_afresh() {
    let h = Harness::start(Conf {
        workers: 1,
        upstream: "first_byte_timeout_ms = 300\nstream_idle_timeout_ms = 300".into(),
        ..Default::default()
    });
    assert_eq!(h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    let mut c = h.client();
    let (status, text, done) = c.stream_chat(
        &chat_stream("gpt-4o-mini"),
        &[("x-mock-chunks", "8"), ("x-mock-interval-ms", "100")],
    );
    assert_eq!(status, 200);
    assert!(done && text.contains("[DONE]"), "{text}");
    assert!(!text.contains("stream_interrupted"), "{text}");
    stalled_answer_is_504_after_the_limit("pooled", |stall| {
        h.post("/v1/chat/completions", &chat("gpt-4o-mini"), stall)
    });
}

/// `post` with the mock told to stall its answer 1.5 s, under a 300 ms first-byte limit: a 504,
/// after the limit and well before the stall ends.
fn stalled_answer_is_504_after_the_limit(label: &str, post: impl FnOnce(&[(&str, &str)]) -> Response) {
    let started = Instant::now();
    let r = post(&[("x-mock-latency-ms", "1500")]);
    let elapsed = started.elapsed();
    assert_eq!(r.status, 504, "{label}: {}", r.text());
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_millis(1000),
        "{label}: first-byte limit 300 ms took {elapsed:?}"
    );
}

/// Every upstream wait of one client connection is timed afresh: one connection sending
/// request after request, each to an upstream that stalls past the 300 ms first-byte limit,
/// gets every 504 after that limit, not later (a timer woken for the wrong wait, or left armed
/// at an earlier request's deadline, would not), and a request between them is answered as usual.
#[test]
fn one_client_connection_times_each_upstream_wait() {
    let h = Harness::start(Conf {
        workers: 1,
        upstream: "first_byte_timeout_ms = 300".into(),
        ..Default::default()
    });
    let mut c = h.client();
    assert_eq!(c.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    for round in 0..3 {
        stalled_answer_is_504_after_the_limit(&format!("round {round}"), |stall| {
            c.post("/v1/chat/completions", &chat("gpt-4o-mini"), stall)
        });
        let fine = c.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
        assert_eq!(fine.status, 200, "round {round}: {}", fine.text());
    }
}
