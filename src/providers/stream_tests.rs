//! Fixture-driven tests of the stream translators: each stream fixture is fed whole and split
//! at every byte position, and must give the same output (the request maps are in
//! `request_map_tests.rs`).

use bytes::Bytes;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

use super::anthropic::front_stream::OpenAiToAnthropic;
use super::anthropic::stream::AnthropicToOpenAi;
use super::gemini::stream::GeminiToOpenAi;
use super::{SseTranslator, StreamHandler};
use crate::codec::DEFAULT_MAX_DEPTH as D;
use crate::providers::transform::ResponseTransform;

const ANTHROPIC: &str = "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-x\",\"content\":[],\"usage\":{\"input_tokens\":30,\"cache_read_input_tokens\":100,\"cache_creation_input_tokens\":5,\"output_tokens\":1}}}\r\n\r\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}\n\n\
event: ping\ndata: {\"type\":\"ping\"}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi \\\"there\\\"\"}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_a\",\"name\":\"f\",\"input\":{}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"1}\"}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":3,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_b\",\"name\":\"g\",\"input\":{}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":3,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":25}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

/// Runs `input` through a fresh transform whole, then split at every position; all outputs
/// must match. Returns the output.
pub(super) fn run_all_splits<T: ResponseTransform>(make: impl Fn() -> T, input: &str) -> String {
    let run = |pieces: &[&[u8]]| {
        let mut t = make();
        let mut out = Vec::new();
        for p in pieces {
            for b in t.piece(Bytes::copy_from_slice(p)) {
                out.extend_from_slice(&b);
            }
        }
        for b in t.end() {
            out.extend_from_slice(&b);
        }
        normalize(&String::from_utf8(out).unwrap())
    };
    let whole = run(&[input.as_bytes()]);
    for at in 0..=input.len() {
        let (a, b) = input.as_bytes().split_at(at);
        assert_eq!(run(&[a, b]), whole, "split at {at}");
    }
    whole
}

/// `"created"` is the wall clock: zeroed so runs compare.
fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("\"created\":") {
        let (head, tail) = rest.split_at(at + 10);
        out.push_str(head);
        out.push('0');
        rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

pub(super) fn chunks(out: &str) -> (Vec<Value>, bool) {
    let data: Vec<&str> = out.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).collect();
    let done = data.last() == Some(&"[DONE]");
    let values = data
        .iter()
        .filter(|d| **d != "[DONE]")
        .map(|d| sonic_rs::from_str(d).unwrap())
        .collect();
    (values, done)
}

#[test]
fn anthropic_stream_to_openai_chunks() {
    let out = run_all_splits(|| SseTranslator::new(AnthropicToOpenAi::new("m", true), D), ANTHROPIC);
    let (c, done) = chunks(&out);
    assert!(done, "{out}");
    assert_eq!(c[0]["id"].as_str(), Some("msg_1"));
    assert_eq!(c[0]["choices"][0]["delta"]["role"].as_str(), Some("assistant"));
    assert_eq!(c[1]["choices"][0]["delta"]["reasoning_content"].as_str(), Some("hmm"));
    assert_eq!(c[2]["choices"][0]["delta"]["content"].as_str(), Some("Hi \"there\""));
    // Tool indexes count tool calls only (blocks 2 and 3 -> 0 and 1); empty fragments dropped.
    let calls: Vec<(u64, String)> = c
        .iter()
        .filter_map(|v| {
            let t = &v["choices"][0]["delta"]["tool_calls"][0];
            Some((t["index"].as_u64()?, t["function"]["arguments"].as_str()?.to_owned()))
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            (0, "".into()),
            (0, "{\"a\":".into()),
            (0, "1}".into()),
            (1, "".into()),
            (1, "{}".into())
        ]
    );
    let finish = &c[c.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"].as_str(), Some("tool_calls"));
    let usage = &c[c.len() - 1]["usage"];
    assert_eq!(usage["prompt_tokens"].as_u64(), Some(135));
    assert_eq!(usage["completion_tokens"].as_u64(), Some(25));
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"].as_u64(), Some(100));
}

#[test]
fn anthropic_stream_cut_before_message_stop_ends_in_an_error() {
    let cut = &ANTHROPIC[..ANTHROPIC.find("event: message_delta").unwrap()];
    let out = run_all_splits(|| SseTranslator::new(AnthropicToOpenAi::new("m", false), D), cut);
    assert!(!out.contains("[DONE]"));
    assert!(out.trim_end().ends_with("}}"), "{out}");
    assert!(out.contains("\"error\""));
    let mut t = SseTranslator::new(AnthropicToOpenAi::new("m", false), D);
    t.piece(Bytes::from_static(&ANTHROPIC.as_bytes()[..200]));
    assert!(t.usage().partial);
}

#[test]
fn anthropic_error_event_becomes_openai_error_data() {
    let input = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let out = run_all_splits(|| SseTranslator::new(AnthropicToOpenAi::new("m", false), D), input);
    let (c, _) = chunks(&out);
    assert_eq!(c[0]["error"]["type"].as_str(), Some("overloaded_error"));
    assert_eq!(c.len(), 1, "{out}");
    // Cut by the error after the answer began: its usage is what was counted, marked partial.
    let begun = &ANTHROPIC[..ANTHROPIC.find("event: message_delta").unwrap()];
    let mut t = SseTranslator::new(AnthropicToOpenAi::new("m", false), D);
    t.piece(Bytes::from(format!("{begun}{input}")));
    assert!(t.usage().partial);
}

const OPENAI: &str = "data: {\"id\":\"c1\",\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
: keep-alive\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"function\":{\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]}}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_2\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]}}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":9,\"prompt_tokens_details\":{\"cached_tokens\":8}}}\n\n\
data: [DONE]\n\n";

fn anthropic_events(out: &str) -> Vec<(String, Value)> {
    out.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e.split_once("\ndata: ").unwrap();
            (
                name.trim_start_matches("event: ").to_owned(),
                sonic_rs::from_str(data).unwrap(),
            )
        })
        .collect()
}

#[test]
fn openai_stream_to_anthropic_events() {
    let out = run_all_splits(|| SseTranslator::new(OpenAiToAnthropic::new("m"), D), OPENAI);
    let ev = anthropic_events(&out);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ],
        "{out}"
    );
    assert_eq!(ev[0].1["message"]["id"].as_str(), Some("msg_c1"));
    assert_eq!(ev[5].1["content_block"]["id"].as_str(), Some("call_1"));
    assert_eq!(ev[5].1["index"].as_u64(), Some(1));
    assert_eq!(ev[7].1["delta"]["partial_json"].as_str(), Some(":1}"));
    assert_eq!(ev[9].1["content_block"]["name"].as_str(), Some("g"));
    assert_eq!(ev[11].1["index"].as_u64(), Some(2));
    let delta = &ev[12].1;
    assert_eq!(delta["delta"]["stop_reason"].as_str(), Some("tool_use"));
    assert_eq!(delta["usage"]["input_tokens"].as_u64(), Some(12));
    assert_eq!(delta["usage"]["cache_read_input_tokens"].as_u64(), Some(8));
    assert_eq!(delta["usage"]["output_tokens"].as_u64(), Some(9));
}

#[test]
fn openai_stream_without_finish_is_an_anthropic_error() {
    let cut = &OPENAI[..OPENAI
        .find("data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},")
        .unwrap()];
    let out = run_all_splits(|| SseTranslator::new(OpenAiToAnthropic::new("m"), D), cut);
    let ev = anthropic_events(&out);
    assert_eq!(ev.last().map(|e| e.0.as_str()), Some("error"));
    assert!(!out.contains("message_stop"));
}

#[test]
fn a_mid_stream_overload_reaches_anthropic_clients_as_overloaded_error() {
    // An OpenAI upstream's error chunk, and a Gemini UNAVAILABLE event through the hub.
    let openai = "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n\
data: {\"error\":{\"message\":\"busy\",\"type\":\"overloaded_error\"}}\n\n";
    let out = run_all_splits(|| SseTranslator::new(OpenAiToAnthropic::new("m"), D), openai);
    let ev = anthropic_events(&out);
    assert_eq!(ev.last().map(|e| e.0.as_str()), Some("error"), "{out}");
    assert_eq!(ev.last().unwrap().1["error"]["type"].as_str(), Some("overloaded_error"));
    let gemini = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}]}\n\n\
data: {\"error\":{\"code\":503,\"message\":\"busy\",\"status\":\"UNAVAILABLE\"}}\n\n";
    let chain = || super::Chain {
        first: SseTranslator::new(GeminiToOpenAi::new("m", true), D),
        second: SseTranslator::new(OpenAiToAnthropic::new("m"), D),
    };
    let out = run_all_splits(chain, gemini);
    let ev = anthropic_events(&out);
    assert_eq!(
        ev.last().unwrap().1["error"]["type"].as_str(),
        Some("overloaded_error"),
        "{out}"
    );
}

const GEMINI: &str = "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Hel\"}]}}],\"usageMetadata\":{\"promptTokenCount\":7,\"candidatesTokenCount\":1},\"modelVersion\":\"gemini-x\",\"responseId\":\"r1\"}\r\n\r\n\
data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"lo\"},{\"functionCall\":{\"name\":\"f\",\"args\":{\"a\":1}}}]}}],\"usageMetadata\":{\"promptTokenCount\":7,\"candidatesTokenCount\":2}}\r\n\r\n\
data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":7,\"candidatesTokenCount\":3,\"thoughtsTokenCount\":2,\"cachedContentTokenCount\":4}}\r\n\r\n";

#[test]
fn gemini_crlf_stream_to_openai_chunks() {
    let out = run_all_splits(|| SseTranslator::new(GeminiToOpenAi::new("m", true), D), GEMINI);
    let (c, done) = chunks(&out);
    assert!(done);
    assert_eq!(c[0]["id"].as_str(), Some("chatcmpl-r1"));
    let text: String = c
        .iter()
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello");
    let call = c
        .iter()
        .find_map(|v| v["choices"][0]["delta"]["tool_calls"][0].as_object().cloned())
        .unwrap();
    assert_eq!(call.get(&"id").and_then(|v| v.as_str()), Some("call_r1_0"));
    let finish: Vec<&str> = c
        .iter()
        .filter_map(|v| v["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, vec!["tool_calls"]);
    let usage = &c.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"].as_u64(), Some(7));
    assert_eq!(usage["completion_tokens"].as_u64(), Some(5));
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"].as_u64(), Some(2));
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"].as_u64(), Some(4));
}

#[test]
fn gemini_stream_closed_without_finish_reason_is_an_error() {
    let cut = &GEMINI[..GEMINI.rfind("data: ").unwrap()];
    let out = run_all_splits(|| SseTranslator::new(GeminiToOpenAi::new("m", true), D), cut);
    assert!(!out.contains("[DONE]"));
    assert!(out.contains("\"error\""));
    let mut h = GeminiToOpenAi::new("m", true);
    let mut s = String::new();
    h.on_end(&mut s);
    assert!(h.usage().partial);
}

/// Counts the events that end a stream in either client protocol: `[DONE]`, an OpenAI error
/// chunk, Anthropic's `message_stop` or `error`.
fn terminators(out: &str) -> usize {
    out.split("\n\n")
        .filter(|e| {
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or("");
            let name = e.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or("");
            data == "[DONE]"
                || (name.is_empty() && data.starts_with("{\"error\""))
                || name == "message_stop"
                || name == "error"
        })
        .count()
}

/// An upstream error event ends the stream; a later too-deep event or relay failure must not
/// add a second terminator (found by the translate_stream fuzz target).
#[test]
fn nothing_follows_the_terminator_of_an_ended_stream() {
    let deep = format!("data: {}{}\n\n", "[".repeat(D + 5), "]".repeat(D + 5));
    let cases: [(Box<dyn ResponseTransform>, &str); 3] = [
        (
            Box::new(SseTranslator::new(GeminiToOpenAi::new("m", true), D)),
            "data: {\"error\":{\"code\":500,\"message\":\"boom\",\"status\":\"INTERNAL\"}}\n\n",
        ),
        (
            Box::new(SseTranslator::new(AnthropicToOpenAi::new("m", true), D)),
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"x\"}}\n\n",
        ),
        (
            Box::new(SseTranslator::new(OpenAiToAnthropic::new("m"), D)),
            "data: {\"error\":{\"message\":\"boom\"}}\n\n",
        ),
    ];
    for (mut t, error_event) in cases {
        let mut out = Vec::new();
        for piece in [error_event, deep.as_str()] {
            t.piece(Bytes::from(piece.to_owned()))
                .iter()
                .for_each(|b| out.extend_from_slice(b));
        }
        t.fail("relay cut").iter().for_each(|b| out.extend_from_slice(b));
        t.end().iter().for_each(|b| out.extend_from_slice(b));
        let text = String::from_utf8(out).unwrap();
        assert_eq!(terminators(&text), 1, "{text}");
    }
}

/// Replicate's `urls.stream`: plain-text `output` events (a token that is a newline arrives as
/// two `data:` lines; a leading space beyond the one the spec strips is kept), `logs`
/// dropped, CRLF framing, then `done`.
const REPLICATE: &str = "event: output\nid: 1:0\ndata: Hel\n\n\
event: logs\nid: 1:1\ndata: loading weights [[[[\n\n\
event: output\r\nid: 1:2\r\ndata:  lo\r\n\r\n\
event: output\nid: 1:3\ndata: \ndata: \n\n\
event: output\nid: 1:4\ndata: {\"not\": json\n\n\
: keep-alive\n\n\
event: done\nid: 1:5\ndata: {}\n\n";

#[test]
fn replicate_stream_to_openai_chunks() {
    use super::replicate::stream::ReplicateToOpenAi;
    let out = run_all_splits(
        || SseTranslator::new(ReplicateToOpenAi::new("m", false, None), D),
        REPLICATE,
    );
    let (c, done) = chunks(&out);
    assert!(done, "{out}");
    assert_eq!(c[0]["choices"][0]["delta"]["role"].as_str(), Some("assistant"));
    let text: String = c
        .iter()
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "Hel lo\n{\"not\": json");
    assert_eq!(c.last().unwrap()["choices"][0]["finish_reason"].as_str(), Some("stop"));
    assert_eq!(terminators(&out), 1);
}

#[test]
fn replicate_stream_reads_usage_from_the_prediction_after_done() {
    use super::replicate::stream::ReplicateToOpenAi;
    let make = || SseTranslator::new(ReplicateToOpenAi::new("m", true, Some("http://h/p/1".into())), D);
    let mut t = make();
    assert_eq!(t.fetch_at_end(), None, "nothing to read before done");
    t.piece(Bytes::from_static(REPLICATE.as_bytes()));
    assert_eq!(t.fetch_at_end().as_deref(), Some("http://h/p/1"));
    t.fetched(Some(
        br#"{"status":"succeeded","metrics":{"input_token_count":9,"output_token_count":4.0}}"#,
    ));
    assert_eq!(t.fetch_at_end(), None, "read once");
    let out: Vec<u8> = t.end().into_iter().flat_map(|b| b.to_vec()).collect();
    let (c, done) = chunks(&String::from_utf8(out).unwrap());
    assert!(done);
    assert_eq!(c[0]["usage"]["prompt_tokens"].as_u64(), Some(9));
    assert_eq!(c[0]["usage"]["completion_tokens"].as_u64(), Some(4));
    let u = t.usage();
    assert!(u.reported && !u.partial && u.prompt_tokens == 9);
    // A failed read leaves the usage unreported, never a broken stream.
    let mut t = make();
    t.piece(Bytes::from_static(REPLICATE.as_bytes()));
    t.fetched(None);
    let out: Vec<u8> = t.end().into_iter().flat_map(|b| b.to_vec()).collect();
    assert!(String::from_utf8(out).unwrap().ends_with("data: [DONE]\n\n"));
    assert!(!t.usage().reported);
}

#[test]
fn replicate_stream_errors_and_cuts_end_in_one_error_event() {
    use super::replicate::stream::ReplicateToOpenAi;
    for input in [
        "event: output\nid: 1\ndata: a\n\nevent: error\nid: 2\ndata: {\"detail\":\"CUDA OOM\"}\n\n",
        "event: output\nid: 1\ndata: a\n\nevent: done\nid: 2\ndata: {\"reason\":\"canceled\"}\n\n",
        "event: output\nid: 1\ndata: a\n\n",
    ] {
        let out = run_all_splits(|| SseTranslator::new(ReplicateToOpenAi::new("m", true, None), D), input);
        assert!(!out.contains("[DONE]"), "{out}");
        assert_eq!(terminators(&out), 1, "{out}");
        let (c, _) = chunks(&out);
        assert!(c.last().unwrap()["error"]["message"].as_str().is_some(), "{out}");
    }
    let out = run_all_splits(
        || SseTranslator::new(ReplicateToOpenAi::new("m", true, None), D),
        "event: error\nid: 2\ndata: {\"detail\":\"CUDA OOM\"}\n\n",
    );
    assert!(out.contains("CUDA OOM"), "{out}");
}

/// Cohere v2: the type inside the data decides (the `event:` line may be absent), thinking,
/// a tool call in fragments, a stray `[DONE]`, usage in `message-end`.
const COHERE: &str = "event: message-start\ndata: {\"type\":\"message-start\",\"id\":\"c-1\",\"delta\":{\"message\":{\"role\":\"assistant\"}}}\n\n\
data: {\"type\":\"content-start\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"type\":\"thinking\",\"thinking\":\"\"}}}}\r\n\r\n\
data: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"thinking\":\"hmm\"}}}}\n\n\
event: content-delta\ndata: {\"type\":\"content-delta\",\"index\":1,\"delta\":{\"message\":{\"content\":{\"text\":\"Hi \\\"you\\\"\"}}}}\n\n\
event: tool-plan-delta\ndata: {\"type\":\"tool-plan-delta\",\"delta\":{\"message\":{\"tool_plan\":\"call f\"}}}\n\n\
event: tool-call-start\ndata: {\"type\":\"tool-call-start\",\"index\":2,\"delta\":{\"message\":{\"tool_calls\":{\"id\":\"f_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}}}}\n\n\
event: tool-call-delta\ndata: {\"type\":\"tool-call-delta\",\"index\":2,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"{\\\"a\\\":\"}}}}}\n\n\
event: tool-call-delta\ndata: {\"type\":\"tool-call-delta\",\"index\":2,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"1}\"}}}}}\n\n\
event: citation-start\ndata: {\"type\":\"citation-start\",\"index\":0}\n\n\
event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"TOOL_CALL\",\"usage\":{\"billed_units\":{\"input_tokens\":3,\"output_tokens\":9},\"tokens\":{\"input_tokens\":40.0,\"output_tokens\":9.0},\"cached_tokens\":8}}}\n\n\
data: [DONE]\n\n";

#[test]
fn cohere_stream_to_openai_chunks() {
    use super::cohere::stream::CohereToOpenAi;
    let out = run_all_splits(|| SseTranslator::new(CohereToOpenAi::new("m", true), D), COHERE);
    let (c, done) = chunks(&out);
    assert!(done, "{out}");
    assert_eq!(terminators(&out), 1);
    assert_eq!(c[0]["id"].as_str(), Some("chatcmpl-c-1"));
    assert_eq!(c[1]["choices"][0]["delta"]["reasoning_content"].as_str(), Some("hmm"));
    assert_eq!(c[2]["choices"][0]["delta"]["content"].as_str(), Some("Hi \"you\""));
    let call = &c[3]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!((call["index"].as_u64(), call["id"].as_str()), (Some(0), Some("f_1")));
    let args: String = c
        .iter()
        .filter_map(|v| {
            v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(args, "{\"a\":1}", "{out}");
    assert_eq!(
        c[c.len() - 2]["choices"][0]["finish_reason"].as_str(),
        Some("tool_calls")
    );
    let usage = &c[c.len() - 1]["usage"];
    assert_eq!(usage["prompt_tokens"].as_u64(), Some(40));
    assert_eq!(usage["completion_tokens"].as_u64(), Some(9));
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"].as_u64(), Some(8));
}

/// The fuzz smoke's find: a count past `u64` (Cohere sends floats; the cast saturates) made
/// `total_tokens` overflow. The answer carries the counts as sent, the total saturates, and
/// what the relay hands on is bounded.
#[test]
fn cohere_stream_with_an_absurd_usage_saturates() {
    use super::cohere::stream::CohereToOpenAi;
    let stream = "data: {\"type\":\"message-start\",\"id\":\"c-1\"}\n\n\
data: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"COMPLETE\",\"usage\":{\"tokens\":{\"input_tokens\":2.2e34,\"output_tokens\":2}}}}\n\n";
    let mut t = SseTranslator::new(CohereToOpenAi::new("m", true), D);
    let out = run_all_splits(|| SseTranslator::new(CohereToOpenAi::new("m", true), D), stream);
    let (c, done) = chunks(&out);
    assert!(done, "{out}");
    let usage = &c[c.len() - 1]["usage"];
    assert_eq!(usage["prompt_tokens"].as_u64(), Some(u64::MAX));
    assert_eq!(usage["total_tokens"].as_u64(), Some(u64::MAX));
    t.piece(Bytes::from(stream));
    t.end();
    let bounded = t.usage().bounded();
    assert_eq!(
        (bounded.prompt_tokens, bounded.completion_tokens),
        (crate::usage::MAX_TOKENS, 2)
    );
}

#[test]
fn cohere_stream_errors_and_cuts_end_in_one_error_event() {
    use super::cohere::stream::CohereToOpenAi;
    let start = "data: {\"type\":\"message-start\",\"id\":\"c\"}\n\ndata: {\"type\":\"content-delta\",\"delta\":{\"message\":{\"content\":{\"text\":\"a\"}}}}\n\n";
    for tail in [
        "",
        "data: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"ERROR\",\"error\":\"model overloaded\"}}\n\n",
        "data: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"TIMEOUT\"}}\n\n",
    ] {
        let input = format!("{start}{tail}");
        let out = run_all_splits(|| SseTranslator::new(CohereToOpenAi::new("m", true), D), &input);
        assert!(!out.contains("[DONE]"), "{out}");
        assert_eq!(terminators(&out), 1, "{out}");
        let (c, _) = chunks(&out);
        assert!(c.last().unwrap()["error"]["message"].as_str().is_some(), "{out}");
    }
}
