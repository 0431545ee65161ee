//! OpenAI chat chunks -> Anthropic SSE, for `/v1/messages` clients served by OpenAI-compatible
//! upstreams (provider-formats.md 7.10, reverse table): `message_start`, one content block per
//! text run or tool call, `message_delta` with the stop reason and usage, `message_stop`.
//! Usage: OpenAI reports tokens only in the last chunk, so `message_start` carries
//! `input_tokens: 0` and `message_delta.usage` carries the real input, cache-read and output
//! counts (the Anthropic SDKs take them from there; edge case 12).
//! Invariant: blocks open and close in order with consecutive indexes, and the stream ends with
//! exactly one `message_stop` or one `error` event.

use super::response::anthropic_id;
use super::{error_body, error_type_for_name, push_event, stop_reason, write_usage};
use std::ops::ControlFlow;

use crate::codec::sse::Event;
use crate::providers::chat_stream_in::{self, ChatDeltas, ChatEvent};
use crate::providers::openai::ToolCallDelta;
use crate::providers::write;
use crate::providers::StreamHandler;
use crate::usage::Usage;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Open {
    None,
    Text,
    Thinking,
    /// A tool call, keyed by its OpenAI index and id (edge case 5).
    Tool {
        index: u32,
        id: String,
    },
}

pub struct OpenAiToAnthropic {
    model: String,
    open: Open,
    /// Index of the next content block.
    next_block: u32,
    started: bool,
    finish: Option<String>,
    usage: Usage,
    done: bool,
}

impl OpenAiToAnthropic {
    pub fn new(model: &str) -> Self {
        OpenAiToAnthropic {
            model: model.to_owned(),
            open: Open::None,
            next_block: 0,
            started: false,
            finish: None,
            usage: Usage::default(),
            done: false,
        }
    }

    fn start(&mut self, out: &mut String, id: &str, model: &str) {
        if self.started {
            return;
        }
        self.started = true;
        let mut data = String::with_capacity(256);
        data.push_str("{\"type\":\"message_start\",\"message\":{");
        write::field_str(&mut data, "id", &anthropic_id(if id.is_empty() { "rotor" } else { id }));
        data.push_str(",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],");
        write::field_str(&mut data, "model", if model.is_empty() { &self.model } else { model });
        data.push_str(
            ",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}}",
        );
        push_event(out, "message_start", &data);
    }

    fn close(&mut self, out: &mut String) {
        if self.open == Open::None {
            return;
        }
        self.open = Open::None;
        let mut data = String::from("{\"type\":\"content_block_stop\",\"index\":");
        write::number(&mut data, u64::from(self.next_block.saturating_sub(1)));
        data.push('}');
        push_event(out, "content_block_stop", &data);
    }

    fn open_block(&mut self, out: &mut String, open: Open, block: &str) {
        self.close(out);
        self.open = open;
        let mut data = String::from("{\"type\":\"content_block_start\",\"index\":");
        write::number(&mut data, u64::from(self.next_block));
        data.push_str(",\"content_block\":");
        data.push_str(block);
        data.push('}');
        self.next_block += 1;
        push_event(out, "content_block_start", &data);
    }

    fn delta(&self, out: &mut String, kind: &str, field: &str, value: &str) {
        let mut data = String::with_capacity(96 + value.len());
        data.push_str("{\"type\":\"content_block_delta\",\"index\":");
        write::number(&mut data, u64::from(self.next_block.saturating_sub(1)));
        data.push_str(",\"delta\":{\"type\":\"");
        data.push_str(kind);
        data.push_str("\",");
        write::field_str(&mut data, field, value);
        data.push_str("}}");
        push_event(out, "content_block_delta", &data);
    }

    fn text(&mut self, out: &mut String, thinking: bool, text: &str) {
        if text.is_empty() {
            return;
        }
        let (want, block, kind, field) = if thinking {
            (
                Open::Thinking,
                "{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}",
                "thinking_delta",
                "thinking",
            )
        } else {
            (Open::Text, "{\"type\":\"text\",\"text\":\"\"}", "text_delta", "text")
        };
        if self.open != want {
            self.open_block(out, want, block);
        }
        self.delta(out, kind, field, text);
    }

    fn tool(&mut self, out: &mut String, call: ToolCallDelta) {
        let index = call.index.unwrap_or(0);
        let function = call.function.unwrap_or_default();
        let same = match (&self.open, &call.id) {
            (Open::Tool { index: i, id }, new_id) => *i == index && new_id.as_ref().is_none_or(|n| n == id),
            _ => false,
        };
        if !same {
            let Some(id) = call.id.filter(|id| !id.is_empty()) else {
                // A fragment for a call whose block is closed: Anthropic blocks cannot reopen.
                return;
            };
            let mut block = String::from("{\"type\":\"tool_use\",");
            write::field_str(&mut block, "id", &id);
            block.push(',');
            write::field_str(&mut block, "name", function.name.as_deref().unwrap_or(""));
            block.push_str(",\"input\":{}}");
            self.open_block(out, Open::Tool { index, id }, &block);
        }
        if let Some(args) = function.arguments.filter(|a| !a.is_empty()) {
            self.delta(out, "input_json_delta", "partial_json", &args);
        }
    }

    fn stop(&mut self, out: &mut String) {
        self.close(out);
        let mut data = String::from("{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":");
        write::string(&mut data, stop_reason(self.finish.as_deref().unwrap_or("stop")));
        data.push_str(",\"stop_sequence\":null},\"usage\":");
        write_usage(&mut data, &self.usage);
        data.push('}');
        push_event(out, "message_delta", &data);
        push_event(out, "message_stop", "{\"type\":\"message_stop\"}");
        self.done = true;
    }

    fn error(&mut self, out: &mut String, kind: &str, message: &str) {
        self.done = true;
        push_event(out, "error", &error_body(kind, message));
    }
}

impl StreamHandler for OpenAiToAnthropic {
    fn on_event(&mut self, event: Event<'_>, out: &mut String) {
        if self.done {
            return;
        }
        match chat_stream_in::read_event(event.data) {
            ChatEvent::Done => {
                self.start(out, "", "");
                self.stop(out);
            }
            ChatEvent::Failed { message, kind } => {
                // The upstream's meaning survives the hub: an overload stays `overloaded_error`.
                let kind = error_type_for_name(kind.as_deref().unwrap_or(""));
                self.error(out, kind, &message);
            }
            ChatEvent::Chunk(chunk) => {
                self.start(out, &chunk.id, &chunk.model);
                if let Some(u) = chunk.usage {
                    self.usage = u.to_usage();
                }
                chat_stream_in::walk(self, chunk.choices, out);
            }
            ChatEvent::Unreadable => {}
        }
    }

    fn on_end(&mut self, out: &mut String) {
        if self.done {
            return;
        }
        if self.finish.is_some() {
            // No `[DONE]` but a finish reason: a complete answer from a lax upstream.
            self.start(out, "", "");
            self.stop(out);
        } else {
            self.error(out, "api_error", "upstream stream ended before it finished");
        }
    }

    fn on_fail(&mut self, message: &str, out: &mut String) {
        if self.done {
            return; // the stream already ended with its one terminator
        }
        self.error(out, "api_error", message);
    }

    fn usage(&self) -> Usage {
        let mut u = self.usage;
        u.partial = !self.done;
        u
    }
}

impl ChatDeltas for OpenAiToAnthropic {
    fn on_text(&mut self, out: &mut String, reasoning: bool, text: &str) {
        self.text(out, reasoning, text);
    }

    fn on_tool_call(&mut self, out: &mut String, call: ToolCallDelta) -> ControlFlow<()> {
        self.tool(out, call);
        ControlFlow::Continue(())
    }

    fn on_finish(&mut self, out: &mut String, reason: String) -> ControlFlow<()> {
        self.close(out);
        self.finish = Some(reason);
        ControlFlow::Continue(())
    }
}
