//! A whole OpenAI chat answer (from an OpenAI-compatible upstream, or from the hub after an
//! Anthropic or Gemini answer was mapped) -> a Responses `response` object: reasoning, then the
//! message, then one `function_call` item per tool call, and usage in Responses' names.
//! Invariant: an error answer keeps its status and is given in OpenAI's error envelope, which
//! is the Responses API's own.

use super::{write_call_item, write_message_item, write_reasoning_item, write_response, Ids, ResponseObject, Status};
use crate::providers::openai::{self, Completion};
use crate::providers::write;
use crate::usage::Usage;

/// Chat answer (any status) -> Responses body, and the usage it reports. The caller bounded
/// the body's depth; nothing inside it is parsed again, so `_max_depth` is unused.
pub fn from_chat(status: u16, body: &[u8], model: &str, _max_depth: usize) -> (String, Usage) {
    let parsed = sonic_rs::from_slice::<Completion>(body);
    if !(200..300).contains(&status) {
        let out = match parsed.ok().and_then(|c| c.error) {
            Some(e) => openai::error_body(&e.message, e.kind.as_deref().unwrap_or("upstream_error")),
            None => openai::error_body(
                &crate::providers::openai::unreadable_error(status, body),
                "upstream_error",
            ),
        };
        return (out, Usage::default());
    }
    let Ok(c) = parsed else {
        let message = "the upstream answer was not a valid chat completion";
        return (openai::error_body(message, "upstream_error"), Usage::default());
    };
    let usage = c.usage.map(|u| u.to_usage()).unwrap_or_default();
    let choice = c.choices.into_iter().next().unwrap_or_default();
    let message = choice.message.unwrap_or_default();
    let ids = Ids::new();
    let mut output = String::from("[");
    let mut n = 0;
    let mut next = |output: &mut String| {
        if n > 0 {
            output.push(',');
        }
        n += 1;
        n - 1
    };
    if let Some(reasoning) = message.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
        let i = next(&mut output);
        write_reasoning_item(&mut output, &ids.item("rs", i), Some(reasoning));
    }
    if let Some(text) = message.content.as_deref().filter(|t| !t.is_empty()) {
        let i = next(&mut output);
        write_message_item(&mut output, &ids.item("msg", i), "completed", text);
    }
    for call in message.tool_calls.into_iter().flatten() {
        let i = next(&mut output);
        let function = call.function.unwrap_or_default();
        let call_id = call.id.unwrap_or_else(|| ids.item("call", i));
        write_call_item(
            &mut output,
            &ids.item("fc", i),
            "completed",
            &call_id,
            function.name.as_deref().unwrap_or(""),
            function.arguments.as_deref().unwrap_or(""),
        );
    }
    output.push(']');
    let mut out = String::with_capacity(512 + output.len());
    write_response(
        &mut out,
        &ResponseObject {
            id: &ids.response(),
            model: if c.model.is_empty() { model } else { &c.model },
            created_at: write::unix_now(),
            status: Status::of_finish(choice.finish_reason.as_deref().unwrap_or("stop")),
            output: &output,
            usage: Some(&usage),
            error: None,
        },
    );
    (out, usage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::DEFAULT_MAX_DEPTH as D;
    use sonic_rs::{JsonValueTrait, Value};

    #[test]
    fn chat_answer_with_text_and_a_tool_call_becomes_a_response() {
        let body = br#"{"id":"chatcmpl-1","model":"gpt-x","choices":[{"index":0,"finish_reason":"tool_calls",
          "message":{"role":"assistant","content":"Let me check.","reasoning_content":"hmm","tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}}]}}],
          "usage":{"prompt_tokens":20,"completion_tokens":9,"prompt_tokens_details":{"cached_tokens":8},"completion_tokens_details":{"reasoning_tokens":3}}}"#;
        let (out, usage) = from_chat(200, body, "m", D);
        let v: Value = sonic_rs::from_str(&out).unwrap();
        assert_eq!(v["object"].as_str(), Some("response"));
        assert_eq!(v["status"].as_str(), Some("completed"));
        assert!(v["id"].as_str().unwrap().starts_with("resp_"));
        assert_eq!(v["output"][0]["type"].as_str(), Some("reasoning"));
        assert_eq!(v["output"][0]["summary"][0]["text"].as_str(), Some("hmm"));
        assert_eq!(v["output"][1]["content"][0]["text"].as_str(), Some("Let me check."));
        assert_eq!(v["output"][2]["type"].as_str(), Some("function_call"));
        assert_eq!(v["output"][2]["call_id"].as_str(), Some("call_1"));
        assert_eq!(v["output"][2]["arguments"].as_str(), Some(r#"{"city":"Oslo"}"#));
        assert_eq!(v["usage"]["input_tokens"].as_u64(), Some(20));
        assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"].as_u64(), Some(8));
        assert_eq!(
            v["usage"]["output_tokens_details"]["reasoning_tokens"].as_u64(),
            Some(3)
        );
        assert_eq!(v["usage"]["total_tokens"].as_u64(), Some(29));
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (20, 9));
    }

    #[test]
    fn length_is_incomplete_and_errors_keep_the_openai_envelope() {
        let body = br#"{"choices":[{"finish_reason":"length","message":{"content":"cut"}}]}"#;
        let (out, _) = from_chat(200, body, "m", D);
        let v: Value = sonic_rs::from_str(&out).unwrap();
        assert_eq!(v["status"].as_str(), Some("incomplete"));
        assert_eq!(v["incomplete_details"]["reason"].as_str(), Some("max_output_tokens"));
        assert_eq!(v["model"].as_str(), Some("m"));
        let (out, _) = from_chat(
            429,
            br#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#,
            "m",
            D,
        );
        let v: Value = sonic_rs::from_str(&out).unwrap();
        assert_eq!(v["error"]["message"].as_str(), Some("slow down"));
        assert_eq!(v["error"]["type"].as_str(), Some("rate_limit_error"));
        let (out, _) = from_chat(502, b"<html>", "m", D);
        let v: Value = sonic_rs::from_str(&out).unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains("<html>"));
    }
}
