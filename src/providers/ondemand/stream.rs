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
use crate::providers::openai::{ChunkWriter, DONE};
use crate::providers::transform::openai_error_event;
use crate::providers::{write, StreamHandler};
use crate::usage::Usage;

/// Answer text kept for the session commit; a longer answer is not committed (its next turn
/// opens a new session).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

pub struct OnDemandToOpenAi {
    writer: ChunkWriter,
    include_usage: bool,
    prompt_chars: usize,
    /// Answer text so far (for the commit and the estimate), up to `MAX_ANSWER_BYTES`.
    answer: String,
    answer_chars: usize,
    reported: Option<Usage>,
    commit: Option<SessionCommit>,
    started: bool,
    done: bool,
    /// Ended by `[DONE]` (not by a failure).
    clean: bool,
}

impl OnDemandToOpenAi {
    pub fn new(model: &str, include_usage: bool, prompt_chars: usize, commit: Option<SessionCommit>) -> Self {
        OnDemandToOpenAi {
            writer: ChunkWriter {
                id: "chatcmpl-ondemand".to_owned(),
                model: model.to_owned(),
                created: write::unix_now(),
            },
            include_usage,
            prompt_chars,
            answer: String::new(),
            answer_chars: 0,
            reported: None,
            commit,
            started: false,
            done: false,
            clean: false,
        }
    }

    fn start(&mut self, out: &mut String, message_id: Option<&str>) {
        if self.started {
            return;
        }
        self.started = true;
        if let Some(id) = message_id.filter(|id| !id.is_empty()) {
            self.writer.id = format!("chatcmpl-{id}");
        }
        self.writer
            .chunk(out, "{\"role\":\"assistant\",\"content\":\"\"}", None);
    }

    fn fail(&mut self, message: &str, out: &mut String) {
        self.done = true;
        if let Some(commit) = self.commit.take() {
            commit.failed();
        }
        out.push_str(&String::from_utf8_lossy(&openai_error_event(message)));
    }

    /// `[DONE]`: finish chunk, usage chunk when asked, `[DONE]`; the session is committed.
    fn finish(&mut self, out: &mut String) {
        self.done = true;
        self.clean = true;
        self.start(out, None);
        self.writer.chunk(out, "{}", Some("stop"));
        if self.include_usage {
            let usage = self.usage();
            self.writer.usage_chunk(out, &usage);
        }
        out.push_str(DONE);
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
        self.writer.text_delta(out, field, text);
    }
}

/// The reasoning text of a thinking event: `thinking.delta`, or `thinking` itself as text.
fn thinking_text(v: &Value) -> Option<&str> {
    let t = v.get("thinking")?;
    t.get("delta").and_then(|d| d.as_str()).or_else(|| t.as_str())
}

impl StreamHandler for OnDemandToOpenAi {
    fn on_event(&mut self, event: Event<'_>, out: &mut String) {
        if self.done {
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
        if !self.done {
            self.fail("the on-demand stream ended without [DONE]", out);
        }
    }

    fn on_fail(&mut self, message: &str, out: &mut String) {
        if !self.done {
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
        u.partial = !self.clean;
        u
    }
}

/// The estimate's counts without logging (see `super::estimate`).
fn estimate_counts(prompt_chars: usize, answer_chars: usize) -> (u64, u64) {
    ((prompt_chars as u64).div_ceil(4), (answer_chars as u64).div_ceil(4))
}
