//! `kind = "replicate"` end to end over real sockets against the mock's Replicate API: chat
//! becomes a prediction (`Prefer: wait`, polled at `urls.get` while unfinished), streams come
//! from `urls.stream` with usage read from the prediction afterwards, both front doors, the
//! bounds, and cancels of predictions nobody waits for. Its 429 failover, 401 quarantine,
//! refusal out of attempts and cut stream's error event are checked with every kind's in
//! `kinds_shared.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod cancels;
#[path = "../common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use rotor::mock::KeyFault;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

const MODEL: &str = "meta/meta-llama-3-8b-instruct";
const KEY_A: &str = "r8_key_aaaa_0001";
const KEY_B: &str = "r8_key_bbbb_0002";

fn body(keys: &[&str], extra: &str) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    format!(
        r#"
[[clients]]
name = "tester"
key = "{CLIENT_KEY}"

[[providers]]
name = "rep"
kind = "replicate"
base_url = "{{MOCK}}"
keys = [{}]
models = ["{MODEL}"]
aliases = {{ "llama" = "{MODEL}" }}
poll_interval_ms = 50
{extra}
"#,
        keys.join(", ")
    )
}

fn harness(keys: &[&str], extra: &str) -> Harness {
    Harness::start(Conf {
        workers: 1,
        ..Conf::with_body(&body(keys, extra))
    })
}

fn creates(h: &Harness) -> Vec<rotor::mock::Recorded> {
    h.recorded()
        .into_iter()
        .filter(|r| r.method == "POST" && r.target.ends_with("/predictions"))
        .collect()
}

fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")).map(str::to_owned))
        .collect()
}

#[test]
fn chat_is_a_prediction_with_prompt_and_usage() {
    let h = harness(&[KEY_A], "");
    let req = r#"{"model":"llama","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hello there"}],"max_tokens":64,"temperature":0.2,"stop":"END"}"#;
    let r = h.post("/v1/chat/completions", req, &[("x-mock-chunks", "3")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"].as_str(), Some("chat.completion"));
    assert_eq!(v["model"].as_str(), Some("llama"));
    assert_eq!(v["choices"][0]["message"]["content"].as_str(), Some("tok0 tok1 tok2 "));
    assert_eq!(v["usage"]["prompt_tokens"].as_u64(), Some(2), "11 prompt bytes / 4");
    assert_eq!(v["usage"]["completion_tokens"].as_u64(), Some(3));
    let sent = &creates(&h)[0];
    assert_eq!(sent.target, format!("/v1/models/{MODEL}/predictions"));
    assert_eq!(sent.bearer(), Some(KEY_A));
    // Below the harness's first_byte_timeout_ms (5000), never past Replicate's 60 s.
    assert_eq!(sent.header("prefer"), Some("wait=4"));
    let up: Value = sonic_rs::from_slice(&sent.body).unwrap();
    assert_eq!(up["input"]["prompt"].as_str(), Some("hello there"));
    assert_eq!(up["input"]["system_prompt"].as_str(), Some("Be brief."));
    assert_eq!(up["input"]["max_tokens"].as_u64(), Some(64));
    assert_eq!(up["input"]["stop_sequences"].as_str(), Some("END"));
    assert!(up.get("stream").is_none());
    // Prefer: wait answered it finished: one request, no polls.
    assert_eq!(h.recorded().len(), 1);
}

#[test]
fn an_unfinished_prediction_is_polled_with_its_creating_key() {
    let h = harness(&[KEY_A, KEY_B], "");
    let started = Instant::now();
    let r = h.post("/v1/chat/completions", &chat(MODEL), &[("x-mock-pending-ms", "300")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        r.json()["choices"][0]["message"]["content"].as_str(),
        Some("tok0 tok1 tok2 tok3 tok4 ")
    );
    let all = h.recorded();
    let polls: Vec<_> = all.iter().filter(|r| r.method == "GET").collect();
    assert!(polls.len() >= 2, "polled until finished: {}", polls.len());
    let creator = all[0].bearer().unwrap().to_owned();
    for p in &polls {
        assert!(p.target.starts_with("/v1/predictions/mock"), "{}", p.target);
        assert_eq!(p.bearer(), Some(creator.as_str()), "a prediction stays with its key");
    }
}

#[test]
fn polling_stops_at_poll_max_wait_ms_with_a_504() {
    let h = harness(&[KEY_A], "poll_max_wait_ms = 1000");
    let started = Instant::now();
    let r = h.post("/v1/chat/completions", &chat(MODEL), &[("x-mock-pending-ms", "60000")]);
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.openai_error().0.contains("poll_max_wait_ms"), "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    assert_eq!(creates(&h)[0].header("prefer"), Some("wait=1"));
}

#[test]
fn a_failed_prediction_is_a_502_with_its_error() {
    let h = harness(&[KEY_A], "");
    let r = h.post("/v1/chat/completions", &chat(MODEL), &[("x-mock-prediction-fail", "1")]);
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.openai_error().0.contains("mock prediction failure"), "{}", r.text());
}

#[test]
fn stream_comes_from_the_stream_url_with_usage_from_the_prediction() {
    let h = harness(&[KEY_A], "");
    let body = format!(
        r#"{{"model":"{MODEL}","stream":true,"stream_options":{{"include_usage":true}},"messages":[{{"role":"user","content":"hello there"}}]}}"#
    );
    let (status, text, done) = h.client().stream_chat(&body, &[("x-mock-chunks", "4")]);
    assert_eq!(status, 200, "{text}");
    assert!(done);
    let data = sse_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| sonic_rs::from_str(d).unwrap())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(content, "tok0 tok1 tok2 tok3 ");
    let finish: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["stop"]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(chunks.last().unwrap()["choices"].as_array().map(|a| a.len()), Some(0));
    assert_eq!(
        (usage["prompt_tokens"].as_u64(), usage["completion_tokens"].as_u64()),
        (Some(2), Some(4))
    );
    let all = h.recorded();
    let up: Value = sonic_rs::from_slice(&all[0].body).unwrap();
    assert_eq!(up["stream"].as_bool(), Some(true));
    assert!(
        all[0].header("prefer").is_none(),
        "a stream's create answer must come at once"
    );
    let stream = all
        .iter()
        .find(|r| r.target.starts_with("/v1/streams/"))
        .expect("stream URL read");
    assert_eq!(stream.header("accept"), Some("text/event-stream"));
    assert_eq!(stream.bearer(), Some(KEY_A));
    assert!(
        all.iter()
            .any(|r| r.method == "GET" && r.target.starts_with("/v1/predictions/")),
        "usage read after done"
    );
}

#[test]
fn stream_without_include_usage_has_no_usage_chunk_but_reads_usage() {
    let h = harness(&[KEY_A], "");
    let (status, text, _) = h.client().stream_chat(&chat_stream(MODEL), &[("x-mock-chunks", "2")]);
    assert_eq!(status, 200);
    assert!(!text.contains("\"usage\""), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let read = h
        .recorded()
        .iter()
        .any(|r| r.method == "GET" && r.target.starts_with("/v1/predictions/"));
    assert!(read, "rotor reads the prediction's metrics for its own accounting");
}

#[test]
fn anthropic_front_door_whole_and_streamed() {
    let h = harness(&[KEY_A], "");
    let headers = [
        ("x-api-key", CLIENT_KEY),
        ("anthropic-version", "2023-06-01"),
        ("content-type", "application/json"),
        ("x-mock-chunks", "3"),
    ];
    let req =
        format!(r#"{{"model":"{MODEL}","max_tokens":32,"messages":[{{"role":"user","content":"hello there"}}]}}"#);
    let r = h.client().request("POST", "/v1/messages", &headers, req.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"].as_str(), Some("message"));
    assert_eq!(v["content"][0]["text"].as_str(), Some("tok0 tok1 tok2 "));
    assert_eq!(v["stop_reason"].as_str(), Some("end_turn"));
    assert_eq!(
        (
            v["usage"]["input_tokens"].as_u64(),
            v["usage"]["output_tokens"].as_u64()
        ),
        (Some(2), Some(3))
    );

    let req = req.replace("\"max_tokens\"", "\"stream\":true,\"max_tokens\"");
    let r = h.client().request("POST", "/v1/messages", &headers, req.as_bytes());
    assert_eq!(r.status, 200);
    let text = r.text();
    let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    let delta = text
        .split("\n\n")
        .find(|e| e.starts_with("event: message_delta"))
        .and_then(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .expect("message_delta");
    let delta: Value = sonic_rs::from_str(delta).unwrap();
    assert_eq!(delta["usage"]["output_tokens"].as_u64(), Some(3));
    assert_eq!(delta["usage"]["input_tokens"].as_u64(), Some(2));
}

#[test]
fn models_lists_the_configured_models_and_aliases() {
    let h = harness(&[KEY_A], "");
    let v = h.client().get("/v1/models", &[auth_header()]).json();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["llama", MODEL]);
}

#[test]
fn bad_model_names_and_tools_are_400s() {
    let h = harness(&[KEY_A], "");
    let tools = format!(
        r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"x"}}],"tools":[{{"type":"function","function":{{"name":"f"}}}}]}}"#
    );
    let r = h.post("/v1/chat/completions", &tools, &[]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.openai_error().0.contains("tools"), "{}", r.text());
    assert!(h.recorded().is_empty());
}

fn auth_header() -> (&'static str, &'static str) {
    ("authorization", "Bearer sk-client-test-0001")
}

#[test]
fn a_quarantined_key_is_restored_by_probing_the_account() {
    let h = Harness::start(Conf {
        workers: 1,
        retry: "quarantine_ms = 200".into(),
        ..Conf::with_body(&body(&[KEY_A, KEY_B], ""))
    });
    h.mock().faults.set(
        KEY_A,
        KeyFault {
            status: Some(401),
            ..Default::default()
        },
    );
    let mut c = h.client();
    for _ in 0..2 {
        assert_eq!(c.post("/v1/chat/completions", &chat(MODEL), &[]).status, 200);
    }
    h.mock().faults.clear(KEY_A);
    let restored = eventually(Duration::from_secs(5), || {
        let status = c.get("/v1/status", &[]).json();
        status["providers"][0]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["state"].as_str() == Some("active"))
    });
    assert!(restored, "the probe restores the key");
    let probed = h
        .recorded()
        .iter()
        .any(|r| r.target == "/v1/account" && r.bearer() == Some(KEY_A));
    assert!(probed, "Replicate keys are probed at /account");
}
