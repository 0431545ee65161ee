//! The OpenAI Responses API front door (`POST /v1/responses`, provider-formats.md 1.8). An
//! upstream that serves it (`responses = "native"`) gets the bytes untouched and its usage is
//! read on the way (`usage::responses`); every other upstream is reached through the chat hub:
//! `request` maps the request to chat, `response` a whole chat answer back, `stream` chat
//! chunks to Responses events. This module holds the pieces both directions share: the
//! response object, output items and usage writers, and the routing of the Responses paths.
//! Invariant: the output a client sees is the same object whether it streamed or not, with
//! usage in Responses' own names (`input_tokens`, `output_tokens`, their details).

pub mod request;
pub mod response;
pub mod stream;
#[cfg(test)]
mod stream_tests;

use crate::config::ResponsesMode;
use crate::providers::write;
use crate::usage::Usage;

/// The Responses API's own paths: `/v1/responses` and `/v1/responses/{id}[/...]`.
pub fn is_responses_path(path: &str) -> bool {
    path == "/v1/responses" || path.starts_with("/v1/responses/")
}

/// How a provider in `mode` serves `client_path`: `Some(true)` = pass it through (the upstream
/// serves the Responses API), `Some(false)` = a stored response it cannot have, `None` = not a
/// Responses path or one to translate.
pub fn native(client_path: &str, mode: ResponsesMode) -> Option<bool> {
    if !is_responses_path(client_path) {
        return None;
    }
    match mode {
        ResponsesMode::Native => Some(true),
        ResponsesMode::Translate if client_path == "/v1/responses" => None,
        ResponsesMode::Translate => Some(false),
    }
}

/// Ids for one translated answer: `resp_<hex>`, and its items `msg_`/`fc_`/`rs_<hex>_<n>`.
#[derive(Debug, Clone)]
pub struct Ids {
    hex: String,
}

impl Ids {
    pub fn new() -> Self {
        Self::fixed(fastrand::u64(..))
    }

    /// The ids of one seed (tests and fuzzing compare outputs byte for byte).
    pub fn fixed(seed: u64) -> Self {
        Ids {
            hex: format!("{seed:016x}"),
        }
    }

    pub fn response(&self) -> String {
        format!("resp_{}", self.hex)
    }

    pub fn item(&self, prefix: &str, n: usize) -> String {
        format!("{prefix}_{}_{n}", self.hex)
    }
}

impl Default for Ids {
    fn default() -> Self {
        Self::new()
    }
}

/// How an answer ended, from the chat `finish_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    InProgress,
    Completed,
    /// `max_output_tokens` or `content_filter`.
    Incomplete(&'static str),
    Failed,
}

impl Status {
    pub fn of_finish(finish: &str) -> Status {
        match finish {
            "length" => Status::Incomplete("max_output_tokens"),
            "content_filter" => Status::Incomplete("content_filter"),
            _ => Status::Completed,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Incomplete(_) => "incomplete",
            Status::Failed => "failed",
        }
    }
}

/// One response object (the body of a non-streamed answer, and the `response` of the
/// lifecycle events). `output` is a rendered JSON array of items; `error` is (code, message).
pub struct ResponseObject<'a> {
    pub id: &'a str,
    pub model: &'a str,
    pub created_at: u64,
    pub status: Status,
    pub output: &'a str,
    pub usage: Option<&'a Usage>,
    pub error: Option<(&'a str, &'a str)>,
}

pub fn write_response(out: &mut String, r: &ResponseObject<'_>) {
    out.push('{');
    write::field_str(out, "id", r.id);
    out.push_str(",\"object\":\"response\",\"created_at\":");
    write::number(out, r.created_at);
    out.push(',');
    write::field_str(out, "status", r.status.name());
    out.push_str(",\"error\":");
    match r.error {
        Some((code, message)) => {
            out.push('{');
            write::field_str(out, "code", code);
            out.push(',');
            write::field_str(out, "message", message);
            out.push('}');
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"incomplete_details\":");
    match r.status {
        Status::Incomplete(reason) => {
            out.push('{');
            write::field_str(out, "reason", reason);
            out.push('}');
        }
        _ => out.push_str("null"),
    }
    out.push_str(",\"instructions\":null,\"max_output_tokens\":null,");
    write::field_str(out, "model", r.model);
    out.push_str(",\"output\":");
    out.push_str(r.output);
    out.push_str(
        ",\"parallel_tool_calls\":true,\"previous_response_id\":null,\"reasoning\":{\"effort\":null,\"summary\":null},\
         \"store\":false,\"temperature\":null,\"text\":{\"format\":{\"type\":\"text\"}},\"tool_choice\":\"auto\",\
         \"tools\":[],\"top_p\":null,\"truncation\":\"disabled\",\"usage\":",
    );
    match r.usage {
        Some(u) => write_usage(out, u),
        None => out.push_str("null"),
    }
    out.push_str(",\"user\":null,\"metadata\":{}}");
}

/// Usage in Responses' names.
pub fn write_usage(out: &mut String, u: &Usage) {
    out.push_str("{\"input_tokens\":");
    write::number(out, u.prompt_tokens);
    out.push_str(",\"input_tokens_details\":{\"cached_tokens\":");
    write::number(out, u.cached_tokens);
    out.push_str("},\"output_tokens\":");
    write::number(out, u.completion_tokens);
    out.push_str(",\"output_tokens_details\":{\"reasoning_tokens\":");
    write::number(out, u.reasoning_tokens);
    out.push_str("},\"total_tokens\":");
    write::number(out, u.total());
    out.push('}');
}

/// An assistant `message` item with one `output_text` part.
pub fn write_message_item(out: &mut String, id: &str, status: &str, text: &str) {
    out.push('{');
    write::field_str(out, "id", id);
    out.push_str(",\"type\":\"message\",");
    write::field_str(out, "status", status);
    out.push_str(",\"role\":\"assistant\",\"content\":[");
    if status != "in_progress" {
        write_text_part(out, text);
    }
    out.push_str("]}");
}

/// An `output_text` content part.
pub fn write_text_part(out: &mut String, text: &str) {
    out.push_str("{\"type\":\"output_text\",");
    write::field_str(out, "text", text);
    out.push_str(",\"annotations\":[],\"logprobs\":[]}");
}

/// A `function_call` item.
pub fn write_call_item(out: &mut String, id: &str, status: &str, call_id: &str, name: &str, arguments: &str) {
    out.push('{');
    write::field_str(out, "id", id);
    out.push_str(",\"type\":\"function_call\",");
    write::field_str(out, "status", status);
    out.push(',');
    write::field_str(out, "call_id", call_id);
    out.push(',');
    write::field_str(out, "name", name);
    out.push(',');
    write::field_str(out, "arguments", arguments);
    out.push('}');
}

/// A `reasoning` item whose summary is the upstream's reasoning text (empty while it streams).
pub fn write_reasoning_item(out: &mut String, id: &str, text: Option<&str>) {
    out.push('{');
    write::field_str(out, "id", id);
    out.push_str(",\"type\":\"reasoning\",\"summary\":[");
    if let Some(text) = text {
        out.push_str("{\"type\":\"summary_text\",");
        write::field_str(out, "text", text);
        out.push('}');
    }
    out.push_str("]}");
}
