//! Resilience (issue 3): failures before the first byte move to another key or provider,
//! keys cool and are quarantined and come back, pools that are all cooling answer 429 with
//! Retry-After, streams stay alive through silences and end visibly when they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use rotor::mock::KeyFault;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

const GOOD: &str = "sk-good-key-000001";
const FLAKY: &str = "sk-flaky-key-00002";

fn hits(h: &Harness, key: &str) -> usize {
    h.recorded()
        .iter()
        .filter(|r| r.bearer() == Some(key) && r.target.ends_with("/chat/completions"))
        .count()
}

#[test]
fn a_429_key_is_hit_once_then_skipped_for_its_retry_after() {
    let h = Harness::start(Conf {
        workers: 1,
        ..Conf::with_body(&pool_body(&[FLAKY, GOOD]))
    });
    h.mock().faults.set(
        FLAKY,
        KeyFault {
            status: Some(429),
            retry_after_s: Some(2),
            ..Default::default()
        },
    );
    let mut c = h.client();
    for _ in 0..6 {
        let r = c.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(
        hits(&h, FLAKY),
        1,
        "the cooling key is not tried again within its Retry-After"
    );
    assert_eq!(hits(&h, GOOD), 6);
    // After the Retry-After the key is back in rotation.
    h.mock().faults.clear(FLAKY);
    sleep_ms(2100);
    for _ in 0..4 {
        assert_eq!(c.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    }
    assert!(hits(&h, FLAKY) >= 2, "the key serves again after cooling");
}

#[test]
fn a_401_key_is_quarantined_then_restored_by_the_probe() {
    let h = Harness::start(Conf {
        workers: 1,
        retry: "quarantine_ms = 200".into(),
        ..Conf::with_body(&pool_body(&[FLAKY, GOOD]))
    });
    h.mock().faults.set(
        FLAKY,
        KeyFault {
            status: Some(401),
            ..Default::default()
        },
    );
    let mut c = h.client();
    for _ in 0..5 {
        let r = c.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(hits(&h, FLAKY), 1, "a rejected key is used once, then quarantined");
    let status = c.get("/v1/status", &[]).json();
    let keys = status["providers"][0]["keys"].as_array().unwrap().clone();
    let flaky = keys
        .iter()
        .find(|k| k["key"].as_str() == Some("…0002"))
        .expect("masked key listed");
    assert_eq!(flaky["state"].as_str(), Some("quarantined"));
    assert!(!status.to_string().contains(FLAKY), "status never shows a whole key");
    // The key works again: the background probe (GET /models) restores it.
    h.mock().faults.clear(FLAKY);
    let restored = eventually(Duration::from_secs(5), || {
        let status = c.get("/v1/status", &[]).json();
        status["providers"][0]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["state"].as_str() == Some("active"))
    });
    assert!(restored, "the probe restores the key");
    assert!(h
        .recorded()
        .iter()
        .any(|r| r.target.ends_with("/models") && r.bearer() == Some(FLAKY)));
    for _ in 0..4 {
        assert_eq!(c.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    }
    assert!(hits(&h, FLAKY) >= 2, "the restored key takes traffic again");
}

#[test]
fn server_errors_fail_over_to_a_second_provider() {
    let body = format!(
        r#"
[[clients]]
name = "tester"
key = "{CLIENT_KEY}"

[[providers]]
name = "broken"
kind = "openai"
base_url = "{{MOCK}}"
keys = ["sk-fail500-key-0001"]
models = ["gpt-4o-mini"]
weight = 5

[[providers]]
name = "healthy"
kind = "openai"
base_url = "{{MOCK}}"
keys = ["{GOOD}"]
models = ["gpt-4o-mini"]
"#
    );
    let h = Harness::start(Conf {
        workers: 1,
        ..Conf::with_body(&body)
    });
    for _ in 0..3 {
        let r = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-rotor-provider"), Some("healthy"));
    }
}

#[test]
fn all_keys_cooling_is_429_with_retry_after_without_touching_upstream() {
    let h = Harness::start(Conf {
        workers: 1,
        ..Conf::with_body(&pool_body(&[FLAKY, "sk-second-key-0003"]))
    });
    h.mock().faults.set(
        FLAKY,
        KeyFault {
            status: Some(429),
            retry_after_s: Some(30),
            ..Default::default()
        },
    );
    h.mock().faults.set(
        "sk-second-key-0003",
        KeyFault {
            status: Some(429),
            retry_after_s: Some(20),
            ..Default::default()
        },
    );
    let first = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    assert_eq!(first.status, 429, "{}", first.text());
    let before = h.recorded().len();
    let second = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    assert_eq!(second.status, 429);
    let retry_after: u64 = second.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!(
        (15..=20).contains(&retry_after),
        "soonest key frees in ~20 s, got {retry_after}"
    );
    assert_eq!(second.openai_error().1, "rate_limit_error");
    assert_eq!(h.recorded().len(), before, "no upstream request while every key cools");
}

#[test]
fn wait_for_key_waits_for_the_soonest_key_instead_of_failing() {
    let h = Harness::start(Conf {
        workers: 1,
        retry: "wait_for_key_ms = 3000".into(),
        ..Conf::with_body(&pool_body(&[FLAKY, FLAKY]))
    });
    h.mock().faults.set(
        FLAKY,
        KeyFault {
            status: Some(429),
            retry_after_s: Some(1),
            ..Default::default()
        },
    );
    // max_attempts (3) answers the client with the upstream's own 429 at the end; here the
    // single distinct key cools after its first 429 and the request reports exhaustion.
    let first = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    assert_eq!(first.status, 429);
    h.mock().faults.clear(FLAKY);
    let started = Instant::now();
    let r = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_millis(2500),
        "waited {waited:?}"
    );
}

#[test]
fn all_keys_quarantined_is_503() {
    let h = Harness::start(Conf {
        workers: 1,
        retry: "quarantine_ms = 60000".into(),
        ..Conf::with_body(&pool_body(&["sk-fail401-key-001", "sk-fail403-key-002"]))
    });
    let first = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    assert!(
        first.status == 502 || first.status == 401 || first.status == 403,
        "{}",
        first.status
    );
    let second = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    assert_eq!(second.status, 503, "{}", second.text());
    assert_eq!(second.openai_error().1, "upstream_error");
}

#[test]
fn slow_first_byte_moves_to_another_key_within_the_timeout() {
    let h = Harness::start(Conf {
        workers: 1,
        upstream: "first_byte_timeout_ms = 300".into(),
        ..Conf::with_body(&pool_body(&[FLAKY, GOOD]))
    });
    h.mock().faults.set(
        FLAKY,
        KeyFault {
            latency_ms: 3000,
            ..Default::default()
        },
    );
    let mut c = h.client();
    for _ in 0..2 {
        let started = Instant::now();
        let r = c.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "took {:?}",
            started.elapsed()
        );
    }
    assert!(hits(&h, FLAKY) >= 1, "the slow key was tried");
}

#[test]
fn fallback_models_serve_when_the_models_own_candidates_fail() {
    let body = format!(
        r#"
[[clients]]
name = "tester"
key = "{CLIENT_KEY}"

[[providers]]
name = "primary"
kind = "openai"
base_url = "{{MOCK}}"
keys = ["sk-fail500-key-0001"]
models = ["gpt-4o"]

[[providers]]
name = "backup"
kind = "openai"
base_url = "{{MOCK}}"
keys = ["{GOOD}"]
models = ["gpt-4o-mini"]
"#
    );
    let h = Harness::start(Conf {
        workers: 1,
        routing: r#"fallbacks = { "gpt-4o" = ["gpt-4o-mini"] }"#.into(),
        ..Conf::with_body(&body)
    });
    let r = h.post("/v1/chat/completions", &chat("gpt-4o"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-rotor-provider"), Some("backup"));
    let sent = h
        .recorded()
        .into_iter()
        .find(|r| r.bearer() == Some(GOOD))
        .expect("backup used");
    assert!(
        String::from_utf8_lossy(&sent.body).contains("\"gpt-4o-mini\""),
        "fallback sends its own model name"
    );
}

#[test]
fn keepalive_comments_flow_during_a_silent_upstream() {
    let h = Harness::start(Conf {
        server: "sse_keepalive_ms = 100".into(),
        ..Default::default()
    });
    let (status, text, terminated) = h.client().stream_chat(
        &chat_stream("gpt-4o-mini"),
        &[("x-mock-chunks", "2"), ("x-mock-interval-ms", "500")],
    );
    assert_eq!(status, 200);
    assert!(terminated);
    assert!(text.matches(": keepalive").count() >= 4, "{text}");
    // The upstream read stays in flight while keepalives are written: no event is lost.
    for token in ["tok0 ", "tok1 "] {
        assert_eq!(text.matches(token).count(), 1, "{token} once in {text}");
    }
    assert!(text.contains("[DONE]"));
}

/// The stream's keepalive timer is armed once and fires early when events kept coming (issue
/// 18): an upstream that is never silent for a whole keepalive period gets no keepalive, though
/// the stream lasts several periods, and one silent for longer still gets them.
#[test]
fn keepalive_comes_only_after_a_whole_silent_period() {
    let h = Harness::start(Conf {
        server: "sse_keepalive_ms = 250".into(),
        ..Default::default()
    });
    let (status, text, terminated) = h.client().stream_chat(
        &chat_stream("gpt-4o-mini"),
        &[("x-mock-chunks", "8"), ("x-mock-interval-ms", "100")],
    );
    assert_eq!(status, 200);
    assert!(terminated && text.contains("[DONE]"), "{text}");
    assert_eq!(text.matches(": keepalive").count(), 0, "{text}");
    assert_eq!(text.matches("tok7 ").count(), 1, "{text}");
    let (_, text, terminated) = h.client().stream_chat(
        &chat_stream("gpt-4o-mini"),
        &[("x-mock-chunks", "2"), ("x-mock-interval-ms", "600")],
    );
    assert!(terminated && text.contains("[DONE]"), "{text}");
    assert!(text.matches(": keepalive").count() >= 2, "{text}");
}

#[test]
fn request_timeout_ends_a_long_stream_with_an_error_event() {
    let h = Harness::start(Conf {
        upstream: "request_timeout_ms = 400".into(),
        ..Default::default()
    });
    let started = Instant::now();
    let (status, text, terminated) = h.client().stream_chat(
        &chat_stream("gpt-4o-mini"),
        &[("x-mock-chunks", "10"), ("x-mock-interval-ms", "150")],
    );
    assert_eq!(status, 200);
    assert!(terminated);
    assert!(
        text.contains("request_timeout_ms") && !text.contains("[DONE]"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_millis(1000));
}

/// With `drain`, a client leaving mid-stream does not kill the upstream request: rotor reads
/// it to the end (for usage) and the connection goes back to the pool; with `cancel` it closes.
#[test]
fn disconnect_policy_drain_keeps_reading_cancel_closes() {
    for (policy, expected_connections) in [("drain", 1), ("cancel", 2)] {
        let h = Harness::start(Conf {
            workers: 1,
            upstream: format!("on_client_disconnect = \"{policy}\""),
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
                ("x-mock-chunks", "6"),
                ("x-mock-interval-ms", "60"),
            ],
            chat_stream("gpt-4o-mini").as_bytes(),
        );
        assert_eq!(c.read_head().0, 200);
        let _ = c.next_chunk();
        drop(c);
        sleep_ms(700);
        assert_eq!(h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
        assert_eq!(
            h.mock().gate.accepted_connections(),
            expected_connections,
            "policy {policy}: upstream connections opened"
        );
    }
}
