//! Protocol adapters (DESIGN 2.4): one module per wire protocol, with OpenAI chat as the hub.
//! `prepare` decides, per client protocol (the front door the request came in by) and provider
//! kind, whether the request passes through untouched or is translated, and builds the
//! upstream path and body; `Translation::transform` then gives the response transform for the
//! answer's status.
//!
//! | front door            | openai-compatible      | anthropic           | gemini                   |
//! |-----------------------|------------------------|---------------------|--------------------------|
//! | `/v1/chat/completions`| passthrough            | chat <-> messages   | chat <-> generateContent |
//! | `/v1/messages`        | messages <-> chat      | passthrough         | messages <-> chat <-> gemini |
//! | other `/v1/*`         | passthrough            | unsupported         | unsupported              |
//!
//! Vertex (`vertex.rs`) is the anthropic column for `claude-*` models and the gemini column
//! for the rest, at its publisher paths.
//!
//! Invariant: the same-protocol path never parses or re-encodes the body (only the model
//! splice), so `cache_control`, thinking blocks and unknown fields survive it byte for byte.
//! Every JSON a translation parses (the request, embedded tool arguments, each upstream event,
//! a whole upstream answer) is first bounded by `server.max_json_depth` (`codec::depth`).

pub mod adapter;
pub mod anthropic;
#[cfg(test)]
mod depth_tests;
pub mod fidelity;
pub mod gemini;
pub mod openai;
#[cfg(test)]
mod stream_tests;
pub mod transform;
pub mod vertex;
pub mod write;

use bytes::Bytes;

pub use self::adapter::Adapter;

use self::transform::{Emit, ResponseTransform};
use crate::codec::depth::check_depth;
use crate::codec::sse::{Event, SseSplitter};
use crate::config::ProviderKind;
use crate::usage::Usage;

/// A wire protocol, named by its API rather than a vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Protocol {
    /// The protocol a provider kind speaks; `None` for Vertex, which speaks one per model
    /// (`vertex::protocol`).
    pub fn of_provider(kind: ProviderKind) -> Option<Protocol> {
        match kind {
            ProviderKind::Anthropic => Some(Protocol::Anthropic),
            ProviderKind::Gemini => Some(Protocol::Gemini),
            ProviderKind::Vertex => None,
            _ => Some(Protocol::OpenAi),
        }
    }
}

/// The client's side: which API the request came in by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    Chat,
    Messages,
    /// Any other OpenAI route (completions, embeddings, passthrough).
    Other,
}

impl Front {
    pub fn of_path(path: &str) -> Front {
        match path {
            "/v1/chat/completions" => Front::Chat,
            "/v1/messages" => Front::Messages,
            _ => Front::Other,
        }
    }
}

/// How a request reaches one provider.
pub struct Prepared {
    pub body: Bytes,
    /// Path after the provider's base URL path, with a query when the adapter sets one (the
    /// client's query is then not forwarded).
    pub path: String,
    pub translation: Option<Translation>,
}

#[derive(Debug)]
pub enum PrepareError {
    /// This provider cannot serve this front door: try the next candidate.
    Unsupported(String),
    /// The client's body cannot be translated: a 400 for the client.
    BadRequest(String),
}

/// What the answer needs on its way back.
#[derive(Debug, Clone)]
pub struct Translation {
    pub front: Front,
    pub upstream: Protocol,
    pub stream: bool,
    /// The OpenAI client asked for the usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// Shown in answers when the upstream does not name its model.
    pub model: String,
    /// `server.max_json_depth`: deeper upstream JSON is an error for the client, never parsed.
    pub max_depth: usize,
}

/// Plans one attempt. `same` builds the same-protocol body (the model splice). A body to
/// translate that nests deeper than `max_depth` is a `BadRequest`.
pub fn prepare(
    client_path: &str,
    kind: ProviderKind,
    body: &Bytes,
    upstream_model: &str,
    client_model: &str,
    max_depth: usize,
    same: impl FnOnce() -> Bytes,
) -> Result<Prepared, PrepareError> {
    if kind == ProviderKind::Vertex {
        return vertex::prepare(client_path, body, upstream_model, client_model, max_depth);
    }
    let front = Front::of_path(client_path);
    let upstream = Protocol::of_provider(kind)
        .ok_or_else(|| PrepareError::Unsupported(format!("provider kind {kind:?} has no protocol adapter yet")))?;
    let model = if upstream_model.is_empty() {
        client_model
    } else {
        upstream_model
    };
    let passthrough = || Prepared {
        body: same(),
        path: client_path.get(3..).unwrap_or("").to_owned(),
        translation: None,
    };
    let chat = match (front, upstream) {
        (Front::Chat, Protocol::OpenAi) | (Front::Messages, Protocol::Anthropic) | (Front::Other, Protocol::OpenAi) => {
            return Ok(passthrough())
        }
        (Front::Other, _) => {
            return Err(PrepareError::Unsupported(format!(
                "{client_path} is served by OpenAI-compatible providers only"
            )))
        }
        (Front::Chat, _) => openai::read_chat(body, max_depth).map_err(PrepareError::BadRequest)?,
        (Front::Messages, _) => {
            anthropic::request::to_chat(body, model, max_depth).map_err(PrepareError::BadRequest)?
        }
    };
    fidelity::check(&chat, upstream).map_err(PrepareError::BadRequest)?;
    let stream = chat.stream == Some(true);
    let translation = Translation {
        front,
        upstream,
        stream,
        include_usage: chat.wants_usage_chunk(),
        model: client_model.to_owned(),
        max_depth,
    };
    let (body, path) = match upstream {
        Protocol::Anthropic => (
            anthropic::request::from_chat(&chat, model, max_depth),
            "/messages".to_owned(),
        ),
        Protocol::Gemini => (
            gemini::request::from_chat(&chat, max_depth),
            gemini::request::path(model, stream),
        ),
        Protocol::OpenAi => {
            let mut chat = chat;
            chat.model = model.to_owned();
            // OpenAI reasoning models refuse `max_tokens` (provider-formats.md 2).
            if openai::is_reasoning_model(model) && chat.max_completion_tokens.is_none() {
                chat.max_completion_tokens = chat.max_tokens.take();
            }
            let body = sonic_rs::to_vec(&chat).map_err(|e| format!("cannot encode the chat request: {e}"));
            (body, "/chat/completions".to_owned())
        }
    };
    let body = body.map_err(PrepareError::BadRequest)?;
    Ok(Prepared {
        body: Bytes::from(body),
        path,
        translation: Some(translation),
    })
}

impl Translation {
    /// The transform for an answer with this status.
    pub fn transform(&self, status: u16) -> Box<dyn ResponseTransform> {
        let model = self.model.clone();
        let ok = (200..300).contains(&status);
        let depth = self.max_depth;
        match (self.front, self.upstream, ok && self.stream) {
            (Front::Messages, Protocol::OpenAi, true) => Box::new(SseTranslator::new(
                anthropic::front_stream::OpenAiToAnthropic::new(&model),
                depth,
            )),
            (Front::Messages, Protocol::Gemini, true) => Box::new(Chain {
                first: SseTranslator::new(gemini::stream::GeminiToOpenAi::new(&model, true), depth),
                second: SseTranslator::new(anthropic::front_stream::OpenAiToAnthropic::new(&model), depth),
            }),
            (_, Protocol::Anthropic, true) => Box::new(SseTranslator::new(
                anthropic::stream::AnthropicToOpenAi::new(&model, self.include_usage),
                depth,
            )),
            (_, Protocol::Gemini, true) => Box::new(SseTranslator::new(
                gemini::stream::GeminiToOpenAi::new(&model, self.include_usage),
                depth,
            )),
            (front, upstream, _) => Box::new(WholeBody::new(status, model, whole_map(front, upstream), front, depth)),
        }
    }
}

/// Maps a whole upstream answer (status, body, model) to the client's protocol. The body's
/// own depth was bounded by `WholeBody`; the last argument (`server.max_json_depth`) bounds
/// JSON embedded in it as strings (tool arguments).
type WholeMap = fn(u16, &[u8], &str, usize) -> (String, Usage);

fn whole_map(front: Front, upstream: Protocol) -> WholeMap {
    match (front, upstream) {
        (Front::Messages, Protocol::Gemini) => |status, body, model, depth| {
            let (chat, _) = gemini::response::to_openai(status, body, model, depth);
            anthropic::response::from_openai(status, chat.as_bytes(), model, depth)
        },
        (Front::Messages, _) => anthropic::response::from_openai,
        (_, Protocol::Gemini) => gemini::response::to_openai,
        (_, _) => anthropic::response::to_openai,
    }
}

/// One event-by-event translation: the handler sees whole SSE events and writes its output.
pub trait StreamHandler {
    fn on_event(&mut self, event: Event<'_>, out: &mut String);
    /// The upstream ended: the terminator, or an error event if the stream was truncated.
    fn on_end(&mut self, out: &mut String);
    /// The relay failed mid-stream: an error event in the client's protocol.
    fn on_fail(&mut self, message: &str, out: &mut String);
    fn usage(&self) -> Usage;
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
    match check_depth(event.data, max_depth) {
        Ok(()) => handler.on_event(event, out),
        Err(e) => {
            *failed = true;
            handler.on_fail(&format!("the upstream event {e}"), out);
        }
    }
}

fn emit(out: String) -> Emit {
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
}

/// Largest non-streamed body translated; beyond it the client gets an error body instead.
const WHOLE_LIMIT: usize = 32 * 1024 * 1024;

/// A non-streamed answer (or any error answer): collected, then mapped in one go. An answer
/// nesting deeper than `max_depth` is not parsed: the client gets an error in its envelope,
/// with status 502 for a success it cannot deliver, the upstream's own for an error.
pub struct WholeBody {
    status: u16,
    model: String,
    map: WholeMap,
    front: Front,
    max_depth: usize,
    buf: Vec<u8>,
    overflow: bool,
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
            buf: Vec::new(),
            overflow: false,
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
            return error_answer(self.front, &message);
        }
        let (out, usage) = (self.map)(status, body, &self.model, self.max_depth);
        self.usage = usage;
        out
    }
}

/// An upstream failure in the client's envelope.
fn error_answer(front: Front, message: &str) -> String {
    match front {
        Front::Messages => anthropic::error_body("api_error", message),
        Front::Chat | Front::Other => openai::error_body(message, "upstream_error"),
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
        if self.buf.len() + piece.len() > WHOLE_LIMIT {
            self.overflow = true;
            self.buf = Vec::new();
        } else if !self.overflow {
            self.buf.extend_from_slice(&piece);
        }
        Emit::new()
    }

    fn end(&mut self) -> Emit {
        let body = std::mem::take(&mut self.buf);
        let status = if self.overflow { 502 } else { self.status };
        let out = self.answer(status, &body);
        emit(out)
    }

    fn fail(&mut self, _message: &str) -> Emit {
        Emit::new()
    }

    fn usage(&self) -> Usage {
        self.usage
    }
}
