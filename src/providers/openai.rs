//! The OpenAI chat wire shapes, as the hub every translation passes through: the request
//! (read from OpenAI clients, written for OpenAI-compatible upstreams), the response and chunk
//! (read from upstreams), and a chunk writer (for translated streams to OpenAI clients).
//! Invariant: unknown fields are ignored on input and absent fields are omitted on output, so
//! newer or vendor-extended shapes never fail a translation.

use serde::{Deserialize, Serialize};
use sonic_rs::Value;

#[path = "openai_write.rs"]
mod writers;
pub use writers::*;

use crate::usage::Usage;

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct ChatRequest {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Not OpenAI's, but accepted by many compatible servers and mapped to Anthropic/Gemini.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    /// Read so translated paths can refuse them (`fidelity::check`) rather than lose them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    /// `low | medium | high` for reasoning models (also the Responses API's `reasoning.effort`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
    /// An Anthropic client's `thinking.budget_tokens`, carried through the hub to Gemini's
    /// `thinkingBudget` (never sent to OpenAI upstreams, which have no such field).
    #[serde(skip)]
    pub thinking_budget: Option<u64>,
}

/// OpenAI reasoning models (o1, o3, o4, gpt-5 families), which take `max_completion_tokens`
/// and refuse `max_tokens`.
pub fn is_reasoning_model(model: &str) -> bool {
    let m = model.rsplit('/').next().unwrap_or(model);
    ["o1", "o3", "o4", "gpt-5"].iter().any(|p| {
        m == *p
            || m.strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('-') || rest.starts_with('.'))
    })
}

impl ChatRequest {
    /// The thinking budget asked for: Anthropic's `budget_tokens`, else `reasoning_effort`
    /// mapped to tokens (minimal 512, low 1024, medium 8192, high 24576).
    pub fn reasoning_budget(&self) -> Option<u64> {
        self.thinking_budget
            .or_else(|| match self.reasoning_effort.as_deref()? {
                "minimal" => Some(512),
                "low" => Some(1024),
                "medium" => Some(8192),
                "high" => Some(24576),
                _ => None,
            })
    }

    pub fn wants_usage_chunk(&self) -> bool {
        self.stream_options.as_ref().and_then(|o| o.include_usage) == Some(true)
    }

    pub fn output_limit(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    pub fn stop_list(&self) -> Vec<String> {
        match &self.stop {
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
            None => Vec::new(),
        }
    }
}

/// A client's chat request, for translation. A body nesting deeper than `max_depth` is refused
/// before serde (which recurses per level) reads it.
pub fn read_chat(body: &[u8], max_depth: usize) -> Result<ChatRequest, String> {
    crate::codec::depth::check_depth(body, max_depth).map_err(|e| format!("request body {e}"))?;
    sonic_rs::from_slice(body).map_err(|e| format!("invalid chat request: {e}"))
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct StreamOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Message {
    #[serde(default)]
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Anthropic prompt caching through an OpenAI-shaped request (a message-level breakpoint,
    /// as LiteLLM and OpenRouter accept it): carried to the message's last Anthropic block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<CacheControl>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

impl Content {
    /// All text parts joined (images and other parts skipped).
    pub fn text(&self) -> String {
        match self {
            Content::Text(s) => s.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join(""),
        }
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Part {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<ImageUrl>,
    /// `{"file_data": "data:<mime>;base64,..", "filename"}` or `{"file_id"}` (PDFs, documents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FilePart>,
    /// `{"data": base64, "format": "wav" | "mp3"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_audio: Option<AudioPart>,
    /// Anthropic prompt caching (`{"type":"ephemeral","ttl"?}`) on an OpenAI part, as clients
    /// send it through OpenAI-compatible gateways: carried to the matching Anthropic block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<CacheControl>,
}

/// Anthropic's prompt-caching breakpoint, `{"type":"ephemeral","ttl"?:"5m"|"1h"}`, as clients
/// send it on OpenAI-shaped parts, messages and tools (typed: it sits inside untagged enums,
/// which buffer what they read).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct CacheControl {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct FilePart {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct AudioPart {
    #[serde(default)]
    pub data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct ImageUrl {
    #[serde(default)]
    pub url: String,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct ToolCall {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    #[serde(default)]
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".to_owned()
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct FunctionCall {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Tool {
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    #[serde(default)]
    pub function: FunctionDef,
    /// Anthropic prompt caching on a tool definition: carried to the Anthropic tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<CacheControl>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct FunctionDef {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

/// A response or a stream chunk (the same reader serves both).
#[derive(Debug, Default, Deserialize)]
pub struct Completion {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<WireUsage>,
    #[serde(default)]
    pub error: Option<WireError>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Whole responses.
    #[serde(default)]
    pub message: Option<ChoiceDelta>,
    /// Stream chunks.
    #[serde(default)]
    pub delta: Option<ChoiceDelta>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ChoiceDelta {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub reasoning_content: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ToolCallDelta {
    #[serde(default)]
    pub index: Option<u32>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub function: Option<FunctionDelta>,
}

#[derive(Debug, Default, Deserialize)]
pub struct FunctionDelta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub arguments: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub struct WireUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    pub completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub struct PromptDetails {
    #[serde(default)]
    pub cached_tokens: u64,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub struct CompletionDetails {
    #[serde(default)]
    pub reasoning_tokens: u64,
}

impl WireUsage {
    pub fn to_usage(self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cached_tokens: self.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
            reasoning_tokens: self.completion_tokens_details.map_or(0, |d| d.reasoning_tokens),
            reported: true,
            partial: false,
        }
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct WireError {
    #[serde(default)]
    pub message: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}
