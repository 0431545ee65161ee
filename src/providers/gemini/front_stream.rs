//! OpenAI chat chunks -> Gemini SSE (`streamGenerateContent?alt=sse`), for the Gemini front door
//! served by other kinds: each content or reasoning delta becomes one chunk with a text part;
//! tool calls, which OpenAI streams as argument fragments, are gathered and sent whole (as
//! Gemini sends them) in the last chunk, which carries the `finishReason` and `usageMetadata`.
//! Gemini streams end at the close, so the last chunk waits for OpenAI's usage chunk or `[DONE]`.
//! Invariant: the stream ends with exactly one last chunk or one `{"error":...}` event; gathered
//! tool arguments are bounded by `MAX_CALL_BYTES` (beyond it the stream ends with the error).

use super::door::error_event;
use super::front_response::{candidate, tail, write_usage, Parts};
use std::ops::ControlFlow;

use crate::codec::sse::Event;
use crate::providers::chat_stream_in::{self, ChatDeltas, ChatEvent};
use crate::providers::openai::ToolCallDelta;
use crate::providers::StreamHandler;
use crate::usage::Usage;

/// Most bytes of tool-call arguments one stream may gather before its last chunk.
pub const MAX_CALL_BYTES: usize = 8 * 1024 * 1024;

/// One tool call being gathered: OpenAI index, id, name, arguments so far.
struct Call {
    index: u32,
    id: Option<String>,
    name: Option<String>,
    arguments: String,
}

pub struct OpenAiToGemini {
    model: String,
    id: String,
    max_depth: usize,
    calls: Vec<Call>,
    call_bytes: usize,
    finish: Option<String>,
    usage: Usage,
    /// The stream ended: after its last chunk or its error event nothing more goes out.
    done: bool,
    /// It ended with its last chunk (usage is then not partial).
    complete: bool,
}

impl OpenAiToGemini {
    /// `max_depth`: `server.max_json_depth`, the bound on gathered tool arguments.
    pub fn new(model: &str, max_depth: usize) -> Self {
        OpenAiToGemini {
            model: model.to_owned(),
            id: String::new(),
            max_depth,
            calls: Vec::new(),
            call_bytes: 0,
            finish: None,
            usage: Usage::default(),
            done: false,
            complete: false,
        }
    }

    fn chunk(&self, out: &mut String, parts: &str, finish: Option<&str>, usage: Option<&Usage>) {
        out.push_str("data: {\"candidates\":[");
        candidate(out, 0, parts, finish);
        out.push(']');
        if let Some(usage) = usage {
            out.push_str(",\"usageMetadata\":");
            write_usage(out, usage);
        }
        tail(out, &self.model, &self.id);
        out.push_str("}\n\n");
    }

    fn text(&self, out: &mut String, text: &str, thought: bool) {
        let mut parts = Parts::default();
        parts.text(text, thought);
        if !parts.is_empty() {
            self.chunk(out, &parts.finish(), None, None);
        }
    }

    /// Adds one fragment; `false` when the gathered arguments would pass `MAX_CALL_BYTES`.
    fn gather(&mut self, delta: ToolCallDelta) -> bool {
        let index = delta.index.unwrap_or(0);
        let function = delta.function.unwrap_or_default();
        let fragment = function.arguments.unwrap_or_default();
        self.call_bytes += fragment.len();
        if self.call_bytes > MAX_CALL_BYTES {
            return false;
        }
        let call = match self.calls.iter_mut().position(|c| c.index == index) {
            Some(at) => &mut self.calls[at],
            None => {
                self.calls.push(Call {
                    index,
                    id: None,
                    name: None,
                    arguments: String::new(),
                });
                let last = self.calls.len() - 1;
                &mut self.calls[last]
            }
        };
        call.id = call.id.take().or(delta.id);
        call.name = call.name.take().or(function.name);
        call.arguments.push_str(&fragment);
        true
    }

    /// The last chunk: gathered calls, the finish reason, usage.
    fn last(&mut self, out: &mut String) {
        self.done = true;
        self.complete = true;
        let mut parts = Parts::default();
        for call in &self.calls {
            parts.call_parts(
                call.id.as_deref(),
                call.name.as_deref(),
                &call.arguments,
                self.max_depth,
            );
        }
        let finish = self.finish.clone().unwrap_or_else(|| "stop".to_owned());
        let usage = self.usage.reported.then_some(self.usage);
        self.chunk(out, &parts.finish(), Some(&finish), usage.as_ref());
    }

    fn error(&mut self, out: &mut String, code: u16, message: &str) {
        self.done = true;
        out.push_str(&error_event(code, message));
    }
}

impl StreamHandler for OpenAiToGemini {
    fn on_event(&mut self, event: Event<'_>, out: &mut String) {
        if self.done {
            return;
        }
        match chat_stream_in::read_event(event.data) {
            ChatEvent::Done => self.last(out),
            ChatEvent::Failed { message, .. } => self.error(out, 502, &message),
            ChatEvent::Chunk(chunk) => {
                if self.id.is_empty() && !chunk.id.is_empty() {
                    self.id = chunk.id;
                }
                if !chunk.model.is_empty() {
                    self.model = chunk.model;
                }
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
            self.last(out);
        } else {
            self.error(out, 502, "upstream stream ended before it finished");
        }
    }

    fn on_fail(&mut self, message: &str, out: &mut String) {
        if !self.done {
            self.error(out, 503, message);
        }
    }

    fn usage(&self) -> Usage {
        let mut u = self.usage;
        u.partial = !self.complete;
        u
    }
}

impl ChatDeltas for OpenAiToGemini {
    fn on_text(&mut self, out: &mut String, reasoning: bool, text: &str) {
        self.text(out, text, reasoning);
    }

    fn on_tool_call(&mut self, out: &mut String, call: ToolCallDelta) -> ControlFlow<()> {
        if self.gather(call) {
            return ControlFlow::Continue(());
        }
        let message = format!("the upstream's tool calls passed {MAX_CALL_BYTES} bytes");
        self.error(out, 502, &message);
        ControlFlow::Break(())
    }

    fn on_finish(&mut self, _: &mut String, reason: String) -> ControlFlow<()> {
        self.finish = Some(reason);
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::transform::ResponseTransform;
    use crate::providers::SseTranslator;
    use bytes::Bytes;
    use sonic_rs::JsonValueTrait;

    fn run(stream: &str) -> (Vec<sonic_rs::Value>, Usage) {
        let mut t = SseTranslator::new(OpenAiToGemini::new("m", 128), 128);
        let mut out = Vec::new();
        for piece in stream.as_bytes().chunks(7) {
            t.piece(Bytes::copy_from_slice(piece))
                .iter()
                .for_each(|b| out.extend_from_slice(b));
        }
        t.end().iter().for_each(|b| out.extend_from_slice(b));
        let text = String::from_utf8(out).unwrap();
        let events = text
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| sonic_rs::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
            .collect();
        (events, t.usage())
    }

    #[test]
    fn text_then_gathered_calls_then_finish_with_usage() {
        let stream = "data: {\"id\":\"chatcmpl-1\",\"model\":\"gpt-x\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":2}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n";
        let (events, usage) = run(stream);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(
            events[0]["candidates"][0]["content"]["parts"][0]["text"].as_str(),
            Some("Hi")
        );
        assert_eq!(events[0]["responseId"].as_str(), Some("1"));
        let last = &events[1];
        let call = &last["candidates"][0]["content"]["parts"][0]["functionCall"];
        assert_eq!(
            (call["name"].as_str(), call["args"]["a"].as_u64()),
            (Some("f"), Some(2))
        );
        assert_eq!(last["candidates"][0]["finishReason"].as_str(), Some("STOP"));
        assert_eq!(last["usageMetadata"]["totalTokenCount"].as_u64(), Some(7));
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens, usage.partial),
            (4, 3, false)
        );
    }

    #[test]
    fn a_cut_stream_ends_in_one_error_event() {
        let (events, usage) = run("data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n");
        assert_eq!(events.len(), 2);
        assert_eq!(events[1]["error"]["code"].as_u64(), Some(502));
        assert!(usage.partial);
    }
}
