//! on-demand SSE (`event:message` / `event:heartbeat`, `data:` without a space, `data:[DONE]`)
//! -> OpenAI chat chunks. Events are told apart by `eventType`, never by the SSE event name:
//! `fulfillment` is answer text (content), `*_thinking` is reasoning (`reasoning_content`),
//! `metricsLog` carries usage; `statusLog`, `*_output` and heartbeats add nothing.
//! Invariant: the client sees one terminator: the finish chunk, the usage chunk when asked,
//! `[DONE]`; or one error event when the upstream failed or ended without `[DONE]`. The
//! session is committed only after a clean `[DONE]`.

use sonic_rs::{JsonValueTrait, Value};

use super::dialog::SessionCommit;
use super::{error_message, estimate, metrics_usage};
use crate::codec::sse::Event;
use crate::providers::chat_stream_out::ChatStreamOut;
use crate::providers::StreamHandler;
use crate::usage::Usage;

/// Answer text kept for the session commit; a longer answer is not committed (its next turn
/// opens a new session).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

pub struct OnDemandToOpenAi {
    chunks: ChatStreamOut,
    prompt_chars: usize,
    /// Answer text so far (for the commit and the estimate), up to `MAX_ANSWER_BYTES`.
    answer: String,
    answer_chars: usize,
    reported: Option<Usage>,
    commit: Option<SessionCommit>,
}

impl OnDemandToOpenAi {
    pub fn new(model: &str, include_usage: bool, prompt_chars: usize, commit: Option<SessionCommit>) -> Self {
        OnDemandToOpenAi {
            chunks: ChatStreamOut::new("chatcmpl-ondemand", model, include_usage),
            prompt_chars,
            answer: String::new(),
            answer_chars: 0,
            reported: None,
            commit,
        }
    }

    fn start(&mut self, out: &mut String, message_id: Option<&str>) {
        if self.chunks.is_started() {
            return;
        }
        if let Some(id) = message_id.filter(|id| !id.is_empty()) {
            self.chunks.writer.id = format!("chatcmpl-{id}");
        }
        self.chunks.start(out);
    }

    fn fail(&mut self, message: &str, out: &mut String) {
        if let Some(commit) = self.commit.take() {
            commit.failed();
        }
        self.chunks.fail(out, message);
    }

    /// `[DONE]`: finish chunk, usage chunk when asked, `[DONE]`; the session is committed.
    fn finish(&mut self, out: &mut String) {
        self.chunks.finish(out, "stop");
        let usage = self.usage();
        self.chunks.close(out, &usage);
        if self.reported.is_none() {
            let _ = estimate(self.prompt_chars, self.answer_chars);
        }
        if let Some(commit) = self.commit.take() {
            if self.answer.len() == self.answer_chars {
                commit.answered(&self.answer);
            } else {
                commit.failed();
            }
        }
    }

    fn text(&mut self, out: &mut String, field: &str, text: &str) {
        if text.is_empty() {
            return;
        }
        if field == "content" {
            self.answer_chars += text.len();
            if self.answer_chars <= MAX_ANSWER_BYTES {
                self.answer.push_str(text);
            }
        }
        self.chunks.writer.text_delta(out, field, text);
    }
}

/// The reasoning text of a thinking event: `thinking.delta`, or `thinking` itself as text.
fn thinking_text(v: &Value) -> Option<&str> {
    let t = v.get("thinking")?;
    t.get("delta").and_then(|d| d.as_str()).or_else(|| t.as_str())
}

impl StreamHandler for OnDemandToOpenAi {
    fn on_event(&mut self, event: Event<'_>, out: &mut String) {
        if self.chunks.is_done() {
            return;
        }
        let data = event.data.trim_ascii();
        if data == b"[DONE]" {
            self.finish(out);
            return;
        }
        if data.is_empty() {
            return;
        }
        let Ok(v) = sonic_rs::from_slice::<Value>(data) else {
            return; // not JSON: nothing on-demand documents; dropped
        };
        let kind = v.get("eventType").and_then(|k| k.as_str()).unwrap_or("");
        if kind.eq_ignore_ascii_case("error") || v.get("error").is_some() {
            let message = error_message(200, data);
            self.fail(&message, out);
            return;
        }
        let message_id = v.get("messageId").and_then(|m| m.as_str());
        match kind {
            "fulfillment" => {
                self.start(out, message_id);
                if let Some(text) = v.get("answer").and_then(|a| a.as_str()) {
                    self.text(out, "content", text);
                }
            }
            k if k.ends_with("_thinking") || k == "thinking" => {
                self.start(out, message_id);
                if let Some(text) = thinking_text(&v) {
                    self.text(out, "reasoning_content", text);
                }
            }
            "metricsLog" => {
                let metrics = v.get("publicMetrics").or_else(|| v.get("metrics"));
                let est = estimate_counts(self.prompt_chars, self.answer_chars);
                if let Some(u) = metrics.and_then(|m| metrics_usage(m, est.0, est.1)) {
                    self.reported = Some(u);
                }
            }
            _ => {} // heartbeats, statusLog, planning/step output: no client-visible content
        }
    }

    fn on_end(&mut self, out: &mut String) {
        if !self.chunks.is_done() {
            self.fail("the on-demand stream ended without [DONE]", out);
        }
    }

    fn on_fail(&mut self, message: &str, out: &mut String) {
        if !self.chunks.is_done() {
            self.fail(message, out);
        }
    }

    fn usage(&self) -> Usage {
        let mut u = self.reported.unwrap_or_else(|| {
            let (p, c) = estimate_counts(self.prompt_chars, self.answer_chars);
            Usage {
                prompt_tokens: p,
                completion_tokens: c,
                ..Usage::default()
            }
        });
        u.partial = !(self.chunks.is_done() && self.chunks.is_finished());
        u
    }
}

/// The estimate's counts without logging (see `super::estimate`).
fn estimate_counts(prompt_chars: usize, answer_chars: usize) -> (u64, u64) {
    ((prompt_chars as u64).div_ceil(4), (answer_chars as u64).div_ceil(4))
}
