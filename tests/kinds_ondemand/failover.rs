//! on-demand.io failures (a submodule of `kinds_ondemand`, split to keep files small, sharing
//! its helpers): 429 failover and 401 quarantine, cut streams, a sync answer cut before the
//! client saw it, a transient 404 on session create, usage estimated without metrics, and a
//! slow first byte past the timeout.

use super::*;

#[test]
fn a_429_fails_over_to_the_next_key_and_a_401_quarantines_a_key() {
    let bad = "od-pool-key-fail429-x";
    let h = start(&[bad, K2], "");
    for i in 0..4 {
        let a = ask(&h, &[("user", &format!("q{i}"))]);
        assert!(a.starts_with("Hello"), "{a}");
    }
    assert!(
        creates(&h).iter().any(|r| r.header("apikey") == Some(bad)),
        "the 429 key was tried"
    );
    assert!(queries(&h).iter().all(|r| r.header("apikey") == Some(K2)));

    let revoked = "od-pool-key-fail401-y";
    let h = start(&[revoked, K2], "");
    for i in 0..4 {
        ask(&h, &[("user", &format!("q{i}"))]);
    }
    let hits = creates(&h)
        .iter()
        .filter(|r| r.header("apikey") == Some(revoked))
        .count();
    assert_eq!(hits, 1, "a 401 quarantines the key at once");
    assert_eq!(metric(&h, r#"rotor_key_quarantines_total{provider="od"}"#), 1);
    // Out of attempts: the upstream's own answer reaches the client, in its envelope.
    let single = || {
        Harness::start(Conf {
            retry: "max_attempts = 1".into(),
            ..Conf::with_body(&body(&[revoked], ""))
        })
    };
    let h = single();
    let r = h.post("/v1/chat/completions", &convo(false, &[("user", "hi")]), &[]);
    assert_eq!(r.status, 401, "{}", r.text());
    let (message, _) = r.openai_error();
    assert!(message.contains("mock on-demand error 401"), "{message}");
    let h = single();
    let r = h.post(
        "/v1/messages",
        r#"{"model":"gpt-4o","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    );
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        r.json()["error"]["type"].as_str(),
        Some("authentication_error"),
        "{}",
        r.text()
    );
}

#[test]
fn a_cut_stream_ends_in_an_error_event_and_the_session_is_not_continued() {
    let h = start(&[K1], "");
    let mut c = h.client();
    let (status, text, _) = c.stream_chat(
        &convo(true, &[("user", "hi")]),
        &[("x-mock-cut-after", "1"), ("x-mock-chunks", "4")],
    );
    assert_eq!(status, 200);
    assert!(text.contains(r#""error""#), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    assert_eq!(metric(&h, r#"rotor_ondemand_sessions{provider="od"}"#), 0);
}

#[test]
fn a_sync_answer_cut_before_the_client_saw_it_is_retried_on_the_next_key() {
    let h = start(&[K1, K2], "");
    h.mock().faults.set(
        K1,
        KeyFault {
            cut_after: Some(0),
            ..KeyFault::default()
        },
    );
    for i in 0..2 {
        let a = ask(&h, &[("user", &format!("q{i}"))]);
        assert!(a.starts_with("Hello"), "{a}");
    }
    assert!(
        queries(&h).iter().any(|r| r.header("apikey") == Some(K1)),
        "the cut key was tried"
    );
}

#[test]
fn a_transient_404_on_session_create_is_retried_once() {
    let h = start(&[K1], "");
    let fault = KeyFault {
        status: Some(404),
        times: 1,
        ..KeyFault::default()
    };
    h.mock().faults.set(K1, fault);
    let a = ask(&h, &[("user", "hi")]);
    assert!(a.contains("mock-session-1, turn 1"), "{a}");
    assert_eq!(creates(&h).len(), 2, "the 404 create, then the one that worked");
    h.mock().faults.set(K1, KeyFault { times: 2, ..fault });
    let r = h.post("/v1/chat/completions", &convo(false, &[("user", "again")]), &[]);
    assert_eq!(r.status, 404, "a second 404 is the answer: {}", r.text());
}

#[test]
fn without_metrics_usage_is_estimated() {
    let h = start(&[K1], "");
    let r = h.post(
        "/v1/chat/completions",
        &convo(false, &[("user", "hello there")]),
        &[("x-mock-no-metrics", "1")],
    );
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["usage"]["prompt_tokens"].as_u64(), Some(3), "11 chars / 4");
    assert_eq!(v["usage"]["completion_tokens"].as_u64(), Some(13), "52 chars / 4");
    let slow = h.post(
        "/v1/chat/completions",
        &convo(false, &[("user", "x")]),
        &[("x-mock-latency-ms", "300")],
    );
    assert_eq!(slow.status, 200, "a slow first byte within first_byte_timeout_ms");
}

#[test]
fn a_slow_first_byte_past_the_timeout_fails_over() {
    let h = Harness::start(Conf {
        upstream: "first_byte_timeout_ms = 300".into(),
        ..Conf::with_body(&body(&[K1, K2], ""))
    });
    h.mock().faults.set(
        K1,
        KeyFault {
            latency_ms: 2_000,
            ..KeyFault::default()
        },
    );
    let started = std::time::Instant::now();
    for i in 0..2 {
        let a = ask(&h, &[("user", &format!("q{i}"))]);
        assert!(a.starts_with("Hello"), "{a}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the session create is bounded by first_byte_timeout_ms"
    );
    assert!(queries(&h).iter().all(|r| r.header("apikey") == Some(K2)));
}
