//! Translation fidelity over real sockets (issue 16 item 8): what one protocol says reaches the
//! other intact, or the client gets a clear 400 in its own envelope; never a quiet loss.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use sonic_rs::{JsonValueTrait, Value};

fn conf() -> Conf {
    Conf::with_body(&one_provider_per_protocol())
}

#[test]
fn gemini_tool_call_ids_differ_between_rounds_and_results_find_their_call() {
    let h = Harness::start(conf());
    let ask = |messages: &str| {
        let body = format!(
            r#"{{"model":"gemini-x","messages":{messages},"tools":[{{"type":"function","function":{{"name":"get_weather","parameters":{{"type":"object"}}}}}}]}}"#
        );
        let r = h.post("/v1/chat/completions", &body, &[("x-mock-tool", "1")]);
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let call = v["choices"][0]["message"]["tool_calls"][0].clone();
        call["id"].as_str().unwrap().to_owned()
    };
    let first = ask(r#"[{"role":"user","content":"weather?"}]"#);
    let history = format!(
        r#"[{{"role":"user","content":"weather?"}},
        {{"role":"assistant","tool_calls":[{{"id":"{first}","type":"function","function":{{"name":"get_weather","arguments":"{{}}"}}}}]}},
        {{"role":"tool","tool_call_id":"{first}","content":"sunny"}}]"#
    );
    let second = ask(&history);
    assert_ne!(first, second, "a second round must not reuse the first round's id");
    let sent: Value = sonic_rs::from_slice(&h.recorded()[1].body).unwrap();
    let response = &sent["contents"][2]["parts"][0]["functionResponse"];
    assert_eq!(response["name"].as_str(), Some("get_weather"));
    assert_eq!(response["response"]["content"].as_str(), Some("sunny"));
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

#[test]
fn an_overloaded_upstream_stays_overloaded_when_no_key_is_left() {
    let h = Harness::start(conf());
    let body = r#"{"model":"claude-x","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = anthropic_post(&h, body, &[("x-mock-status", "529")]);
    assert_eq!(r.status, 529, "{}", r.text());
    assert_eq!(
        r.json()["error"]["type"].as_str(),
        Some("overloaded_error"),
        "{}",
        r.text()
    );
    // A Gemini 503 to an Anthropic client (through the hub), and to an OpenAI client.
    let body = r#"{"model":"gemini-x","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = anthropic_post(&h, body, &[("x-mock-status", "503")]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(
        r.json()["error"]["type"].as_str(),
        Some("overloaded_error"),
        "{}",
        r.text()
    );
    assert!(r.header("retry-after").is_some());
    let r = h.post("/v1/chat/completions", &chat("gemini-x"), &[("x-mock-status", "503")]);
    assert_eq!(r.status, 503, "{}", r.text());
}

#[test]
fn n_above_one_is_every_gemini_candidate_or_a_400() {
    let h = Harness::start(conf());
    let body = r#"{"model":"claude-x","n":2,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = h.post("/v1/chat/completions", body, &[]);
    assert_eq!(r.status, 400, "{}", r.text());
    let (message, kind) = r.openai_error();
    assert_eq!(kind, "invalid_request_error");
    assert!(message.contains("n = 2"), "{message}");
    let body = r#"{"model":"claude-x","temperature":1.5,"messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(h.post("/v1/chat/completions", body, &[]).status, 400);
    let body = r#"{"model":"gemini-x","n":2,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = h.post("/v1/chat/completions", body, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let sent: Value = sonic_rs::from_slice(&h.recorded().last().unwrap().body).unwrap();
    assert_eq!(sent["generationConfig"]["candidateCount"].as_u64(), Some(2));
    assert_eq!(h.recorded().len(), 1, "refusals never reach the upstream");
}

const PDF: &str = "data:application/pdf;base64,JVBERi0x";

#[test]
fn documents_and_audio_reach_the_upstream_or_are_refused() {
    let h = Harness::start(conf());
    // OpenAI file part -> Anthropic document block; -> Gemini inlineData (and audio too).
    let file = format!(r#"{{"type":"file","file":{{"filename":"a.pdf","file_data":"{PDF}"}}}}"#);
    let body = |model: &str, part: &str| {
        format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":[{{"type":"text","text":"read"}},{part}]}}]}}"#
        )
    };
    let r = h.post("/v1/chat/completions", &body("claude-x", &file), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let sent: Value = sonic_rs::from_slice(&h.recorded().last().unwrap().body).unwrap();
    let doc = &sent["messages"][0]["content"][1];
    assert_eq!(doc["type"].as_str(), Some("document"), "{sent:?}");
    assert_eq!(doc["source"]["media_type"].as_str(), Some("application/pdf"));
    assert_eq!(doc["source"]["data"].as_str(), Some("JVBERi0x"));
    let r = h.post("/v1/chat/completions", &body("gemini-x", &file), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let sent: Value = sonic_rs::from_slice(&h.recorded().last().unwrap().body).unwrap();
    assert_eq!(
        sent["contents"][0]["parts"][1]["inlineData"]["mimeType"].as_str(),
        Some("application/pdf")
    );
    let audio = r#"{"type":"input_audio","input_audio":{"data":"UklG","format":"wav"}}"#;
    let r = h.post("/v1/chat/completions", &body("gemini-x", audio), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let sent: Value = sonic_rs::from_slice(&h.recorded().last().unwrap().body).unwrap();
    assert_eq!(
        sent["contents"][0]["parts"][1]["inlineData"]["mimeType"].as_str(),
        Some("audio/wav")
    );
    let before = h.recorded().len();
    let r = h.post("/v1/chat/completions", &body("claude-x", audio), &[]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.openai_error().0.contains("audio"));
    let by_id = r#"{"type":"file","file":{"file_id":"file-abc"}}"#;
    assert_eq!(
        h.post("/v1/chat/completions", &body("gemini-x", by_id), &[]).status,
        400
    );
    // Anthropic client: a document block -> Gemini inlineData; a server tool toward OpenAI: 400.
    let doc = r#"{"model":"gemini-x","max_tokens":10,"messages":[{"role":"user","content":[{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0x"}}]}]}"#;
    let r = anthropic_post(&h, doc, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let sent: Value = sonic_rs::from_slice(&h.recorded().last().unwrap().body).unwrap();
    assert_eq!(
        sent["contents"][0]["parts"][0]["inlineData"]["data"].as_str(),
        Some("JVBERi0x")
    );
    let search = r#"{"model":"gpt-4o-mini","max_tokens":10,"messages":[{"role":"user","content":"news?"}],"tools":[{"type":"web_search_20250305","name":"web_search","max_uses":3}]}"#;
    let r = anthropic_post(&h, search, &[]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["type"].as_str(), Some("invalid_request_error"));
    assert_eq!(h.recorded().len(), before + 1, "refusals never reach the upstream");
}

const SCHEMA: &str = r#"{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}"#;

#[test]
fn structured_output_and_thinking_budgets_cross_both_ways() {
    let h = Harness::start(conf());
    let last = |h: &Harness| -> Value { sonic_rs::from_slice(&h.recorded().last().unwrap().body).unwrap() };
    // OpenAI json_schema -> Anthropic output_config.format; reasoning_effort -> thinking.
    let body = format!(
        r#"{{"model":"claude-x","max_completion_tokens":4000,"reasoning_effort":"low","response_format":{{"type":"json_schema","json_schema":{{"name":"o","schema":{SCHEMA}}}}},"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    let r = h.post("/v1/chat/completions", &body, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = last(&h);
    assert_eq!(sent["output_config"]["format"]["type"].as_str(), Some("json_schema"));
    assert_eq!(
        sent["output_config"]["format"]["schema"]["required"][0].as_str(),
        Some("a")
    );
    assert_eq!(sent["thinking"]["budget_tokens"].as_u64(), Some(1024));
    let body =
        r#"{"model":"claude-x","response_format":{"type":"json_object"},"messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(h.post("/v1/chat/completions", body, &[]).status, 400);
    // Anthropic output_config + thinking + top_k -> Gemini responseJsonSchema + thinkingBudget + topK.
    let body = format!(
        r#"{{"model":"gemini-x","max_tokens":4000,"top_k":5,"thinking":{{"type":"enabled","budget_tokens":2048}},"output_config":{{"format":{{"type":"json_schema","schema":{SCHEMA}}}}},"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    let r = anthropic_post(&h, &body, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let config = &last(&h)["generationConfig"];
    assert_eq!(config["responseMimeType"].as_str(), Some("application/json"));
    assert_eq!(config["responseJsonSchema"]["required"][0].as_str(), Some("a"));
    assert_eq!(config["thinkingConfig"]["thinkingBudget"].as_u64(), Some(2048));
    assert_eq!(config["topK"].as_u64(), Some(5));
    // ... and to an OpenAI upstream as response_format.
    let body = format!(
        r#"{{"model":"gpt-4o-mini","max_tokens":100,"output_config":{{"format":{{"type":"json_schema","schema":{SCHEMA}}}}},"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    assert_eq!(anthropic_post(&h, &body, &[]).status, 200);
    assert_eq!(
        last(&h)["response_format"]["json_schema"]["schema"]["required"][0].as_str(),
        Some("a")
    );
}

#[test]
fn openai_reasoning_models_get_max_completion_tokens() {
    let h = Harness::start(Conf {
        routing: String::new(),
        ..Conf::with_body(&format!(
            r#"
[[clients]]
name = "tester"
key = "{CLIENT_KEY}"

[[providers]]
name = "oai"
kind = "openai"
base_url = "{{MOCK}}"
keys = ["{POOL_KEY}"]
models = ["o3-mini", "gpt-4o-mini"]
"#
        ))
    });
    for (model, field) in [("o3-mini", "max_completion_tokens"), ("gpt-4o-mini", "max_tokens")] {
        let body = format!(r#"{{"model":"{model}","max_tokens":77,"messages":[{{"role":"user","content":"hi"}}]}}"#);
        let r = anthropic_post(&h, &body, &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        let sent: Value = sonic_rs::from_slice(&h.recorded().last().unwrap().body).unwrap();
        assert_eq!(sent[field].as_u64(), Some(77), "{model}: {sent:?}");
        let other = if field == "max_tokens" {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        assert!(sent.get(other).is_none(), "{model}");
    }
}
