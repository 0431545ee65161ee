//! Window limits over real sockets: exact admission across workers, disabled limits, client
//! limits, persistence across a restart, learned limits, and `/v1/status` usage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::{Arc, Barrier};

use common::{chat, start_mock, Client, Conf, Harness, CLIENT_KEY};
use rotor::config::{self, ConfigSource};
use rotor::runtime;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

fn provider(keys: &[&str], limits: &str) -> String {
    let keys = keys.iter().map(|k| format!("\"{k}\"")).collect::<Vec<_>>().join(", ");
    format!(
        r#"
[[providers]]
name = "mock"
kind = "openai"
base_url = "{{MOCK}}"
keys = [{keys}]
models = ["gpt-4o-mini"]
{limits}
"#
    )
}

fn client(limits: &str) -> String {
    format!(
        r#"
[[clients]]
name = "tester"
key = "{CLIENT_KEY}"
{limits}
"#
    )
}

fn retry_after(r: &common::Response) -> u64 {
    let value = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {}", r.text()));
    value.parse().unwrap_or_else(|_| panic!("Retry-After {value:?}"))
}

#[test]
fn rpm_five_on_two_keys_admits_exactly_ten_across_workers() {
    let body = client("") + &provider(&["sk-key-one-0001", "sk-key-two-0002"], "rpm = 5");
    let h = Harness::start(Conf::with_body(&body));
    let addr = h.addr;
    let threads = 12;
    let per_thread = 3;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                (0..per_thread)
                    .map(|_| Client::connect(addr).post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let responses: Vec<_> = handles.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let ok = responses.iter().filter(|r| r.status == 200).count();
    let limited: Vec<_> = responses.iter().filter(|r| r.status == 429).collect();
    assert_eq!(
        ok,
        10,
        "statuses: {:?}",
        responses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(limited.len(), threads * per_thread - 10);
    assert_eq!(h.recorded().len(), 10, "exactly 10 requests reach the upstream");
    // Both keys served five each.
    let recorded = h.recorded();
    for key in ["sk-key-one-0001", "sk-key-two-0002"] {
        let n = recorded
            .iter()
            .filter(|r| r.headers.iter().any(|(n, v)| n == "authorization" && v.ends_with(key)))
            .count();
        assert_eq!(n, 5, "{key}");
    }
    // The 11th and later: 429 in the OpenAI shape, Retry-After within the window (the
    // current one-second bucket frees at most 61 s from now).
    let eleventh = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    assert_eq!(eleventh.status, 429);
    let (_, kind) = eleventh.openai_error();
    assert_eq!(kind, "rate_limit_error");
    for r in limited.iter().copied().chain([&eleventh]) {
        let seconds = retry_after(r);
        assert!((1..=61).contains(&seconds), "Retry-After {seconds}");
    }
    assert_eq!(h.recorded().len(), 10);
    assert_eq!(
        h.running().gateway.current().config.server.workers,
        2,
        "two gateway workers"
    );
}

#[test]
fn provider_rpm_zero_never_reaches_upstream() {
    let body = client("") + &provider(&["sk-key-one-0001"], "rpm = 0");
    let h = Harness::start(Conf::with_body(&body));
    for _ in 0..3 {
        let r = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
        assert_eq!(r.status, 503, "{}", r.text());
    }
    assert!(h.recorded().is_empty());
}

#[test]
fn client_rpm_two_admits_two_then_429_without_upstream() {
    let body = client("rpm = 2") + &provider(&["sk-key-one-0001"], "");
    let h = Harness::start(Conf::with_body(&body));
    for _ in 0..2 {
        let r = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let third = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    assert_eq!(third.status, 429, "{}", third.text());
    let seconds = retry_after(&third);
    assert!((1..=61).contains(&seconds), "Retry-After {seconds}");
    assert!(third.openai_error().0.contains("rpm"), "{}", third.text());
    assert_eq!(h.recorded().len(), 2, "the third never reached upstream");
}

#[test]
fn client_limit_zero_is_refused() {
    let body = client("rpd = 0") + &provider(&["sk-key-one-0001"], "");
    let h = Harness::start(Conf::with_body(&body));
    let r = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(h.recorded().is_empty());
}

#[test]
fn full_window_survives_a_restart_with_the_same_storage_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rotor.db");
    let mock = start_mock();
    let body = client("") + &provider(&["sk-key-one-0001"], "rpm = 2");
    let text = Conf::with_body(&body)
        .render(&mock.base_url())
        .replace("path = \"\"", &format!("path = {:?}", db.display().to_string()));
    let start = || runtime::start(config::parse_str(&text, ConfigSource::Environment).unwrap(), None).unwrap();

    let first = start();
    for _ in 0..2 {
        let r = Client::connect(first.addr).post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    first.stop();
    first.wait();
    assert!(db.exists(), "the storage file was written");

    let second = start();
    let r = Client::connect(second.addr).post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    assert_eq!(
        r.status,
        429,
        "the window is still full after the restart: {}",
        r.text()
    );
    assert!((1..=61).contains(&retry_after(&r)));
    assert_eq!(mock.recorder.requests().len(), 2);
    second.stop();
    second.wait();
    mock.stop();
}

#[test]
fn a_key_the_provider_says_is_spent_is_not_chosen_until_reset() {
    let body = client("") + &provider(&["sk-key-one-0001", "sk-key-two-0002"], "");
    let h = Harness::start(Conf {
        workers: 1,
        ..Conf::with_body(&body)
    });
    let spent = h.post(
        "/v1/chat/completions",
        &chat("gpt-4o-mini"),
        &[("x-mock-ratelimit-remaining", "0"), ("x-mock-ratelimit-reset", "30s")],
    );
    assert_eq!(spent.status, 200, "{}", spent.text());
    let key_of = |r: &rotor::mock::Recorded| {
        r.headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let spent_key = key_of(&h.recorded()[0]);
    for _ in 0..4 {
        let r = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let later: Vec<_> = h.recorded()[1..].iter().map(key_of).collect();
    assert_eq!(later.len(), 4);
    assert!(
        later.iter().all(|k| *k != spent_key),
        "{spent_key} used again: {later:?}"
    );
}

#[test]
fn status_shows_usage_against_each_limit() {
    let body = client("rpm = 10\ntpm = 100000") + &provider(&["sk-key-one-0001"], "rpm = 5\nrpd = 100");
    let h = Harness::start(Conf::with_body(&body));
    for _ in 0..3 {
        assert_eq!(h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    }
    let status = h
        .client()
        .get("/v1/status", &[("authorization", &format!("Bearer {CLIENT_KEY}"))]);
    assert_eq!(status.status, 200, "{}", status.text());
    let v = status.json();
    let key_limits = &v["providers"][0]["keys"][0]["limits"];
    assert_eq!(key_limits["rpm"]["used"].as_u64(), Some(3), "{}", status.text());
    assert_eq!(key_limits["rpm"]["limit"].as_u64(), Some(5));
    assert_eq!(key_limits["rpd"]["used"].as_u64(), Some(3));
    assert!(key_limits.get("tpm").is_none(), "unlimited windows are left out");
    let client_limits = &v["client"]["limits"];
    assert_eq!(client_limits["rpm"]["used"].as_u64(), Some(3));
    // TPM holds the estimate, or the reported usage once settled; either way some tokens.
    assert!(client_limits["tpm"]["used"].as_u64().unwrap_or(0) > 0);
    assert_eq!(client_limits["tpm"]["limit"].as_u64(), Some(100_000));
    assert!(v["client"].as_object().is_some());
}
