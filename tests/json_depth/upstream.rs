//! Deep JSON from upstreams and the other bounds (a submodule of `json_depth`, split to keep
//! files small, sharing its helpers): balance and token answers left unread, deep answers that
//! become a 502 or an error event mid-stream, the mock's own refusal, and `rotor check`'s
//! bounds on `server.max_json_depth`.

use super::*;

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
    next_request(conn, &mut Vec::new())
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
