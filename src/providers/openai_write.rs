//! The OpenAI shapes rotor writes (split from `openai.rs`): the usage object, the error
//! envelope, `chat.completion` answers and `chat.completion.chunk` events for translated streams.
//!
//! Invariant: every string goes through `write::string`, so what is written is valid JSON
//! whatever the upstream sent; the usage object always carries `cached_tokens`.

use super::super::write;
use super::ToolCall;
use crate::usage::Usage;

/// Writes `usage` as an OpenAI usage object (cached tokens always present, so clients that read
/// `prompt_tokens_details.cached_tokens` find a number).
pub fn write_usage(out: &mut String, usage: &Usage) {
    out.push_str("{\"prompt_tokens\":");
    write::number(out, usage.prompt_tokens);
    out.push_str(",\"completion_tokens\":");
    write::number(out, usage.completion_tokens);
    out.push_str(",\"total_tokens\":");
    write::number(out, usage.total());
    out.push_str(",\"prompt_tokens_details\":{\"cached_tokens\":");
    write::number(out, usage.cached_tokens);
    out.push_str("},\"completion_tokens_details\":{\"reasoning_tokens\":");
    write::number(out, usage.reasoning_tokens);
    out.push_str("}}");
}

/// The message for an upstream error answer whose own message could not be read: its status
/// and the first 512 bytes of its body (an upstream's error text, never a secret of rotor's).
pub fn unreadable_error(status: u16, body: &[u8]) -> String {
    format!(
        "upstream answered {status}: {}",
        String::from_utf8_lossy(body.get(..512).unwrap_or(body))
    )
}

/// The OpenAI error envelope (`param`/`code` present, as the SDKs expect).
pub fn error_body(message: &str, kind: &str) -> String {
    let mut out = String::with_capacity(64 + message.len());
    out.push_str("{\"error\":{");
    write::field_str(&mut out, "message", message);
    out.push(',');
    write::field_str(&mut out, "type", kind);
    out.push_str(",\"param\":null,\"code\":null}}");
    out
}

/// Builds `chat.completion.chunk` events for one translated stream.
pub struct ChunkWriter {
    pub id: String,
    pub model: String,
    pub created: u64,
}

impl ChunkWriter {
    /// `data: {...,"choices":[{"index":0,"delta":<delta>,"finish_reason":<finish>}]}` + blank line.
    pub fn chunk(&self, out: &mut String, delta: &str, finish: Option<&str>) {
        self.open(out);
        out.push_str("[{\"index\":0,\"delta\":");
        out.push_str(delta);
        out.push_str(",\"finish_reason\":");
        match finish {
            Some(f) => write::string(out, f),
            None => out.push_str("null"),
        }
        out.push_str("}]}\n\n");
    }

    /// The extra final chunk with empty `choices` and the totals.
    pub fn usage_chunk(&self, out: &mut String, usage: &Usage) {
        self.open(out);
        out.push_str("[],\"usage\":");
        write_usage(out, usage);
        out.push_str("}\n\n");
    }

    pub fn text_delta(&self, out: &mut String, field: &str, text: &str) {
        let mut delta = String::with_capacity(text.len() + 24);
        delta.push('{');
        write::field_str(&mut delta, field, text);
        delta.push('}');
        self.chunk(out, &delta, None);
    }

    /// The first delta of a tool call: id, name, empty arguments (or whole ones, for Gemini).
    pub fn tool_start(&self, out: &mut String, index: u32, id: &str, name: &str, arguments: &str) {
        let mut delta = String::with_capacity(96 + name.len() + arguments.len());
        delta.push_str("{\"tool_calls\":[{\"index\":");
        write::number(&mut delta, u64::from(index));
        delta.push(',');
        write::field_str(&mut delta, "id", id);
        delta.push_str(",\"type\":\"function\",\"function\":{");
        write::field_str(&mut delta, "name", name);
        delta.push(',');
        write::field_str(&mut delta, "arguments", arguments);
        delta.push_str("}}]}");
        self.chunk(out, &delta, None);
    }

    pub fn tool_args(&self, out: &mut String, index: u32, fragment: &str) {
        let mut delta = String::with_capacity(64 + fragment.len());
        delta.push_str("{\"tool_calls\":[{\"index\":");
        write::number(&mut delta, u64::from(index));
        delta.push_str(",\"function\":{");
        write::field_str(&mut delta, "arguments", fragment);
        delta.push_str("}}]}");
        self.chunk(out, &delta, None);
    }

    fn open(&self, out: &mut String) {
        out.push_str("data: {");
        write::field_str(out, "id", &self.id);
        out.push_str(",\"object\":\"chat.completion.chunk\",\"created\":");
        write::number(out, self.created);
        out.push(',');
        write::field_str(out, "model", &self.model);
        out.push_str(",\"choices\":");
    }
}

pub const DONE: &str = "data: [DONE]\n\n";

/// One assistant answer, as every translator hands it to `write_chat_completion`.
pub struct Answer<'a> {
    pub id: &'a str,
    pub model: &'a str,
    pub text: &'a str,
    pub reasoning: &'a str,
    pub calls: &'a [ToolCall],
    pub finish: &'a str,
    pub usage: &'a Usage,
}

/// A whole OpenAI `chat.completion` body (content is `null` when the answer is only tool calls).
pub fn write_chat_completion(c: &Answer<'_>) -> String {
    write_chat_completion_choices(c, &[])
}

/// A `chat.completion` with `first` as choice 0 and `more` as choices 1.. (an `n > 1` answer);
/// id, model and usage come from `first`.
pub fn write_chat_completion_choices(c: &Answer<'_>, more: &[Answer<'_>]) -> String {
    let mut out = String::with_capacity(256 + c.text.len());
    out.push('{');
    write::field_str(&mut out, "id", c.id);
    out.push_str(",\"object\":\"chat.completion\",\"created\":");
    write::number(&mut out, write::unix_now());
    out.push(',');
    write::field_str(&mut out, "model", c.model);
    out.push_str(",\"choices\":[");
    for (index, choice) in std::iter::once(c).chain(more).enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_choice(&mut out, index, choice);
    }
    out.push_str("],\"usage\":");
    write_usage(&mut out, c.usage);
    out.push('}');
    out
}

fn write_choice(out: &mut String, index: usize, c: &Answer<'_>) {
    out.push_str("{\"index\":");
    write::number(out, index as u64);
    out.push_str(",\"message\":{\"role\":\"assistant\",\"content\":");
    if c.text.is_empty() && !c.calls.is_empty() {
        out.push_str("null");
    } else {
        write::string(out, c.text);
    }
    if !c.reasoning.is_empty() {
        out.push(',');
        write::field_str(out, "reasoning_content", c.reasoning);
    }
    if !c.calls.is_empty() {
        out.push_str(",\"tool_calls\":");
        out.push_str(&sonic_rs::to_string(c.calls).unwrap_or_else(|_| "[]".to_owned()));
    }
    out.push_str("},\"finish_reason\":");
    write::string(out, c.finish);
    out.push('}');
}
