//! The OpenAI side of a stream translated into `chat.completion.chunk` events (Anthropic,
//! Gemini, Cohere, Replicate and on-demand upstreams): the chunk writer and the ending every one
//! of those translators keeps the same way, held once here.
//! Invariant: the role chunk goes out once, before any other chunk of the translator's, and the
//! stream ends with exactly one terminator, `[DONE]` (after the usage chunk when the client asked
//! for it) or one error event; nothing is written after it.

use super::openai::{self, ChunkWriter, DONE};
use super::transform::push_openai_error_event;
use super::write;
use crate::usage::Usage;

pub struct ChatStreamOut {
    pub writer: ChunkWriter,
    include_usage: bool,
    started: bool,
    finished: bool,
    done: bool,
}

impl ChatStreamOut {
    /// `id` is the chunks' id until the upstream names its answer (`writer.id`).
    pub fn new(id: &str, model: &str, include_usage: bool) -> Self {
        ChatStreamOut {
            writer: ChunkWriter {
                id: id.to_owned(),
                model: model.to_owned(),
                created: write::unix_now(),
            },
            include_usage,
            started: false,
            finished: false,
            done: false,
        }
    }

    /// A terminator has been written.
    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn is_started(&self) -> bool {
        self.started
    }

    /// The finish chunk has been written.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The role chunk, once.
    pub fn start(&mut self, out: &mut String) {
        if !self.started {
            self.started = true;
            self.writer
                .chunk(out, "{\"role\":\"assistant\",\"content\":\"\"}", None);
        }
    }

    /// The chunk with the finish reason (after the role chunk, if none went out yet).
    pub fn finish(&mut self, out: &mut String, reason: &str) {
        self.start(out);
        self.finished = true;
        self.writer.chunk(out, "{}", Some(reason));
    }

    /// Ends cleanly: the usage chunk when the client asked for it, then `[DONE]`.
    pub fn close(&mut self, out: &mut String, usage: &Usage) {
        if self.done {
            return;
        }
        self.done = true;
        if self.include_usage {
            self.writer.usage_chunk(out, usage);
        }
        out.push_str(DONE);
    }

    /// At the upstream's close, for upstreams whose only terminator is the close: `[DONE]` after
    /// a finish chunk, else an error event saying what never came (`missing`).
    pub fn close_at_end(&mut self, out: &mut String, usage: &Usage, missing: &str) {
        if self.finished {
            self.close(out, usage);
        } else {
            self.fail(out, &format!("upstream stream ended without {missing}"));
        }
    }

    /// Ends in rotor's error event (`stream_interrupted`) unless a terminator went out already.
    pub fn fail(&mut self, out: &mut String, message: &str) {
        if !self.done {
            self.done = true;
            push_openai_error_event(out, message);
        }
    }

    /// Ends in an error event with the upstream's own message and type.
    pub fn upstream_error(&mut self, out: &mut String, message: &str, kind: &str) {
        if !self.done {
            self.done = true;
            out.push_str("data: ");
            out.push_str(&openai::error_body(message, kind));
            out.push_str("\n\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage() -> Usage {
        Usage {
            prompt_tokens: 3,
            completion_tokens: 5,
            ..Usage::default()
        }
    }

    #[test]
    fn a_finished_stream_closes_with_usage_then_done_and_nothing_after() {
        let mut s = ChatStreamOut::new("chatcmpl-x", "m", true);
        let mut out = String::new();
        s.finish(&mut out, "stop");
        s.close_at_end(&mut out, &usage(), "a finish");
        s.fail(&mut out, "late");
        s.close(&mut out, &usage());
        assert_eq!(out.matches("\"role\":\"assistant\"").count(), 1);
        assert!(out.contains("\"finish_reason\":\"stop\""));
        assert!(out.contains("\"prompt_tokens\":3"));
        assert!(out.ends_with(DONE), "{out}");
        assert_eq!(out.matches(DONE).count(), 1);
        assert!(!out.contains("error"));
        assert!(s.is_done() && s.is_finished());
    }

    #[test]
    fn an_unfinished_stream_ends_in_one_error_event_naming_what_never_came() {
        let mut s = ChatStreamOut::new("chatcmpl-x", "m", true);
        let mut out = String::new();
        s.start(&mut out);
        s.close_at_end(&mut out, &usage(), "a finishReason");
        s.upstream_error(&mut out, "again", "server_error");
        assert!(out.contains("upstream stream ended without a finishReason"), "{out}");
        assert!(out.contains("\"code\":\"stream_interrupted\""));
        assert!(!out.contains(DONE) && !out.contains("again"));
        assert_eq!(out.matches("\"error\"").count(), 1);
    }

    #[test]
    fn usage_is_left_out_unless_asked_and_upstream_errors_keep_their_type() {
        let mut s = ChatStreamOut::new("chatcmpl-x", "m", false);
        let mut out = String::new();
        s.finish(&mut out, "length");
        s.close(&mut out, &usage());
        assert!(!out.contains("\"usage\""));
        let mut e = ChatStreamOut::new("chatcmpl-y", "m", false);
        let mut out = String::new();
        e.upstream_error(&mut out, "slow down", "overloaded_error");
        assert!(
            out.contains("\"type\":\"overloaded_error\"") && out.contains("slow down"),
            "{out}"
        );
        assert!(!e.is_started());
    }
}
