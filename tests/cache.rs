//! The response cache (issue 16 item 5, DESIGN 1.3) over real sockets against `rotor mock`: the
//! mock's request recorder tells how many upstream calls were made.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use sonic_rs::JsonValueTrait;

const ADMIN: &str = "adm-key-0000-0003";
const OTHER_KEY: &str = "sk-client-other-0002";
const CHAT: &str = "/v1/chat/completions";

fn start(cache: &str) -> Harness {
    let body = format!(
        "[cache]\nenabled = true\n{cache}\n{}\n[[clients]]\nname = \"other\"\nkey = \"{OTHER_KEY}\"\n",
        default_body()
    );
    Harness::start(Conf {
        server: format!("admin_key = \"{ADMIN}\""),
        body,
        ..Default::default()
    })
}

fn upstream_calls(h: &Harness) -> usize {
    h.recorded()
        .iter()
        .filter(|r| r.target.contains("/chat/completions"))
        .count()
}

fn metric(h: &Harness, series: &str) -> u64 {
    let text = h.client().get("/metrics", &[]).text();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
}

fn outcome(h: &Harness, name: &str) -> u64 {
    metric(h, &format!("rotor_cache_requests_total{{outcome=\"{name}\"}}"))
}

fn chat_with(content: &str) -> String {
    format!(r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{content}"}}]}}"#)
}

#[test]
fn a_repeated_whole_answer_is_served_from_the_cache_with_one_upstream_call() {
    let h = start("");
    let first = h.post(CHAT, &chat("gpt-4o-mini"), &[]);
    let second = h.post(CHAT, &chat("gpt-4o-mini"), &[]);
    assert_eq!((first.status, second.status), (200, 200));
    assert_eq!(first.header("x-rotor-cache"), Some("miss"));
    assert_eq!(second.header("x-rotor-cache"), Some("hit"));
    assert_eq!(second.header("x-rotor-provider"), Some("cache"));
    assert_eq!(first.text(), second.text(), "the same bytes");
    assert!(second.json()["choices"][0]["message"]["content"].is_str());
    assert_eq!(upstream_calls(&h), 1);
    assert_eq!(
        (outcome(&h, "miss"), outcome(&h, "hit"), outcome(&h, "store")),
        (1, 1, 1)
    );
    assert!(metric(&h, "rotor_cache_bytes") > first.text().len() as u64);
}

#[test]
fn a_streamed_answer_is_replayed_as_the_same_sse_stream() {
    let h = start("");
    let first = h.post(CHAT, &chat_stream("gpt-4o-mini"), &[("x-mock-chunks", "4")]);
    let second = h.post(CHAT, &chat_stream("gpt-4o-mini"), &[]);
    assert_eq!((first.status, second.status), (200, 200));
    assert_eq!(first.header("x-rotor-cache"), Some("miss"));
    assert_eq!(second.header("x-rotor-cache"), Some("hit"));
    assert!(second.header("content-type").unwrap().starts_with("text/event-stream"));
    let text = second.text();
    assert_eq!(first.text(), text);
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.trim().is_empty()).collect();
    assert!(events.len() >= 5, "{text}");
    assert!(events.iter().all(|e| e.starts_with("data: ")), "{text}");
    assert_eq!(events.last().copied(), Some("data: [DONE]"));
    assert_eq!(upstream_calls(&h), 1);
    // A whole request for the same conversation does not hit the stream entry.
    let whole = h.post(CHAT, &chat("gpt-4o-mini"), &[]);
    assert_eq!(whole.header("x-rotor-cache"), Some("miss"));
    assert!(whole.json()["choices"].is_array());
}

#[test]
fn no_cache_bypasses_both_reading_and_writing() {
    let h = start("");
    let bypass = h.post(CHAT, &chat("gpt-4o-mini"), &[("cache-control", "no-cache")]);
    assert_eq!(bypass.header("x-rotor-cache"), Some("bypass"));
    assert_eq!(
        h.post(CHAT, &chat("gpt-4o-mini"), &[]).header("x-rotor-cache"),
        Some("miss")
    );
    let again = h.post(CHAT, &chat("gpt-4o-mini"), &[("cache-control", "no-cache")]);
    assert_eq!(again.header("x-rotor-cache"), Some("bypass"));
    assert_eq!(upstream_calls(&h), 3);
    assert_eq!((outcome(&h, "bypass"), outcome(&h, "store")), (2, 1));
}

#[test]
fn different_clients_do_not_share_entries() {
    let h = start("");
    assert_eq!(
        h.post(CHAT, &chat("gpt-4o-mini"), &[]).header("x-rotor-cache"),
        Some("miss")
    );
    let other = format!("Bearer {OTHER_KEY}");
    let mut c = h.client();
    let r = c.request(
        "POST",
        CHAT,
        &[("authorization", &other), ("content-type", "application/json")],
        chat("gpt-4o-mini").as_bytes(),
    );
    assert_eq!((r.status, r.header("x-rotor-cache")), (200, Some("miss")));
    assert_eq!(upstream_calls(&h), 2);
}

#[test]
fn an_entry_expires_after_ttl() {
    let h = start("ttl_ms = 1000");
    let stored = Instant::now();
    assert_eq!(
        h.post(CHAT, &chat("gpt-4o-mini"), &[]).header("x-rotor-cache"),
        Some("miss")
    );
    let expired = eventually(Duration::from_secs(5), || {
        h.post(CHAT, &chat("gpt-4o-mini"), &[]).header("x-rotor-cache") == Some("miss")
    });
    assert!(expired);
    assert!(stored.elapsed() >= Duration::from_millis(990));
    assert_eq!(upstream_calls(&h), 2);
}

#[test]
fn the_byte_bound_evicts_least_recently_used_entries_and_counts_them() {
    let h = start("max_bytes = 16384\nmax_entry_bytes = 1024");
    for i in 0..60 {
        let r = h.post(CHAT, &chat_with(&format!("question {i}")), &[]);
        assert_eq!(r.header("x-rotor-cache"), Some("miss"));
    }
    assert_eq!(outcome(&h, "store"), 60);
    assert!(outcome(&h, "evict") > 0);
    assert!(metric(&h, "rotor_cache_bytes") <= 16384);
}

#[test]
fn error_answers_are_never_cached() {
    let h = start("");
    for status in ["500", "429", "500"] {
        let r = h.post(CHAT, &chat("gpt-4o-mini"), &[("x-mock-status", status)]);
        assert_ne!(r.status, 200);
    }
    assert_eq!(outcome(&h, "store"), 0);
    assert!(outcome(&h, "miss") >= 2);
}

#[test]
fn a_cut_stream_is_never_cached() {
    let h = start("");
    let (status, text, _) = h.client().stream_chat(
        &chat_stream("gpt-4o-mini"),
        &[("x-mock-chunks", "5"), ("x-mock-cut-after", "2")],
    );
    assert!(status == 200 && text.contains("stream_interrupted"), "{text}");
    assert_eq!(outcome(&h, "store"), 0);
    let again = h.post(CHAT, &chat_stream("gpt-4o-mini"), &[]);
    assert_eq!(again.header("x-rotor-cache"), Some("miss"));
    assert!(again.text().ends_with("data: [DONE]\n\n"));
}

#[test]
fn a_hit_is_logged_with_zero_upstream_tokens() {
    let h = start("");
    h.post(CHAT, &chat("gpt-4o-mini"), &[]);
    h.post(CHAT, &chat("gpt-4o-mini"), &[]);
    let auth = format!("Bearer {ADMIN}");
    let mut rows = sonic_rs::Value::default();
    let written = eventually(Duration::from_secs(5), || {
        let r = h
            .client()
            .request("GET", "/admin/logs?limit=2", &[("authorization", &auth)], b"");
        rows = r.json();
        rows["total"].as_u64() == Some(2)
    });
    assert!(written, "{rows}");
    // The miss's row is written when its request ends, which can be after the client has its
    // answer and has sent the second request: the two rows may come in either order.
    let by_provider = |name: &str| {
        (0..2)
            .map(|i| &rows["data"][i])
            .find(|row| row["provider"].as_str() == Some(name))
    };
    let (Some(hit), Some(miss)) = (by_provider("cache"), by_provider("mock")) else {
        panic!("one row from the cache and one from the mock: {rows}");
    };
    assert_eq!(hit["endpoint"].as_str(), Some("chat/completions"));
    assert_eq!(hit["model"].as_str(), Some("gpt-4o-mini"));
    assert_eq!(hit["status"].as_u64(), Some(200));
    assert_eq!(
        (hit["prompt_tokens"].as_u64(), hit["completion_tokens"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(miss["prompt_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn with_the_cache_off_nothing_is_looked_up() {
    let h = Harness::start(Conf::default());
    let r = h.post(CHAT, &chat("gpt-4o-mini"), &[]);
    assert_eq!((r.status, r.header("x-rotor-cache")), (200, None));
    h.post(CHAT, &chat("gpt-4o-mini"), &[]);
    assert_eq!(upstream_calls(&h), 2);
    assert_eq!(outcome(&h, "miss"), 0);
}

#[test]
fn a_hit_counts_against_the_clients_request_limit() {
    let body = format!(
        "[cache]\nenabled = true\n{}",
        default_body().replace("name = \"tester\"\n", "name = \"tester\"\nrpm = 2\n")
    );
    let h = Harness::start(Conf::with_body(&body));
    assert_eq!(
        h.post(CHAT, &chat("gpt-4o-mini"), &[]).header("x-rotor-cache"),
        Some("miss")
    );
    assert_eq!(
        h.post(CHAT, &chat("gpt-4o-mini"), &[]).header("x-rotor-cache"),
        Some("hit")
    );
    let third = h.post(CHAT, &chat("gpt-4o-mini"), &[]);
    assert_eq!(third.status, 429, "{}", third.text());
    assert_eq!(upstream_calls(&h), 1);
}

#[test]
fn the_gemini_door_caches_by_method_and_not_by_the_key_parameter() {
    let h = start("");
    let body = r#"{"contents":[{"role":"user","parts":[{"text":"hello"}]}]}"#;
    let path = "/v1beta/models/gpt-4o-mini:streamGenerateContent?alt=sse";
    let goog = |target: &str, headers: &[(&str, &str)]| {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        h.client().request("POST", target, &all, body.as_bytes())
    };
    let first = goog(&format!("{path}&key={CLIENT_KEY}"), &[]);
    assert_eq!((first.status, first.header("x-rotor-cache")), (200, Some("miss")));
    let second = goog(path, &[("x-goog-api-key", CLIENT_KEY)]);
    assert_eq!((second.status, second.header("x-rotor-cache")), (200, Some("hit")));
    assert_eq!(first.text(), second.text());
    assert!(second.text().starts_with("data: "));
    // The whole method, same body: its own entry.
    let whole = goog(
        "/v1beta/models/gpt-4o-mini:generateContent",
        &[("x-goog-api-key", CLIENT_KEY)],
    );
    assert_eq!(whole.header("x-rotor-cache"), Some("miss"), "{}", whole.text());
    assert!(whole.json()["candidates"].is_array());
    assert_eq!(upstream_calls(&h), 2);
}
