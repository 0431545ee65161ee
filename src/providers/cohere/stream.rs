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
use crate::providers::chat_stream_out::ChatStreamOut;
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
    chunks: ChatStreamOut,
    usage: Option<WireUsage>,
    tool_calls: u32,
}

impl CohereToOpenAi {
    pub fn new(model: &str, include_usage: bool) -> Self {
        CohereToOpenAi {
            chunks: ChatStreamOut::new("chatcmpl-cohere", model, include_usage),
            usage: None,
            tool_calls: 0,
        }
    }

    fn content(&mut self, content: Option<DeltaContent>, out: &mut String) {
        let Some(c) = content else { return };
        if let Some(t) = c.text.filter(|t| !t.is_empty()) {
            self.chunks.writer.text_delta(out, "content", &t);
        }
        if let Some(t) = c.thinking.filter(|t| !t.is_empty()) {
            self.chunks.writer.text_delta(out, "reasoning_content", &t);
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
                return self.chunks.fail(out, &format!("the upstream failed: {message}"));
            }
        }
        let reason = match delta.finish_reason.as_deref() {
            Some("ERROR") | Some("TIMEOUT") => {
                let why = delta.finish_reason.unwrap_or_default();
                return self
                    .chunks
                    .fail(out, &format!("the upstream ended the answer with {why}"));
            }
            Some(r) => finish_reason(r),
            None if self.tool_calls > 0 => "tool_calls",
            None => "stop",
        };
        self.chunks.finish(out, reason);
    }
}

impl StreamHandler for CohereToOpenAi {
    fn on_event(&mut self, event: Event<'_>, out: &mut String) {
        if self.chunks.is_done() || self.chunks.is_finished() || event.data == b"[DONE]" {
            return;
        }
        let Ok(e) = sonic_rs::from_slice::<StreamEvent>(event.data) else {
            return;
        };
        let delta = e.delta.unwrap_or_default();
        match e.kind.as_str() {
            "message-start" => {
                if let Some(id) = e.id.filter(|i| !i.is_empty()) {
                    self.chunks.writer.id = format!("chatcmpl-{id}");
                }
                self.chunks.start(out);
            }
            "content-start" | "content-delta" => {
                self.chunks.start(out);
                self.content(delta.message.and_then(|m| m.content), out);
            }
            "tool-call-start" => {
                self.chunks.start(out);
                let call = delta.message.and_then(|m| m.tool_calls).unwrap_or_default();
                let k = self.tool_calls;
                self.tool_calls += 1;
                let function = call.function.unwrap_or_default();
                let id = call.id.filter(|i| !i.is_empty()).unwrap_or_else(|| format!("call_{k}"));
                let args = function.arguments_text().unwrap_or_default();
                self.chunks
                    .writer
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
                    self.chunks.writer.tool_args(out, k, &fragment);
                }
            }
            "message-end" => {
                self.chunks.start(out);
                self.end(delta, out);
            }
            _ => {}
        }
    }

    fn on_end(&mut self, out: &mut String) {
        let usage = self.usage.map(|u| u.usage()).unwrap_or_default();
        self.chunks.close_at_end(out, &usage, "a message-end event");
    }

    fn on_fail(&mut self, message: &str, out: &mut String) {
        self.chunks.fail(out, message);
    }

    fn usage(&self) -> Usage {
        let mut u = self.usage.map(|u| u.usage()).unwrap_or_default();
        u.partial = !(self.chunks.is_done() && self.chunks.is_finished());
        u
    }
}
