//! The stream translation machinery every translated protocol shares (split from `mod.rs`):
//! `SseTranslator` feeds a `StreamHandler` whole SSE events, and `Chain` runs two translations
//! back to back through the OpenAI hub.
//!
//! Invariant: an event is handed to a handler only after its data was bounded by
//! `server.max_json_depth`; after one too-deep event the stream ends with the handler's error
//! event and nothing more goes out.

use bytes::Bytes;

use super::transform::{Emit, ResponseTransform};
use crate::codec::depth::check_depth;
use crate::codec::sse::{Event, SseSplitter};
use crate::usage::Usage;

/// One event-by-event translation: the handler sees whole SSE events and writes its output.
pub trait StreamHandler {
    fn on_event(&mut self, event: Event<'_>, out: &mut String);
    /// The upstream ended: the terminator, or an error event if the stream was truncated.
    fn on_end(&mut self, out: &mut String);
    /// The relay failed mid-stream: an error event in the client's protocol.
    fn on_fail(&mut self, message: &str, out: &mut String);
    fn usage(&self) -> Usage;
    /// Whether this event's data is JSON (bounded by `max_json_depth` before it is handed
    /// over); Replicate's `output` events are plain text.
    fn is_json(&self, _event: Event<'_>) -> bool {
        true
    }
    /// See `ResponseTransform::fetch_at_end`.
    fn fetch_at_end(&self) -> Option<String> {
        None
    }
    /// See `ResponseTransform::fetched`; the body's depth is already bounded.
    fn fetched(&mut self, _body: Option<&[u8]>) {}
}

/// Feeds a handler whole SSE events. An event whose data nests deeper than `max_depth` is not
/// parsed: the stream ends there with the handler's error event, and what follows is dropped.
pub struct SseTranslator<H> {
    splitter: SseSplitter,
    pub handler: H,
    max_depth: usize,
    /// An event was too deep: the error event went out, nothing more will.
    failed: bool,
}

impl<H: StreamHandler> SseTranslator<H> {
    pub fn new(handler: H, max_depth: usize) -> Self {
        SseTranslator {
            splitter: SseSplitter::new(),
            handler,
            max_depth,
            failed: false,
        }
    }
}

/// One event to the handler, unless it is too deep (see `SseTranslator`).
fn deliver<H: StreamHandler>(handler: &mut H, failed: &mut bool, max_depth: usize, event: Event<'_>, out: &mut String) {
    if *failed {
        return;
    }
    if !handler.is_json(event) {
        return handler.on_event(event, out);
    }
    match check_depth(event.data, max_depth) {
        Ok(()) => handler.on_event(event, out),
        Err(e) => {
            *failed = true;
            handler.on_fail(&format!("the upstream event {e}"), out);
        }
    }
}

pub(super) fn emit(out: String) -> Emit {
    let mut e = Emit::new();
    if !out.is_empty() {
        e.push(Bytes::from(out));
    }
    e
}

impl<H: StreamHandler> ResponseTransform for SseTranslator<H> {
    fn content_type(&self) -> Option<&'static [u8]> {
        Some(b"text/event-stream")
    }

    fn full(&mut self, _status: u16, body: Bytes) -> Bytes {
        let mut out = String::new();
        let (handler, failed, depth) = (&mut self.handler, &mut self.failed, self.max_depth);
        self.splitter
            .feed(&body, &mut |e| deliver(handler, failed, depth, e, &mut out));
        self.splitter
            .finish(&mut |e| deliver(handler, failed, depth, e, &mut out));
        if !*failed {
            handler.on_end(&mut out);
        }
        Bytes::from(out)
    }

    fn piece(&mut self, piece: Bytes) -> Emit {
        let mut out = String::new();
        let (handler, failed, depth) = (&mut self.handler, &mut self.failed, self.max_depth);
        self.splitter
            .feed(&piece, &mut |e| deliver(handler, failed, depth, e, &mut out));
        emit(out)
    }

    fn end(&mut self) -> Emit {
        let mut out = String::new();
        let (handler, failed, depth) = (&mut self.handler, &mut self.failed, self.max_depth);
        self.splitter
            .finish(&mut |e| deliver(handler, failed, depth, e, &mut out));
        if !*failed {
            handler.on_end(&mut out);
        }
        emit(out)
    }

    fn fail(&mut self, message: &str) -> Emit {
        let mut out = String::new();
        if !self.failed {
            self.handler.on_fail(message, &mut out);
        }
        emit(out)
    }

    fn usage(&self) -> Usage {
        self.handler.usage()
    }

    fn fetch_at_end(&self) -> Option<String> {
        self.handler.fetch_at_end().filter(|_| !self.failed)
    }

    fn fetched(&mut self, body: Option<&[u8]>) {
        let bounded = body.filter(|b| check_depth(b, self.max_depth).is_ok());
        self.handler.fetched(bounded);
    }
}

/// Two translations in a row through the OpenAI hub (Gemini -> OpenAI -> Anthropic).
pub struct Chain<A, B> {
    pub first: A,
    pub second: B,
}

impl<A: ResponseTransform, B: ResponseTransform> ResponseTransform for Chain<A, B> {
    fn content_type(&self) -> Option<&'static [u8]> {
        self.second.content_type()
    }

    fn full(&mut self, status: u16, body: Bytes) -> Bytes {
        let middle = self.first.full(status, body);
        self.second.full(status, middle)
    }

    fn status(&self, upstream: u16) -> u16 {
        self.second.status(self.first.status(upstream))
    }

    fn piece(&mut self, piece: Bytes) -> Emit {
        let mut out = Emit::new();
        for middle in self.first.piece(piece) {
            out.extend(self.second.piece(middle));
        }
        out
    }

    fn end(&mut self) -> Emit {
        let mut out = Emit::new();
        for middle in self.first.end() {
            out.extend(self.second.piece(middle));
        }
        out.extend(self.second.end());
        out
    }

    fn fail(&mut self, message: &str) -> Emit {
        self.second.fail(message)
    }

    fn usage(&self) -> Usage {
        self.second.usage()
    }

    fn fetch_at_end(&self) -> Option<String> {
        self.first.fetch_at_end()
    }

    fn fetched(&mut self, body: Option<&[u8]>) {
        self.first.fetched(body);
    }
}
