//! `kind = "cohere"` end to end over real sockets against the mock's Chat v2: the native
//! request (`POST {base}/chat`), whole answers and SSE (`content-delta`, `tool-call-*`,
//! `message-end` with usage) translated for both front doors, tool calls. Its 429 failover, 401
//! quarantine, refusal out of attempts and cut stream's error event are checked with every
//! kind's in `kinds_shared.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod common;

use common::*;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

const MODEL: &str = "command-r-plus";
const KEY_A: &str = "co_key_aaaa_0001";

fn harness(keys: &[&str], retry: &str) -> Harness {
    let mock = start_mock();
    let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    let body = format!(
        r#"
[[clients]]
name = "tester"
key = "{CLIENT_KEY}"

[[providers]]
name = "co"
kind = "cohere"
base_url = "http://{}/v2"
keys = [{}]
models = ["{MODEL}"]
"#,
        mock.addr,
        keys.join(", ")
    );
    Harness::with_mock(
        mock,
        Conf {
            workers: 1,
            retry: retry.to_owned(),
            ..Conf::with_body(&body)
        },
    )
}

fn chats(h: &Harness) -> Vec<rotor::mock::Recorded> {
    h.recorded().into_iter().filter(|r| r.target == "/v2/chat").collect()
}

fn data(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter(|d| *d != "[DONE]")
        .map(|d| sonic_rs::from_str(d).unwrap())
        .collect()
}

const TOOLS: &str = r#""tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]"#;

#[test]
fn chat_is_a_native_v2_request_with_usage() {
    let h = harness(&[KEY_A], "");
    let req = format!(
        r#"{{"model":"{MODEL}","messages":[{{"role":"system","content":"Be brief."}},{{"role":"user","content":"hello"}}],"top_p":0.5,"max_tokens":20}}"#
    );
    let r = h.post(
        "/v1/chat/completions",
        &req,
        &[("x-mock-chunks", "3"), ("x-mock-cached-tokens", "2")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["content"].as_str(), Some("tok0 tok1 tok2 "));
    assert_eq!(v["choices"][0]["finish_reason"].as_str(), Some("stop"));
    let sent = &chats(&h)[0];
    assert_eq!(sent.bearer(), Some(KEY_A));
    let up: Value = sonic_rs::from_slice(&sent.body).unwrap();
    assert_eq!(up["model"].as_str(), Some(MODEL));
    assert_eq!(up["messages"][0]["role"].as_str(), Some("system"));
    assert_eq!(up["p"].as_f64(), Some(0.5));
    assert_eq!(up["max_tokens"].as_u64(), Some(20));
    let input = (sent.body.len() / 4) as u64;
    assert_eq!(v["usage"]["prompt_tokens"].as_u64(), Some(input));
    assert_eq!(v["usage"]["completion_tokens"].as_u64(), Some(3));
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64(), Some(2));
}

#[test]
fn stream_with_usage_chunk() {
    let h = harness(&[KEY_A], "");
    let body = format!(
        r#"{{"model":"{MODEL}","stream":true,"stream_options":{{"include_usage":true}},"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    let (status, text, done) = h.client().stream_chat(&body, &[("x-mock-chunks", "3")]);
    assert_eq!(status, 200);
    assert!(done && text.ends_with("data: [DONE]\n\n"), "{text}");
    let c = data(&text);
    let content: String = c
        .iter()
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(content, "tok0 tok1 tok2 ");
    assert_eq!(c[0]["id"].as_str(), Some("chatcmpl-mock-cohere-1"));
    let usage = &c.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"].as_u64(), Some(3));
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
    let up: Value = sonic_rs::from_slice(&chats(&h)[0].body).unwrap();
    assert_eq!(up["stream"].as_bool(), Some(true));
    assert!(up.get("stream_options").is_none());
}

#[test]
fn tool_calls_whole_and_streamed() {
    let h = harness(&[KEY_A], "");
    let req = format!(r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"weather?"}}],{TOOLS}}}"#);
    let r = h.post(
        "/v1/chat/completions",
        &req,
        &[("x-mock-tool", "1"), ("x-mock-chunks", "0")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"].as_str(), Some("tool_calls"));
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"].as_str(), Some("get_weather"));
    assert_eq!(call["function"]["arguments"].as_str(), Some(r#"{"city":"Oslo"}"#));
    let up: Value = sonic_rs::from_slice(&chats(&h)[0].body).unwrap();
    assert_eq!(up["tools"][0]["function"]["name"].as_str(), Some("get_weather"));

    let req = req.replacen('{', r#"{"stream":true,"#, 1);
    let (_, text, _) = h
        .client()
        .stream_chat(&req, &[("x-mock-tool", "1"), ("x-mock-chunks", "0")]);
    let c = data(&text);
    let args: String = c
        .iter()
        .filter_map(|v| {
            v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(args, r#"{"city":"Oslo"}"#);
    let start = c
        .iter()
        .find(|v| v["choices"][0]["delta"]["tool_calls"][0]["id"].as_str().is_some())
        .unwrap();
    assert_eq!(start["choices"][0]["delta"]["tool_calls"][0]["index"].as_u64(), Some(0));
    let finish: Vec<&str> = c
        .iter()
        .filter_map(|v| v["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["tool_calls"]);
}

#[test]
fn anthropic_front_door_whole_streamed_and_tools() {
    let h = harness(&[KEY_A], "");
    let headers = [
        ("x-api-key", CLIENT_KEY),
        ("anthropic-version", "2023-06-01"),
        ("x-mock-chunks", "2"),
    ];
    let req = format!(r#"{{"model":"{MODEL}","max_tokens":16,"messages":[{{"role":"user","content":"hi"}}]}}"#);
    let r = h.client().request("POST", "/v1/messages", &headers, req.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["content"][0]["text"].as_str(), Some("tok0 tok1 "));
    assert_eq!(v["usage"]["output_tokens"].as_u64(), Some(2));
    let streamed = req.replace("\"max_tokens\"", "\"stream\":true,\"max_tokens\"");
    let text = h
        .client()
        .request("POST", "/v1/messages", &headers, streamed.as_bytes())
        .text();
    assert!(
        text.contains("event: message_stop") && text.contains("\"output_tokens\":2"),
        "{text}"
    );
    let tools = r#"{"model":"M","max_tokens":16,"messages":[{"role":"user","content":"weather?"}],"tools":[{"name":"get_weather","input_schema":{"type":"object"}}]}"#
        .replace('M', MODEL);
    let mut with_tool = headers.to_vec();
    with_tool.push(("x-mock-tool", "1"));
    let v = h
        .client()
        .request("POST", "/v1/messages", &with_tool, tools.as_bytes())
        .json();
    assert_eq!(v["stop_reason"].as_str(), Some("tool_use"));
    let block = v["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"].as_str() == Some("tool_use"))
        .unwrap()
        .clone();
    assert_eq!(block["input"]["city"].as_str(), Some("Oslo"));
}
