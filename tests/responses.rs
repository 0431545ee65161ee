//! The OpenAI Responses API front door (`/v1/responses`, issue 16 item 1) over real sockets
//! against the mock: bytes untouched to a native upstream with usage logged from the body and
//! from `response.completed`; translated to a chat-only OpenAI-compatible upstream, to an
//! Anthropic and to a Gemini upstream, whole and streamed as Responses events, with text and a
//! function call; stored-response paths; the 400 for state a translated upstream cannot keep.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

const ADMIN: &str = "adm-key-0000-0001";

fn conf() -> Conf {
    Conf {
        server: format!("admin_key = \"{ADMIN}\""),
        routing: "default_model = \"gpt-native\"".to_owned(),
        body: format!(
            r#"{}
[[providers]]
name = "native"
kind = "openai"
base_url = "{{MOCK}}"
keys = ["sk-native-pool-0001"]
models = ["gpt-native"]
responses = "native"

[[providers]]
name = "chatonly"
kind = "openai"
base_url = "{{MOCK}}"
keys = ["sk-chat-pool-0001"]
models = ["gpt-chat"]
"#,
            one_provider_per_protocol()
        ),
        ..Default::default()
    }
}

fn admin(h: &Harness, method: &str, path: &str) -> Response {
    let auth = format!("Bearer {ADMIN}");
    h.client().request(method, path, &[("authorization", &auth)], b"")
}

/// The log rows, newest first, once `n` requests are logged.
fn logged(h: &Harness, n: u64) -> Vec<Value> {
    assert!(
        eventually(Duration::from_secs(3), || admin(h, "GET", "/admin/logs").json()
            ["total"]
            .as_u64()
            == Some(n)),
        "{}",
        admin(h, "GET", "/admin/logs").text()
    );
    admin(h, "GET", "/admin/logs").json()["data"]
        .as_array()
        .unwrap()
        .to_vec()
}

/// The newest log row, once `n` requests are logged.
fn last_log(h: &Harness, n: u64) -> Value {
    logged(h, n).swap_remove(0)
}

/// The one streamed request's row, once `n` requests are logged, found by its `stream` flag:
/// a record is queued just after its answer went out, so the client's next request, served on
/// another worker, can reach the writer first and be numbered before it.
fn stream_row(h: &Harness, n: u64) -> Value {
    let rows = logged(h, n);
    let mut streamed = rows.iter().filter(|r| r["stream"].as_bool() == Some(true));
    let row = streamed
        .next()
        .unwrap_or_else(|| panic!("no streamed row in {rows:?}"))
        .clone();
    assert!(streamed.next().is_none(), "one streamed row: {rows:?}");
    row
}

fn tokens(row: &Value) -> (u64, u64, u64, u64) {
    let n = |k: &str| row[k].as_u64().unwrap_or(u64::MAX);
    (
        n("prompt_tokens"),
        n("completion_tokens"),
        n("cached_tokens"),
        n("reasoning_tokens"),
    )
}

/// Named SSE events as (event line, data JSON).
fn events(body: &str) -> Vec<(String, Value)> {
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

/// Checks the Responses stream invariants (event line = data type, sequence numbers 0..n,
/// created first, exactly one terminal event last) and returns the events and the final
/// response object.
fn responses_stream(body: &str) -> (Vec<(String, Value)>, Value) {
    let evs = events(body);
    assert!(!evs.is_empty(), "empty stream");
    for (i, (name, data)) in evs.iter().enumerate() {
        assert_eq!(data["type"].as_str(), Some(name.as_str()), "{body}");
        assert_eq!(data["sequence_number"].as_u64(), Some(i as u64), "{body}");
    }
    assert_eq!(evs[0].0, "response.created");
    assert_eq!(evs[1].0, "response.in_progress");
    let terminal = |n: &str| matches!(n, "response.completed" | "response.incomplete" | "response.failed");
    assert_eq!(evs.iter().filter(|(n, _)| terminal(n)).count(), 1, "{body}");
    let (last, data) = evs.last().unwrap();
    assert!(terminal(last), "{body}");
    let response = data["response"].clone();
    (evs, response)
}

fn joined(evs: &[(String, Value)], kind: &str) -> String {
    evs.iter()
        .filter(|(n, _)| n == kind)
        .map(|(_, d)| d["delta"].as_str().unwrap().to_owned())
        .collect()
}

const TOOLS: &str = r#""tools":[{"type":"function","name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}]"#;

fn request(model: &str, stream: bool) -> String {
    format!(
        r#"{{"model":"{model}","instructions":"Be brief.","input":[{{"role":"user","content":"weather in Oslo?"}}],{TOOLS},"max_output_tokens":100,"stream":{stream}}}"#
    )
}

#[test]
fn native_whole_answer_passes_untouched_and_logs_its_usage() {
    let h = Harness::start(conf());
    let body = r#"{"model":"gpt-native","input":"hello","store":true}"#;
    let r = h.post(
        "/v1/responses",
        body,
        &[("x-mock-cached-tokens", "4"), ("x-mock-reasoning-tokens", "2")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-rotor-provider"), Some("native"));
    let v = r.json();
    assert_eq!(v["id"].as_str(), Some("resp_mock"), "the upstream's own body");
    let sent = h.recorded().pop().unwrap();
    assert_eq!(sent.target, "/v1/responses");
    assert_eq!(sent.body.as_ref(), body.as_bytes(), "bytes untouched, store included");
    assert_eq!(sent.bearer(), Some("sk-native-pool-0001"));
    let row = last_log(&h, 1);
    assert_eq!(row["endpoint"].as_str(), Some("responses"));
    let input = (body.len() / 4) as u64;
    assert_eq!(tokens(&row), (input, 5, 4, 2), "{row}");
}

#[test]
fn native_stream_passes_untouched_and_logs_usage_from_response_completed() {
    let h = Harness::start(conf());
    let body = r#"{"model":"gpt-native","input":"hello","stream":true}"#;
    let r = h.post(
        "/v1/responses",
        body,
        &[
            ("x-mock-chunks", "3"),
            ("x-mock-cached-tokens", "1"),
            ("x-mock-reasoning-tokens", "7"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").unwrap().starts_with("text/event-stream"));
    let (evs, response) = responses_stream(&r.text());
    assert_eq!(joined(&evs, "response.output_text.delta"), "tok0 tok1 tok2 ");
    assert_eq!(response["id"].as_str(), Some("resp_mock"));
    let row = last_log(&h, 1);
    assert_eq!(row["stream"].as_bool(), Some(true));
    assert_eq!(tokens(&row), ((body.len() / 4) as u64, 3, 1, 7), "{row}");
    let metrics = h.client().request("GET", "/metrics", &[], b"").text();
    assert!(
        metrics.contains(r#"rotor_tokens_total{model="gpt-native",provider="native",kind="completion"} 3"#),
        "{metrics}"
    );
}

#[test]
fn stored_responses_are_reached_on_a_native_upstream_only() {
    let h = Harness::start(conf());
    let mut c = h.client();
    let r = c.get("/v1/responses/resp_abc", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"].as_str(), Some("resp_abc"));
    let r = c.get("/v1/responses/resp_abc/input_items", &[]);
    assert_eq!(r.json()["object"].as_str(), Some("list"), "{}", r.text());
    let (name, value) = auth();
    let r = c.request("DELETE", "/v1/responses/resp_abc", &[(name, &value)], b"");
    assert_eq!(r.json()["deleted"].as_bool(), Some(true), "{}", r.text());
    let targets: Vec<String> = h.recorded().iter().map(|r| r.target.clone()).collect();
    assert_eq!(
        targets,
        [
            "/v1/responses/resp_abc",
            "/v1/responses/resp_abc/input_items",
            "/v1/responses/resp_abc"
        ]
    );
    // A provider that translates keeps nothing to look up.
    let mut translate = conf();
    translate.routing = "default_model = \"gpt-chat\"".to_owned();
    let h = Harness::start(translate);
    let r = h.client().get("/v1/responses/resp_abc", &[]);
    assert_eq!(r.status, 404, "no candidate has it: {}", r.text());
    let (message, _) = r.openai_error();
    assert!(message.contains("keeps no stored responses"), "{message}");
    assert!(h.recorded().is_empty());
}

#[test]
fn stored_responses_behind_a_translated_provider_are_a_404_for_every_method() {
    let mut translate = conf();
    translate.routing = "default_model = \"claude-x\"".to_owned();
    let h = Harness::start(translate);
    let (name, value) = auth();
    for (method, path) in [
        ("GET", "/v1/responses/resp_abc"),
        ("DELETE", "/v1/responses/resp_abc"),
        ("GET", "/v1/responses/resp_abc/input_items"),
        ("POST", "/v1/responses/resp_abc/cancel"),
    ] {
        let r = h.client().request(method, path, &[(name, &value)], b"");
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
        let v = r.json();
        assert_eq!(v["error"]["type"].as_str(), Some("invalid_request_error"), "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("provider 'claude'")
                && message.contains("stored responses are not available through a translated provider"),
            "{message}"
        );
        assert!(
            v["error"].get("param").is_some() && v["error"].get("code").is_some(),
            "{v}"
        );
    }
    assert!(h.recorded().is_empty(), "nothing reached the upstream");
}

#[test]
fn state_a_translated_upstream_cannot_keep_is_a_400() {
    let h = Harness::start(conf());
    for model in ["gpt-chat", "claude-x", "gemini-x"] {
        for extra in [r#""previous_response_id":"resp_1""#, r#""store":true"#] {
            let body = format!(r#"{{"model":"{model}","input":"hi",{extra}}}"#);
            let r = h.post("/v1/responses", &body, &[]);
            assert_eq!(r.status, 400, "{model} {extra}: {}", r.text());
            let (message, kind) = r.openai_error();
            assert_eq!(kind, "invalid_request_error");
            assert!(message.contains("responses = \"native\""), "{message}");
        }
    }
    assert!(h.recorded().is_empty(), "nothing reached an upstream");
    let r = h.post(
        "/v1/responses",
        r#"{"model":"gpt-chat","input":"hi","store":false}"#,
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A whole translated answer: text, then the function call, usage in Responses' names.
fn check_whole(h: &Harness, model: &str, provider: &str, upstream_path: &str) {
    let r = h.post(
        "/v1/responses",
        &request(model, false),
        &[("x-mock-tool", "1"), ("x-mock-chunks", "2")],
    );
    assert_eq!(r.status, 200, "{model}: {}", r.text());
    assert_eq!(r.header("x-rotor-provider"), Some(provider));
    let v = r.json();
    assert_eq!(v["object"].as_str(), Some("response"), "{v}");
    assert_eq!(v["status"].as_str(), Some("completed"));
    let output = v["output"].as_array().unwrap();
    let message = output.iter().find(|i| i["type"].as_str() == Some("message")).unwrap();
    assert_eq!(message["content"][0]["text"].as_str(), Some("tok0 tok1 "), "{v}");
    let call = output
        .iter()
        .find(|i| i["type"].as_str() == Some("function_call"))
        .unwrap();
    assert_eq!(call["name"].as_str(), Some("get_weather"));
    let args: Value = sonic_rs::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["city"].as_str(), Some("Oslo"));
    assert!(!call["call_id"].as_str().unwrap().is_empty());
    assert_eq!(v["usage"]["output_tokens"].as_u64(), Some(2), "{v}");
    assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 0);
    let sent = h.recorded().pop().unwrap();
    assert!(sent.target.starts_with(upstream_path), "{}", sent.target);
    let text = String::from_utf8_lossy(&sent.body).into_owned();
    assert!(text.contains("Be brief.") && text.contains("get_weather"), "{text}");
}

/// A streamed translated answer: the Responses event sequence with text and argument deltas.
fn check_stream(h: &Harness, model: &str, upstream_path: &str) {
    let r = h.post(
        "/v1/responses",
        &request(model, true),
        &[("x-mock-tool", "1"), ("x-mock-chunks", "3")],
    );
    assert_eq!(r.status, 200, "{model}: {}", r.text());
    assert!(r.header("content-type").unwrap().starts_with("text/event-stream"));
    let text = r.text();
    let (evs, response) = responses_stream(&text);
    assert_eq!(evs.last().unwrap().0, "response.completed", "{text}");
    assert_eq!(joined(&evs, "response.output_text.delta"), "tok0 tok1 tok2 ", "{text}");
    let args = joined(&evs, "response.function_call_arguments.delta");
    let args: Value = sonic_rs::from_str(&args).unwrap_or_else(|_| panic!("{args}: {text}"));
    assert_eq!(args["city"].as_str(), Some("Oslo"));
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    for kind in [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ] {
        assert!(names.contains(&kind), "{kind} missing: {names:?}");
    }
    let added = names.iter().filter(|n| **n == "response.output_item.added").count();
    let done = names.iter().filter(|n| **n == "response.output_item.done").count();
    assert_eq!((added, done), (2, 2), "{names:?}");
    let output = response["output"].as_array().unwrap();
    assert_eq!(output.len(), 2, "{response}");
    assert_eq!(output[0]["content"][0]["text"].as_str(), Some("tok0 tok1 tok2 "));
    assert_eq!(output[1]["type"].as_str(), Some("function_call"));
    assert_eq!(output[1]["name"].as_str(), Some("get_weather"));
    assert_eq!(response["usage"]["output_tokens"].as_u64(), Some(3), "{response}");
    assert!(response["usage"]["input_tokens"].as_u64().unwrap() > 0);
    let sent = h.recorded().pop().unwrap();
    assert!(sent.target.starts_with(upstream_path), "{}", sent.target);
}

#[test]
fn translated_to_a_chat_only_upstream() {
    let h = Harness::start(conf());
    check_whole(&h, "gpt-chat", "chatonly", "/v1/chat/completions");
    let sent: Value = sonic_rs::from_slice(&h.recorded().pop().unwrap().body).unwrap();
    assert_eq!(sent["max_tokens"].as_u64(), Some(100));
    assert_eq!(sent["messages"][0]["role"].as_str(), Some("system"));
    assert_eq!(sent["tools"][0]["function"]["name"].as_str(), Some("get_weather"));
    check_stream(&h, "gpt-chat", "/v1/chat/completions");
    let sent: Value = sonic_rs::from_slice(&h.recorded().pop().unwrap().body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"].as_bool(), Some(true));
    let row = stream_row(&h, 2);
    assert_eq!(row["endpoint"].as_str(), Some("responses"));
    assert_eq!(row["completion_tokens"].as_u64(), Some(3), "{row}");
}

#[test]
fn translated_to_an_anthropic_upstream() {
    let h = Harness::start(conf());
    check_whole(&h, "claude-x", "claude", "/v1/messages");
    check_stream(&h, "claude-x", "/v1/messages");
    let row = stream_row(&h, 2);
    assert_eq!(row["completion_tokens"].as_u64(), Some(3), "{row}");
}

#[test]
fn translated_to_a_gemini_upstream() {
    let h = Harness::start(conf());
    check_whole(&h, "gemini-x", "gem", "/v1beta/models/gemini-x:generateContent");
    check_stream(&h, "gemini-x", "/v1beta/models/gemini-x:streamGenerateContent");
    let row = stream_row(&h, 2);
    assert!(row["prompt_tokens"].as_u64().unwrap() > 0, "{row}");
}

#[test]
fn a_function_call_output_round_trip_reaches_the_upstream_as_a_tool_turn() {
    let h = Harness::start(conf());
    let body = format!(
        r#"{{"model":"gpt-chat","input":[{{"role":"user","content":"weather?"}},{{"type":"function_call","call_id":"call_9","name":"get_weather","arguments":"{{}}"}},{{"type":"function_call_output","call_id":"call_9","output":"5C"}}],{TOOLS},"tool_choice":{{"type":"function","name":"get_weather"}}}}"#
    );
    let r = h.post("/v1/responses", &body, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let sent: Value = sonic_rs::from_slice(&h.recorded().pop().unwrap().body).unwrap();
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages[1]["tool_calls"][0]["id"].as_str(), Some("call_9"));
    assert_eq!(messages[2]["role"].as_str(), Some("tool"));
    assert_eq!(messages[2]["content"].as_str(), Some("5C"));
    assert_eq!(sent["tool_choice"]["function"]["name"].as_str(), Some("get_weather"));
}

#[test]
fn an_upstream_error_and_a_cut_stream_reach_the_client_in_responses_shapes() {
    let h = Harness::start(conf());
    let r = h.post(
        "/v1/responses",
        &request("claude-x", false),
        &[("x-mock-status", "400")],
    );
    assert_eq!(r.status, 400, "{}", r.text());
    r.openai_error();
    let r = h.post(
        "/v1/responses",
        &request("gpt-chat", true),
        &[("x-mock-cut-after", "2")],
    );
    assert_eq!(r.status, 200);
    let (_, response) = responses_stream(&r.text());
    assert_eq!(response["status"].as_str(), Some("failed"), "{}", r.text());
    assert!(!response["error"]["message"].as_str().unwrap().is_empty());
    // Native: the upstream's own events, then an `error` event of the Responses API.
    let body = r#"{"model":"gpt-native","input":"hello","stream":true}"#;
    let r = h.post("/v1/responses", body, &[("x-mock-cut-after", "2")]);
    assert_eq!(r.status, 200);
    let evs = events(&r.text());
    assert_eq!(evs[0].0, "response.created");
    let (name, data) = evs.last().unwrap();
    assert_eq!(name, "error", "{}", r.text());
    assert_eq!(data["type"].as_str(), Some("error"));
    assert!(!data["message"].as_str().unwrap().is_empty());
}
