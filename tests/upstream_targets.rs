//! What a client chooses never reshapes an upstream URL (issue 12, items 2 and 6): model names
//! are capped and free of control characters, a Gemini model is one percent-encoded path
//! segment, and passthrough paths that a decoding upstream would read as leaving `/v1/` (or as
//! holding a dot segment) are refused before anything is sent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use sonic_rs::JsonValueTrait;

/// A Gemini provider with no `models` list: every model name routes to it.
fn gemini_any_model() -> String {
    format!(
        r#"
[[clients]]
name = "tester"
key = "{CLIENT_KEY}"

[[providers]]
name = "gem"
kind = "gemini"
base_url = "{{MOCK}}beta"
keys = ["goog-pool-0001"]
"#
    )
}

/// `error.code` of an OpenAI envelope (asserting the envelope's shape).
fn openai_code(r: &Response) -> String {
    r.openai_error();
    r.json()["error"]["code"].as_str().unwrap_or("").to_owned()
}

/// A chat body whose model is `model_json`, already a JSON string literal's inside.
fn chat_raw_model(model_json: &str) -> String {
    format!(r#"{{"model":"{model_json}","messages":[{{"role":"user","content":"hello"}}]}}"#)
}

#[test]
fn a_model_name_with_crlf_is_400_and_never_splits_the_upstream_request() {
    let h = Harness::start(Conf::with_body(&gemini_any_model()));
    let split = r#"m HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}POST /v1beta/models/evil"#;
    let r = h.post("/v1/chat/completions", &chat_raw_model(split), &[]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(openai_code(&r), "invalid_model_name");
    assert_eq!(r.json()["error"]["param"].as_str(), Some("model"));
    assert!(r.text().contains("control character"), "{}", r.text());
    // The Anthropic front door answers in its own envelope.
    let body = format!(r#"{{"model":"{split}","max_tokens":5,"messages":[{{"role":"user","content":"hi"}}]}}"#);
    let r = h.post("/v1/messages", &body, &[]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["type"].as_str(), Some("error"), "{}", r.text());
    assert_eq!(r.json()["error"]["type"].as_str(), Some("invalid_request_error"));
    assert!(h.recorded().is_empty(), "nothing may reach the upstream");
    // A clean name still works, and the upstream saw exactly one request.
    let r = h.post("/v1/chat/completions", &chat("gemini-ok"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = h.recorded();
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].target, "/v1beta/models/gemini-ok:generateContent");
}

#[test]
fn control_characters_and_oversized_names_are_400() {
    let h = Harness::start(Conf::with_body(&gemini_any_model()));
    let long = "m".repeat(257);
    let huge = "m".repeat(1 << 20);
    // Raw DEL and a raw C1 control (U+0085 as its UTF-8 bytes) are read by the plain reader,
    // whose names skip the check only when every byte is printable ASCII.
    let raw = [
        "a\u{7f}b",
        "a\u{85}b",
        "abcdefghijklmnop\u{7f}",
        "abcdefghijklmnopq\u{85}",
    ];
    for model in [r"a\u0000b", r"a\tb", r"a\nb", r"a\u0085b", &long, &huge]
        .into_iter()
        .chain(raw)
    {
        let r = h.post("/v1/chat/completions", &chat_raw_model(model), &[]);
        assert_eq!(r.status, 400, "{}: {}", &model[..model.len().min(20)], r.text());
        assert_eq!(openai_code(&r), "invalid_model_name");
    }
    assert!(h.recorded().is_empty());
    // 256 bytes is allowed, and printable or not-ASCII text of any length up to it.
    for model in ["m".repeat(256), "m".repeat(56), "m".repeat(57), "é-modèle ~".to_owned()] {
        let r = h.post("/v1/chat/completions", &chat(&model), &[]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

#[test]
fn a_gemini_model_is_one_percent_encoded_segment() {
    let h = Harness::start(Conf::with_body(&gemini_any_model()));
    let r = h.post("/v1/chat/completions", &chat("a b?c#d%e/f\\\\g"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = h.recorded();
    assert_eq!(rec.len(), 1);
    assert_eq!(
        rec[0].target,
        "/v1beta/models/a%20b%3Fc%23d%25e%2Ff%5Cg:generateContent"
    );
    assert_eq!(rec[0].header("x-goog-api-key"), Some("goog-pool-0001"));
    // A name that a decoding upstream would read as `..` segments is refused, encoded or not.
    for model in ["../../x", "..%2F..%2Fx", "a/../b", "models/../../x"] {
        let r = h.post("/v1/chat/completions", &chat(model), &[]);
        assert_eq!(r.status, 400, "{model}: {}", r.text());
        assert_eq!(openai_code(&r), "invalid_model_name", "{model}");
    }
    assert_eq!(h.recorded().len(), 1, "refused names never reach the upstream");
}

#[test]
fn passthrough_paths_that_leave_v1_are_400_and_never_sent() {
    let h = Harness::start(Conf::default());
    let mut c = h.client();
    for path in [
        "/v1/../../x",
        "/v1/%2e%2e/x",
        "/v1/%2E%2E/x",
        "/v1/..%2fx",
        "/v1/files/..%2f..%2fadmin",
        "/v1/files/..%5c..%5cadmin",
        "/v1/..;/x",
        "/v1/%252e%252e/x",
        "/v1/files/./file-abc",
        "/v1/files/x/../file-abc",
        "/v1/files/file-abc%00",
    ] {
        let r = c.get(path, &[]);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert_eq!(openai_code(&r), "invalid_path", "{path}");
        // The same with a body and a model.
        let r = c.post(path, r#"{"model":"gpt-4o-mini"}"#, &[]);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
    }
    assert!(h.recorded().is_empty(), "refused paths never reach the upstream");
}

#[test]
fn legit_passthrough_paths_are_forwarded_byte_for_byte() {
    let h = Harness::start(Conf::default());
    let mut c = h.client();
    for path in [
        "/v1/files/file-abc",
        "/v1/files/file-abc/content?x=1",
        "/v1/models/meta-llama%2FLlama-3",
        "/v1/fine_tuning/jobs/ft:gpt-4o:org::id",
    ] {
        let r = c.get(path, &[]);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let rec = h.recorded();
        let seen = rec.last().unwrap();
        assert_eq!(seen.target, path, "the mock must see the path as sent");
        assert_eq!(seen.bearer(), Some(POOL_KEY));
    }
    assert_eq!(h.recorded().len(), 4);
}
