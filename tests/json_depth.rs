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

mod common;

use std::io::{Read, Write};
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

/// An upstream that answers every request with `status`, `content_type` and `body`, then closes
/// the connection. Its base URL.
fn scripted(status: u16, content_type: &'static str, body: String) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let body = Arc::new(body);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let body = body.clone();
            std::thread::spawn(move || {
                if read_request(&mut conn) {
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(head.as_bytes());
                    let _ = conn.write_all(body.as_bytes());
                }
            });
        }
    });
    format!("http://{addr}/v1")
}

/// Reads one request (head and Content-Length body); false if the peer left first.
fn read_request(conn: &mut std::net::TcpStream) -> bool {
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16 * 1024];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                return true;
            }
        }
        match conn.read(&mut tmp) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

fn provider(name: &str, kind: &str, url: &str) -> String {
    format!(
        r#"
[[providers]]
name = "{name}"
kind = "{kind}"
base_url = "{url}"
keys = ["sk-{name}-pool-0001"]
models = ["{name}"]
"#
    )
}

/// An upstream that answers every request 200 with `body` (JSON) and counts the requests.
fn counted(body: String) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (body, count) = (Arc::new(body), asked.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let (body, count) = (body.clone(), count.clone());
            std::thread::spawn(move || {
                if read_request(&mut conn) {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(head.as_bytes());
                    let _ = conn.write_all(body.as_bytes());
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    (format!("http://{addr}/v1"), asked)
}

/// A provider's balance endpoint (`balance = {..}`) answering deeply nested JSON used to abort
/// rotor on the worker that fetched it; the answer is now left unread (balance unknown).
#[test]
fn a_deep_balance_answer_is_not_parsed_and_rotor_lives_on() {
    let mock = start_mock();
    let (url, asked) = counted(format!(r#"{{"data":{}}}"#, nested(30_000)));
    let deep = format!(
        "{}balance = {{ path = \"/user/info\", field = \"/data/totalBalance\" }}\nbalance_interval_ms = 1000\n",
        provider("deepbal", "openai", &url)
    );
    let mut rotor = Rotor::start(&conf("", &deep), &mock.base_url());
    // A second fetch comes a second after the first only if the first answer did not kill rotor.
    let fetched = eventually(Duration::from_secs(10), || {
        asked.load(std::sync::atomic::Ordering::SeqCst) >= 2 || rotor.0.exit().is_some()
    });
    assert!(fetched, "no balance fetch seen");
    assert!(rotor.0.exit().is_none(), "rotor died reading a deep balance answer");
    let mut c = Client::connect(rotor.addr());
    rotor.assert_serving(&mut c, "a deep balance answer");
}

/// A Vertex token endpoint answering deeply nested JSON used to abort rotor (the control thread
/// mints tokens); the answer is now refused unread, counted as a failed mint and retried.
#[test]
fn a_deep_token_answer_is_not_parsed_and_rotor_lives_on() {
    let mock = start_mock();
    let (url, asked) = counted(format!(r#"{{"x":{},"access_token":"ya29.x"}}"#, nested(30_000)));
    let vertex = format!(
        r#"
[[providers]]
name = "deepvertex"
kind = "vertex"
base_url = "{url}"
project = "rotor-test"
region = "us-east5"
token_url = "{url}/token"
models = ["deepvertex-model"]
google_oauth = {{ client_id = "c.apps.googleusercontent.com", client_secret = "GOCSPX-test", refresh_token = "1//test" }}
"#
    );
    let mut rotor = Rotor::start(&conf("", &vertex), &mock.base_url());
    // A failed mint is retried a second later: a second ask means the first answer was survived.
    let fetched = eventually(Duration::from_secs(10), || {
        asked.load(std::sync::atomic::Ordering::SeqCst) >= 2 || rotor.0.exit().is_some()
    });
    assert!(fetched, "no token request seen");
    assert!(rotor.0.exit().is_none(), "rotor died reading a deep token answer");
    let mut c = Client::connect(rotor.addr());
    rotor.assert_serving(&mut c, "a deep token answer");
}

/// Data payloads and event names of an SSE body.
fn sse(body: &str) -> Vec<(String, String)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or("");
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or("");
            (name.to_owned(), data.to_owned())
        })
        .collect()
}

#[test]
fn deep_upstream_answers_become_a_502_or_an_error_event() {
    let mock = start_mock();
    let deep = nested(100_000);
    let json = "application/json";
    let sse_type = "text/event-stream";
    let oai_deep = format!(r#"{{"id":"c","choices":[],"x":{deep}}}"#);
    let oai_deep_args = format!(
        r#"{{"id":"c","model":"m","choices":[{{"index":0,"finish_reason":"tool_calls","message":{{"role":"assistant","content":null,"tool_calls":[{{"id":"call_1","type":"function","function":{{"name":"f","arguments":"{}"}}}}]}}}}],"usage":{{"prompt_tokens":3,"completion_tokens":4}}}}"#,
        nested(15_000)
    );
    let claude_stream = format!(
        "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_1\",\"usage\":{{\"input_tokens\":3}}}}}}\n\n\
         event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"hi\"}}}}\n\n\
         event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{deep}}}\n\n\
         event: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
    );
    let gem_stream = format!(
        "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"hi\"}}]}}}}]}}\r\n\r\n\
         data: {{\"candidates\":{deep}}}\r\n\r\n\
         data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"!\"}}]}},\"finishReason\":\"STOP\"}}]}}\r\n\r\n"
    );
    let extra = [
        provider("oai-deep", "openai", &scripted(200, json, oai_deep.clone())),
        provider("oai-deep-args", "openai", &scripted(200, json, oai_deep_args)),
        provider(
            "claude-deep-stream",
            "anthropic",
            &scripted(200, sse_type, claude_stream),
        ),
        provider(
            "gem-deep",
            "gemini",
            &scripted(200, json, format!(r#"{{"candidates":{deep}}}"#)),
        ),
        provider("gem-deep-stream", "gemini", &scripted(200, sse_type, gem_stream)),
        provider(
            "gem-deep-429",
            "gemini",
            &scripted(429, json, format!(r#"{{"error":{{"details":{deep}}}}}"#)),
        ),
    ]
    .concat();
    let mut rotor = Rotor::start(&conf("", &extra), &mock.base_url());
    let too_deep = "nests deeper than 128 levels (server.max_json_depth)";

    // Whole answers rotor must translate: 502 in the client's envelope.
    for (path, model) in [(ANTHROPIC, "oai-deep"), (OPENAI, "gem-deep"), (ANTHROPIC, "gem-deep")] {
        let body = if path == OPENAI {
            chat(model)
        } else {
            messages(model, false)
        };
        let mut c = Client::connect(rotor.addr());
        let r = rotor.send(&mut c, path, &body);
        assert_eq!(r.status, 502, "{model} on {path}: {}", r.text());
        let (kind, message) = envelope(path, &r);
        let expected = if path == OPENAI { "upstream_error" } else { "api_error" };
        assert_eq!(kind, expected);
        assert!(message.contains(too_deep), "{message}");
        rotor.assert_serving(&mut c, model);
    }

    // Same protocol: relayed untouched (rotor parses nothing but usage, which goes unread).
    let r = rotor.post(OPENAI, &chat("oai-deep"));
    assert_eq!((r.status, r.body.len()), (200, oai_deep.len()));

    // Tool arguments nested too deep in an answer become `{}`, like unparseable ones.
    let r = rotor.post(ANTHROPIC, &messages("oai-deep-args", false));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["content"][0]["type"].as_str(), Some("tool_use"), "{}", r.text());
    assert_eq!(v["content"][0]["input"].as_object().map(|o| o.len()), Some(0));

    // Streams: the events before go out, then one error event, and nothing after it.
    let mut c = Client::connect(rotor.addr());
    let (status, text, terminated) = c.stream_chat(&chat_stream("claude-deep-stream"), &[]);
    assert_eq!(status, 200);
    assert!(terminated, "the stream ends cleanly: {text}");
    let events = sse(&text);
    assert!(events.iter().any(|(_, d)| d.contains("\"content\":\"hi\"")), "{text}");
    let (_, last) = events.last().unwrap();
    assert!(last.contains("\"error\"") && last.contains(too_deep), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    rotor.assert_serving(&mut c, "a deep Anthropic stream");

    let mut c = Client::connect(rotor.addr());
    let r = rotor.send(&mut c, ANTHROPIC, &messages("gem-deep-stream", true));
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let events = sse(&text);
    let errors: Vec<_> = events.iter().filter(|(name, _)| name == "error").collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert!(errors[0].1.contains(too_deep), "{text}");
    assert_eq!(events.last().map(|(n, _)| n.as_str()), Some("error"), "{text}");
    assert!(!events.iter().any(|(n, _)| n == "message_stop"), "{text}");
    rotor.assert_serving(&mut c, "a deep Gemini stream to /v1/messages");

    // A 429 whose body is too deep to read for its retry delay is still a 429.
    let mut c = Client::connect(rotor.addr());
    let r = rotor.send(&mut c, OPENAI, &chat("gem-deep-429"));
    assert_eq!(r.status, 429, "{}", r.text());
    let (_, message) = envelope(OPENAI, &r);
    assert!(
        message.contains("answered 429") && message.contains(too_deep),
        "{message}"
    );
    rotor.assert_serving(&mut c, "a deep 429 body");
}

#[test]
fn the_mock_refuses_deep_bodies_too() {
    let mut mock = Rotor(ChildRotor::mock());
    for path in [OPENAI, ANTHROPIC] {
        let mut c = Client::connect(mock.addr());
        let r = mock.send(&mut c, path, &chat_at_depth("gpt-4o-mini", 100_000));
        assert_eq!(r.status, 400, "{}", r.text());
        mock.assert_serving(&mut c, "a deep body to the mock");
    }
}

#[test]
fn rotor_check_refuses_a_zero_or_absurd_max_json_depth() {
    let dir = tempfile::tempdir().unwrap();
    for (value, ok) in [("0", false), ("1025", false), ("1024", true), ("1", true)] {
        let path = dir.path().join(format!("depth-{value}.toml"));
        let text = Conf {
            server: format!("max_json_depth = {value}"),
            ..Conf::default()
        }
        .render("http://127.0.0.1:9/v1");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_rotor"))
            .args(["check", "--config"])
            .arg(&path)
            .env_remove("ROTOR_CONFIG")
            .env("ROTOR_LOG", "warn")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), ok, "max_json_depth = {value}: {stderr}");
        if !ok {
            assert!(
                stderr.contains("server.max_json_depth") && stderr.contains("between 1 and 1024"),
                "{stderr}"
            );
        }
    }
}
