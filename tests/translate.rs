//! Protocol translation end to end over real sockets: OpenAI clients served by Anthropic and
//! Gemini upstreams, Anthropic clients (`POST /v1/messages`) served by OpenAI-compatible and
//! Anthropic upstreams, streamed and not, with token usage checked in the client's format.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

fn conf() -> Conf {
    Conf::with_body(&one_provider_per_protocol())
}

/// Data payloads of an SSE body (LF framing, as rotor emits).
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")).map(str::to_owned))
        .collect()
}

fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("")
                .to_owned();
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or("null");
            (
                name,
                sonic_rs::from_str(data).unwrap_or_else(|_| panic!("bad data {data}")),
            )
        })
        .collect()
}

fn anthropic_post(h: &Harness, body: &str, extra: &[(&str, &str)]) -> Response {
    let mut headers: Vec<(&str, &str)> = vec![
        ("x-api-key", CLIENT_KEY),
        ("anthropic-version", "2023-06-01"),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    h.client().request("POST", "/v1/messages", &headers, body.as_bytes())
}

const OPENAI_TOOL_STREAM: &str = r#"{"model":"claude-x","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"weather?"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]}"#;

#[test]
fn openai_client_anthropic_upstream_not_streamed() {
    let h = Harness::start(conf());
    let r = h.post(
        "/v1/chat/completions",
        &chat("claude-x"),
        &[("x-mock-cached-tokens", "7"), ("x-mock-chunks", "3")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-rotor-provider"), Some("claude"));
    let v = r.json();
    assert_eq!(v["object"].as_str(), Some("chat.completion"));
    assert_eq!(v["choices"][0]["message"]["content"].as_str(), Some("tok0 tok1 tok2 "));
    assert_eq!(v["choices"][0]["finish_reason"].as_str(), Some("stop"));
    let sent = &h.recorded()[0];
    assert_eq!(sent.target, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some("sk-ant-pool-0001"));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert!(sent.header("authorization").is_none());
    let up: Value = sonic_rs::from_slice(&sent.body).unwrap();
    assert_eq!(up["max_tokens"].as_u64(), Some(4096));
    let input = (sent.body.len() / 4) as u64;
    assert_eq!(v["usage"]["prompt_tokens"].as_u64(), Some(input + 7));
    assert_eq!(v["usage"]["completion_tokens"].as_u64(), Some(3));
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64(), Some(7));
}

#[test]
fn openai_client_anthropic_upstream_streamed_with_tool_call_and_usage() {
    let h = Harness::start(conf());
    let r = h.post(
        "/v1/chat/completions",
        OPENAI_TOOL_STREAM,
        &[
            ("x-mock-tool", "1"),
            ("x-mock-chunks", "2"),
            ("x-mock-cached-tokens", "5"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let data = sse_data(&r.text());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{}", r.text());
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| sonic_rs::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"].as_str(), Some("assistant"));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "tok0 tok1 ");
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, r#"{"city":"Oslo"}"#);
    let start = chunks
        .iter()
        .find(|c| c["choices"][0]["delta"]["tool_calls"][0]["id"].as_str().is_some())
        .unwrap();
    assert_eq!(start["choices"][0]["delta"]["tool_calls"][0]["index"].as_u64(), Some(0));
    assert_eq!(
        start["choices"][0]["delta"]["tool_calls"][0]["function"]["name"].as_str(),
        Some("get_weather")
    );
    let finish: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, vec!["tool_calls"]);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"].as_array().map(|a| a.len()), Some(0));
    let input = (h.recorded()[0].body.len() / 4) as u64;
    assert_eq!(usage["usage"]["prompt_tokens"].as_u64(), Some(input + 5));
    assert_eq!(usage["usage"]["completion_tokens"].as_u64(), Some(2));
    assert_eq!(
        usage["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64(),
        Some(5)
    );
}

#[test]
fn openai_client_anthropic_upstream_stream_without_include_usage_has_no_usage_chunk() {
    let h = Harness::start(conf());
    let r = h.post("/v1/chat/completions", &chat_stream("claude-x"), &[]);
    let data = sse_data(&r.text());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert!(data.iter().all(|d| !d.contains("\"choices\":[]")), "{}", r.text());
}

#[test]
fn openai_client_gemini_upstream_not_streamed() {
    let h = Harness::start(conf());
    let r = h.post(
        "/v1/chat/completions",
        &chat("gemini-x"),
        &[("x-mock-chunks", "2"), ("x-mock-tool", "1")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"].as_str(), Some("tool_calls"));
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"].as_str(),
        Some("get_weather")
    );
    let sent = &h.recorded()[0];
    assert_eq!(sent.target, "/v1beta/models/gemini-x:generateContent");
    assert_eq!(sent.header("x-goog-api-key"), Some("goog-pool-0001"));
    let input = (sent.body.len() / 4) as u64;
    assert_eq!(v["usage"]["prompt_tokens"].as_u64(), Some(input));
    assert_eq!(v["usage"]["completion_tokens"].as_u64(), Some(2));
}

#[test]
fn openai_client_gemini_upstream_streamed_crlf_usage_is_last_not_summed() {
    let h = Harness::start(conf());
    let body = r#"{"model":"gemini-x","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let r = h.post(
        "/v1/chat/completions",
        body,
        &[
            ("x-mock-crlf", "1"),
            ("x-mock-chunks", "4"),
            ("x-mock-cached-tokens", "3"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = &h.recorded()[0];
    assert_eq!(sent.target, "/v1beta/models/gemini-x:streamGenerateContent?alt=sse");
    let data = sse_data(&r.text());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{}", r.text());
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| sonic_rs::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3 ");
    let finish: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, vec!["stop"]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"].as_u64(), Some(4));
    assert_eq!(usage["prompt_tokens"].as_u64(), Some((sent.body.len() / 4) as u64));
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"].as_u64(), Some(3));
}

#[test]
fn anthropic_client_openai_upstream_not_streamed() {
    let h = Harness::start(conf());
    let body = r#"{"model":"gpt-4o-mini","max_tokens":100,"system":"Be brief.","messages":[{"role":"user","content":"hello"}]}"#;
    let r = anthropic_post(&h, body, &[("x-mock-chunks", "3")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"].as_str(), Some("message"));
    assert_eq!(v["content"][0]["text"].as_str(), Some("tok0 tok1 tok2 "));
    assert_eq!(v["stop_reason"].as_str(), Some("end_turn"));
    let sent = &h.recorded()[0];
    assert_eq!(sent.target, "/v1/chat/completions");
    assert_eq!(sent.bearer(), Some(POOL_KEY));
    let up: Value = sonic_rs::from_slice(&sent.body).unwrap();
    assert_eq!(up["messages"][0]["role"].as_str(), Some("system"));
    assert_eq!(up["max_tokens"].as_u64(), Some(100));
    assert_eq!(v["usage"]["input_tokens"].as_u64(), Some((sent.body.len() / 4) as u64));
    assert_eq!(v["usage"]["output_tokens"].as_u64(), Some(3));
}

#[test]
fn anthropic_client_openai_upstream_streamed_has_usage_in_message_delta() {
    let h = Harness::start(conf());
    let body =
        r#"{"model":"gpt-4o-mini","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hello"}]}"#;
    let r = anthropic_post(&h, body, &[("x-mock-chunks", "3")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = &h.recorded()[0];
    let up: Value = sonic_rs::from_slice(&sent.body).unwrap();
    assert_eq!(up["stream_options"]["include_usage"].as_bool(), Some(true));
    let events = sse_events(&r.text());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ],
        "{}",
        r.text()
    );
    assert_eq!(events[0].1["message"]["usage"]["input_tokens"].as_u64(), Some(0));
    let delta = &events[6].1;
    assert_eq!(delta["delta"]["stop_reason"].as_str(), Some("end_turn"));
    assert_eq!(delta["usage"]["output_tokens"].as_u64(), Some(3));
    assert_eq!(
        delta["usage"]["input_tokens"].as_u64(),
        Some((sent.body.len() / 4) as u64)
    );
}

#[test]
fn anthropic_client_anthropic_upstream_is_byte_passthrough() {
    let h = Harness::start(conf());
    let body = r#"{"model":"claude-x","max_tokens":100,"system":[{"type":"text","text":"long","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"assistant","content":[{"type":"thinking","thinking":"hm","signature":"sig=="}]},{"role":"user","content":"hello"}]}"#;
    let r = anthropic_post(&h, body, &[("x-mock-cached-tokens", "9")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = &h.recorded()[0];
    assert_eq!(sent.target, "/v1/messages");
    assert_eq!(sent.body.as_ref(), body.as_bytes(), "body untouched");
    assert_eq!(sent.header("x-api-key"), Some("sk-ant-pool-0001"));
    let v = r.json();
    assert_eq!(v["usage"]["cache_read_input_tokens"].as_u64(), Some(9));
}

#[test]
fn anthropic_client_anthropic_upstream_streamed_passthrough() {
    let h = Harness::start(conf());
    let body = r#"{"model":"claude-x","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hello"}]}"#;
    let r = anthropic_post(&h, body, &[("x-mock-chunks", "2")]);
    assert_eq!(r.status, 200);
    let events = sse_events(&r.text());
    assert_eq!(events.first().map(|e| e.0.as_str()), Some("message_start"));
    assert_eq!(events.last().map(|e| e.0.as_str()), Some("message_stop"));
    let delta = events.iter().find(|e| e.0 == "message_delta").unwrap();
    assert_eq!(delta.1["usage"]["output_tokens"].as_u64(), Some(2));
}

#[test]
fn anthropic_client_gemini_upstream_streamed_through_the_hub() {
    let h = Harness::start(conf());
    let body = r#"{"model":"gemini-x","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hello"}]}"#;
    let r = anthropic_post(&h, body, &[("x-mock-chunks", "2"), ("x-mock-crlf", "1")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let events = sse_events(&r.text());
    assert_eq!(
        events.last().map(|e| e.0.as_str()),
        Some("message_stop"),
        "{}",
        r.text()
    );
    let delta = events.iter().find(|e| e.0 == "message_delta").unwrap();
    assert_eq!(delta.1["usage"]["output_tokens"].as_u64(), Some(2));
}

#[test]
fn errors_use_the_clients_envelope() {
    let h = Harness::start(conf());
    // Gateway-made error on the front door: Anthropic envelope.
    let r = anthropic_post(&h, r#"{"model":"nope","max_tokens":1,"messages":[]}"#, &[]);
    assert_eq!(r.status, 404);
    let v = r.json();
    assert_eq!(v["type"].as_str(), Some("error"));
    assert_eq!(v["error"]["type"].as_str(), Some("not_found_error"));
    // Upstream 400 from an OpenAI upstream, delivered to an Anthropic client.
    let r = anthropic_post(
        &h,
        r#"{"model":"gpt-4o-mini","max_tokens":1,"messages":[]}"#,
        &[("x-mock-status", "400")],
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"].as_str(), Some("invalid_request_error"));
    // Upstream 400 from Anthropic, delivered to an OpenAI client.
    let r = h.post("/v1/chat/completions", &chat("claude-x"), &[("x-mock-status", "400")]);
    assert_eq!(r.status, 400);
    let (_, kind) = r.openai_error();
    assert_eq!(kind, "invalid_request_error");
}

#[test]
fn gemini_429_cools_the_key_for_the_body_retry_delay() {
    let h = Harness::start(Conf {
        routing: String::new(),
        ..Conf::with_body(&format!(
            r#"
[[clients]]
name = "tester"
key = "{CLIENT_KEY}"

[[providers]]
name = "gem"
kind = "gemini"
base_url = "{{MOCK}}beta"
keys = ["goog-fail429-a", "goog-pool-b"]
models = ["gemini-x"]
"#
        ))
    });
    let r = h.post(
        "/v1/chat/completions",
        &chat("gemini-x"),
        &[("x-mock-retry-after", "38.6")],
    );
    // The first key (or the second) answers; a 429 on one moves to the other.
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Anthropic prompt caching through the OpenAI door: `cache_control` on content parts (system,
/// user, assistant), on a message, on a tool result and on a tool reaches the Anthropic blocks.
#[test]
fn openai_client_cache_control_reaches_the_anthropic_blocks() {
    let h = Harness::start(conf());
    let cc = r#"{"type":"ephemeral"}"#;
    let cc_1h = r#"{"type":"ephemeral","ttl":"1h"}"#;
    let body = format!(
        r#"{{"model":"claude-x","messages":[
        {{"role":"system","content":[{{"type":"text","text":"Long rules."}},{{"type":"text","text":"Cached rules.","cache_control":{cc_1h}}}]}},
        {{"role":"user","content":[{{"type":"text","text":"Big document","cache_control":{cc}}},{{"type":"text","text":"question?"}}]}},
        {{"role":"assistant","content":[{{"type":"text","text":"Calling.","cache_control":{cc}}}],"tool_calls":[{{"id":"call_1","type":"function","function":{{"name":"lookup","arguments":"{{}}"}}}}]}},
        {{"role":"tool","tool_call_id":"call_1","content":[{{"type":"text","text":"result","cache_control":{cc}}}]}},
        {{"role":"user","content":"and now?","cache_control":{cc}}}],
        "tools":[{{"type":"function","function":{{"name":"lookup","parameters":{{"type":"object"}}}},"cache_control":{cc}}},
                 {{"type":"function","function":{{"name":"other"}}}}]}}"#
    );
    let r = h.post("/v1/chat/completions", &body, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let up: Value = sonic_rs::from_slice(&h.recorded()[0].body).unwrap();
    let ephemeral = Some("ephemeral");
    // The system prompt becomes blocks so its breakpoint has a place.
    let system = up["system"].as_array().unwrap();
    assert_eq!(system.len(), 2, "{up}");
    assert!(system[0].get("cache_control").is_none(), "{up}");
    assert_eq!(system[1]["text"].as_str(), Some("Cached rules."));
    assert_eq!(system[1]["cache_control"]["ttl"].as_str(), Some("1h"), "{up}");
    let messages = up["messages"].as_array().unwrap();
    let user = messages[0]["content"].as_array().unwrap();
    assert_eq!(user[0]["cache_control"]["type"].as_str(), ephemeral, "{up}");
    assert!(user[1].get("cache_control").is_none(), "{up}");
    let assistant = messages[1]["content"].as_array().unwrap();
    assert_eq!(assistant[0]["type"].as_str(), Some("text"));
    assert_eq!(assistant[0]["cache_control"]["type"].as_str(), ephemeral, "{up}");
    assert_eq!(assistant[1]["type"].as_str(), Some("tool_use"));
    assert!(assistant[1].get("cache_control").is_none(), "{up}");
    // The tool result and the next user turn merge into one user message.
    let last = messages[2]["content"].as_array().unwrap();
    assert_eq!(last[0]["type"].as_str(), Some("tool_result"));
    assert_eq!(last[0]["cache_control"]["type"].as_str(), ephemeral, "{up}");
    assert_eq!(last[1]["text"].as_str(), Some("and now?"));
    assert_eq!(
        last[1]["cache_control"]["type"].as_str(),
        ephemeral,
        "message-level: {up}"
    );
    let tools = up["tools"].as_array().unwrap();
    assert_eq!(tools[0]["cache_control"]["type"].as_str(), ephemeral, "{up}");
    assert!(tools[1].get("cache_control").is_none(), "{up}");
    // Without cache_control the system prompt stays one string.
    let r = h.post("/v1/chat/completions", &chat("claude-x"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let plain = r#"{"model":"claude-x","messages":[{"role":"system","content":[{"type":"text","text":"A"},{"type":"text","text":"B"}]},{"role":"system","content":"C"},{"role":"user","content":"hi"}]}"#;
    assert_eq!(h.post("/v1/chat/completions", plain, &[]).status, 200);
    let up: Value = sonic_rs::from_slice(&h.recorded()[2].body).unwrap();
    assert_eq!(up["system"].as_str(), Some("AB\n\nC"), "{up}");
    assert!(!String::from_utf8_lossy(&h.recorded()[2].body).contains("cache_control"));
}
