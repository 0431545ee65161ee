//! The relay path end to end: non-streamed and streamed answers, embeddings, completions,
//! upstream keep-alive, client and upstream cuts, and large bodies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

/// What the mock answers when asked directly (same body, the pool key).
fn direct(h: &Harness, path: &str, body: &str) -> Response {
    let mut c = Client::connect(h.mock().addr);
    let bearer = format!("Bearer {POOL_KEY}");
    c.request(
        "POST",
        path,
        &[("authorization", &bearer), ("content-type", "application/json")],
        body.as_bytes(),
    )
}

#[test]
fn non_stream_chat_body_is_the_mocks_and_rotor_headers_are_set() {
    let h = Harness::start(Conf::default());
    let body = chat("gpt-4o-mini");
    let r = h.post("/v1/chat/completions", &body, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let expected = direct(&h, "/v1/chat/completions", &body);
    assert_eq!(r.text(), expected.text());
    assert!(r.complete);
    assert_eq!(r.header("x-rotor-provider"), Some("mock"));
    assert_eq!(r.header("x-rotor-attempts"), Some("1"));
    let id = r.header("x-request-id").expect("x-request-id");
    assert!(!id.is_empty());
    assert_eq!(
        r.headers_named("x-request-id").len(),
        1,
        "one request id, not the mock's too"
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["object"].as_str(), Some("chat.completion"));
    assert_eq!(v["model"].as_str(), Some("gpt-4o-mini"));
}

#[test]
fn client_request_id_is_echoed() {
    let h = Harness::start(Conf::default());
    let r = h.post(
        "/v1/chat/completions",
        &chat("gpt-4o-mini"),
        &[("x-request-id", "trace-abc-123")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some("trace-abc-123"));
}

#[test]
fn stream_events_arrive_incrementally_and_end_cleanly() {
    let h = Harness::start(Conf::default());
    let mut c = h.client();
    let (name, value) = auth();
    let sent = Instant::now();
    c.send_request(
        "POST",
        "/v1/chat/completions",
        &[
            (name, &value),
            ("content-type", "application/json"),
            ("x-mock-interval-ms", "100"),
            ("x-mock-chunks", "5"),
        ],
        chat_stream("gpt-4o-mini").as_bytes(),
    );
    let (status, _, headers) = c.read_head();
    assert_eq!(status, 200);
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    assert_eq!(header("transfer-encoding"), Some("chunked"));
    assert_eq!(header("content-type"), Some("text/event-stream"));
    assert_eq!(header("x-rotor-provider"), Some("mock"));
    let (pieces, terminated) = c.read_chunks_timed();
    assert!(terminated, "stream must end with the chunked terminator");
    assert!(pieces.len() >= 3, "relayed as several pieces, got {}", pieces.len());
    let first = pieces.first().unwrap().0;
    let last = pieces.last().unwrap().0;
    assert!(
        first.duration_since(sent) < Duration::from_millis(250),
        "first event took {:?}: buffered?",
        first.duration_since(sent)
    );
    assert!(
        last.duration_since(first) >= Duration::from_millis(300),
        "events spread over {:?} only: the stream was buffered",
        last.duration_since(first)
    );
    let body: Vec<u8> = pieces.iter().flat_map(|(_, d)| d.clone()).collect();
    let text = String::from_utf8(body).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(text.matches("\"content\":\"tok").count(), 5, "{text}");
    // The connection stays usable after a completely framed stream.
    let r = c.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    assert_eq!(r.status, 200);
}

#[test]
fn stream_usage_chunk_is_relayed_when_the_client_asks_for_it() {
    let h = Harness::start(Conf::default());
    let body = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    let r = h.post("/v1/chat/completions", body, &[("x-mock-chunks", "3")]);
    assert_eq!(r.status, 200);
    assert!(r.chunked && r.complete);
    let text = r.text();
    assert!(text.contains(r#""choices":[],"usage":{"prompt_tokens""#), "{text}");
    assert!(text.contains(r#""completion_tokens":3"#), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[test]
fn embeddings_float_and_base64() {
    let h = Harness::start(Conf::default());
    let body = r#"{"model":"text-embedding-3-small","input":["a","b"]}"#;
    let r = h.post("/v1/embeddings", body, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), direct(&h, "/v1/embeddings", body).text());
    let v = r.json();
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert!(data[0]["embedding"].is_array());

    let body = r#"{"model":"text-embedding-3-small","input":"a","encoding_format":"base64"}"#;
    let r = h.post("/v1/embeddings", body, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), direct(&h, "/v1/embeddings", body).text());
    let v = r.json();
    let emb = v["data"][0]["embedding"].as_str().expect("base64 string");
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD.decode(emb).unwrap();
    assert_eq!(raw.len(), 8 * 4, "8 little-endian f32");
}

#[test]
fn completions_whole_and_streamed() {
    let h = Harness::start(Conf::default());
    let body = r#"{"model":"gpt-4o-mini","prompt":"say hi"}"#;
    let r = h.post("/v1/completions", body, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), direct(&h, "/v1/completions", body).text());
    assert_eq!(r.json()["object"].as_str(), Some("text_completion"));

    let body = r#"{"model":"gpt-4o-mini","prompt":"say hi","stream":true}"#;
    let r = h.post("/v1/completions", body, &[("x-mock-chunks", "4")]);
    assert_eq!(r.status, 200);
    assert!(r.chunked && r.complete);
    let text = r.text();
    assert_eq!(text.matches("\"text\":\"tok").count(), 4, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[test]
fn upstream_connections_are_kept_alive() {
    let h = Harness::start(Conf {
        workers: 1,
        ..Default::default()
    });
    let mut c = h.client();
    for i in 0..20 {
        let body = if i % 2 == 0 {
            chat("gpt-4o-mini")
        } else {
            chat_stream("gpt-4o-mini")
        };
        let r = c.post("/v1/chat/completions", &body, &[]);
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert!(r.complete);
    }
    assert_eq!(h.recorded().len(), 20);
    let accepted = h.mock().gate.accepted_connections();
    assert!(
        accepted <= 2,
        "20 sequential requests opened {accepted} upstream connections"
    );
}

#[test]
fn client_disconnect_mid_stream_drops_that_upstream_connection() {
    let h = Harness::start(Conf {
        workers: 1,
        ..Default::default()
    });
    // Warm one pooled connection.
    assert_eq!(h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    assert_eq!(h.mock().gate.accepted_connections(), 1);
    {
        let mut c = h.client();
        let (name, value) = auth();
        c.send_request(
            "POST",
            "/v1/chat/completions",
            &[
                (name, &value),
                ("content-type", "application/json"),
                ("x-mock-interval-ms", "50"),
                ("x-mock-chunks", "10"),
            ],
            chat_stream("gpt-4o-mini").as_bytes(),
        );
        let (status, _, _) = c.read_head();
        assert_eq!(status, 200);
        assert!(matches!(c.next_chunk(), Some(Some(_))));
        // Dropped here: the client leaves mid-stream.
    }
    // Rotor notices on its next write and drops the upstream connection, which the mock sees
    // as a closed connection (its own writes fail).
    assert!(
        eventually(Duration::from_secs(3), || h.mock().gate.open_connections() == 0),
        "the upstream connection of the cut stream stays open ({} open)",
        h.mock().gate.open_connections()
    );
    let r = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        h.mock().gate.accepted_connections(),
        2,
        "the next request must use a fresh upstream connection"
    );
}

#[test]
fn one_megabyte_request_body_arrives_byte_identical() {
    let h = Harness::start(Conf::default());
    let filler: String = (0..1024 * 1024).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let body = format!(r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{filler}"}}]}}"#);
    let r = h.post("/v1/chat/completions", &body, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = h.recorded();
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].body.len(), body.len());
    assert!(rec[0].body.as_ref() == body.as_bytes(), "body changed on the way");
    assert_eq!(rec[0].header("content-length"), Some(body.len().to_string().as_str()));
}

#[test]
fn upstream_cut_mid_stream_ends_with_an_error_event_never_a_clean_end() {
    let h = Harness::start(Conf::default());
    let mut c = h.client();
    let (name, value) = auth();
    c.send_request(
        "POST",
        "/v1/chat/completions",
        &[
            (name, &value),
            ("content-type", "application/json"),
            ("x-mock-chunks", "5"),
            ("x-mock-cut-after", "2"),
        ],
        chat_stream("gpt-4o-mini").as_bytes(),
    );
    let (status, _, _) = c.read_head();
    assert_eq!(status, 200);
    let (pieces, terminated) = c.read_chunks_timed();
    assert!(terminated, "the SSE stream is ended properly after the error event");
    let text: String = pieces
        .iter()
        .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
        .collect();
    assert!(text.contains("tok1"), "the events before the cut are relayed: {text}");
    assert!(!text.contains("[DONE]"), "a cut stream must not look complete: {text}");
    let last = text.trim_end().rsplit("\n\n").next().unwrap_or_default();
    assert!(
        last.starts_with("data: {\"error\":") && last.contains("stream_interrupted"),
        "the last event is an OpenAI-style error: {last}"
    );
    // The answer was framed completely, so the same connection carries the next request.
    let (name, value) = auth();
    c.send_request(
        "POST",
        "/v1/chat/completions",
        &[(name, &value), ("content-type", "application/json")],
        chat("gpt-4o-mini").as_bytes(),
    );
    assert_eq!(c.read_head().0, 200);
    assert_eq!(h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
}

#[test]
fn large_sized_answer_is_relayed_whole_with_its_length() {
    let h = Harness::start(Conf {
        workers: 1,
        ..Default::default()
    });
    // ~600 KB of embeddings: past rotor's whole-body buffer, so it is relayed as it arrives.
    let inputs = vec!["\"a\""; 3000].join(",");
    let body = format!(r#"{{"model":"text-embedding-3-small","input":[{inputs}]}}"#);
    let mut c = h.client();
    let r = c.post("/v1/embeddings", &body, &[]);
    assert_eq!(r.status, 200);
    assert!(!r.chunked, "the upstream's content-length is kept");
    assert!(r.body.len() > 256 * 1024, "only {} bytes", r.body.len());
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string().as_str()));
    assert_eq!(r.text(), direct(&h, "/v1/embeddings", &body).text());
    // Both connections stay usable: the client's and the pooled upstream one.
    assert_eq!(c.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    assert_eq!(
        h.mock().gate.accepted_connections(),
        2,
        "one for rotor, one for the direct call"
    );
}

#[test]
fn head_request_gets_headers_only() {
    let h = Harness::start(Conf::default());
    let mut c = h.client();
    c.send_request("HEAD", "/health", &[], b"");
    let (status, _, headers) = c.read_head();
    assert_eq!(status, 200);
    assert!(headers.iter().any(|(n, _)| n == "content-length"));
    // No body follows: the next response on the same connection parses cleanly.
    let r = c.get("/health", &[]);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("\"status\""), "{}", r.text());
}

/// An upstream on one keep-alive connection that answers each request with the same sized
/// JSON body: with its head in one write when `together`, else the head and 40 ms later the
/// body. Counts the connections it accepted.
fn sized_upstream(together: bool) -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::Write;
    counting_upstream(move |mut conn| {
        let mut buf = Vec::new();
        while next_request(&mut conn, &mut buf) {
            let body = r#"{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-upstream: kept\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            if together {
                conn.write_all(format!("{head}{body}").as_bytes()).unwrap();
            } else {
                conn.write_all(head.as_bytes()).unwrap();
                sleep_ms(40);
                conn.write_all(body.as_bytes()).unwrap();
            }
        }
    })
}

/// A sized answer whose body came with its head (taken at once, written where the attempt
/// awaits it) and one whose body came after (read by the relay) reach the client alike: the
/// same status, fields, length and body, and the upstream connection is reused either way.
#[test]
fn a_sized_answer_is_relayed_alike_whether_its_body_came_with_its_head_or_after() {
    let mut answers = Vec::new();
    for together in [true, false] {
        let (addr, accepted) = sized_upstream(together);
        let url = format!("http://{addr}/v1");
        let provider = format!(
            "[[clients]]\nname = \"tester\"\nkey = \"{CLIENT_KEY}\"\n\n[[providers]]\nname = \"raw\"\nkind = \"openai\"\nbase_url = \"{url}\"\nkeys = [\"{POOL_KEY}\"]\nmodels = [\"gpt-4o-mini\"]\n"
        );
        let h = Harness::gateway_only(
            Conf {
                workers: 1,
                ..Conf::with_body(&provider)
            },
            &url,
        );
        let mut c = h.client();
        for _ in 0..3 {
            let r = c.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
            assert_eq!(r.status, 200, "{together}: {}", r.text());
            assert!(r.complete && !r.chunked, "{together}");
            assert_eq!(r.header("content-length"), Some(r.body.len().to_string().as_str()));
            assert_eq!(r.header("x-rotor-provider"), Some("raw"));
            assert_eq!(r.header("x-rotor-attempts"), Some("1"));
            assert!(r.header("x-rotor-overhead-us").is_some(), "{together}");
            assert!(r.header("x-request-id").is_some(), "{together}");
            answers.push((
                r.header("content-type").map(str::to_owned),
                r.header("x-upstream").map(str::to_owned),
                r.text(),
            ));
        }
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{together}: reused"
        );
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    assert_eq!(answers[0].0.as_deref(), Some("application/json"));
    assert_eq!(answers[0].1.as_deref(), Some("kept"));
}
