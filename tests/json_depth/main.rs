//! Deeply nested JSON (issue 12, item 1): a 30 KB body of 15,000 nested arrays used to overflow
//! a worker's stack and abort the whole gateway. Every JSON rotor parses is now bounded by
//! `server.max_json_depth`: a too-deep request is a 400 in the front door's envelope, a too-deep
//! upstream answer a 502 in it (or an error event mid-stream), and the gateway keeps serving.
//!
//! rotor runs as a child process here (the mock and the scripted upstreams stay in the test
//! process, except where the mock itself is under test): an input that still crashed it shows up as a dead child and an unanswered request,
//! not as the abort of the test binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests may block and sleep: they are not worker threads.
#![allow(clippy::disallowed_methods)]

#[path = "../common/mod.rs"]
mod common;
mod upstream;

use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::child::ChildRotor;
use common::*;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

/// `[[[...]]]`, `depth` levels.
fn nested(depth: usize) -> String {
    let mut s = String::with_capacity(depth * 2);
    s.extend(std::iter::repeat_n('[', depth));
    s.extend(std::iter::repeat_n(']', depth));
    s
}

/// A chat request `depth` levels deep: the object, then `depth - 1` arrays in an extra field.
fn chat_at_depth(model: &str, depth: usize) -> String {
    format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}],"x_probe":{}}}"#,
        nested(depth - 1)
    )
}

/// An Anthropic Messages request `depth` levels deep (the same shape).
fn messages_at_depth(model: &str, depth: usize) -> String {
    format!(
        r#"{{"model":"{model}","max_tokens":16,"messages":[{{"role":"user","content":"hi"}}],"x_probe":{}}}"#,
        nested(depth - 1)
    )
}

fn messages(model: &str, stream: bool) -> String {
    format!(r#"{{"model":"{model}","max_tokens":16,"stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#)
}

const OPENAI: &str = "/v1/chat/completions";
const ANTHROPIC: &str = "/v1/messages";

/// Headers an SDK of the front door's API sends.
fn headers(path: &str) -> Vec<(&'static str, String)> {
    let mut h = vec![("content-type", "application/json".to_owned())];
    if path == ANTHROPIC {
        h.push(("x-api-key", CLIENT_KEY.to_owned()));
        h.push(("anthropic-version", "2023-06-01".to_owned()));
    } else {
        h.push(("authorization", format!("Bearer {CLIENT_KEY}")));
    }
    h
}

/// One provider of each wire protocol on the mock, plus `extra` providers and `server` lines.
fn conf(server: &str, extra: &str) -> Conf {
    Conf {
        workers: 1,
        server: server.to_owned(),
        retry: "max_attempts = 1".to_owned(),
        ..Conf::with_body(&format!("{}{extra}", one_provider_per_protocol()))
    }
}

/// rotor as a child process, with the front doors' headers.
struct Rotor(ChildRotor);

impl Rotor {
    fn start(conf: &Conf, mock_url: &str) -> Rotor {
        Rotor(ChildRotor::start(conf, mock_url))
    }

    fn addr(&self) -> SocketAddr {
        self.0.addr
    }

    /// Sends `body` to `path` on `c` with the headers of that front door's SDKs.
    fn send(&mut self, c: &mut Client, path: &str, body: &str) -> Response {
        let h = headers(path);
        let h: Vec<(&str, &str)> = h.iter().map(|(n, v)| (*n, v.as_str())).collect();
        self.0.send(c, path, &h, body)
    }

    /// A fresh connection for one request.
    fn post(&mut self, path: &str, body: &str) -> Response {
        let mut c = Client::connect(self.addr());
        self.send(&mut c, path, body)
    }

    /// rotor is alive and answers a plain request on `c` (and so on that connection).
    fn assert_serving(&mut self, c: &mut Client, after: &str) {
        let r = self.send(c, OPENAI, &chat("gpt-4o-mini"));
        assert_eq!(r.status, 200, "after {after}: {}", r.text());
        assert!(self.0.exit().is_none(), "rotor exited after {after}");
    }
}

/// Asserts the error envelope of `path`'s API and returns (type, message).
fn envelope(path: &str, r: &Response) -> (String, String) {
    if path == ANTHROPIC {
        let v = r.json();
        assert_eq!(v["type"].as_str(), Some("error"), "{}", r.text());
        let kind = v["error"]["type"].as_str().unwrap_or_else(|| panic!("{}", r.text()));
        let message = v["error"]["message"].as_str().unwrap_or_else(|| panic!("{}", r.text()));
        (kind.to_owned(), message.to_owned())
    } else {
        let (message, kind) = r.openai_error();
        (kind, message)
    }
}

#[test]
fn deep_request_bodies_get_400_in_the_front_doors_envelope_and_rotor_lives_on() {
    let mock = start_mock();
    let mut rotor = Rotor::start(&conf("", ""), &mock.base_url());
    for depth in [15_000, 100_000] {
        for model in ["gpt-4o-mini", "claude-x", "gemini-x"] {
            for path in [OPENAI, ANTHROPIC] {
                let body = if path == OPENAI {
                    chat_at_depth(model, depth)
                } else {
                    messages_at_depth(model, depth)
                };
                let case = format!("{depth} levels to {model} on {path}");
                let mut c = Client::connect(rotor.addr());
                let r = rotor.send(&mut c, path, &body);
                assert_eq!(r.status, 400, "{case}: {}", r.text());
                let (kind, message) = envelope(path, &r);
                assert_eq!(kind, "invalid_request_error", "{case}");
                assert!(
                    message.contains("deeper than 128 levels (server.max_json_depth)"),
                    "{case}: {message}"
                );
                rotor.assert_serving(&mut c, &case);
            }
        }
    }
    let deep_upstream = mock.recorder.requests().iter().any(|r| r.body.len() > 10_000);
    assert!(!deep_upstream, "a deep body reached the upstream");
}

#[test]
fn the_depth_limit_is_server_max_json_depth() {
    let mock = start_mock();
    let mut rotor = Rotor::start(&conf("max_json_depth = 16", ""), &mock.base_url());
    for model in ["gpt-4o-mini", "claude-x", "gemini-x"] {
        for path in [OPENAI, ANTHROPIC] {
            let (at, over) = if path == OPENAI {
                (chat_at_depth(model, 16), chat_at_depth(model, 17))
            } else {
                (messages_at_depth(model, 16), messages_at_depth(model, 17))
            };
            let r = rotor.post(path, &at);
            assert_eq!(r.status, 200, "16 levels to {model} on {path}: {}", r.text());
            let r = rotor.post(path, &over);
            assert_eq!(r.status, 400, "17 levels to {model} on {path}: {}", r.text());
            let (_, message) = envelope(path, &r);
            assert!(message.contains("deeper than 16 levels"), "{message}");
        }
    }
}

#[test]
fn deep_tool_arguments_are_refused_where_a_translation_would_parse_them() {
    let mock = start_mock();
    let mut rotor = Rotor::start(&conf("", ""), &mock.base_url());
    // The arguments are a JSON string: the body itself is shallow.
    let with_args = |model: &str| {
        format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":"go"}},
            {{"role":"assistant","content":null,"tool_calls":[{{"id":"call_deep","type":"function","function":{{"name":"f","arguments":"{}"}}}}]}},
            {{"role":"tool","tool_call_id":"call_deep","content":"done"}}]}}"#,
            nested(15_000)
        )
    };
    for model in ["claude-x", "gemini-x"] {
        let mut c = Client::connect(rotor.addr());
        let r = rotor.send(&mut c, OPENAI, &with_args(model));
        assert_eq!(r.status, 400, "{model}: {}", r.text());
        let (_, message) = envelope(OPENAI, &r);
        assert!(
            message.contains("tool call 'call_deep'") && message.contains("server.max_json_depth"),
            "{message}"
        );
        rotor.assert_serving(&mut c, model);
    }
    // Same protocol: rotor never parses the arguments, so they pass.
    let r = rotor.post(OPENAI, &with_args("gpt-4o-mini"));
    assert_eq!(r.status, 200, "{}", r.text());

    // A tool result that deep is sent to Gemini as text, as any non-object result is.
    mock.recorder.clear();
    let deep_result = format!(
        r#"{{"model":"gemini-x","messages":[{{"role":"user","content":"go"}},
        {{"role":"assistant","content":null,"tool_calls":[{{"id":"c1","type":"function","function":{{"name":"f","arguments":"{{}}"}}}}]}},
        {{"role":"tool","tool_call_id":"c1","content":"{}"}}]}}"#,
        nested(15_000)
    );
    let r = rotor.post(OPENAI, &deep_result);
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = mock.recorder.requests();
    let gemini = sent
        .iter()
        .find(|s| s.target.contains("gemini-x"))
        .expect("gemini was asked");
    let text = String::from_utf8_lossy(&gemini.body);
    assert!(
        text.contains(&format!(r#""response":{{"content":"{}"#, "[".repeat(100))),
        "{}",
        text.get(..300).unwrap_or(&text)
    );
}

/// The Responses and Gemini front doors and the admin bodies (the login needs no key) are bounded
/// too: each answers 400 in its own envelope and rotor keeps serving.
#[test]
fn deep_bodies_at_the_other_doors_and_the_admin_api_get_400_and_rotor_lives_on() {
    let mock = start_mock();
    let mut rotor = Rotor::start(&conf("admin_key = \"sk-admin-test-9999\"", ""), &mock.base_url());
    let deep = nested(30_000);
    let bearer = format!("Bearer {CLIENT_KEY}");
    let admin = ("authorization", "Bearer sk-admin-test-9999");
    let mut refused = |path: &str, header: Option<(&str, &str)>, body: String| {
        let mut h = vec![("content-type", "application/json")];
        h.extend(header);
        let mut c = Client::connect(rotor.addr());
        let r = rotor.0.send(&mut c, path, &h, &body);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(r.text().contains("server.max_json_depth"), "{path}: {}", r.text());
        rotor.assert_serving(&mut c, path);
    };
    refused(
        "/v1/responses",
        Some(("authorization", bearer.as_str())),
        format!(r#"{{"model":"gpt-4o-mini","input":{deep}}}"#),
    );
    refused(
        "/v1beta/models/gpt-4o-mini:generateContent",
        Some(("x-goog-api-key", CLIENT_KEY)),
        format!(r#"{{"contents":[{{"role":"user","parts":[{{"text":"hi"}}]}}],"x":{deep}}}"#),
    );
    refused("/admin/login", None, format!(r#"{{"user":{deep}}}"#));
    refused(
        "/admin/keys",
        Some(admin),
        format!(r#"{{"provider":"oai","keys":{deep}}}"#),
    );
    refused("/admin/keys/validate", Some(admin), format!(r#"{{"keys":{deep}}}"#));
}
