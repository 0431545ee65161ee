//! Gemini SSE (`:streamGenerateContent?alt=sse`, LF or CRLF framed) -> OpenAI chat chunks:
//! text and thought parts as content / `reasoning_content` deltas, each function call as one
//! complete tool-call delta, the finish chunk on `finishReason`, then (at the upstream's close,
//! Gemini's only terminator) the usage chunk when asked for and `[DONE]`.
//! Invariant: usage is the last `usageMetadata` seen (cumulative, edge case 1), and a stream that
//! closes without any `finishReason` ends in an error event, not a clean `[DONE]`.

use super::{call_id, finish_reason, parse_error, GenerateResponse, UsageMetadata};
use crate::codec::sse::Event;
use crate::providers::openai::{self, ChunkWriter, DONE};
use crate::providers::transform::openai_error_event;
use crate::providers::write;
use crate::providers::StreamHandler;
use crate::usage::Usage;

pub struct GeminiToOpenAi {
    writer: ChunkWriter,
    include_usage: bool,
    usage: Option<UsageMetadata>,
    tool_calls: u32,
    /// What tool-call ids are made unique with: the `responseId`, else a process-unique tag.
    answer_id: String,
    started: bool,
    finished: bool,
    done: bool,
}

impl GeminiToOpenAi {
    pub fn new(model: &str, include_usage: bool) -> Self {
        GeminiToOpenAi {
            writer: ChunkWriter {
                id: "chatcmpl-gemini".to_owned(),
                model: model.to_owned(),
                created: write::unix_now(),
            },
            include_usage,
            usage: None,
            tool_calls: 0,
            answer_id: String::new(),
            started: false,
            finished: false,
            done: false,
        }
    }

    fn error(&mut self, out: &mut String, message: &str, kind: &str) {
        self.done = true;
        out.push_str("data: ");
        out.push_str(&openai::error_body(message, kind));
        out.push_str("\n\n");
    }
}

impl StreamHandler for GeminiToOpenAi {
    fn on_event(&mut self, event: Event<'_>, out: &mut String) {
        if self.done {
            return;
        }
        let Ok(r) = sonic_rs::from_slice::<GenerateResponse>(event.data) else {
            // A bare error object after the stream started (python-genai tolerates these).
            if let Some(e) = parse_error(event.data) {
                self.error(out, &e.message, e.status.as_deref().unwrap_or("upstream_error"));
            }
            return;
        };
        if let Some(e) = r.error {
            self.error(out, &e.message, e.status.as_deref().unwrap_or("upstream_error"));
            return;
        }
        if let Some(u) = r.usage_metadata {
            self.usage = Some(u);
        }
        if !self.started {
            self.started = true;
            if let Some(id) = &r.response_id {
                self.writer.id = format!("chatcmpl-{id}");
            }
            self.answer_id = r.response_id.clone().unwrap_or_else(|| call_id(None, None, 0));
            if let Some(m) = r.model_version.filter(|m| !m.is_empty()) {
                self.writer.model = m;
            }
            self.writer
                .chunk(out, "{\"role\":\"assistant\",\"content\":\"\"}", None);
        }
        let blocked = r.prompt_feedback.and_then(|f| f.block_reason).is_some();
        let Some(candidate) = r.candidates.into_iter().next() else {
            if blocked && !self.finished {
                self.finished = true;
                self.writer.chunk(out, "{}", Some("content_filter"));
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
                self.writer.tool_start(out, k, &id, &fc.name, &args);
            } else if let Some(t) = part.text.filter(|t| !t.is_empty()) {
                let field = if part.thought == Some(true) {
                    "reasoning_content"
                } else {
                    "content"
                };
                self.writer.text_delta(out, field, &t);
            }
        }
        if let Some(reason) = candidate.finish_reason {
            if !self.finished {
                self.finished = true;
                self.writer
                    .chunk(out, "{}", Some(finish_reason(&reason, self.tool_calls > 0)));
            }
        }
    }

    fn on_end(&mut self, out: &mut String) {
        if self.done {
            return;
        }
        self.done = true;
        if !self.finished {
            out.push_str(&String::from_utf8_lossy(&openai_error_event(
                "upstream stream ended without a finishReason",
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
            return; // the stream already ended with its one terminator
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
