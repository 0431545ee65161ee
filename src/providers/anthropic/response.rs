//! Whole-body mapping between Anthropic Messages and OpenAI chat responses, both directions,
//! including error bodies (each into the client's envelope, same status).
//! Invariant: a body that cannot be read is answered with a well-formed error in the client's
//! envelope, never passed on half-translated.

use super::{error_body, error_type_for_status, finish_reason, stop_reason, Block, ErrorEnvelope, MessagesResponse};
use super::{write_usage as write_anthropic_usage, Tally};
use crate::providers::openai::{self, Completion, ToolCall};
use crate::providers::write;
use crate::usage::Usage;

/// Anthropic response (any status) -> OpenAI body, and the usage it reports. The caller bounds
/// the body's depth (`WholeBody`); nothing inside it is parsed again, so `_max_depth` is unused.
pub fn to_openai(status: u16, body: &[u8], model: &str, _max_depth: usize) -> (String, Usage) {
    if !(200..300).contains(&status) {
        return (anthropic_error_to_openai(status, body), Usage::default());
    }
    let Ok(msg) = sonic_rs::from_slice::<MessagesResponse>(body) else {
        return (
            openai::error_body(
                "the upstream answer was not a valid Anthropic message",
                "upstream_error",
            ),
            Usage::default(),
        );
    };
    let mut tally = Tally::default();
    if let Some(u) = &msg.usage {
        tally.apply(u);
    }
    let usage = tally.usage();
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for block in &msg.content {
        match block.kind.as_str() {
            "text" => text.push_str(block.text.as_deref().unwrap_or("")),
            "thinking" => reasoning.push_str(block.thinking.as_deref().unwrap_or("")),
            "tool_use" => calls.push(ToolCall {
                id: block.id.clone().unwrap_or_default(),
                kind: "function".to_owned(),
                function: openai::FunctionCall {
                    name: block.name.clone().unwrap_or_default(),
                    arguments: block
                        .input
                        .as_ref()
                        .and_then(|v| sonic_rs::to_string(v).ok())
                        .unwrap_or_else(|| "{}".to_owned()),
                },
            }),
            _ => {}
        }
    }
    let finish = finish_reason(msg.stop_reason.as_deref().unwrap_or("end_turn"));
    let out = openai::write_chat_completion(&openai::Answer {
        id: &msg.id,
        model: if msg.model.is_empty() { model } else { &msg.model },
        text: &text,
        reasoning: &reasoning,
        calls: &calls,
        finish,
        usage: &usage,
    });
    (out, usage)
}

/// `{"type":"error","error":{...}}` -> OpenAI envelope (the Anthropic type kept as `type`).
pub fn anthropic_error_to_openai(status: u16, body: &[u8]) -> String {
    let detail = sonic_rs::from_slice::<ErrorEnvelope>(body).ok().and_then(|e| e.error);
    match detail {
        Some(d) => openai::error_body(&d.message, &d.kind),
        None => openai::error_body(
            &crate::providers::openai::unreadable_error(status, body),
            "upstream_error",
        ),
    }
}

/// OpenAI response (any status) -> Anthropic body, and the usage it reports. The caller bounds
/// the body's depth (`WholeBody`); tool arguments inside it nesting deeper than `max_depth`
/// become `{}`, like arguments that are not JSON at all (edge case 4).
pub fn from_openai(status: u16, body: &[u8], model: &str, max_depth: usize) -> (String, Usage) {
    if !(200..300).contains(&status) {
        return (openai_error_to_anthropic(status, body), Usage::default());
    }
    let Ok(c) = sonic_rs::from_slice::<Completion>(body) else {
        return (
            error_body("api_error", "the upstream answer was not a valid chat completion"),
            Usage::default(),
        );
    };
    let usage = c.usage.map(|u| u.to_usage()).unwrap_or_default();
    let choice = c.choices.into_iter().next().unwrap_or_default();
    let message = choice.message.unwrap_or_default();
    let mut blocks: Vec<Block> = Vec::new();
    // Reasoning first, as a thinking block, as the streamed answer carries it (front_stream).
    if let Some(thinking) = message.reasoning_content.filter(|t| !t.is_empty()) {
        blocks.push(Block {
            kind: "thinking".to_owned(),
            thinking: Some(thinking),
            signature: Some(String::new()),
            ..Block::default()
        });
    }
    if let Some(text) = message.content.filter(|t| !t.is_empty()) {
        blocks.push(Block {
            kind: "text".to_owned(),
            text: Some(text),
            ..Block::default()
        });
    }
    for (i, call) in message.tool_calls.into_iter().flatten().enumerate() {
        let function = call.function.unwrap_or_default();
        blocks.push(Block {
            kind: "tool_use".to_owned(),
            id: Some(call.id.unwrap_or_else(|| format!("toolu_{i}"))),
            name: Some(function.name.unwrap_or_default()),
            input: Some(upstream_arguments(
                function.arguments.as_deref().unwrap_or(""),
                max_depth,
            )),
            ..Block::default()
        });
    }
    let stop = stop_reason(choice.finish_reason.as_deref().unwrap_or("stop"));
    let mut out = String::with_capacity(256);
    out.push('{');
    write::field_str(&mut out, "id", &anthropic_id(&c.id));
    out.push_str(",\"type\":\"message\",\"role\":\"assistant\",");
    write::field_str(&mut out, "model", if c.model.is_empty() { model } else { &c.model });
    out.push_str(",\"content\":");
    out.push_str(&sonic_rs::to_string(&blocks).unwrap_or_else(|_| "[]".to_owned()));
    out.push_str(",\"stop_reason\":");
    write::string(&mut out, stop);
    out.push_str(",\"stop_sequence\":null,\"usage\":");
    write_anthropic_usage(&mut out, &usage);
    out.push('}');
    (out, usage)
}

/// An upstream's tool arguments as an object; too deep to parse becomes `{}` (and a warning).
fn upstream_arguments(arguments: &str, max_depth: usize) -> sonic_rs::Value {
    super::request::parse_arguments(arguments, max_depth).unwrap_or_else(|e| {
        tracing::warn!("upstream tool-call arguments {e}; sent as {{}}");
        sonic_rs::from_str("{}").unwrap_or_default()
    })
}

/// Anthropic SDKs show message ids; keep the upstream's, prefixed so they look like one.
pub fn anthropic_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_owned()
    } else {
        format!("msg_{id}")
    }
}

/// OpenAI (or Gemini, any `{"error":{"message"}}`) error -> Anthropic envelope, typed by status.
pub fn openai_error_to_anthropic(status: u16, body: &[u8]) -> String {
    let message = sonic_rs::from_slice::<Completion>(body)
        .ok()
        .and_then(|c| c.error)
        .map(|e| e.message)
        .unwrap_or_else(|| crate::providers::openai::unreadable_error(status, body));
    error_body(error_type_for_status(status), &message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::DEFAULT_MAX_DEPTH as D;
    use sonic_rs::{JsonContainerTrait, JsonValueTrait};

    #[test]
    fn full_message_with_tool_use_and_cache_maps_to_openai() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x",
          "content":[{"type":"text","text":"Let me check."},{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Oslo"}}],
          "stop_reason":"tool_use","stop_sequence":null,
          "usage":{"input_tokens":30,"output_tokens":12,"cache_creation_input_tokens":5,"cache_read_input_tokens":100}}"#;
        let (out, usage) = to_openai(200, body, "m", D);
        let v: sonic_rs::Value = sonic_rs::from_str(&out).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"].as_str(), Some("tool_calls"));
        assert_eq!(v["choices"][0]["message"]["content"].as_str(), Some("Let me check."));
        let call = &v["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["id"].as_str(), Some("toolu_1"));
        assert_eq!(call["function"]["arguments"].as_str(), Some(r#"{"city":"Oslo"}"#));
        assert_eq!(v["usage"]["prompt_tokens"].as_u64(), Some(135));
        assert_eq!(v["usage"]["completion_tokens"].as_u64(), Some(12));
        assert_eq!(v["usage"]["total_tokens"].as_u64(), Some(147));
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64(), Some(100));
        assert_eq!((usage.prompt_tokens, usage.cached_tokens), (135, 100));
    }

    #[test]
    fn errors_change_envelope_both_ways() {
        let (out, _) = to_openai(
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            "m",
            D,
        );
        let v: sonic_rs::Value = sonic_rs::from_str(&out).unwrap();
        assert_eq!(v["error"]["type"].as_str(), Some("overloaded_error"));
        assert!(v["error"].as_object().unwrap().get(&"param").is_some());
        let (out, _) = from_openai(
            429,
            br#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#,
            "m",
            D,
        );
        let v: sonic_rs::Value = sonic_rs::from_str(&out).unwrap();
        assert_eq!(v["type"].as_str(), Some("error"));
        assert_eq!(v["error"]["type"].as_str(), Some("rate_limit_error"));
        assert_eq!(v["error"]["message"].as_str(), Some("slow down"));
    }

    #[test]
    fn openai_response_maps_to_anthropic_with_reverse_usage() {
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-x","choices":[{"index":0,"finish_reason":"tool_calls",
          "message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]}}],
          "usage":{"prompt_tokens":20,"completion_tokens":9,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":8}}}"#;
        let (out, _) = from_openai(200, body, "m", D);
        let v: sonic_rs::Value = sonic_rs::from_str(&out).unwrap();
        assert_eq!(v["stop_reason"].as_str(), Some("tool_use"));
        assert_eq!(v["content"][0]["type"].as_str(), Some("tool_use"));
        assert_eq!(v["content"][0]["input"]["a"].as_u64(), Some(1));
        assert_eq!(v["usage"]["input_tokens"].as_u64(), Some(12));
        assert_eq!(v["usage"]["cache_read_input_tokens"].as_u64(), Some(8));
        assert_eq!(v["usage"]["output_tokens"].as_u64(), Some(9));
    }

    #[test]
    fn reasoning_reaches_non_streamed_anthropic_clients_as_a_thinking_block() {
        let body = br#"{"id":"c","model":"g","choices":[{"index":0,"finish_reason":"stop",
          "message":{"role":"assistant","content":"42","reasoning_content":"think first"}}]}"#;
        let (out, _) = from_openai(200, body, "m", D);
        let v: sonic_rs::Value = sonic_rs::from_str(&out).unwrap();
        assert_eq!(v["content"][0]["type"].as_str(), Some("thinking"));
        assert_eq!(v["content"][0]["thinking"].as_str(), Some("think first"));
        assert_eq!(v["content"][0]["signature"].as_str(), Some(""));
        assert_eq!(v["content"][1]["text"].as_str(), Some("42"));
    }
}
