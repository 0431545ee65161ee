//! Key and provider health (issue 12, item 4), over real sockets against the mock: a
//! provider-wide burst opens the provider's breaker and quarantines no key, recovery is
//! immediate; a key's own faults (401, failing alone) quarantine it while the others serve;
//! the last usable key is never quarantined for 5xx; every 503 carries Retry-After; a
//! transient failure is retried on another key, or the same one when it is the only one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use rotor::mock::KeyFault;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

const A: &str = "sk-health-key-0000a1";
const B: &str = "sk-health-key-0000b2";
const C: &str = "sk-health-key-0000c3";

fn fault(status: u16) -> KeyFault {
    KeyFault {
        status: Some(status),
        ..Default::default()
    }
}

/// (masked key, state) of every key of the first provider, and its breaker state.
fn states(h: &Harness) -> (Vec<(String, String)>, String) {
    let status = h.client().get("/v1/status", &[]).json();
    let provider = &status["providers"][0];
    let keys = provider["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["key"].as_str().unwrap().to_owned(),
                k["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (keys, provider["breaker"].as_str().unwrap().to_owned())
}

fn state_of(h: &Harness, key: &str) -> String {
    let masked = format!("…{}", &key[key.len() - 4..]);
    let (keys, _) = states(h);
    keys.into_iter()
        .find(|(k, _)| *k == masked)
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("{masked} not listed"))
}

/// The value of one exact series in `/metrics`.
fn metric(h: &Harness, series: &str) -> u64 {
    let text = h.client().get("/metrics", &[]).text();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
}

fn hits(h: &Harness, key: &str) -> usize {
    h.recorded()
        .iter()
        .filter(|r| r.bearer() == Some(key) && r.target.ends_with("/chat/completions"))
        .count()
}

fn retry_after(r: &Response) -> u64 {
    r.header("retry-after")
        .unwrap_or_else(|| panic!("a {} without Retry-After: {}", r.status, r.text()))
        .parse()
        .unwrap()
}

#[test]
fn a_provider_wide_503_burst_quarantines_no_key_and_clients_succeed_right_after_recovery() {
    let h = Harness::start(Conf::with_body(&pool_body(&[A, B, C])));
    for key in [A, B, C] {
        h.mock().faults.set(key, fault(503));
    }
    // The burst, from four clients at once.
    let answers: Vec<Response> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    (0..8)
                        .map(|_| h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    for r in &answers {
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(retry_after(r) >= 1);
    }
    assert!(
        answers.iter().any(|r| r.text().contains("circuit open")),
        "the breaker answered some requests itself"
    );
    assert!(metric(&h, r#"rotor_breaker_opens_total{provider="mock"}"#) >= 1);
    let (keys, _) = states(&h);
    assert!(
        keys.iter().all(|(_, s)| s != "quarantined"),
        "a provider-wide burst is not the keys' fault: {keys:?}"
    );
    // The provider recovers: clients are served again within the breaker's open time.
    for key in [A, B, C] {
        h.mock().faults.clear(key);
    }
    let recovered = Instant::now();
    assert!(eventually(Duration::from_secs(10), || h
        .post("/v1/chat/completions", &chat("gpt-4o-mini"), &[])
        .status
        == 200));
    assert!(
        recovered.elapsed() < Duration::from_secs(3),
        "served again {:?} after recovery",
        recovered.elapsed()
    );
    for _ in 0..6 {
        assert_eq!(h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    }
    let (keys, breaker) = states(&h);
    assert_eq!(breaker, "closed");
    assert!(keys.iter().all(|(_, s)| s == "active"), "{keys:?}");
    assert_eq!(metric(&h, r#"rotor_key_quarantines_total{provider="mock"}"#), 0);
    assert_eq!(metric(&h, r#"rotor_breaker_state{provider="mock",state="closed"}"#), 1);
}

#[test]
fn a_401_key_is_quarantined_at_once_while_the_others_serve_and_restored_after() {
    let h = Harness::start(Conf {
        workers: 1,
        retry: "quarantine_ms = 300".into(),
        ..Conf::with_body(&pool_body(&[A, B, C]))
    });
    h.mock().faults.set(B, fault(401));
    let mut c = h.client();
    for _ in 0..9 {
        let r = c.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(hits(&h, B), 1, "the rejected key is used once");
    assert_eq!(state_of(&h, B), "quarantined");
    assert_eq!((state_of(&h, A), state_of(&h, C)), ("active".into(), "active".into()));
    assert_eq!(metric(&h, r#"rotor_key_quarantines_total{provider="mock"}"#), 1);
    h.mock().faults.clear(B);
    assert!(eventually(Duration::from_secs(5), || state_of(&h, B) == "active"));
    assert_eq!(metric(&h, r#"rotor_key_restores_total{provider="mock"}"#), 1);
}

#[test]
fn a_key_failing_alone_is_quarantined_while_the_others_answer() {
    let h = Harness::start(Conf {
        workers: 1,
        ..Conf::with_body(&pool_body(&[A, B, C]))
    });
    h.mock().faults.set(A, fault(500));
    let mut c = h.client();
    for _ in 0..24 {
        let r = c.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
        assert_eq!(r.status, 200, "the others serve: {}", r.text());
    }
    assert_eq!(state_of(&h, A), "quarantined");
    let (keys, breaker) = states(&h);
    assert_eq!(breaker, "closed", "one bad key is not a provider fault");
    assert_eq!(keys.iter().filter(|(_, s)| s == "active").count(), 2, "{keys:?}");
    assert_eq!(
        hits(&h, A),
        5,
        "quarantined after quarantine_after_failures (5) in a row, then left alone"
    );
}

#[test]
fn the_last_usable_key_is_not_quarantined_on_5xx() {
    let h = Harness::start(Conf {
        workers: 1,
        // The breaker off: only the key rules are at work here.
        retry: "breaker_failures = 0\nquarantine_ms = 60000".into(),
        ..Conf::with_body(&pool_body(&["sk-fail401-key-0001", A]))
    });
    h.mock().faults.set(A, fault(500));
    let mut c = h.client();
    for _ in 0..8 {
        let r = c.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
        assert_eq!(r.status, 500, "the upstream's own answer: {}", r.text());
    }
    assert_eq!(state_of(&h, "sk-fail401-key-0001"), "quarantined");
    assert_eq!(
        state_of(&h, A),
        "active",
        "the provider's last usable key stays in rotation"
    );
    assert!(hits(&h, A) >= 8 * 2, "retried on the same key: {}", hits(&h, A));
    h.mock().faults.clear(A);
    let r = c.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    assert_eq!(r.status, 200, "no outage once the key works: {}", r.text());
}

#[test]
fn every_503_carries_retry_after() {
    // No usable key at all: rotor's own 503 says when the soonest probe is.
    let h = Harness::start(Conf {
        workers: 1,
        retry: "quarantine_ms = 60000".into(),
        ..Conf::with_body(&pool_body(&["sk-fail401-key-001", "sk-fail403-key-002"]))
    });
    let _ = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    let r = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!((50..=60).contains(&retry_after(&r)), "{:?}", r.header("retry-after"));
    assert_eq!(r.openai_error().1, "upstream_error");
    // The upstream's own 503 relayed after the last attempt gets one too.
    let h = Harness::start(Conf {
        retry: "max_attempts = 1".into(),
        ..Default::default()
    });
    let r = h.post(
        "/v1/chat/completions",
        &chat("gpt-4o-mini"),
        &[("x-mock-status", "503")],
    );
    assert_eq!(r.status, 503);
    assert!(retry_after(&r) >= 1);
}

#[test]
fn a_transient_5xx_is_retried_on_another_key_then_on_the_same_one() {
    // One key: the 503 is transient, so the same key is asked again.
    let h = Harness::start(Conf {
        workers: 1,
        ..Default::default()
    });
    h.mock().faults.set(POOL_KEY, KeyFault { times: 1, ..fault(503) });
    let r = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-rotor-attempts"), Some("2"));
    // Two keys, each failing once: both are tried, then the first again.
    let h = Harness::start(Conf {
        workers: 1,
        ..Conf::with_body(&pool_body(&[A, B]))
    });
    for key in [A, B] {
        h.mock().faults.set(key, KeyFault { times: 1, ..fault(502) });
    }
    let r = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-rotor-attempts"), Some("3"));
    let (a, b) = (hits(&h, A), hits(&h, B));
    assert!(a + b == 3 && a >= 1 && b >= 1, "both keys tried, one twice: {a} + {b}");
}

#[test]
fn a_whole_answer_cut_before_the_client_saw_it_is_retried() {
    let h = Harness::start(Conf {
        workers: 1,
        ..Default::default()
    });
    h.mock().faults.set(
        POOL_KEY,
        KeyFault {
            cut_after: Some(0),
            times: 1,
            ..Default::default()
        },
    );
    let r = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-rotor-attempts"), Some("2"));
    assert_eq!(r.json()["object"].as_str(), Some("chat.completion"));
}
