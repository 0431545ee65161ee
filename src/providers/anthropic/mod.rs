//! The Anthropic Messages protocol: wire shapes, the usage and stop-reason maps, the error
//! envelope, and (in the submodules) the request, response and stream mappings to and from the
//! OpenAI chat hub.
//! Invariant: token accounting follows provider-formats.md 7.8 in both directions: Anthropic's
//! `input_tokens` excludes cache reads and writes, OpenAI's `prompt_tokens` includes them.

pub mod front_request;
pub mod front_stream;
pub mod request;
pub mod response;
pub mod stream;
mod user_blocks;

use serde::{Deserialize, Serialize};
use sonic_rs::Value;

use super::write;
use crate::usage::Usage;

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct MessagesRequest {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub max_tokens: u64,
    #[serde(default)]
    pub messages: Vec<AMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<BlockContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ATool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<AToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// `{"type":"enabled","budget_tokens":N}` (extended thinking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<Value>,
    /// `{"format":{"type":"json_schema","schema":{..}}}` (structured output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_config: Option<Value>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct AMessage {
    #[serde(default)]
    pub role: String,
    pub content: BlockContent,
}

/// A string or a list of blocks. Deserialized by hand: serde's `untagged` buffers the input,
/// and `sonic_rs::Value` fields inside blocks (tool `input`) cannot be read back from a buffer.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum BlockContent {
    Text(String),
    Blocks(Vec<Block>),
}

impl<'de> Deserialize<'de> for BlockContent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = BlockContent;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of content blocks")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<BlockContent, E> {
                Ok(BlockContent::Text(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<BlockContent, E> {
                Ok(BlockContent::Text(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<BlockContent, A::Error> {
                let mut blocks = Vec::new();
                while let Some(b) = seq.next_element::<Block>()? {
                    blocks.push(b);
                }
                Ok(BlockContent::Blocks(blocks))
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

impl Default for BlockContent {
    fn default() -> Self {
        BlockContent::Blocks(Vec::new())
    }
}

impl BlockContent {
    /// Text blocks joined (other blocks skipped).
    pub fn text(&self, separator: &str) -> String {
        match self {
            BlockContent::Text(s) => s.clone(),
            BlockContent::Blocks(blocks) => blocks
                .iter()
                .filter(|b| b.kind == "text")
                .filter_map(|b| b.text.as_deref())
                .collect::<Vec<_>>()
                .join(separator),
        }
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Block {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ImageSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_use_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<BlockContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// A prompt-caching breakpoint (`{"type":"ephemeral","ttl"?}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<crate::providers::openai::CacheControl>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct ImageSource {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct ATool {
    /// Absent or `custom` for client tools; server tools (`web_search_20250305`, ...) name
    /// their version here.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<crate::providers::openai::CacheControl>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct AToolChoice {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_parallel_tool_use: Option<bool>,
}

/// A whole response, and the `message` inside `message_start`.
#[derive(Debug, Default, Deserialize)]
pub struct MessagesResponse {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub content: Vec<Block>,
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub usage: Option<WireUsage>,
}

/// Every field optional: `message_delta` may carry only `output_tokens`.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub struct WireUsage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
}

/// Usage gathered over a stream: `message_start` sets input and cache counts, each
/// `message_delta` overrides what it carries (its counts are cumulative, so the last wins).
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub input: u64,
    pub output: u64,
    pub cache_creation: u64,
    pub cache_read: u64,
    pub reported: bool,
}

impl Tally {
    pub fn apply(&mut self, u: &WireUsage) {
        self.reported = true;
        if let Some(n) = u.input_tokens {
            self.input = n;
        }
        if let Some(n) = u.output_tokens {
            self.output = n;
        }
        if let Some(n) = u.cache_creation_input_tokens {
            self.cache_creation = n;
        }
        if let Some(n) = u.cache_read_input_tokens {
            self.cache_read = n;
        }
    }

    /// OpenAI view: prompt = input + cache read + cache creation; cached = cache read.
    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self
                .input
                .saturating_add(self.cache_read)
                .saturating_add(self.cache_creation),
            completion_tokens: self.output,
            cached_tokens: self.cache_read,
            reasoning_tokens: 0,
            reported: self.reported,
            partial: false,
        }
    }
}

/// The reverse map for Anthropic clients: input = prompt - cached, cache read = cached.
pub fn write_usage(out: &mut String, usage: &Usage) {
    out.push_str("{\"input_tokens\":");
    write::number(out, usage.prompt_tokens.saturating_sub(usage.cached_tokens));
    out.push_str(",\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":");
    write::number(out, usage.cached_tokens);
    out.push_str(",\"output_tokens\":");
    write::number(out, usage.completion_tokens);
    out.push('}');
}

/// `stop_reason` -> OpenAI `finish_reason` (provider-formats.md 7.6).
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// OpenAI `finish_reason` -> `stop_reason`.
pub fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ErrorEnvelope {
    #[serde(default)]
    pub error: Option<ErrorDetail>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct ErrorDetail {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub message: String,
}

/// `{"type":"error","error":{"type":..,"message":..}}`.
pub fn error_body(kind: &str, message: &str) -> String {
    let mut out = String::with_capacity(64 + message.len());
    out.push_str("{\"type\":\"error\",\"error\":{");
    write::field_str(&mut out, "type", kind);
    out.push(',');
    write::field_str(&mut out, "message", message);
    out.push_str("}}");
    out
}

/// The Anthropic error type for an HTTP status (docs' status table).
pub fn error_type_for_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        503 | 529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// The Anthropic error type for an error's `type` in another protocol (an OpenAI error chunk,
/// or the Google status a Gemini stream carried through the hub); unknown names are `api_error`.
pub fn error_type_for_name(kind: &str) -> &'static str {
    match kind {
        "overloaded_error" | "UNAVAILABLE" | "upstream_overloaded" => "overloaded_error",
        "rate_limit_error" | "rate_limit_exceeded" | "RESOURCE_EXHAUSTED" => "rate_limit_error",
        "invalid_request_error" | "INVALID_ARGUMENT" | "FAILED_PRECONDITION" => "invalid_request_error",
        "authentication_error" | "UNAUTHENTICATED" => "authentication_error",
        "permission_error" | "PERMISSION_DENIED" => "permission_error",
        "not_found_error" | "NOT_FOUND" => "not_found_error",
        "timeout_error" | "DEADLINE_EXCEEDED" => "timeout_error",
        _ => "api_error",
    }
}

/// An SSE event in Anthropic's framing.
pub fn push_event(out: &mut String, name: &str, data: &str) {
    out.push_str("event: ");
    out.push_str(name);
    out.push_str("\ndata: ");
    out.push_str(data);
    out.push_str("\n\n");
}
