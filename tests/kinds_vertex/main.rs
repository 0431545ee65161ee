//! Vertex AI end to end over real sockets against `rotor mock`: Claude models through
//! `publishers/anthropic` rawPredict / streamRawPredict and Gemini models through
//! `publishers/google` generateContent / streamGenerateContent, from both front doors;
//! access tokens from the refresh-token grant and the service-account JWT grant, refreshed
//! ahead of expiry and after a 401; failover between credentials; cut streams. `rotor check`
//! for Vertex is in kinds_vertex_config.rs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/mod.rs"]
mod common;
mod tokens;

use std::time::Duration;

use common::*;
use rotor::mock::MockServer;
use sonic_rs::JsonValueTrait;

const CLAUDE: &str = "claude-3-5-sonnet@20240620";
const GEMINI: &str = "gemini-2.0-flash";
const SECRET: &str = "GOCSPX-client-secret-do-not-leak";
const REFRESH: &str = "1//refresh-token-do-not-leak";
const SA_FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/vertex-test-service-account.json"
);

/// `credentials` = the TOML lines after `region` (google_oauth / service_account).
fn vertex_body(mock: &MockServer, token_query: &str, credentials: &str) -> String {
    format!(
        r#"
[[clients]]
name = "tester"
key = "{CLIENT_KEY}"

[[providers]]
name = "vertex"
kind = "vertex"
base_url = "{{MOCK}}"
project = "rotor-test"
region = "us-east5"
token_url = "http://{addr}/token{token_query}"
models = ["{CLAUDE}", "{GEMINI}"]
{credentials}
"#,
        addr = mock.addr
    )
}

fn oauth(client_id: &str) -> String {
    format!(r#"{{ client_id = "{client_id}", client_secret = "{SECRET}", refresh_token = "{REFRESH}" }}"#)
}

fn start(token_query: &str, credentials: &str) -> Harness {
    let mock = start_mock();
    let body = vertex_body(&mock, token_query, credentials);
    Harness::with_mock(mock, Conf::with_body(&body))
}

fn one_oauth() -> Harness {
    start(
        "",
        &format!("google_oauth = {}", oauth("client-a.apps.googleusercontent.com")),
    )
}

/// Upstream requests to Vertex model paths (not the token endpoint).
fn model_calls(h: &Harness) -> Vec<rotor::mock::Recorded> {
    h.recorded()
        .into_iter()
        .filter(|r| r.target.contains("/publishers/"))
        .collect()
}

fn messages(h: &Harness, body: &str) -> Response {
    let headers = [
        ("x-api-key", CLIENT_KEY),
        ("anthropic-version", "2023-06-01"),
        ("content-type", "application/json"),
    ];
    h.client().request("POST", "/v1/messages", &headers, body.as_bytes())
}

fn chat_usage_stream(model: &str) -> String {
    format!(
        r#"{{"model":"{model}","stream":true,"stream_options":{{"include_usage":true}},"messages":[{{"role":"user","content":"hello"}}]}}"#
    )
}

/// The usage object of the stream's usage chunk.
fn stream_usage(text: &str) -> sonic_rs::Value {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| sonic_rs::from_str::<sonic_rs::Value>(d).unwrap())
        .find(|v| v.get("usage").is_some_and(|u| !u.is_null()))
        .and_then(|v| v.get("usage").cloned())
        .unwrap_or_else(|| panic!("no usage chunk in {text}"))
}

#[test]
fn gemini_model_serves_openai_chat_whole_and_streamed_with_usage() {
    let h = one_oauth();
    let r = h.post("/v1/chat/completions", &chat(GEMINI), &[("x-mock-chunks", "3")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["content"].as_str(), Some("tok0 tok1 tok2 "));
    assert_eq!(v["usage"]["completion_tokens"].as_u64(), Some(3));
    assert!(v["usage"]["prompt_tokens"].as_u64() > Some(0));

    let (status, text, terminated) = h
        .client()
        .stream_chat(&chat_usage_stream(GEMINI), &[("x-mock-crlf", "1")]);
    assert!(
        status == 200 && terminated && text.contains("tok4") && text.contains("[DONE]"),
        "{text}"
    );
    assert_eq!(stream_usage(&text)["completion_tokens"].as_u64(), Some(5));

    let calls = model_calls(&h);
    assert_eq!(calls.len(), 2);
    let base = "/v1/projects/rotor-test/locations/us-east5/publishers/google/models/gemini-2.0-flash";
    assert_eq!(calls[0].target, format!("{base}:generateContent"));
    assert_eq!(calls[1].target, format!("{base}:streamGenerateContent?alt=sse"));
    for call in &calls {
        assert!(
            call.bearer().is_some_and(|t| t.starts_with("ya29.mock-client-a")),
            "{:?}",
            call.headers
        );
        assert!(call.header("x-goog-api-key").is_none());
    }
}

#[test]
fn claude_model_serves_both_front_doors_through_raw_predict() {
    let h = one_oauth();
    let r = h.post("/v1/chat/completions", &chat(CLAUDE), &[("x-mock-chunks", "2")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["content"].as_str(), Some("tok0 tok1 "));
    assert_eq!(v["usage"]["completion_tokens"].as_u64(), Some(2));

    let (status, text, terminated) = h.client().stream_chat(&chat_usage_stream(CLAUDE), &[]);
    assert!(
        status == 200 && terminated && text.contains("tok4") && text.contains("[DONE]"),
        "{text}"
    );
    assert_eq!(stream_usage(&text)["completion_tokens"].as_u64(), Some(5));

    let body = format!(r#"{{"model":"{CLAUDE}","max_tokens":64,"messages":[{{"role":"user","content":"hi"}}]}}"#);
    let r = messages(&h, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"].as_str(), Some("message"));
    assert_eq!(v["usage"]["output_tokens"].as_u64(), Some(5));

    let stream = format!(
        r#"{{"model":"{CLAUDE}","max_tokens":64,"stream":true,"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    let r = messages(&h, &stream);
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.contains("event: message_stop") && text.contains("tok4"), "{text}");

    let calls = model_calls(&h);
    let base = "/v1/projects/rotor-test/locations/us-east5/publishers/anthropic/models/claude-3-5-sonnet@20240620";
    let targets: Vec<&str> = calls.iter().map(|c| c.target.as_str()).collect();
    let raw = format!("{base}:rawPredict");
    let streamed = format!("{base}:streamRawPredict");
    assert_eq!(targets, [&raw, &streamed, &raw, &streamed]);
    for call in &calls {
        let sent: sonic_rs::Value = sonic_rs::from_slice(&call.body).unwrap();
        assert!(sent.get("model").is_none(), "the model is in the URL only");
        assert_eq!(sent["anthropic_version"].as_str(), Some("vertex-2023-10-16"));
    }
}

#[test]
fn gemini_model_serves_anthropic_messages() {
    let h = one_oauth();
    let body = format!(r#"{{"model":"{GEMINI}","max_tokens":64,"messages":[{{"role":"user","content":"hi"}}]}}"#);
    let r = messages(&h, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["usage"]["output_tokens"].as_u64(), Some(5));
    let stream = format!(
        r#"{{"model":"{GEMINI}","max_tokens":64,"stream":true,"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    let r = messages(&h, &stream);
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.contains("event: message_stop") && text.contains("tok4"), "{text}");
    assert!(text.contains(r#""output_tokens":5"#), "usage in message_delta: {text}");
    let calls = model_calls(&h);
    assert!(calls[1]
        .target
        .ends_with("gemini-2.0-flash:streamGenerateContent?alt=sse"));
}

#[test]
fn a_rate_limited_credential_fails_over_to_the_next() {
    let creds = format!(
        "google_oauth = [{}, {}]",
        oauth("busy-fail429.apps.googleusercontent.com"),
        oauth("calm.apps.googleusercontent.com")
    );
    let h = start("", &creds);
    for _ in 0..4 {
        let r = h.post("/v1/chat/completions", &chat(GEMINI), &[]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let calls = model_calls(&h);
    let busy = calls
        .iter()
        .filter(|c| c.bearer().is_some_and(|t| t.contains("busy-fail429")))
        .count();
    let calm = calls
        .iter()
        .filter(|c| c.bearer().is_some_and(|t| t.contains("calm")))
        .count();
    assert_eq!(busy, 1, "the busy credential is tried once, then cools (Retry-After 1)");
    assert_eq!(calm, 4, "every request is answered by the calm credential");
}

#[test]
fn a_credential_still_refused_after_its_refresh_is_quarantined() {
    let creds = format!(
        "google_oauth = [{}, {}]",
        oauth("denied-fail401.apps.googleusercontent.com"),
        oauth("calm.apps.googleusercontent.com")
    );
    let h = start("", &creds);
    for _ in 0..4 {
        let r = h.post("/v1/chat/completions", &chat(CLAUDE), &[]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let calls = model_calls(&h);
    let denied: Vec<&str> = calls
        .iter()
        .filter_map(|c| c.bearer())
        .filter(|t| t.contains("denied-fail401"))
        .collect();
    assert_eq!(
        denied.len(),
        2,
        "one 401, one refresh and resend, another 401, then quarantine"
    );
    assert_ne!(denied[0], denied[1], "the resend carried a fresh token");
    let metrics = h.client().get("/metrics", &[]).text();
    let quarantined = metrics
        .lines()
        .any(|l| l.starts_with("rotor_key_quarantines_total") && l.contains("vertex") && l.ends_with(" 1"));
    assert!(
        quarantined,
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("quarantin"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn a_stream_cut_mid_way_ends_with_an_error_event() {
    let h = one_oauth();
    for model in [GEMINI, CLAUDE] {
        let (status, text, terminated) = h.client().stream_chat(
            &chat_stream(model),
            &[("x-mock-chunks", "5"), ("x-mock-cut-after", "2")],
        );
        assert!(status == 200 && terminated, "{model}: {text}");
        assert!(text.contains("tok1") && !text.contains("[DONE]"), "{model}: {text}");
        let last = text.trim_end().rsplit("\n\n").next().unwrap_or_default();
        assert!(
            last.starts_with("data: {\"error\":"),
            "{model}: the last event is an error: {last}"
        );
    }
}
