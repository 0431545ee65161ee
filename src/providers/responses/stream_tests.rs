//! Fixtures for the chat -> Responses stream translator: fed whole and split at every byte
//! position it gives the same bytes; the event sequence keeps its invariants (sequence numbers
//! without gaps, every added item done, one terminal event), also through the hub from an
//! Anthropic stream, on a truncated stream, an upstream error chunk and a too-deep event.

use bytes::Bytes;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

use super::stream::ChatToResponses;
use super::Ids;
use crate::codec::DEFAULT_MAX_DEPTH as D;
use crate::providers::anthropic::stream::AnthropicToOpenAi;
use crate::providers::transform::ResponseTransform;
use crate::providers::{Chain, SseTranslator};

/// Reasoning, text, two tool calls whose argument fragments interleave, a usage chunk.
const CHAT: &str = "data: {\"id\":\"c1\",\"model\":\"up-model\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"reasoning_content\":\"think\"}}]}\n\n\
: keep-alive\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi \\\"there\\\"\"}}]}\r\n\r\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" ✓\"}}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]}}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":1}\"}}]}}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":6,\"prompt_tokens_details\":{\"cached_tokens\":2},\"completion_tokens_details\":{\"reasoning_tokens\":1}}}\n\n\
data: [DONE]\n\n";

fn translator() -> SseTranslator<ChatToResponses> {
    SseTranslator::new(ChatToResponses::with_ids("m", Ids::fixed(7), 1_700_000_000), D)
}

fn run(t: &mut dyn ResponseTransform, pieces: &[&[u8]]) -> String {
    let mut out = Vec::new();
    for p in pieces {
        for b in t.piece(Bytes::copy_from_slice(p)) {
            out.extend_from_slice(&b);
        }
    }
    for b in t.end() {
        out.extend_from_slice(&b);
    }
    String::from_utf8(out).unwrap()
}

/// Checks the invariants; returns the event types and the terminal event's response.
fn check(text: &str) -> (Vec<String>, Value) {
    let mut names = Vec::new();
    let mut last = Value::default();
    let mut open = std::collections::BTreeSet::new();
    for (i, event) in text.split("\n\n").filter(|e| !e.is_empty()).enumerate() {
        let name = event.lines().find_map(|l| l.strip_prefix("event: ")).unwrap();
        let data = event.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        let v: Value = sonic_rs::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}"));
        assert_eq!(v["type"].as_str(), Some(name));
        assert_eq!(v["sequence_number"].as_u64(), Some(i as u64), "{text}");
        match name {
            "response.output_item.added" => assert!(open.insert(v["output_index"].as_u64().unwrap())),
            "response.output_item.done" => assert!(open.remove(&v["output_index"].as_u64().unwrap())),
            _ => {}
        }
        names.push(name.to_owned());
        last = v;
    }
    let terminal = |n: &String| {
        matches!(
            n.as_str(),
            "response.completed" | "response.incomplete" | "response.failed"
        )
    };
    assert_eq!(names.iter().filter(|n| terminal(n)).count(), 1, "{text}");
    assert!(names.last().is_some_and(terminal));
    if names.last().map(String::as_str) != Some("response.failed") {
        assert!(open.is_empty(), "items left open: {open:?}");
    }
    (names, last["response"].clone())
}

#[test]
fn a_chat_stream_split_at_every_byte_gives_the_same_responses_events() {
    let whole = run(&mut translator(), &[CHAT.as_bytes()]);
    for at in 0..=CHAT.len() {
        let (a, b) = CHAT.as_bytes().split_at(at);
        assert_eq!(run(&mut translator(), &[a, b]), whole, "split at {at}");
    }
    let ones: Vec<&[u8]> = CHAT.as_bytes().chunks(1).collect();
    assert_eq!(run(&mut translator(), &ones), whole);
    let (names, response) = check(&whole);
    assert_eq!(names[..2], ["response.created", "response.in_progress"]);
    assert_eq!(response["status"].as_str(), Some("completed"));
    assert_eq!(response["model"].as_str(), Some("up-model"));
    assert_eq!(response["id"].as_str(), Some("resp_0000000000000007"));
    let output = response["output"].as_array().unwrap();
    assert_eq!(output[0]["type"].as_str(), Some("reasoning"));
    assert_eq!(output[0]["summary"][0]["text"].as_str(), Some("think"));
    assert_eq!(output[1]["content"][0]["text"].as_str(), Some("Hi \"there\" ✓"));
    assert_eq!(output[2]["call_id"].as_str(), Some("call_a"));
    assert_eq!(output[2]["arguments"].as_str(), Some("{\"a\":1}"));
    assert_eq!(output[3]["call_id"].as_str(), Some("call_b"));
    assert_eq!(output[3]["arguments"].as_str(), Some("{}"));
    let usage = &response["usage"];
    assert_eq!(usage["input_tokens"].as_u64(), Some(11));
    assert_eq!(usage["input_tokens_details"]["cached_tokens"].as_u64(), Some(2));
    assert_eq!(usage["output_tokens_details"]["reasoning_tokens"].as_u64(), Some(1));
    assert_eq!(usage["total_tokens"].as_u64(), Some(17));
    let mut t = translator();
    run(&mut t, &[CHAT.as_bytes()]);
    let u = t.usage();
    assert_eq!((u.prompt_tokens, u.completion_tokens, u.partial), (11, 6, false));
}

#[test]
fn an_anthropic_stream_through_the_hub_becomes_responses_events() {
    let anthropic = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-x\",\"content\":[],\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":4}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let make = || Chain {
        first: SseTranslator::new(AnthropicToOpenAi::new("m", true), D),
        second: SseTranslator::new(ChatToResponses::with_ids("m", Ids::fixed(1), 1), D),
    };
    let whole = run(&mut make(), &[anthropic.as_bytes()]);
    for at in 0..=anthropic.len() {
        let (a, b) = anthropic.as_bytes().split_at(at);
        assert_eq!(run(&mut make(), &[a, b]), whole, "split at {at}");
    }
    let (names, response) = check(&whole);
    assert_eq!(names.last().map(String::as_str), Some("response.incomplete"));
    assert_eq!(
        response["incomplete_details"]["reason"].as_str(),
        Some("max_output_tokens")
    );
    assert_eq!(response["output"][0]["content"][0]["text"].as_str(), Some("Hello"));
    assert_eq!(response["usage"]["output_tokens"].as_u64(), Some(4));
}

#[test]
fn truncated_failed_and_too_deep_streams_end_with_one_response_failed() {
    let cut = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"partial\"}}]}\n\n";
    let error = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\ndata: {\"error\":{\"message\":\"overloaded\"}}\n\ndata: [DONE]\n\n";
    let deep = format!("data: {}\n\ndata: [DONE]\n\n", "[".repeat(D + 1) + &"]".repeat(D + 1));
    for (input, needle) in [
        (cut.to_owned(), "ended before it finished"),
        (error.to_owned(), "overloaded"),
        (deep, "deeper"),
        (String::new(), "ended before it finished"),
    ] {
        let mut t = translator();
        let text = run(&mut t, &[input.as_bytes()]);
        let (names, response) = check(&text);
        assert_eq!(names.last().map(String::as_str), Some("response.failed"), "{text}");
        assert_eq!(response["status"].as_str(), Some("failed"));
        assert!(
            response["error"]["message"].as_str().unwrap().contains(needle),
            "{text}"
        );
        assert!(t.usage().partial);
        // A relay failure after the terminal event adds nothing.
        assert!(t.fail("later").is_empty());
    }
    let mut t = translator();
    let mut text = String::new();
    for b in t.piece(Bytes::from_static(cut.as_bytes())) {
        text.push_str(std::str::from_utf8(&b).unwrap());
    }
    for b in t.fail("connection reset") {
        text.push_str(std::str::from_utf8(&b).unwrap());
    }
    let (_, response) = check(&text);
    assert_eq!(response["error"]["message"].as_str(), Some("connection reset"));
    assert_eq!(response["output"][0]["content"][0]["text"].as_str(), Some("partial"));
}

#[test]
fn an_answer_longer_than_the_bound_fails_once_and_nothing_follows() {
    let chunk = "data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"0123456789AB\",\"content\":\"x\",\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    let mut t = SseTranslator::new(ChatToResponses::with_ids("m", Ids::fixed(2), 1).keeping_at_most(10), D);
    let text = run(&mut t, &[chunk.as_bytes()]);
    let (names, response) = check(&text);
    assert_eq!(names.last().map(String::as_str), Some("response.failed"), "{text}");
    assert!(response["error"]["message"].as_str().unwrap().contains("10 bytes"));
    assert!(!names.iter().any(|n| n == "response.output_text.delta"), "{names:?}");
}
