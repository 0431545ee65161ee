//! Routing as the mock sees it: key rotation, weighted providers, aliases, per-client model
//! lists, default model, credentials and hop-by-hop headers, passthrough endpoints.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::*;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

fn count_by_bearer(h: &Harness) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in h.recorded() {
        *counts.entry(r.bearer().unwrap_or("<none>").to_owned()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn keys_rotate_evenly() {
    let body = pool_body(&["sk-rot-key-000001", "sk-rot-key-000002", "sk-rot-key-000003"]);
    let h = Harness::start(Conf::with_body(&body));
    for _ in 0..30 {
        // A fresh connection each time, so both workers take a share.
        assert_eq!(h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    }
    let counts = count_by_bearer(&h);
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (key, n) in &counts {
        assert!((7..=13).contains(n), "key {key} got {n} of 30: {counts:?}");
    }
}

fn two_weighted_providers() -> String {
    format!(
        r#"
[[clients]]
name = "tester"
key = "{CLIENT_KEY}"

[[providers]]
name = "light"
kind = "openai"
base_url = "{{MOCK}}"
keys = ["sk-light-key-0001"]
weight = 1
models = ["gpt-4o-mini"]

[[providers]]
name = "heavy"
kind = "openai"
base_url = "{{MOCK}}"
keys = ["sk-heavy-key-0001"]
weight = 2
models = ["gpt-4o-mini"]
"#
    )
}

#[test]
fn weighted_providers_share_one_to_two() {
    let h = Harness::start(Conf::with_body(&two_weighted_providers()));
    let mut by_header = BTreeMap::new();
    for _ in 0..30 {
        let r = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
        assert_eq!(r.status, 200);
        *by_header
            .entry(r.header("x-rotor-provider").unwrap().to_owned())
            .or_insert(0) += 1;
    }
    let counts = count_by_bearer(&h);
    let light = counts.get("sk-light-key-0001").copied().unwrap_or(0);
    let heavy = counts.get("sk-heavy-key-0001").copied().unwrap_or(0);
    assert_eq!(light + heavy, 30);
    assert!((8..=12).contains(&light), "light {light}, heavy {heavy}");
    assert_eq!(by_header.get("light"), Some(&light), "{by_header:?}");
    assert_eq!(by_header.get("heavy"), Some(&heavy), "{by_header:?}");
}

#[test]
fn weighted_round_robin_is_smooth() {
    // One worker: one balancing state, so the sequence is exact.
    let h = Harness::start(Conf {
        workers: 1,
        ..Conf::with_body(&two_weighted_providers())
    });
    let mut c = h.client();
    let seq: Vec<String> = (0..12)
        .map(|_| {
            let r = c.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
            r.header("x-rotor-provider").unwrap().to_owned()
        })
        .collect();
    for window in seq.chunks(3) {
        assert_eq!(
            window.iter().filter(|p| *p == "light").count(),
            1,
            "weights 1:2 must interleave (one light per three): {seq:?}"
        );
    }
}

#[test]
fn alias_rewrites_only_the_model_value() {
    let h = Harness::start(Conf::default());
    let body = "{ \"messages\" : [ {\"role\":\"user\",\"content\":\"gpt-3.5 is \\\"great\\\"\"} ],\n  \"model\" :   \"gpt-3.5\" , \"temperature\": 0.50, \"n\":1 }";
    let r = h.post("/v1/chat/completions", body, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = h.recorded();
    assert_eq!(rec.len(), 1);
    let expected = body.replace("\"model\" :   \"gpt-3.5\"", "\"model\" :   \"gpt-4o-mini\"");
    assert_eq!(String::from_utf8_lossy(&rec[0].body), expected);
}

#[test]
fn models_list_is_filtered_per_client() {
    let body = r#"
[[clients]]
name = "chatty"
key = "sk-client-chat-0001"
models = ["gpt-*"]

[[clients]]
name = "embedder"
key = "sk-client-embed-0001"
models = ["text-*"]

[[providers]]
name = "mock"
kind = "openai"
base_url = "{MOCK}"
keys = ["sk-pool-key-aaaa-0001"]
models = ["gpt-4o-mini", "text-embedding-3-small"]
aliases = { "gpt-3.5" = "gpt-4o-mini" }
"#;
    let h = Harness::start(Conf::with_body(body));
    let ids = |key: &str| -> Vec<String> {
        let bearer = format!("Bearer {key}");
        let r = h
            .client()
            .request("GET", "/v1/models", &[("authorization", &bearer)], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["object"].as_str(), Some("list"));
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids("sk-client-chat-0001"), ["gpt-3.5", "gpt-4o-mini"]);
    assert_eq!(ids("sk-client-embed-0001"), ["text-embedding-3-small"]);
    // Not proxied: the mock saw nothing.
    assert!(h.recorded().is_empty());
}

#[test]
fn model_outside_the_allow_list_is_403() {
    let body = r#"
[[clients]]
name = "embedder"
key = "sk-client-embed-0001"
models = ["text-*"]

[[providers]]
name = "mock"
kind = "openai"
base_url = "{MOCK}"
keys = ["sk-pool-key-aaaa-0001"]
models = ["gpt-4o-mini", "text-embedding-3-small"]
"#;
    let h = Harness::start(Conf::with_body(body));
    let r = h.client().request(
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", "Bearer sk-client-embed-0001"),
            ("content-type", "application/json"),
        ],
        chat("gpt-4o-mini").as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let (message, kind) = r.openai_error();
    assert_eq!(kind, "permission_error");
    assert!(message.contains("gpt-4o-mini"), "{message}");
    assert!(r.header("x-request-id").is_some());
    assert!(h.recorded().is_empty());
}

#[test]
fn unknown_model_is_404() {
    let h = Harness::start(Conf::default());
    let r = h.post("/v1/chat/completions", &chat("no-such-model"), &[]);
    assert_eq!(r.status, 404, "{}", r.text());
    let (message, kind) = r.openai_error();
    assert_eq!(kind, "invalid_request_error");
    assert!(message.contains("no-such-model"), "{message}");
    assert_eq!(r.json()["error"]["code"].as_str(), Some("model_not_found"));
    assert!(h.recorded().is_empty());
}

#[test]
fn default_model_serves_unknown_models() {
    let h = Harness::start(Conf {
        routing: "default_model = \"gpt-4o-mini\"".into(),
        ..Default::default()
    });
    let r = h.post("/v1/chat/completions", &chat("no-such-model"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = h.recorded();
    assert_eq!(rec.len(), 1);
    let sent: sonic_rs::Value = sonic_rs::from_slice(&rec[0].body).unwrap();
    assert_eq!(sent["model"].as_str(), Some("gpt-4o-mini"));
}

#[test]
fn client_key_never_reaches_the_upstream() {
    let h = Harness::start(Conf::default());
    let bearer = format!("Bearer {CLIENT_KEY}");
    let mut c = h.client();
    let r = c.request(
        "POST",
        "/v1/chat/completions",
        &[("authorization", &bearer), ("content-type", "application/json")],
        chat("gpt-4o-mini").as_bytes(),
    );
    assert_eq!(r.status, 200);
    let r = c.request(
        "POST",
        "/v1/chat/completions",
        &[("x-api-key", CLIENT_KEY), ("content-type", "application/json")],
        chat("gpt-4o-mini").as_bytes(),
    );
    assert_eq!(r.status, 200);
    let rec = h.recorded();
    assert_eq!(rec.len(), 2);
    for r in &rec {
        assert_eq!(r.bearer(), Some(POOL_KEY));
        assert_eq!(r.headers_named_count("authorization"), 1);
        assert!(r.header("x-api-key").is_none());
        for (name, value) in &r.headers {
            assert!(!value.contains(CLIENT_KEY), "client key leaked upstream in {name}");
        }
    }
}

trait Count {
    fn headers_named_count(&self, name: &str) -> usize;
}

impl Count for rotor::mock::Recorded {
    fn headers_named_count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n == name).count()
    }
}

#[test]
fn hop_by_hop_headers_are_not_forwarded() {
    let h = Harness::start(Conf::default());
    let bearer = format!("Bearer {CLIENT_KEY}");
    let r = h.client().request(
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
            ("connection", "keep-alive, x-foo"),
            ("x-foo", "hop"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic c2VjcmV0"),
            ("x-end-to-end", "kept"),
        ],
        chat("gpt-4o-mini").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = h.recorded();
    let got = &rec[0];
    for name in ["connection", "x-foo", "keep-alive", "te", "proxy-authorization"] {
        assert!(got.header(name).is_none(), "{name} forwarded: {:?}", got.headers);
    }
    assert_eq!(got.header("x-end-to-end"), Some("kept"));
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.headers_named_count("host"), 1);
    assert_eq!(got.header("host"), Some(h.mock().addr.to_string().as_str()));
}

#[test]
fn provider_headers_are_added_and_override_the_clients() {
    let body = format!(
        r#"
[[clients]]
name = "tester"
key = "{CLIENT_KEY}"

[[providers]]
name = "mock"
kind = "openai"
base_url = "{{MOCK}}"
keys = ["{POOL_KEY}"]
models = ["gpt-4o-mini"]
headers = {{ "OpenAI-Organization" = "org-rotor" }}
"#
    );
    let h = Harness::start(Conf::with_body(&body));
    let r = h.post(
        "/v1/chat/completions",
        &chat("gpt-4o-mini"),
        &[("openai-organization", "org-client")],
    );
    assert_eq!(r.status, 200);
    let rec = h.recorded();
    assert_eq!(
        rec[0].headers_named_count("openai-organization"),
        1,
        "{:?}",
        rec[0].headers
    );
    assert_eq!(rec[0].header("openai-organization"), Some("org-rotor"));
}

#[test]
fn multipart_passthrough_routes_by_the_model_field() {
    let h = Harness::start(Conf::default());
    let boundary = "----rotorBoundary7MA4YWxk";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n").as_bytes(),
    );
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend((0..4096u32).map(|i| (i * 7 % 256) as u8));
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let bearer = format!("Bearer {CLIENT_KEY}");
    let r = h.client().request(
        "POST",
        "/v1/audio/transcriptions",
        &[("authorization", &bearer), ("content-type", &content_type)],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"].as_str(), Some("mock.echo"));
    assert_eq!(v["path"].as_str(), Some("/v1/audio/transcriptions"));
    assert_eq!(v["bytes"].as_u64(), Some(body.len() as u64));
    let rec = h.recorded();
    assert!(rec[0].body.as_ref() == body.as_slice(), "multipart body changed");
    assert_eq!(rec[0].header("content-type"), Some(content_type.as_str()));

    // A multipart form whose model has no route is refused before any upstream work.
    let other = String::from_utf8_lossy(&body).replace("whisper-1", "whisper-9");
    let r = h.client().request(
        "POST",
        "/v1/audio/transcriptions",
        &[("authorization", &bearer), ("content-type", &content_type)],
        other.as_bytes(),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(h.recorded().len(), 1);
}

#[test]
fn json_passthrough_and_bodiless_get() {
    let h = Harness::start(Conf::default());
    let body = r#"{"model":"omni-moderation-latest","input":"hello"}"#;
    let r = h.post("/v1/moderations", body, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["path"].as_str(), Some("/v1/moderations"));
    assert_eq!(v["model"].as_str(), Some("omni-moderation-latest"));
    assert_eq!(r.header("x-rotor-provider"), Some("mock"));

    let r = h.client().get("/v1/files?purpose=batch", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["method"].as_str(), Some("GET"));
    assert_eq!(v["path"].as_str(), Some("/v1/files"));
    let rec = h.recorded();
    assert_eq!(rec.len(), 2);
    assert_eq!(rec[1].target, "/v1/files?purpose=batch");
    assert_eq!(rec[1].bearer(), Some(POOL_KEY));
}

#[test]
fn a_model_less_call_goes_to_an_openai_provider_before_another_kinds_wildcard() {
    // Gemini serves every model (no `models` list); OpenAI's own API is the OpenAI provider's.
    let h = Harness::start(Conf::with_body(&format!(
        r#"
[[clients]]
name = "tester"
key = "{CLIENT_KEY}"

[[providers]]
name = "gem"
kind = "gemini"
base_url = "{{MOCK}}/v1beta"
keys = ["gem-key-1"]

[[providers]]
name = "oai"
kind = "openai"
base_url = "{{MOCK}}"
keys = ["{POOL_KEY}"]
models = ["gpt-4o-mini"]
"#
    )));
    let r = h.client().get("/v1/files?purpose=batch", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-rotor-provider"), Some("oai"));
    let rec = h.recorded();
    assert_eq!(rec.len(), 1);
    assert_eq!(
        (rec[0].target.as_str(), rec[0].bearer()),
        ("/v1/files?purpose=batch", Some(POOL_KEY))
    );
}

/// An SDK's head, its lines written tightly (copied as runs between the fields left out) or
/// one of them loosely (written field by field): upstream gets the same end-to-end fields, in
/// the client's order, and none of the hop-by-hop or credential ones between them.
#[test]
fn an_sdk_head_is_forwarded_in_order_whether_its_lines_are_tight_or_not() {
    let h = Harness::start(Conf::default());
    let body = chat("gpt-4o-mini");
    let kept = [
        ("Accept", "application/json"),
        ("Content-Type", "application/json"),
        ("User-Agent", "OpenAI/Python 1.54.4"),
        ("X-Stainless-Lang", "python"),
        ("x-stainless-retry-count", "0"),
    ];
    for loose in ["", "X-Stainless-OS:Linux \r\n"] {
        let raw = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: rotor\r\nAccept-Encoding: gzip, deflate\r\n\
             Connection: keep-alive\r\nAccept: application/json\r\nContent-Type: application/json\r\n\
             User-Agent: OpenAI/Python 1.54.4\r\nAuthorization: Bearer {CLIENT_KEY}\r\n\
             X-Stainless-Lang: python\r\n{loose}x-stainless-retry-count: 0\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut client = h.client();
        client.send_raw(raw.as_bytes());
        let r = client.read_response();
        assert_eq!(r.status, 200, "{}", r.text());
        let rec = h.recorded();
        let got = rec.last().unwrap();
        let mut want: Vec<(String, String)> = kept
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
            .collect();
        if !loose.is_empty() {
            want.insert(4, ("x-stainless-os".into(), "Linux".into()));
        }
        let names: Vec<&String> = want.iter().map(|(n, _)| n).collect();
        let forwarded: Vec<(String, String)> = got
            .headers
            .iter()
            .filter(|(n, _)| names.contains(&n))
            .cloned()
            .collect();
        assert_eq!(forwarded, want, "{:?}", got.headers);
        for name in ["accept-encoding", "connection"] {
            assert!(got.header(name).is_none(), "{name} forwarded: {:?}", got.headers);
        }
        assert_eq!(got.headers_named_count("authorization"), 1);
        assert_ne!(
            got.header("authorization"),
            Some(format!("Bearer {CLIENT_KEY}").as_str())
        );
    }
}
