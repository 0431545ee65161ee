//! A non-streamed upstream answer (or any error answer), collected whole and mapped to the
//! client's protocol in one go by a `WholeMap`.
//! Invariant: memory is bounded by `WHOLE_LIMIT` (`Collected`, also used by on-demand), and an answer nesting deeper than
//! `server.max_json_depth` is never parsed: the client gets an error in its own envelope.

use bytes::Bytes;

use super::transform::{Emit, ResponseTransform};
use super::translator::emit;
use super::{anthropic, openai, Front, WholeMap};
use crate::codec::depth::check_depth;
use crate::usage::Usage;

/// Largest non-streamed body translated; beyond it the client gets an error body instead.
const WHOLE_LIMIT: usize = 32 * 1024 * 1024;

/// A whole answer gathered piece by piece, never more than `WHOLE_LIMIT` bytes: past it the
/// bytes are dropped and `take` says so (every whole-answer translator shares this bound).
#[derive(Default)]
pub(super) struct Collected {
    buf: Vec<u8>,
    overflow: bool,
}

impl Collected {
    pub(super) fn push(&mut self, piece: &[u8]) {
        if self.buf.len() + piece.len() > WHOLE_LIMIT {
            self.overflow = true;
            self.buf = Vec::new();
        } else if !self.overflow {
            self.buf.extend_from_slice(piece);
        }
    }

    /// The answer, or `None` when it was larger than rotor translates.
    pub(super) fn take(&mut self) -> Option<Vec<u8>> {
        let body = std::mem::take(&mut self.buf);
        (!self.overflow).then_some(body)
    }
}

/// A non-streamed answer (or any error answer): collected, then mapped in one go. An answer
/// nesting deeper than `max_depth` is not parsed: the client gets an error in its envelope,
/// with status 502 for a success it cannot deliver, the upstream's own for an error.
pub struct WholeBody {
    status: u16,
    model: String,
    map: WholeMap,
    front: Front,
    max_depth: usize,
    collected: Collected,
    /// A successful answer was too deep to translate: the client gets this status instead.
    refused: Option<u16>,
    usage: Usage,
}

impl WholeBody {
    pub fn new(status: u16, model: String, map: WholeMap, front: Front, max_depth: usize) -> Self {
        WholeBody {
            status,
            model,
            map,
            front,
            max_depth,
            collected: Collected::default(),
            refused: None,
            usage: Usage::default(),
        }
    }

    fn answer(&mut self, status: u16, body: &[u8]) -> String {
        if let Err(e) = check_depth(body, self.max_depth) {
            let message = if (200..300).contains(&status) {
                self.refused = Some(502);
                format!("the upstream answer {e}")
            } else {
                format!("the upstream answered {status} with a body that {e}")
            };
            return error_answer(self.front, self.refused.unwrap_or(status), &message);
        }
        let (out, usage) = (self.map)(status, body, &self.model, self.max_depth);
        self.usage = usage;
        out
    }
}

/// An upstream failure in the client's envelope (`status`: what the client gets).
pub(super) fn error_answer(front: Front, status: u16, message: &str) -> String {
    match front {
        Front::Messages => anthropic::error_body("api_error", message),
        Front::Gemini => super::gemini::door::error_body(status, message),
        Front::Chat | Front::Responses | Front::Other => openai::error_body(message, "upstream_error"),
    }
}

impl ResponseTransform for WholeBody {
    fn content_type(&self) -> Option<&'static [u8]> {
        Some(b"application/json")
    }

    fn full(&mut self, status: u16, body: Bytes) -> Bytes {
        Bytes::from(self.answer(status, &body))
    }

    fn status(&self, upstream: u16) -> u16 {
        self.refused.unwrap_or(upstream)
    }

    fn piece(&mut self, piece: Bytes) -> Emit {
        self.collected.push(&piece);
        Emit::new()
    }

    fn end(&mut self) -> Emit {
        let out = match self.collected.take() {
            Some(body) => self.answer(self.status, &body),
            None => self.answer(502, &[]),
        };
        emit(out)
    }

    fn fail(&mut self, _message: &str) -> Emit {
        Emit::new()
    }

    fn usage(&self) -> Usage {
        self.usage
    }
}
