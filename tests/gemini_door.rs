//! The Gemini front door (issue 16 item 2) over real sockets against `rotor mock`:
//! `:generateContent` and `:streamGenerateContent?alt=sse` passed through to a Gemini upstream
//! (bytes untouched but the model in the URL) and translated for OpenAI and Anthropic upstreams,
//! client keys as `x-goog-api-key` and `?key=` (never forwarded, never logged), errors in
//! Google's envelope, `GET /v1beta/models`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

const ADMIN: &str = "adm-key-0000-0001";
const BODY: &str =
    r#"{"contents":[{"role":"user","parts":[{"text":"hello"}]}],"generationConfig":{"maxOutputTokens":64}}"#;

fn conf() -> Conf {
    let body = one_provider_per_protocol().replace(
        "models = [\"gemini-x\"]",
        "models = [\"gemini-x\"]\naliases = { \"my-gem\" = \"gemini-x\" }",
    );
    Conf {
        server: format!("admin_key = \"{ADMIN}\""),
        ..Conf::with_body(&body)
    }
}

fn goog(h: &Harness, path: &str, body: &str, extra: &[(&str, &str)]) -> Response {
    let mut headers = vec![("x-goog-api-key", CLIENT_KEY), ("content-type", "application/json")];
    headers.extend_from_slice(extra);
    h.client().request("POST", path, &headers, body.as_bytes())
}

/// `?key=` in the URL instead of a header (Google's other key style).
fn keyed(h: &Harness, path: &str, body: &str) -> Response {
    let sep = if path.contains('?') { '&' } else { '?' };
    let path = format!("{path}{sep}key={CLIENT_KEY}");
    h.client()
        .request("POST", &path, &[("content-type", "application/json")], body.as_bytes())
}

fn sse_data(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| sonic_rs::from_str(d).unwrap_or_else(|_| panic!("bad data {d}")))
        .collect()
}

/// The text of every candidate part of a Gemini answer or chunks.
fn text_of(answers: &[Value]) -> String {
    let mut out = String::new();
    for a in answers {
        for part in a["candidates"][0]["content"]["parts"].as_array().into_iter().flatten() {
            if part["thought"].as_bool() != Some(true) {
                out.push_str(part["text"].as_str().unwrap_or(""));
            }
        }
    }
    out
}

fn google_error(r: &Response, code: u16, status: &str) -> String {
    let v = r.json();
    assert_eq!(r.status, code, "{}", r.text());
    assert_eq!(v["error"]["code"].as_u64(), Some(u64::from(code)), "{}", r.text());
    assert_eq!(v["error"]["status"].as_str(), Some(status), "{}", r.text());
    v["error"]["message"].as_str().unwrap_or_default().to_owned()
}

/// The request-log row of `answer` (by its `x-request-id`) once `n` requests are logged, and the
/// whole log's text. Not simply the newest row: two workers queue their records in the order
/// their requests finish on their own cores, so the request answered first may be logged last
/// (this once read the previous request's 4 completion tokens as the stream's).
fn last_log(h: &Harness, n: u64, answer: &Response) -> (Value, String) {
    let auth = format!("Bearer {ADMIN}");
    let get = || {
        h.client()
            .request("GET", "/admin/logs?limit=50", &[("authorization", &auth)], b"")
    };
    assert!(eventually(Duration::from_secs(3), || get().json()["total"].as_u64() == Some(n)));
    let id = answer
        .header("x-request-id")
        .expect("rotor answers with its request id");
    let r = get();
    let rows = r.json()["data"].clone();
    let row = rows
        .as_array()
        .and_then(|rows| rows.iter().find(|row| row["request_id"].as_str() == Some(id)).cloned())
        .unwrap_or_else(|| panic!("no log row for request {id}: {}", r.text()));
    (row, r.text())
}

#[test]
fn generate_content_passes_through_to_gemini_with_only_the_model_changed() {
    let h = Harness::start(conf());
    let r = goog(
        &h,
        "/v1beta/models/my-gem:generateContent",
        BODY,
        &[("x-mock-chunks", "3")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(text_of(std::slice::from_ref(&v)), "tok0 tok1 tok2 ");
    assert_eq!(v["usageMetadata"]["candidatesTokenCount"].as_u64(), Some(3));
    let sent = h.recorded().pop().unwrap();
    assert_eq!(sent.target, "/v1beta/models/gemini-x:generateContent");
    assert_eq!(
        sent.body.as_ref(),
        BODY.as_bytes(),
        "the body is the client's, byte for byte"
    );
    let header = |name: &str| sent.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    assert_eq!(
        header("x-goog-api-key"),
        Some("goog-pool-0001"),
        "the pool key, not the client's"
    );
    let (row, _) = last_log(&h, 1, &r);
    assert_eq!(
        (row["completion_tokens"].as_u64(), row["provider"].as_str()),
        (Some(3), Some("gem"))
    );
    assert_eq!(row["model"].as_str(), Some("my-gem"));
    // Methods only Gemini has are passed through the same way.
    let r = goog(&h, "/v1beta/models/my-gem:countTokens", BODY, &[]);
    assert_eq!(
        r.json()["totalTokens"].as_u64(),
        Some(BODY.len() as u64 / 4),
        "{}",
        r.text()
    );
    assert_eq!(
        h.recorded().pop().unwrap().target,
        "/v1beta/models/gemini-x:countTokens"
    );
}

#[test]
fn stream_passes_through_with_a_query_key_that_is_never_forwarded_or_logged() {
    let h = Harness::start(conf());
    let r = keyed(&h, "/v1beta/models/gemini-x:streamGenerateContent?alt=sse", BODY);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let chunks = sse_data(&r.text());
    assert_eq!(text_of(&chunks), "tok0 tok1 tok2 tok3 tok4 ");
    assert_eq!(
        chunks.last().unwrap()["candidates"][0]["finishReason"].as_str(),
        Some("STOP")
    );
    let sent = h.recorded().pop().unwrap();
    assert_eq!(sent.target, "/v1beta/models/gemini-x:streamGenerateContent?alt=sse");
    let (row, log) = last_log(&h, 1, &r);
    assert_eq!(row["completion_tokens"].as_u64(), Some(5), "{row}");
    assert!(row["stream"].as_bool() == Some(true));
    assert!(!log.contains(CLIENT_KEY), "the query key is in the request log: {log}");
    // A non-stream call keeps its other query parameters but loses `key`.
    let r = keyed(&h, "/v1beta/models/gemini-x:generateContent?trace=1", BODY);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        h.recorded().pop().unwrap().target,
        "/v1beta/models/gemini-x:generateContent?trace=1"
    );
}

#[test]
fn openai_upstream_is_translated_both_ways_under_v1_and_v1beta() {
    let h = Harness::start(conf());
    let r = goog(
        &h,
        "/v1/models/gpt-4o-mini:generateContent",
        BODY,
        &[("x-mock-chunks", "4")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(text_of(std::slice::from_ref(&v)), "tok0 tok1 tok2 tok3 ");
    assert_eq!(v["candidates"][0]["finishReason"].as_str(), Some("STOP"));
    let meta = &v["usageMetadata"];
    assert_eq!(meta["candidatesTokenCount"].as_u64(), Some(4));
    assert!(meta["promptTokenCount"].as_u64().unwrap() > 0);
    let sent = h.recorded().pop().unwrap();
    assert_eq!(sent.target, "/v1/chat/completions");
    let chat: Value = sonic_rs::from_slice(&sent.body).unwrap();
    assert_eq!(chat["messages"][0]["content"].as_str(), Some("hello"));
    assert_eq!(
        (chat["model"].as_str(), chat["max_tokens"].as_u64()),
        (Some("gpt-4o-mini"), Some(64))
    );

    let r = keyed(&h, "/v1beta/models/gpt-4o-mini:streamGenerateContent?alt=sse", BODY);
    assert_eq!(r.status, 200, "{}", r.text());
    let chunks = sse_data(&r.text());
    assert_eq!(text_of(&chunks), "tok0 tok1 tok2 tok3 tok4 ");
    let last = chunks.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"].as_str(), Some("STOP"));
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"].as_u64(), Some(5));
    let chat: Value = sonic_rs::from_slice(&h.recorded().pop().unwrap().body).unwrap();
    assert_eq!(chat["stream_options"]["include_usage"].as_bool(), Some(true));
    let (row, log) = last_log(&h, 2, &r);
    assert_eq!(
        (row["completion_tokens"].as_u64(), row["provider"].as_str()),
        (Some(5), Some("oai"))
    );
    assert!(!log.contains(CLIENT_KEY));
}

#[test]
fn anthropic_upstream_is_translated_with_tools_and_usage() {
    let h = Harness::start(conf());
    let r = goog(
        &h,
        "/v1beta/models/claude-x:generateContent",
        BODY,
        &[("x-mock-tool", "1")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let parts = v["candidates"][0]["content"]["parts"].as_array().unwrap();
    let call = parts
        .iter()
        .find_map(|p| p.get("functionCall"))
        .expect("a functionCall part");
    assert_eq!(call["name"].as_str(), Some("get_weather"), "{v}");
    assert!(call["args"].is_object());
    assert!(v["usageMetadata"]["promptTokenCount"].as_u64().unwrap() > 0);
    assert_eq!(h.recorded().pop().unwrap().target, "/v1/messages");

    let r = goog(&h, "/v1beta/models/claude-x:streamGenerateContent?alt=sse", BODY, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let chunks = sse_data(&r.text());
    assert!(text_of(&chunks).starts_with("tok0 "), "{}", r.text());
    let last = chunks.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"].as_str(), Some("STOP"));
    let completion = last["usageMetadata"]["candidatesTokenCount"].as_u64().unwrap();
    let (row, _) = last_log(&h, 2, &r);
    assert_eq!(row["completion_tokens"].as_u64(), Some(completion));
    assert_eq!(row["provider"].as_str(), Some("claude"));
}

#[test]
fn errors_come_in_googles_envelope_with_the_right_status() {
    let h = Harness::start(conf());
    let path = "/v1beta/models/gpt-4o-mini:generateContent";
    let none = h
        .client()
        .request("POST", path, &[("content-type", "application/json")], BODY.as_bytes());
    assert!(google_error(&none, 401, "UNAUTHENTICATED").contains("x-goog-api-key"));
    let wrong = h
        .client()
        .request("POST", &format!("{path}?key=nope"), &[], BODY.as_bytes());
    google_error(&wrong, 401, "UNAUTHENTICATED");
    google_error(
        &goog(&h, "/v1beta/models/nope:generateContent", BODY, &[]),
        404,
        "NOT_FOUND",
    );
    google_error(
        &goog(&h, "/v1beta/tunedModels/x:generateContent", BODY, &[]),
        404,
        "NOT_FOUND",
    );
    let crlf = goog(&h, "/v1beta/models/a%0D%0Ab:generateContent", BODY, &[]);
    assert!(google_error(&crlf, 400, "INVALID_ARGUMENT").contains("control"));
    let no_sse = goog(&h, "/v1beta/models/gemini-x:streamGenerateContent", BODY, &[]);
    assert!(google_error(&no_sse, 400, "INVALID_ARGUMENT").contains("alt=sse"));
    let deep = format!(r#"{{"contents":{}{}}}"#, "[".repeat(300), "]".repeat(300));
    google_error(&goog(&h, path, &deep, &[]), 400, "INVALID_ARGUMENT");
    let pdf = r#"{"contents":[{"parts":[{"inlineData":{"mimeType":"application/pdf","data":"AA=="}}]}]}"#;
    assert!(google_error(&goog(&h, path, pdf, &[]), 400, "INVALID_ARGUMENT").contains("application/pdf"));
    // An upstream error, translated (OpenAI) and relayed as Google wrote it (Gemini).
    let upstream = goog(&h, path, BODY, &[("x-mock-status", "400")]);
    assert_eq!(google_error(&upstream, 400, "INVALID_ARGUMENT"), "Bad request (mock)");
    let gemini = goog(
        &h,
        "/v1beta/models/gemini-x:generateContent",
        BODY,
        &[("x-mock-status", "400")],
    );
    assert_eq!(google_error(&gemini, 400, "INVALID_ARGUMENT"), "mock 400");
    // Methods only Gemini serves are passed through there and refused elsewhere.
    let count = goog(&h, "/v1beta/models/gpt-4o-mini:countTokens", BODY, &[]);
    assert!(google_error(&count, 502, "UNAVAILABLE").contains("Gemini providers only"));
    let get = h.client().request("GET", path, &[("x-goog-api-key", CLIENT_KEY)], b"");
    google_error(&get, 405, "INVALID_ARGUMENT");
}

#[test]
fn v1beta_models_lists_in_gemini_shape_and_v1_models_stays_openai() {
    let h = Harness::start(conf());
    let get = |path: &str| h.client().request("GET", path, &[("x-goog-api-key", CLIENT_KEY)], b"");
    let r = get("/v1beta/models");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let names: Vec<&str> = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "models/claude-x",
            "models/gemini-x",
            "models/gpt-4o-mini",
            "models/my-gem"
        ]
    );
    let methods = &v["models"][0]["supportedGenerationMethods"];
    assert_eq!(methods[0].as_str(), Some("generateContent"));
    let one = get("/v1beta/models/gpt-4o-mini");
    assert_eq!(
        one.json()["name"].as_str(),
        Some("models/gpt-4o-mini"),
        "{}",
        one.text()
    );
    google_error(&get("/v1beta/models/nope"), 404, "NOT_FOUND");
    let (name, value) = auth();
    let openai = h.client().request("GET", "/v1/models", &[(name, &value)], b"");
    assert_eq!(openai.json()["object"].as_str(), Some("list"), "{}", openai.text());
    assert!(openai.json()["data"].as_array().unwrap().len() == 4);
}

/// The google-genai SDK's default `api_version` is `v1`: `models.list()` sends `GET /v1/models`
/// with `x-goog-api-key` (seen with google-genai 3.6.1), `models.get` `GET /v1/models/{m}`.
#[test]
fn v1_models_with_a_google_key_lists_in_gemini_shape() {
    let h = Harness::start(conf());
    let names = |r: &Response| -> Vec<String> {
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert!(v.get("object").is_none() && v.get("data").is_none(), "{v}");
        v["models"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["name"].as_str().map(str::to_owned))
            .collect()
    };
    let all = [
        "models/claude-x",
        "models/gemini-x",
        "models/gpt-4o-mini",
        "models/my-gem",
    ];
    let sdk_headers = [
        ("x-goog-api-key", CLIENT_KEY),
        ("x-goog-api-client", "google-genai-sdk/3.6.1 gl-python/3.11.7"),
        ("content-type", "application/json"),
    ];
    assert_eq!(names(&h.client().request("GET", "/v1/models", &sdk_headers, b"")), all);
    let keyed = format!("/v1/models?pageSize=50&key={CLIENT_KEY}");
    assert_eq!(names(&h.client().request("GET", &keyed, &[], b"")), all);
    let one = h
        .client()
        .request("GET", "/v1/models/models%2Fgpt-4o-mini", &sdk_headers, b"");
    assert_eq!(
        one.json()["name"].as_str(),
        Some("models/gpt-4o-mini"),
        "{}",
        one.text()
    );
    let one = h.client().request("GET", "/v1/models/my-gem", &sdk_headers, b"");
    assert_eq!(one.json()["name"].as_str(), Some("models/my-gem"), "{}", one.text());
    // Errors come in Google's envelope, as the SDK parses them.
    google_error(
        &h.client().request("GET", "/v1/models/nope", &sdk_headers, b""),
        404,
        "NOT_FOUND",
    );
    let bad_key = [("x-goog-api-key", "not-a-client-key")];
    google_error(
        &h.client().request("GET", "/v1/models", &bad_key, b""),
        401,
        "UNAUTHENTICATED",
    );
    // OpenAI's list stays what OpenAI clients (Bearer) get, even with a Google header too.
    let (name, value) = auth();
    for headers in [
        vec![(name, value.as_str())],
        vec![(name, value.as_str()), ("x-goog-api-key", CLIENT_KEY)],
    ] {
        let r = h.client().request("GET", "/v1/models", &headers, b"");
        assert_eq!(r.json()["object"].as_str(), Some("list"), "{}", r.text());
        assert_eq!(r.json()["data"].as_array().unwrap().len(), 4);
    }
    let r = h
        .client()
        .request("GET", "/v1/models/gpt-4o-mini", &[(name, &value)], b"");
    assert_ne!(r.json()["name"].as_str(), Some("models/gpt-4o-mini"), "{}", r.text());
    assert!(
        h.recorded().iter().all(|r| !r.target.starts_with("/v1/models?")),
        "answered by rotor"
    );
}
