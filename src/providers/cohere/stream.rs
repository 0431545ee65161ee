//! Cohere v2 chat SSE -> OpenAI chat chunks. The event type is the `type` inside each data
//! (`event:` lines are not relied on): `message-start` opens the answer, `content-delta` text
//! (or thinking, as `reasoning_content`) is a delta, `tool-call-start`/`tool-call-delta` become
//! tool-call deltas (indexed by their own counter), `message-end` carries the finish reason,
//! the usage and possibly an error; `[DONE]`, citations, tool plans and debug events are dropped.
//! Invariant: exactly one terminator; a stream that closes before `message-end` ends in an
//! error event, never a clean-looking `[DONE]`.

use serde::Deserialize;
use sonic_rs::{JsonValueTrait, Value};

use super::{finish_reason, Function, WireUsage};
use crate::codec::sse::Event;
use crate::providers::openai::{ChunkWriter, DONE};
use crate::providers::transform::openai_error_event;
use crate::providers::write;
use crate::providers::StreamHandler;
use crate::usage::Usage;

#[derive(Debug, Default, Deserialize)]
struct StreamEvent {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    delta: Option<Delta>,
}

#[derive(Debug, Default, Deserialize)]
struct Delta {
    #[serde(default)]
    message: Option<DeltaMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct DeltaMessage {
    #[serde(default)]
    content: Option<DeltaContent>,
    #[serde(default)]
    tool_calls: Option<DeltaToolCall>,
}

#[derive(Debug, Default, Deserialize)]
struct DeltaContent {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct DeltaToolCall {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<Function>,
}

pub struct CohereToOpenAi {
    writer: ChunkWriter,
    include_usage: bool,
    usage: Option<WireUsage>,
    tool_calls: u32,
    started: bool,
    finished: bool,
    done: bool,
}

impl CohereToOpenAi {
    pub fn new(model: &str, include_usage: bool) -> Self {
        CohereToOpenAi {
            writer: ChunkWriter {
                id: "chatcmpl-cohere".to_owned(),
                model: model.to_owned(),
                created: write::unix_now(),
            },
            include_usage,
            usage: None,
            tool_calls: 0,
            started: false,
            finished: false,
            done: false,
        }
    }

    fn start(&mut self, out: &mut String) {
        if !self.started {
            self.started = true;
            self.writer
                .chunk(out, "{\"role\":\"assistant\",\"content\":\"\"}", None);
        }
    }

    fn error(&mut self, out: &mut String, message: &str) {
        self.done = true;
        out.push_str(&String::from_utf8_lossy(&openai_error_event(message)));
    }

    fn content(&mut self, content: Option<DeltaContent>, out: &mut String) {
        let Some(c) = content else { return };
        if let Some(t) = c.text.filter(|t| !t.is_empty()) {
            self.writer.text_delta(out, "content", &t);
        }
        if let Some(t) = c.thinking.filter(|t| !t.is_empty()) {
            self.writer.text_delta(out, "reasoning_content", &t);
        }
    }

    fn end(&mut self, delta: Delta, out: &mut String) {
        if let Some(u) = delta.usage {
            self.usage = Some(u);
        }
        if let Some(e) = delta.error.filter(|e| !e.is_null()) {
            let message = e
                .as_str()
                .map_or_else(|| sonic_rs::to_string(&e).unwrap_or_default(), str::to_owned);
            if !message.is_empty() {
                return self.error(out, &format!("the upstream failed: {message}"));
            }
        }
        let reason = match delta.finish_reason.as_deref() {
            Some("ERROR") | Some("TIMEOUT") => {
                let why = delta.finish_reason.unwrap_or_default();
                return self.error(out, &format!("the upstream ended the answer with {why}"));
            }
            Some(r) => finish_reason(r),
            None if self.tool_calls > 0 => "tool_calls",
            None => "stop",
        };
        self.finished = true;
        self.writer.chunk(out, "{}", Some(reason));
    }
}

impl StreamHandler for CohereToOpenAi {
    fn on_event(&mut self, event: Event<'_>, out: &mut String) {
        if self.done || self.finished || event.data == b"[DONE]" {
            return;
        }
        let Ok(e) = sonic_rs::from_slice::<StreamEvent>(event.data) else {
            return;
        };
        let delta = e.delta.unwrap_or_default();
        match e.kind.as_str() {
            "message-start" => {
                if let Some(id) = e.id.filter(|i| !i.is_empty()) {
                    self.writer.id = format!("chatcmpl-{id}");
                }
                self.start(out);
            }
            "content-start" | "content-delta" => {
                self.start(out);
                self.content(delta.message.and_then(|m| m.content), out);
            }
            "tool-call-start" => {
                self.start(out);
                let call = delta.message.and_then(|m| m.tool_calls).unwrap_or_default();
                let k = self.tool_calls;
                self.tool_calls += 1;
                let function = call.function.unwrap_or_default();
                let id = call.id.filter(|i| !i.is_empty()).unwrap_or_else(|| format!("call_{k}"));
                let args = function.arguments_text().unwrap_or_default();
                self.writer
                    .tool_start(out, k, &id, function.name.as_deref().unwrap_or(""), &args);
            }
            "tool-call-delta" => {
                let fragment = delta
                    .message
                    .and_then(|m| m.tool_calls)
                    .and_then(|c| c.function)
                    .and_then(|f| f.arguments_text())
                    .filter(|a| !a.is_empty());
                if let (Some(fragment), Some(k)) = (fragment, self.tool_calls.checked_sub(1)) {
                    self.writer.tool_args(out, k, &fragment);
                }
            }
            "message-end" => {
                self.start(out);
                self.end(delta, out);
            }
            _ => {}
        }
    }

    fn on_end(&mut self, out: &mut String) {
        if self.done {
            return;
        }
        self.done = true;
        if !self.finished {
            out.push_str(&String::from_utf8_lossy(&openai_error_event(
                "upstream stream ended without a message-end event",
            )));
            return;
        }
        if self.include_usage {
            let usage = self.usage.map(|u| u.usage()).unwrap_or_default();
            self.writer.usage_chunk(out, &usage);
        }
        out.push_str(DONE);
    }

    fn on_fail(&mut self, message: &str, out: &mut String) {
        if self.done {
            return;
        }
        self.done = true;
        out.push_str(&String::from_utf8_lossy(&openai_error_event(message)));
    }

    fn usage(&self) -> Usage {
        let mut u = self.usage.map(|u| u.usage()).unwrap_or_default();
        u.partial = !(self.done && self.finished);
        u
    }
}
