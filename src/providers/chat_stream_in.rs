//! Reading an OpenAI chat stream for the translators that serve other fronts from it (Anthropic,
//! Responses and Gemini clients of OpenAI-compatible upstreams): each event is told apart once
//! here (the `[DONE]` terminator, an error object, a chunk), and a chunk's deltas are handed to
//! the translator in the order they stand.
//! Invariant: per choice, reasoning text, then content text, then each tool-call fragment, then
//! the finish reason; a translator that ends the stream midway stops the walk.

use std::ops::ControlFlow;

use super::openai::{Choice, Completion, ToolCallDelta};

/// One event of an OpenAI chat stream.
pub enum ChatEvent {
    /// `data: [DONE]`.
    Done,
    /// An error object in place of a chunk; an empty message reads "upstream error".
    Failed {
        message: String,
        kind: Option<String>,
    },
    Chunk(Completion),
    /// Not a chunk rotor can read (dropped, as the OpenAI SDKs drop what they cannot parse).
    Unreadable,
}

pub fn read_event(data: &[u8]) -> ChatEvent {
    let data = data.trim_ascii();
    if data == b"[DONE]" {
        return ChatEvent::Done;
    }
    let Ok(mut chunk) = sonic_rs::from_slice::<Completion>(data) else {
        return ChatEvent::Unreadable;
    };
    match chunk.error.take() {
        Some(e) if e.message.is_empty() => ChatEvent::Failed {
            message: "upstream error".to_owned(),
            kind: e.kind,
        },
        Some(e) => ChatEvent::Failed {
            message: e.message,
            kind: e.kind,
        },
        None => ChatEvent::Chunk(chunk),
    }
}

/// What a front translator does with each part of a chunk's deltas.
pub trait ChatDeltas {
    /// A reasoning or content fragment (never called for an absent one; may be empty).
    fn on_text(&mut self, out: &mut String, reasoning: bool, text: &str);
    /// `Break` when the stream has ended (e.g. the gathered calls passed a bound).
    fn on_tool_call(&mut self, out: &mut String, call: ToolCallDelta) -> ControlFlow<()>;
    /// `Break` when the stream has ended.
    fn on_finish(&mut self, out: &mut String, reason: String) -> ControlFlow<()>;
}

/// Hands `choices`' parts to `sink` in order, until it says `Break`.
pub fn walk(sink: &mut impl ChatDeltas, choices: Vec<Choice>, out: &mut String) {
    for choice in choices {
        if let Some(delta) = choice.delta {
            if let Some(r) = delta.reasoning_content.as_deref() {
                sink.on_text(out, true, r);
            }
            if let Some(t) = delta.content.as_deref() {
                sink.on_text(out, false, t);
            }
            for call in delta.tool_calls.into_iter().flatten() {
                if sink.on_tool_call(out, call).is_break() {
                    return;
                }
            }
        }
        if let Some(reason) = choice.finish_reason {
            if sink.on_finish(out, reason).is_break() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Trace {
        seen: Vec<String>,
        stop_at_call: Option<usize>,
    }

    impl ChatDeltas for Trace {
        fn on_text(&mut self, _: &mut String, reasoning: bool, text: &str) {
            self.seen.push(format!("{}:{text}", if reasoning { "r" } else { "c" }));
        }
        fn on_tool_call(&mut self, _: &mut String, call: ToolCallDelta) -> ControlFlow<()> {
            self.seen.push(format!("t:{}", call.index.unwrap_or(99)));
            if self.stop_at_call == Some(self.seen.len()) {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn on_finish(&mut self, _: &mut String, reason: String) -> ControlFlow<()> {
            self.seen.push(format!("f:{reason}"));
            ControlFlow::Continue(())
        }
    }

    fn chunk(json: &str) -> Completion {
        match read_event(json.as_bytes()) {
            ChatEvent::Chunk(c) => c,
            _ => panic!("not a chunk: {json}"),
        }
    }

    const TWO_CHOICES: &str = r#"{"choices":[{"delta":{"content":"a","reasoning_content":"why","tool_calls":[{"index":0},{"index":1}]},"finish_reason":"tool_calls"},{"delta":{"content":""},"finish_reason":"stop"}]}"#;

    #[test]
    fn parts_come_in_order_choice_by_choice() {
        let mut trace = Trace::default();
        walk(&mut trace, chunk(TWO_CHOICES).choices, &mut String::new());
        assert_eq!(
            trace.seen,
            ["r:why", "c:a", "t:0", "t:1", "f:tool_calls", "c:", "f:stop"]
        );
    }

    #[test]
    fn a_break_stops_the_walk() {
        let mut trace = Trace {
            stop_at_call: Some(3),
            ..Trace::default()
        };
        walk(&mut trace, chunk(TWO_CHOICES).choices, &mut String::new());
        assert_eq!(trace.seen, ["r:why", "c:a", "t:0"]);
    }

    #[test]
    fn done_errors_and_unreadable_events_are_told_apart() {
        assert!(matches!(read_event(b" [DONE]\r\n"), ChatEvent::Done));
        assert!(matches!(read_event(b"{not json"), ChatEvent::Unreadable));
        match read_event(br#"{"error":{"message":"","type":"overloaded_error"}}"#) {
            ChatEvent::Failed { message, kind } => {
                assert_eq!(message, "upstream error");
                assert_eq!(kind.as_deref(), Some("overloaded_error"));
            }
            _ => panic!("an error object is a failure"),
        }
        match read_event(br#"{"error":{"message":"quota"}}"#) {
            ChatEvent::Failed { message, kind } => assert_eq!((message.as_str(), kind), ("quota", None)),
            _ => panic!("an error object is a failure"),
        }
    }
}
