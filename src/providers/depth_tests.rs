//! The nesting bound (`server.max_json_depth`) in every translation: too-deep requests are
//! refused, too-deep upstream events end a stream with exactly one error event, and too-deep
//! whole answers become an error in the client's envelope. Depths here stay far below what a
//! test thread's stack survives, or far above the limit (then nothing parses them).

use bytes::Bytes;
use sonic_rs::{JsonValueTrait, Value};

use super::anthropic::front_stream::OpenAiToAnthropic;
use super::anthropic::stream::AnthropicToOpenAi;
use super::gemini::stream::GeminiToOpenAi;
use super::openai::ChatRequest;
use super::{anthropic, gemini, openai, prepare, Chain, Front, PrepareError, SseTranslator, WholeBody};
use crate::config::ProviderKind;
use crate::providers::transform::ResponseTransform;

const LIMIT: usize = 8;

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Feeds `input` in two pieces split at `at`, then ends the stream; returns the output.
fn run(t: &mut dyn ResponseTransform, input: &str, at: usize) -> String {
    let (a, b) = input.as_bytes().split_at(at.min(input.len()));
    let mut out = Vec::new();
    for piece in [a, b] {
        for bytes in t.piece(Bytes::copy_from_slice(piece)) {
            out.extend_from_slice(&bytes);
        }
    }
    for bytes in t.end() {
        out.extend_from_slice(&bytes);
    }
    String::from_utf8(out).unwrap()
}

/// (event name, data) of each SSE event.
fn events(out: &str) -> Vec<(String, String)> {
    out.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let name = e.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or("");
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or("");
            (name.to_owned(), data.to_owned())
        })
        .collect()
}

/// The stream ends with one error event naming the setting, after what came before it.
fn assert_one_error_at_the_end(out: &str, before: &str) {
    let events = events(out);
    let errors: Vec<usize> = (0..events.len())
        .filter(|&i| events[i].0 == "error" || (events[i].0.is_empty() && events[i].1.starts_with("{\"error\"")))
        .collect();
    assert_eq!(errors, [events.len() - 1], "{out}");
    assert!(
        events[events.len() - 1]
            .1
            .contains("deeper than 8 levels (server.max_json_depth)"),
        "{out}"
    );
    assert!(out.contains(before), "{out}");
    assert!(
        !out.contains("[DONE]") && !out.contains("message_stop") && !out.contains("after"),
        "{out}"
    );
}

#[test]
fn a_too_deep_event_ends_each_stream_with_one_error_event() {
    let deep = nested(LIMIT);
    let anthropic = format!(
        "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"m\"}}}}\n\n\
         event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"before\"}}}}\n\n\
         event: content_block_delta\ndata: {{\"delta\":{deep}}}\n\n\
         event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"after\"}}}}\n\n\
         event: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
    );
    let openai = format!(
        "data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"before\"}}}}]}}\n\n\
         data: {{\"choices\":{deep}}}\n\n\
         data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"after\"}},\"finish_reason\":\"stop\"}}]}}\n\n\
         data: [DONE]\n\n"
    );
    let gemini = format!(
        "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"before\"}}]}}}}]}}\r\n\r\n\
         data: {{\"candidates\":{deep}}}\r\n\r\n\
         data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"after\"}}]}},\"finishReason\":\"STOP\"}}]}}\r\n\r\n"
    );
    for at in [0, 40, anthropic.len() / 2, anthropic.len()] {
        let mut t = SseTranslator::new(AnthropicToOpenAi::new("m", true), LIMIT);
        assert_one_error_at_the_end(&run(&mut t, &anthropic, at), "before");
        assert!(t.fail("cut").is_empty(), "no second terminator");
        let mut t = SseTranslator::new(OpenAiToAnthropic::new("m"), LIMIT);
        assert_one_error_at_the_end(&run(&mut t, &openai, at), "before");
        assert!(t.fail("cut").is_empty());
        let mut t = SseTranslator::new(GeminiToOpenAi::new("m", true), LIMIT);
        assert_one_error_at_the_end(&run(&mut t, &gemini, at), "before");
        assert!(t.fail("cut").is_empty());
        // Gemini -> OpenAI -> Anthropic: the first stage's error becomes the client's.
        let mut t = Chain {
            first: SseTranslator::new(GeminiToOpenAi::new("m", true), LIMIT),
            second: SseTranslator::new(OpenAiToAnthropic::new("m"), LIMIT),
        };
        assert_one_error_at_the_end(&run(&mut t, &gemini, at), "before");
    }
    // One level shallower is an ordinary (ignored) event: the stream completes.
    let shallow = gemini.replace(&deep, &nested(LIMIT - 1));
    let mut t = SseTranslator::new(GeminiToOpenAi::new("m", false), LIMIT);
    let out = run(&mut t, &shallow, 0);
    assert!(out.contains("after") && out.ends_with("data: [DONE]\n\n"), "{out}");
}

#[test]
fn a_too_deep_whole_answer_is_an_error_in_the_clients_envelope() {
    let deep = format!(r#"{{"candidates":{}}}"#, nested(LIMIT));
    let map = |status, body: &[u8], model: &str, depth| gemini::response::to_openai(status, body, model, depth);
    let mut t = WholeBody::new(200, "m".to_owned(), map, Front::Chat, LIMIT);
    let out = t.full(200, Bytes::from(deep.clone()));
    assert_eq!(t.status(200), 502);
    let v: Value = sonic_rs::from_slice(&out).unwrap();
    assert_eq!(v["error"]["type"].as_str(), Some("upstream_error"));
    assert!(v["error"]["message"].as_str().unwrap().contains("deeper than 8 levels"));

    // An error answer keeps its status; /v1/messages clients get Anthropic's envelope.
    let mut t = WholeBody::new(429, "m".to_owned(), map, Front::Messages, LIMIT);
    let out = t.full(429, Bytes::from(deep.clone()));
    assert_eq!(t.status(429), 429);
    let v: Value = sonic_rs::from_slice(&out).unwrap();
    assert_eq!(v["type"].as_str(), Some("error"));
    assert!(v["error"]["message"].as_str().unwrap().contains("answered 429"));

    // Read whole from pieces, too.
    let mut t = WholeBody::new(200, "m".to_owned(), map, Front::Chat, LIMIT);
    let _ = t.piece(Bytes::from(deep));
    let out = t.end();
    assert!(String::from_utf8_lossy(&out[0]).contains("server.max_json_depth"));
    assert_eq!(t.status(200), 502);

    // Shallow enough: translated, status untouched.
    let ok = br#"{"candidates":[{"content":{"parts":[{"text":"hi"}]},"finishReason":"STOP"}]}"#;
    let mut t = WholeBody::new(200, "m".to_owned(), map, Front::Chat, LIMIT);
    let out = t.full(200, Bytes::from_static(ok));
    assert_eq!(t.status(200), 200);
    assert!(String::from_utf8_lossy(&out).contains("\"content\":\"hi\""));
}

fn chat_with_arguments(arguments: &str) -> ChatRequest {
    let body = format!(
        r#"{{"model":"x","messages":[{{"role":"user","content":"go"}},
        {{"role":"assistant","content":null,"tool_calls":[{{"id":"call_9","type":"function","function":{{"name":"f","arguments":{}}}}}]}},
        {{"role":"tool","tool_call_id":"call_9","content":{}}}]}}"#,
        sonic_rs::to_string(arguments).unwrap(),
        sonic_rs::to_string(&format!("{{\"r\":{}}}", nested(LIMIT))).unwrap(),
    );
    openai::read_chat(body.as_bytes(), LIMIT).unwrap()
}

#[test]
fn tool_arguments_too_deep_to_parse_are_refused() {
    let deep = chat_with_arguments(&format!("{{\"a\":{}}}", nested(LIMIT)));
    for result in [
        anthropic::request::from_chat(&deep, "c", LIMIT),
        gemini::request::from_chat(&deep, LIMIT),
    ] {
        let e = result.unwrap_err();
        assert!(
            e.contains("tool call 'call_9'") && e.contains("deeper than 8 levels"),
            "{e}"
        );
    }
    // At the limit they parse; the tool result one level too deep goes to Gemini as text.
    let ok = chat_with_arguments(&format!("{{\"a\":{}}}", nested(LIMIT - 1)));
    assert!(anthropic::request::from_chat(&ok, "c", LIMIT).is_ok());
    let g: Value = sonic_rs::from_slice(&gemini::request::from_chat(&ok, LIMIT).unwrap()).unwrap();
    let response = &g["contents"][2]["parts"][0]["functionResponse"]["response"];
    assert_eq!(
        response["content"].as_str(),
        Some(format!("{{\"r\":{}}}", nested(LIMIT)).as_str())
    );
}

#[test]
fn translations_refuse_too_deep_request_bodies() {
    let chat = format!(r#"{{"model":"m","messages":[],"x":{}}}"#, nested(LIMIT));
    let messages = format!(r#"{{"model":"m","max_tokens":1,"messages":[],"x":{}}}"#, nested(LIMIT));
    assert!(openai::read_chat(chat.as_bytes(), LIMIT)
        .unwrap_err()
        .contains("request body nests deeper"));
    assert!(anthropic::front_request::to_chat(messages.as_bytes(), "m", LIMIT)
        .unwrap_err()
        .contains("request body"));
    let body = Bytes::from(chat);
    let planned = prepare(
        super::ClientPath::of("/v1/chat/completions"),
        ProviderKind::Anthropic,
        crate::config::Poll::default(),
        &body,
        "m",
        "m",
        LIMIT,
        Bytes::new,
    );
    assert!(matches!(planned, Err(PrepareError::BadRequest(e)) if e.contains("server.max_json_depth")));
    // One level less passes.
    let shallow = format!(r#"{{"model":"m","messages":[],"x":{}}}"#, nested(LIMIT - 1));
    assert!(openai::read_chat(shallow.as_bytes(), LIMIT).is_ok());
}

#[test]
fn gemini_schema_clean_up_reaches_every_depth() {
    // Unoptimised sonic-rs needs more than a test thread's stack for 60 levels.
    std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(schema_clean_up)
        .unwrap()
        .join()
        .unwrap();
}

fn schema_clean_up() {
    // Keys Gemini refuses at each of 20 schema levels (60 JSON levels), in objects and arrays.
    let mut schema = String::from(r#"{"type":"string","additionalProperties":false}"#);
    for _ in 0..20 {
        schema = format!(
            r#"{{"type":"object","additionalProperties":false,"$schema":"x","properties":{{"p":{schema}}},"anyOf":[{{"strict":true}}]}}"#
        );
    }
    let body = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"q"}}],"tools":[{{"type":"function","function":{{"name":"f","parameters":{schema}}}}}]}}"#
    );
    let chat = openai::read_chat(body.as_bytes(), 128).unwrap();
    let out = String::from_utf8(gemini::request::from_chat(&chat, 128).unwrap()).unwrap();
    assert!(!out.contains("additionalProperties") && !out.contains("$schema") && !out.contains("strict"));
    assert_eq!(out.matches("\"properties\":{\"p\"").count(), 20, "{out}");
}
