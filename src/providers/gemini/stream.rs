//! Gemini SSE (`:streamGenerateContent?alt=sse`, LF or CRLF framed) -> OpenAI chat chunks:
//! text and thought parts as content / `reasoning_content` deltas, each function call as one
//! complete tool-call delta, the finish chunk on `finishReason`, then (at the upstream's close,
//! Gemini's only terminator) the usage chunk when asked for and `[DONE]`.
//! Invariant: usage is the last `usageMetadata` seen (cumulative, edge case 1), and a stream that
//! closes without any `finishReason` ends in an error event, not a clean `[DONE]`.

use super::{call_id, finish_reason, parse_error, GenerateResponse, UsageMetadata};
use crate::codec::sse::Event;
use crate::providers::chat_stream_out::ChatStreamOut;
use crate::providers::StreamHandler;
use crate::usage::Usage;

pub struct GeminiToOpenAi {
    chunks: ChatStreamOut,
    usage: Option<UsageMetadata>,
    tool_calls: u32,
    /// What tool-call ids are made unique with: the `responseId`, else a process-unique tag.
    answer_id: String,
}

impl GeminiToOpenAi {
    pub fn new(model: &str, include_usage: bool) -> Self {
        GeminiToOpenAi {
            chunks: ChatStreamOut::new("chatcmpl-gemini", model, include_usage),
            usage: None,
            tool_calls: 0,
            answer_id: String::new(),
        }
    }
}

impl StreamHandler for GeminiToOpenAi {
    fn on_event(&mut self, event: Event<'_>, out: &mut String) {
        if self.chunks.is_done() {
            return;
        }
        let Ok(r) = sonic_rs::from_slice::<GenerateResponse>(event.data) else {
            // A bare error object after the stream started (python-genai tolerates these).
            if let Some(e) = parse_error(event.data) {
                self.chunks
                    .upstream_error(out, &e.message, e.status.as_deref().unwrap_or("upstream_error"));
            }
            return;
        };
        if let Some(e) = r.error {
            self.chunks
                .upstream_error(out, &e.message, e.status.as_deref().unwrap_or("upstream_error"));
            return;
        }
        if let Some(u) = r.usage_metadata {
            self.usage = Some(u);
        }
        if !self.chunks.is_started() {
            if let Some(id) = &r.response_id {
                self.chunks.writer.id = format!("chatcmpl-{id}");
            }
            self.answer_id = r.response_id.clone().unwrap_or_else(|| call_id(None, None, 0));
            if let Some(m) = r.model_version.filter(|m| !m.is_empty()) {
                self.chunks.writer.model = m;
            }
            self.chunks.start(out);
        }
        let blocked = r.prompt_feedback.and_then(|f| f.block_reason).is_some();
        let Some(candidate) = r.candidates.into_iter().next() else {
            if blocked && !self.chunks.is_finished() {
                self.chunks.finish(out, "content_filter");
            }
            return;
        };
        for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
            if let Some(fc) = part.function_call {
                let k = self.tool_calls;
                self.tool_calls += 1;
                let id = call_id(fc.id, Some(&self.answer_id), k as usize);
                let id = super::with_signature(id, part.thought_signature.as_deref());
                let args = fc
                    .args
                    .and_then(|a| sonic_rs::to_string(&a).ok())
                    .unwrap_or_else(|| "{}".to_owned());
                self.chunks.writer.tool_start(out, k, &id, &fc.name, &args);
            } else if let Some(t) = part.text.filter(|t| !t.is_empty()) {
                let field = if part.thought == Some(true) {
                    "reasoning_content"
                } else {
                    "content"
                };
                self.chunks.writer.text_delta(out, field, &t);
            }
        }
        if let Some(reason) = candidate.finish_reason {
            if !self.chunks.is_finished() {
                self.chunks.finish(out, finish_reason(&reason, self.tool_calls > 0));
            }
        }
    }

    fn on_end(&mut self, out: &mut String) {
        let usage = self.usage.map(|u| u.usage()).unwrap_or_default();
        self.chunks.close_at_end(out, &usage, "a finishReason");
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
