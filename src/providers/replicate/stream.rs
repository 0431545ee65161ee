//! Replicate's `urls.stream` SSE -> OpenAI chat chunks: each `output` event's data (plain text,
//! multi-line data re-joined with `\n` by the splitter, never trimmed) is a content delta;
//! `done` with `{}` finishes the answer; `done` with a `reason` or an `error` event ends the
//! stream with an error event; `logs` are dropped. The stream carries no usage: once it ended,
//! the relay fetches the prediction (`urls.get`) and its `metrics` give the usage chunk.
//! Invariant: exactly one terminator (`[DONE]` or an error event) is written, and a stream that
//! closes before `done` ends in an error event, never a clean-looking `[DONE]`.

use super::{error_message, Prediction};
use crate::codec::sse::Event;
use crate::providers::chat_stream_out::ChatStreamOut;
use crate::providers::StreamHandler;
use crate::usage::Usage;

pub struct ReplicateToOpenAi {
    chunks: ChatStreamOut,
    /// The prediction's `urls.get`, read once for usage after `done`.
    record_url: Option<String>,
    fetched: bool,
    usage: Option<Usage>,
}

impl ReplicateToOpenAi {
    pub fn new(model: &str, include_usage: bool, record_url: Option<String>) -> Self {
        ReplicateToOpenAi {
            chunks: ChatStreamOut::new("chatcmpl-replicate", model, include_usage),
            record_url,
            fetched: false,
            usage: None,
        }
    }
}

impl StreamHandler for ReplicateToOpenAi {
    fn is_json(&self, event: Event<'_>) -> bool {
        !matches!(event.event, b"output" | b"logs")
    }

    fn on_event(&mut self, event: Event<'_>, out: &mut String) {
        if self.chunks.is_done() || self.chunks.is_finished() {
            return;
        }
        match event.event {
            b"output" => {
                self.chunks.start(out);
                if !event.data.is_empty() {
                    let text = String::from_utf8_lossy(event.data);
                    self.chunks.writer.text_delta(out, "content", &text);
                }
            }
            b"done" => {
                #[derive(serde::Deserialize)]
                struct Done {
                    #[serde(default)]
                    reason: Option<String>,
                }
                let reason = sonic_rs::from_slice::<Done>(event.data).ok().and_then(|d| d.reason);
                match reason.filter(|r| !r.is_empty()) {
                    Some(reason) => self.chunks.fail(out, &format!("the prediction ended: {reason}")),
                    None => self.chunks.finish(out, "stop"),
                }
            }
            b"error" => {
                let message =
                    error_message(event.data).unwrap_or_else(|| String::from_utf8_lossy(event.data).into_owned());
                self.chunks.fail(out, &format!("the prediction failed: {message}"));
            }
            _ => {}
        }
    }

    fn on_end(&mut self, out: &mut String) {
        self.chunks
            .close_at_end(out, &self.usage.unwrap_or_default(), "a done event");
    }

    fn on_fail(&mut self, message: &str, out: &mut String) {
        self.chunks.fail(out, message);
    }

    fn fetch_at_end(&self) -> Option<String> {
        self.record_url
            .clone()
            .filter(|_| self.chunks.is_finished() && !self.chunks.is_done() && !self.fetched)
    }

    fn fetched(&mut self, body: Option<&[u8]>) {
        self.fetched = true;
        let prediction = body.and_then(|b| sonic_rs::from_slice::<Prediction>(b).ok());
        self.usage = prediction.and_then(|p| p.metrics).and_then(|m| m.usage());
    }

    fn usage(&self) -> Usage {
        let mut u = self.usage.unwrap_or_default();
        u.partial = !(self.chunks.is_done() && self.chunks.is_finished());
        u
    }
}
