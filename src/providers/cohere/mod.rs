//! The Cohere Chat v2 protocol (provider-formats.md 5.1): `POST {base}/chat` with OpenAI-like
//! messages and tools, answers whose `message.content` is a list of text and thinking parts,
//! and an SSE stream whose event type is the `type` inside each data (`content-delta`,
//! `tool-call-*`, `message-end` carrying `finish_reason` and usage). The request, response and
//! stream mappings to the OpenAI hub live in the submodules.
//! Invariant: usage is `usage.tokens` (what the model saw and wrote), falling back to
//! `usage.billed_units` only when `tokens` is absent; counts may be floats.

pub mod request;
pub mod response;
pub mod stream;

use serde::Deserialize;
use sonic_rs::Value;

use crate::usage::Usage;

#[derive(Debug, Default, Deserialize)]
pub struct ChatResponse {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub message: Option<Message>,
    #[serde(default)]
    pub usage: Option<WireUsage>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Message {
    /// A list of parts in answers (a string is tolerated).
    #[serde(default)]
    pub content: Option<Value>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ToolCall {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub function: Option<Function>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Function {
    #[serde(default)]
    pub name: Option<String>,
    /// A JSON string, as OpenAI's (an object is tolerated and serialized).
    #[serde(default)]
    pub arguments: Option<Value>,
}

impl Function {
    pub fn arguments_text(&self) -> Option<String> {
        use sonic_rs::JsonValueTrait;
        let v = self.arguments.as_ref()?;
        match v.as_str() {
            Some(s) => Some(s.to_owned()),
            None if v.is_null() => None,
            None => sonic_rs::to_string(v).ok(),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub struct WireUsage {
    #[serde(default)]
    pub tokens: Option<Tokens>,
    #[serde(default)]
    pub billed_units: Option<Tokens>,
    #[serde(default)]
    pub cached_tokens: Option<f64>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub struct Tokens {
    #[serde(default)]
    pub input_tokens: Option<f64>,
    #[serde(default)]
    pub output_tokens: Option<f64>,
}

fn count(v: Option<f64>) -> u64 {
    v.filter(|n| n.is_finite() && *n >= 0.0).map_or(0, |n| n as u64)
}

impl WireUsage {
    pub fn usage(&self) -> Usage {
        let t = self.tokens.or(self.billed_units).unwrap_or_default();
        Usage {
            prompt_tokens: count(t.input_tokens),
            completion_tokens: count(t.output_tokens),
            cached_tokens: count(self.cached_tokens),
            reported: self.tokens.is_some() || self.billed_units.is_some(),
            ..Usage::default()
        }
    }
}

/// Cohere `finish_reason` -> OpenAI's.
pub fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "TOOL_CALL" => "tool_calls",
        _ => "stop",
    }
}

/// The message of a Cohere error body (`{"message": ...}`).
pub fn error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(default)]
        message: Option<String>,
    }
    sonic_rs::from_slice::<Envelope>(body)
        .ok()?
        .message
        .filter(|m| !m.is_empty())
}

/// Text and thinking of a content list (or a plain string).
pub fn content_text(content: &Value) -> (String, String) {
    use sonic_rs::{JsonContainerTrait, JsonValueTrait};
    if let Some(s) = content.as_str() {
        return (s.to_owned(), String::new());
    }
    let (mut text, mut thinking) = (String::new(), String::new());
    for part in content.as_array().map(|a| a.iter()).into_iter().flatten() {
        match part.get("type").and_then(|t| t.as_str()) {
            Some("thinking") => thinking.push_str(part.get("thinking").and_then(|t| t.as_str()).unwrap_or("")),
            _ => text.push_str(part.get("text").and_then(|t| t.as_str()).unwrap_or("")),
        }
    }
    (text, thinking)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_prefers_tokens_then_billed_units() {
        let u: WireUsage = sonic_rs::from_str(
            r#"{"billed_units":{"input_tokens":5,"output_tokens":2},"tokens":{"input_tokens":70.0,"output_tokens":2.0},"cached_tokens":8}"#,
        )
        .unwrap();
        let u = u.usage();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.reported),
            (70, 2, 8, true)
        );
        let b: WireUsage = sonic_rs::from_str(r#"{"billed_units":{"input_tokens":5,"output_tokens":2}}"#).unwrap();
        assert_eq!(b.usage().prompt_tokens, 5);
        assert!(!WireUsage::default().usage().reported);
        assert_eq!(finish_reason("MAX_TOKENS"), "length");
        assert_eq!(finish_reason("TOOL_CALL"), "tool_calls");
        assert_eq!(finish_reason("COMPLETE"), "stop");
        assert_eq!(
            error_message(br#"{"id":"x","message":"invalid api token"}"#).as_deref(),
            Some("invalid api token")
        );
    }
}
