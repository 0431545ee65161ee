//! Anthropic SSE -> OpenAI chat chunks, event by event (provider-formats.md 7.10): text and
//! thinking deltas, tool calls (OpenAI `index` counts tool calls only, not content blocks),
//! the finish chunk, the usage chunk when the client asked for it, then `[DONE]`.
//! Invariant: the client sees exactly one terminator: `[DONE]` after `message_stop`, or an error
//! event when the upstream failed or ended without `message_stop`.

use serde::Deserialize;
use smallvec::SmallVec;

use super::{finish_reason, Block, ErrorDetail, MessagesResponse, Tally, WireUsage};
use crate::codec::sse::Event;
use crate::providers::chat_stream_out::ChatStreamOut;
use crate::providers::StreamHandler;
use crate::usage::Usage;

#[derive(Debug, Default, Deserialize)]
struct StreamEvent {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: Option<MessagesResponse>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    content_block: Option<Block>,
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<ErrorDetail>,
}

#[derive(Debug, Default, Deserialize)]
struct Delta {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    partial_json: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
}

pub struct AnthropicToOpenAi {
    chunks: ChatStreamOut,
    tally: Tally,
    /// Anthropic block index -> OpenAI tool-call index.
    tools: SmallVec<[(u64, u32); 4]>,
    next_tool: u32,
    stop_reason: Option<String>,
}

impl AnthropicToOpenAi {
    pub fn new(model: &str, include_usage: bool) -> Self {
        AnthropicToOpenAi {
            chunks: ChatStreamOut::new("chatcmpl-rotor", model, include_usage),
            tally: Tally::default(),
            tools: SmallVec::new(),
            next_tool: 0,
            stop_reason: None,
        }
    }

    fn on_event(&mut self, event: Event<'_>, out: &mut String) {
        if self.chunks.is_done() {
            return;
        }
        let Ok(ev) = sonic_rs::from_slice::<StreamEvent>(event.data) else {
            return;
        };
        match ev.kind.as_str() {
            "message_start" => {
                if let Some(m) = ev.message {
                    if !m.id.is_empty() {
                        self.chunks.writer.id = m.id;
                    }
                    if !m.model.is_empty() {
                        self.chunks.writer.model = m.model;
                    }
                    if let Some(u) = &m.usage {
                        self.tally.apply(u);
                    }
                }
                self.chunks.start(out);
            }
            "content_block_start" => {
                self.chunks.start(out);
                let Some(block) = ev.content_block.filter(|b| b.kind == "tool_use") else {
                    return;
                };
                let k = self.next_tool;
                self.next_tool += 1;
                self.tools.push((ev.index.unwrap_or(u64::MAX), k));
                let id = block.id.unwrap_or_default();
                let name = block.name.unwrap_or_default();
                self.chunks.writer.tool_start(out, k, &id, &name, "");
            }
            "content_block_delta" => {
                self.chunks.start(out);
                let Some(delta) = ev.delta else { return };
                match delta.kind.as_str() {
                    "text_delta" => {
                        let text = delta.text.unwrap_or_default();
                        if !text.is_empty() {
                            self.chunks.writer.text_delta(out, "content", &text);
                        }
                    }
                    "thinking_delta" => {
                        let text = delta.thinking.unwrap_or_default();
                        if !text.is_empty() {
                            self.chunks.writer.text_delta(out, "reasoning_content", &text);
                        }
                    }
                    "input_json_delta" => {
                        let fragment = delta.partial_json.unwrap_or_default();
                        let index = ev.index.unwrap_or(u64::MAX);
                        let tool = self.tools.iter().find(|(i, _)| *i == index).map(|(_, k)| *k);
                        if let (Some(k), false) = (tool, fragment.is_empty()) {
                            self.chunks.writer.tool_args(out, k, &fragment);
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = ev.delta.and_then(|d| d.stop_reason) {
                    self.stop_reason = Some(reason);
                }
                if let Some(u) = &ev.usage {
                    self.tally.apply(u);
                }
            }
            "message_stop" => {
                let finish = finish_reason(self.stop_reason.as_deref().unwrap_or("end_turn"));
                self.chunks.finish(out, finish);
                self.chunks.close(out, &self.tally.usage());
            }
            "error" => {
                let e = ev.error.unwrap_or_default();
                self.chunks.upstream_error(out, &e.message, &e.kind);
            }
            _ => {}
        }
    }
}

impl StreamHandler for AnthropicToOpenAi {
    fn on_event(&mut self, event: Event<'_>, out: &mut String) {
        AnthropicToOpenAi::on_event(self, event, out);
    }

    fn on_end(&mut self, out: &mut String) {
        self.chunks.fail(out, "upstream stream ended before message_stop");
    }

    fn on_fail(&mut self, message: &str, out: &mut String) {
        self.chunks.fail(out, message);
    }

    fn usage(&self) -> Usage {
        let mut u = self.tally.usage();
        u.partial = !(self.chunks.is_done() && self.chunks.is_finished());
        u
    }
}
