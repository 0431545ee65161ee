//! A whole Cohere v2 chat answer -> OpenAI chat completion (text, thinking as
//! `reasoning_content`, tool calls, finish reason, usage); `{"message": ...}` errors -> the
//! OpenAI envelope with the upstream's status.
//! Invariant: an answer that cannot be read becomes a well-formed error, never half a reply.

use super::{content_text, error_message, finish_reason, ChatResponse};
use crate::providers::openai::{self, FunctionCall, ToolCall};
use crate::usage::Usage;

/// Any status -> OpenAI body, and the usage it reports. The caller bounds the body's depth.
pub fn to_openai(status: u16, body: &[u8], model: &str, _max_depth: usize) -> (String, Usage) {
    if !(200..300).contains(&status) {
        let message = error_message(body).unwrap_or_else(|| crate::providers::openai::unreadable_error(status, body));
        return (openai::error_body(&message, "upstream_error"), Usage::default());
    }
    let Ok(r) = sonic_rs::from_slice::<ChatResponse>(body) else {
        return (
            openai::error_body("the upstream answer was not a Cohere chat response", "upstream_error"),
            Usage::default(),
        );
    };
    let usage = r.usage.map(|u| u.usage()).unwrap_or_default();
    let message = r.message.unwrap_or_default();
    let (text, reasoning) = message.content.as_ref().map(content_text).unwrap_or_default();
    let calls: Vec<ToolCall> = message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let function = c.function.unwrap_or_default();
            ToolCall {
                id: c.id.filter(|i| !i.is_empty()).unwrap_or_else(|| format!("call_{i}")),
                kind: "function".to_owned(),
                function: FunctionCall {
                    arguments: function.arguments_text().unwrap_or_else(|| "{}".to_owned()),
                    name: function.name.unwrap_or_default(),
                },
            }
        })
        .collect();
    let finish = match r.finish_reason.as_deref() {
        Some(reason) => finish_reason(reason),
        None if !calls.is_empty() => "tool_calls",
        None => "stop",
    };
    let id = format!("chatcmpl-{}", if r.id.is_empty() { "cohere" } else { &r.id });
    let out = openai::write_chat_completion(&openai::Answer {
        id: &id,
        model,
        text: &text,
        reasoning: &reasoning,
        calls: &calls,
        finish,
        usage: &usage,
    });
    (out, usage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonic_rs::JsonValueTrait;

    #[test]
    fn text_thinking_tools_and_usage_map() {
        let body = br#"{"id":"c-1","finish_reason":"TOOL_CALL","message":{"role":"assistant",
          "content":[{"type":"thinking","thinking":"hmm"},{"type":"text","text":"Let me check."}],
          "tool_plan":"call w","tool_calls":[{"id":"w_1","type":"function","function":{"name":"w","arguments":"{\"city\":\"Oslo\"}"}}]},
          "usage":{"billed_units":{"input_tokens":5,"output_tokens":7},"tokens":{"input_tokens":71,"output_tokens":7},"cached_tokens":3}}"#;
        let (out, usage) = to_openai(200, body, "command-a", 128);
        let v: sonic_rs::Value = sonic_rs::from_str(&out).unwrap();
        let m = &v["choices"][0]["message"];
        assert_eq!(m["content"].as_str(), Some("Let me check."));
        assert_eq!(m["reasoning_content"].as_str(), Some("hmm"));
        assert_eq!(m["tool_calls"][0]["id"].as_str(), Some("w_1"));
        assert_eq!(
            m["tool_calls"][0]["function"]["arguments"].as_str(),
            Some("{\"city\":\"Oslo\"}")
        );
        assert_eq!(v["choices"][0]["finish_reason"].as_str(), Some("tool_calls"));
        assert_eq!(v["usage"]["prompt_tokens"].as_u64(), Some(71));
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64(), Some(3));
        assert!(usage.reported && usage.completion_tokens == 7);
    }

    #[test]
    fn errors_keep_their_message() {
        let (out, _) = to_openai(401, br#"{"id":"e","message":"invalid api token"}"#, "m", 128);
        assert!(out.contains("invalid api token"), "{out}");
        let (out, _) = to_openai(200, b"[1]", "m", 128);
        assert!(out.contains("not a Cohere chat response"), "{out}");
    }
}
