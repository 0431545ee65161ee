//! `kind = "ondemand"` end to end over real sockets against the mock's on-demand.io shapes:
//! both front doors, streamed or not, with usage; key failover (429), quarantine (401) and a
//! cut stream; and the sessions: reused across turns with only the new message as `query`, a
//! new session with the history folded in after rotor's timeout or an upstream 404, pinned to
//! the key that created it, and bounded by `max_sessions`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/mod.rs"]
mod common;
mod failover;

use std::time::Duration;

use common::*;
use rotor::mock::{KeyFault, Recorded};
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

const K1: &str = "od-pool-key-0001";
const K2: &str = "od-pool-key-0002";
const ENDPOINT: &str = "predefined-openai-gpt4o";

fn body(keys: &[&str], extra: &str) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    format!(
        r#"
[[clients]]
name = "tester"
key = "{CLIENT_KEY}"

[[providers]]
name = "od"
kind = "ondemand"
base_url = "{{MOCK}}"
keys = [{}]
models = []
aliases = {{ "gpt-4o" = "{ENDPOINT}" }}
{extra}
"#,
        keys.join(", ")
    )
}

fn start(keys: &[&str], extra: &str) -> Harness {
    Harness::start(Conf {
        workers: 2,
        ..Conf::with_body(&body(keys, extra))
    })
}

/// A chat body from (role, text) pairs.
fn convo(stream: bool, messages: &[(&str, &str)]) -> String {
    let messages: Vec<String> = messages
        .iter()
        .map(|(role, text)| {
            format!(
                r#"{{"role":"{role}","content":{}}}"#,
                sonic_rs::to_string(text).unwrap()
            )
        })
        .collect();
    format!(
        r#"{{"model":"gpt-4o","stream":{stream},"stream_options":{{"include_usage":true}},"temperature":0.3,"messages":[{}]}}"#,
        messages.join(",")
    )
}

fn ask(h: &Harness, messages: &[(&str, &str)]) -> String {
    let r = h.post("/v1/chat/completions", &convo(false, messages), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn queries(h: &Harness) -> Vec<Recorded> {
    h.recorded()
        .into_iter()
        .filter(|r| r.target.ends_with("/query"))
        .collect()
}

fn creates(h: &Harness) -> Vec<Recorded> {
    h.recorded()
        .into_iter()
        .filter(|r| r.method == "POST" && r.target.ends_with("/sessions"))
        .collect()
}

fn json(r: &Recorded) -> Value {
    sonic_rs::from_slice(&r.body).unwrap()
}

fn metric(h: &Harness, series: &str) -> u64 {
    let text = h.client().get("/metrics", &[]).text();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
}

fn event(h: &Harness, name: &str) -> u64 {
    metric(
        h,
        &format!(r#"rotor_ondemand_session_events_total{{provider="od",event="{name}"}}"#),
    )
}

#[test]
fn a_chat_turn_opens_a_session_and_queries_it_with_usage() {
    let h = start(&[K1], "");
    let r = h.post(
        "/v1/chat/completions",
        &convo(false, &[("system", "be brief"), ("user", "hi")]),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        v["choices"][0]["message"]["content"].as_str(),
        Some("Hello from on-demand session mock-session-1, turn 1.")
    );
    assert_eq!(v["model"].as_str(), Some("gpt-4o"));
    assert_eq!(
        v["usage"]["completion_tokens"].as_u64(),
        Some(7),
        "from the upstream's metrics"
    );
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let created = creates(&h);
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].header("apikey"), Some(K1));
    assert!(
        created[0].header("authorization").is_none(),
        "the key goes in apikey only"
    );
    let q = queries(&h);
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].target, format!("/v1/sessions/mock-session-1/query"));
    let sent = json(&q[0]);
    assert_eq!(sent["endpointId"].as_str(), Some(ENDPOINT));
    assert_eq!(sent["query"].as_str(), Some("hi"));
    assert_eq!(sent["responseMode"].as_str(), Some("sync"));
    assert_eq!(sent["modelConfigs"]["fulfillmentPrompt"].as_str(), Some("be brief"));
    assert_eq!(sent["modelConfigs"]["temperature"].as_f64(), Some(0.3));
    assert_eq!(event(&h, "created"), 1);
    assert_eq!(metric(&h, r#"rotor_ondemand_sessions{provider="od"}"#), 1);
}

#[test]
fn a_stream_has_content_reasoning_usage_and_one_done() {
    let h = start(&[K1], "");
    let mut c = h.client();
    let (status, text, terminated) = c.stream_chat(
        &convo(true, &[("user", "hi")]),
        &[("x-mock-thinking", "1"), ("x-mock-chunks", "4")],
    );
    assert_eq!(status, 200, "{text}");
    assert!(terminated);
    let mut content = String::new();
    let mut reasoning = String::new();
    let mut usage = None;
    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            continue;
        }
        let v: Value = sonic_rs::from_str(data).unwrap();
        assert!(v.get("error").is_none(), "{text}");
        if let Some(d) = v["choices"].as_array().and_then(|a| a.first()).map(|c| &c["delta"]) {
            content.push_str(d["content"].as_str().unwrap_or(""));
            reasoning.push_str(d["reasoning_content"].as_str().unwrap_or(""));
        }
        if v["usage"].is_object() {
            usage = Some(v["usage"]["completion_tokens"].as_u64().unwrap());
        }
    }
    assert_eq!(content, "Hello from on-demand session mock-session-1, turn 1.");
    assert_eq!(reasoning, "thinking about it");
    assert_eq!(usage, Some(7));
    assert_eq!(text.matches("data: [DONE]").count(), 1);
    assert!(text.contains(r#""finish_reason":"stop""#));
    assert_eq!(json(&queries(&h)[0])["responseMode"].as_str(), Some("stream"));
}

#[test]
fn the_anthropic_front_door_is_served_streamed_or_not() {
    let h = start(&[K1], "");
    let messages = r#"{"model":"gpt-4o","max_tokens":50,"system":"terse","messages":[{"role":"user","content":"hi"}]}"#;
    let r = h.post("/v1/messages", messages, &[("anthropic-version", "2023-06-01")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"].as_str(), Some("message"));
    assert!(v["content"][0]["text"]
        .as_str()
        .unwrap()
        .starts_with("Hello from on-demand"));
    assert_eq!(v["usage"]["output_tokens"].as_u64(), Some(7));
    let sent = json(&queries(&h)[0]);
    assert_eq!(sent["modelConfigs"]["fulfillmentPrompt"].as_str(), Some("terse"));
    assert_eq!(sent["modelConfigs"]["maxTokens"].as_u64(), Some(50));

    let streamed = messages.replace(r#""max_tokens":50"#, r#""max_tokens":50,"stream":true"#);
    let r = h.post("/v1/messages", &streamed, &[]);
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.contains("event: message_start"), "{text}");
    assert!(text.contains("text_delta"), "{text}");
    assert!(text.contains(r#""output_tokens":7"#), "{text}");
    assert!(text.trim_end().ends_with(r#"data: {"type":"message_stop"}"#), "{text}");
    assert!(!text.contains("[DONE]"));

    let r = h.post("/v1/messages", messages, &[("x-mock-status", "400")]);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["type"].as_str(), Some("error"), "{}", r.text());
}

#[test]
fn a_follow_up_turn_reuses_the_session_with_only_the_new_message() {
    let h = start(&[K1, K2], "");
    let first = ask(&h, &[("user", "hi")]);
    let second = ask(&h, &[("user", "hi"), ("assistant", &first), ("user", "and then?")]);
    assert_eq!(second, "Hello from on-demand session mock-session-1, turn 2.");
    let third = ask(
        &h,
        &[
            ("user", "hi"),
            ("assistant", &first),
            ("user", "and then?"),
            ("assistant", &second),
            ("user", "bye"),
        ],
    );
    assert!(third.ends_with("turn 3."), "{third}");
    assert_eq!(creates(&h).len(), 1, "one session for the whole conversation");
    let q = queries(&h);
    assert_eq!(json(&q[1])["query"].as_str(), Some("and then?"));
    assert_eq!(json(&q[2])["query"].as_str(), Some("bye"));
    assert_eq!(event(&h, "reused"), 2);
    // Another client history (an edited answer) is a new conversation, its history folded in.
    let other = ask(&h, &[("user", "hi"), ("assistant", "edited"), ("user", "and then?")]);
    assert!(other.contains("mock-session-2, turn 1"), "{other}");
    let folded = json(&queries(&h)[3])["query"].as_str().unwrap().to_owned();
    assert!(
        folded.contains("User: hi") && folded.contains("Assistant: edited"),
        "{folded}"
    );
    assert!(folded.ends_with("and then?"), "{folded}");
}

#[test]
fn a_stream_commits_its_answer_for_the_next_turn() {
    let h = start(&[K1], "");
    let mut c = h.client();
    let (_, text, _) = c.stream_chat(&convo(true, &[("user", "hi")]), &[]);
    let answer: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| sonic_rs::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    let next = ask(&h, &[("user", "hi"), ("assistant", &answer), ("user", "more")]);
    assert!(next.ends_with("mock-session-1, turn 2."), "{next}");
}

#[test]
fn a_session_past_its_timeout_is_replaced_with_the_history_folded_in() {
    let h = start(&[K1], "session_timeout_ms = 1000");
    let first = ask(&h, &[("user", "hi")]);
    sleep_ms(1_200); // past session_timeout_ms: the time itself is what is tested
    let next = ask(&h, &[("user", "hi"), ("assistant", &first), ("user", "again")]);
    assert!(next.contains("mock-session-2, turn 1"), "{next}");
    let q = json(&queries(&h)[1]);
    let query = q["query"].as_str().unwrap();
    assert!(
        query.contains("User: hi") && query.contains(&first) && query.ends_with("again"),
        "{query}"
    );
    assert_eq!(event(&h, "expired"), 1);
}

#[test]
fn a_session_the_upstream_forgot_is_replaced_within_the_same_request() {
    let h = start(&[K1], "");
    let first = ask(&h, &[("user", "hi")]);
    h.mock().ondemand.forget_all();
    let next = ask(&h, &[("user", "hi"), ("assistant", &first), ("user", "again")]);
    assert!(next.contains("mock-session-2, turn 1"), "{next}");
    let q = queries(&h);
    assert_eq!(q.len(), 3, "the continued query (404), then the folded one");
    assert_eq!(q[1].target, "/v1/sessions/mock-session-1/query");
    assert_eq!(json(&q[1])["query"].as_str(), Some("again"));
    assert_eq!(q[2].target, "/v1/sessions/mock-session-2/query");
    assert!(json(&q[2])["query"].as_str().unwrap().contains("User: hi"));
    assert_eq!(event(&h, "expired"), 1);
    // The mock's own idle expiry (x-mock-session-ttl-ms) answers 404 the same way; the new
    // session is queried right after its create, well within the ttl.
    sleep_ms(800);
    let history = [
        ("user", "hi"),
        ("assistant", first.as_str()),
        ("user", "again"),
        ("assistant", next.as_str()),
        ("user", "x"),
    ];
    let r = h.post(
        "/v1/chat/completions",
        &convo(false, &history),
        &[("x-mock-session-ttl-ms", "400")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let third = r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(third.contains("mock-session-3, turn 1"), "{third}");
    assert_eq!(event(&h, "expired"), 2);
}

#[test]
fn a_session_stays_with_the_key_that_created_it() {
    let h = start(&[K1, K2], "");
    let mut histories: Vec<Vec<(String, String)>> = Vec::new();
    for i in 0..4 {
        let q = format!("conversation {i}");
        let a = ask(&h, &[("user", &q)]);
        histories.push(vec![("user".into(), q), ("assistant".into(), a)]);
    }
    for turn in 0..3 {
        for history in histories.iter_mut() {
            history.push(("user".into(), format!("turn {turn}")));
            let messages: Vec<(&str, &str)> = history.iter().map(|(r, t)| (r.as_str(), t.as_str())).collect();
            let a = ask(&h, &messages);
            history.push(("assistant".into(), a));
        }
    }
    assert_eq!(creates(&h).len(), 4, "every follow-up reused its session");
    let mut owner = std::collections::HashMap::new();
    let created = creates(&h);
    for (i, c) in created.iter().enumerate() {
        owner.insert(
            format!("mock-session-{}", i + 1),
            c.header("apikey").unwrap().to_owned(),
        );
    }
    let used: std::collections::HashSet<_> = owner.values().collect();
    assert_eq!(used.len(), 2, "new sessions spread over both keys");
    for q in queries(&h) {
        let id = q.target.trim_end_matches("/query").rsplit('/').next().unwrap();
        assert_eq!(q.header("apikey"), owner.get(id).map(String::as_str), "{}", q.target);
    }
}

#[test]
fn a_session_whose_key_is_cooling_moves_to_another_key() {
    let h = start(&[K1, K2], "");
    let first = ask(&h, &[("user", "hi")]);
    let owner = creates(&h)[0].header("apikey").unwrap().to_owned();
    h.mock().faults.set(
        &owner,
        KeyFault {
            status: Some(429),
            retry_after_s: Some(30),
            ..KeyFault::default()
        },
    );
    let next = ask(&h, &[("user", "hi"), ("assistant", &first), ("user", "again")]);
    assert!(next.contains("mock-session-2, turn 1"), "{next}");
    let other = creates(&h)[1].header("apikey").unwrap().to_owned();
    assert_ne!(other, owner);
}

#[test]
fn max_sessions_evicts_the_oldest() {
    let h = start(&[K1], "max_sessions = 2");
    let a = ask(&h, &[("user", "a")]);
    ask(&h, &[("user", "b")]);
    ask(&h, &[("user", "c")]);
    assert_eq!(event(&h, "evicted"), 1);
    assert_eq!(metric(&h, r#"rotor_ondemand_sessions{provider="od"}"#), 2);
    let next = ask(&h, &[("user", "a"), ("assistant", &a), ("user", "again")]);
    assert!(
        next.contains("mock-session-4, turn 1"),
        "the evicted conversation starts over: {next}"
    );
}
