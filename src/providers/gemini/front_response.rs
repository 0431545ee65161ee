//! OpenAI chat answers -> Gemini `GenerateContentResponse`, for the Gemini front door served by
//! other kinds: whole bodies here, the pieces each stream chunk is written from (parts,
//! `usageMetadata`, finish reasons) shared with `front_stream`. Errors of any status become
//! Google's envelope with the upstream's status.
//! Invariant: token counts follow provider-formats.md 7.8 backwards: `candidatesTokenCount`
//! excludes the reasoning tokens that `thoughtsTokenCount` carries, so a Gemini client adding
//! them up gets the upstream's completion tokens.

use super::door::error_body;
use crate::providers::openai::{Completion, ToolCallDelta};
use crate::providers::write;
use crate::usage::Usage;

/// Any status -> Gemini body, and the usage it reports. The caller bounds the body's depth
/// (`WholeBody`); tool arguments inside it are bounded by `max_depth` before they are parsed.
pub fn from_openai(status: u16, body: &[u8], model: &str, max_depth: usize) -> (String, Usage) {
    let parsed = sonic_rs::from_slice::<Completion>(body);
    if !(200..300).contains(&status) {
        let message = match parsed.ok().and_then(|c| c.error) {
            Some(e) if !e.message.is_empty() => e.message,
            _ => crate::providers::openai::unreadable_error(status, body),
        };
        return (error_body(status, &message), Usage::default());
    }
    let Ok(completion) = parsed else {
        return (
            error_body(502, "the upstream answer was not a valid chat completion"),
            Usage::default(),
        );
    };
    let usage = completion.usage.map(|u| u.to_usage()).unwrap_or_default();
    let mut out = String::with_capacity(256 + body.len());
    out.push_str("{\"candidates\":[");
    for (index, choice) in completion.choices.into_iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        let message = choice.message.unwrap_or_default();
        let mut parts = Parts::default();
        parts.text(message.reasoning_content.as_deref().unwrap_or(""), true);
        parts.text(message.content.as_deref().unwrap_or(""), false);
        for call in message.tool_calls.iter().flatten() {
            parts.call(call, max_depth);
        }
        let finish = choice.finish_reason.as_deref().unwrap_or("stop");
        candidate(&mut out, index, &parts.finish(), Some(finish));
    }
    out.push(']');
    if usage.reported {
        out.push_str(",\"usageMetadata\":");
        write_usage(&mut out, &usage);
    }
    tail(
        &mut out,
        if completion.model.is_empty() {
            model
        } else {
            &completion.model
        },
        &completion.id,
    );
    out.push('}');
    (out, usage)
}

/// The `parts` array of one candidate, written as the pieces arrive.
#[derive(Default)]
pub(super) struct Parts {
    out: String,
}

impl Parts {
    /// A text part (`thought: true` for reasoning); empty text adds nothing.
    pub(super) fn text(&mut self, text: &str, thought: bool) {
        if text.is_empty() {
            return;
        }
        self.open();
        write::field_str(&mut self.out, "text", text);
        if thought {
            self.out.push_str(",\"thought\":true");
        }
        self.out.push('}');
    }

    /// A whole `functionCall` part; arguments that are no JSON object (or nest deeper than
    /// `max_depth`) are sent as `{}`, as the other translators do with arguments they cannot read.
    pub(super) fn call(&mut self, call: &ToolCallDelta, max_depth: usize) {
        let function = call.function.as_ref();
        let arguments = function.and_then(|f| f.arguments.as_deref()).unwrap_or("");
        self.call_parts(
            call.id.as_deref(),
            function.and_then(|f| f.name.as_deref()),
            arguments,
            max_depth,
        );
    }

    pub(super) fn call_parts(&mut self, id: Option<&str>, name: Option<&str>, arguments: &str, max_depth: usize) {
        let args = crate::providers::anthropic::request::parse_arguments(arguments, max_depth)
            .ok()
            .and_then(|v| sonic_rs::to_string(&v).ok())
            .unwrap_or_else(|| "{}".to_owned());
        self.open();
        self.out.push_str("\"functionCall\":{");
        if let Some(id) = id.filter(|i| !i.is_empty()) {
            write::field_str(&mut self.out, "id", id);
            self.out.push(',');
        }
        write::field_str(&mut self.out, "name", name.unwrap_or(""));
        self.out.push_str(",\"args\":");
        self.out.push_str(&args);
        self.out.push_str("}}");
    }

    pub(super) fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// The `[...]` text; one empty text part when nothing was added (Gemini's last chunks carry
    /// one, and clients expect `parts` to hold something).
    pub(super) fn finish(self) -> String {
        if self.out.is_empty() {
            return "[{\"text\":\"\"}]".to_owned();
        }
        format!("[{}]", self.out)
    }

    fn open(&mut self) {
        if !self.out.is_empty() {
            self.out.push(',');
        }
        self.out.push('{');
    }
}

/// One candidate: `{"content":{"role":"model","parts":...},"finishReason":...,"index":n}`.
pub(super) fn candidate(out: &mut String, index: usize, parts: &str, finish: Option<&str>) {
    out.push_str("{\"content\":{\"role\":\"model\",\"parts\":");
    out.push_str(parts);
    out.push('}');
    if let Some(finish) = finish {
        out.push_str(",\"finishReason\":");
        write::string(out, finish_reason(finish));
    }
    out.push_str(",\"index\":");
    write::number(out, index as u64);
    out.push('}');
}

/// `,"modelVersion":...,"responseId":...` (the OpenAI id without its `chatcmpl-` prefix).
pub(super) fn tail(out: &mut String, model: &str, id: &str) {
    out.push(',');
    write::field_str(out, "modelVersion", model);
    out.push(',');
    let id = id.strip_prefix("chatcmpl-").unwrap_or(id);
    write::field_str(out, "responseId", if id.is_empty() { "rotor" } else { id });
}

/// OpenAI `finish_reason` -> Gemini `finishReason` (provider-formats.md 7.6, reverse).
pub fn finish_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "MAX_TOKENS",
        "content_filter" => "SAFETY",
        "stop" | "tool_calls" | "function_call" => "STOP",
        _ => "OTHER",
    }
}

/// Usage as `usageMetadata` (zero counts left out, as Gemini does).
pub fn write_usage(out: &mut String, usage: &Usage) {
    let thoughts = usage.reasoning_tokens.min(usage.completion_tokens);
    out.push_str("{\"promptTokenCount\":");
    write::number(out, usage.prompt_tokens);
    out.push_str(",\"candidatesTokenCount\":");
    write::number(out, usage.completion_tokens - thoughts);
    out.push_str(",\"totalTokenCount\":");
    write::number(out, usage.total());
    if thoughts > 0 {
        out.push_str(",\"thoughtsTokenCount\":");
        write::number(out, thoughts);
    }
    if usage.cached_tokens > 0 {
        out.push_str(",\"cachedContentTokenCount\":");
        write::number(out, usage.cached_tokens);
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::DEFAULT_MAX_DEPTH as D;
    use sonic_rs::JsonValueTrait;

    #[test]
    fn a_tool_answer_becomes_function_call_parts_with_usage() {
        let body = br#"{"id":"chatcmpl-9","model":"gpt-x","choices":[{"index":0,"message":{"role":"assistant","content":"ok","reasoning_content":"hm",
          "tool_calls":[{"id":"call_a","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]},"finish_reason":"tool_calls"}],
          "usage":{"prompt_tokens":9,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens_details":{"reasoning_tokens":3}}}"#;
        let (out, usage) = from_openai(200, body, "m", D);
        let v: sonic_rs::Value = sonic_rs::from_str(&out).unwrap();
        let parts = &v["candidates"][0]["content"]["parts"];
        assert_eq!(
            (parts[0]["text"].as_str(), parts[0]["thought"].as_bool()),
            (Some("hm"), Some(true))
        );
        assert_eq!(parts[1]["text"].as_str(), Some("ok"));
        assert_eq!(parts[2]["functionCall"]["args"]["x"].as_u64(), Some(1));
        assert_eq!(parts[2]["functionCall"]["id"].as_str(), Some("call_a"));
        assert_eq!(v["candidates"][0]["finishReason"].as_str(), Some("STOP"));
        let meta = &v["usageMetadata"];
        assert_eq!(meta["candidatesTokenCount"].as_u64(), Some(2));
        assert_eq!(meta["thoughtsTokenCount"].as_u64(), Some(3));
        assert_eq!(meta["cachedContentTokenCount"].as_u64(), Some(2));
        assert_eq!(meta["totalTokenCount"].as_u64(), Some(14));
        assert_eq!(
            (v["modelVersion"].as_str(), v["responseId"].as_str()),
            (Some("gpt-x"), Some("9"))
        );
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (9, 5));
    }

    #[test]
    fn errors_keep_the_status_in_googles_envelope() {
        let (out, _) = from_openai(
            429,
            br#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#,
            "m",
            D,
        );
        let v: sonic_rs::Value = sonic_rs::from_str(&out).unwrap();
        assert_eq!(v["error"]["code"].as_u64(), Some(429));
        assert_eq!(v["error"]["status"].as_str(), Some("RESOURCE_EXHAUSTED"));
        assert_eq!(v["error"]["message"].as_str(), Some("slow down"));
        let (out, _) = from_openai(200, b"not json", "m", D);
        assert!(out.contains("\"code\":502"), "{out}");
    }
}
