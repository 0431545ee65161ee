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
//! Invariant: the same-protocol path never parses or re-encodes the body (only the model
//! splice), so `cache_control`, thinking blocks and unknown fields survive it byte for byte.

pub mod adapter;
pub mod anthropic;
pub mod gemini;
pub mod openai;
#[cfg(test)]
mod stream_tests;
pub mod transform;
pub mod write;

use bytes::Bytes;

pub use self::adapter::Adapter;

use self::transform::{Emit, ResponseTransform};
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
    /// The protocol a provider kind speaks; `None` for kinds with no adapter yet (Vertex).
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
}

/// Plans one attempt. `same` builds the same-protocol body (the model splice).
pub fn prepare(
    client_path: &str,
    kind: ProviderKind,
    body: &Bytes,
    upstream_model: &str,
    client_model: &str,
    same: impl FnOnce() -> Bytes,
) -> Result<Prepared, PrepareError> {
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
        (Front::Chat, _) => sonic_rs::from_slice::<openai::ChatRequest>(body)
            .map_err(|e| PrepareError::BadRequest(format!("invalid chat request: {e}")))?,
        (Front::Messages, _) => anthropic::request::to_chat(body, model).map_err(PrepareError::BadRequest)?,
    };
    let stream = chat.stream == Some(true);
    let translation = Translation {
        front,
        upstream,
        stream,
        include_usage: chat.wants_usage_chunk(),
        model: client_model.to_owned(),
    };
    let (body, path) = match upstream {
        Protocol::Anthropic => (anthropic::request::from_chat(&chat, model), "/messages".to_owned()),
        Protocol::Gemini => (gemini::request::from_chat(&chat), gemini::request::path(model, stream)),
        Protocol::OpenAi => {
            let mut chat = chat;
            chat.model = model.to_owned();
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
        match (self.front, self.upstream, ok && self.stream) {
            (Front::Messages, Protocol::OpenAi, true) => Box::new(SseTranslator::new(
                anthropic::front_stream::OpenAiToAnthropic::new(&model),
            )),
            (Front::Messages, Protocol::Gemini, true) => Box::new(Chain {
                first: SseTranslator::new(gemini::stream::GeminiToOpenAi::new(&model, true)),
                second: SseTranslator::new(anthropic::front_stream::OpenAiToAnthropic::new(&model)),
            }),
            (_, Protocol::Anthropic, true) => Box::new(SseTranslator::new(anthropic::stream::AnthropicToOpenAi::new(
                &model,
                self.include_usage,
            ))),
            (_, Protocol::Gemini, true) => Box::new(SseTranslator::new(gemini::stream::GeminiToOpenAi::new(
                &model,
                self.include_usage,
            ))),
            (front, upstream, _) => Box::new(WholeBody::new(status, model, whole_map(front, upstream))),
        }
    }
}

type WholeMap = fn(u16, &[u8], &str) -> (String, Usage);

fn whole_map(front: Front, upstream: Protocol) -> WholeMap {
    match (front, upstream) {
        (Front::Messages, Protocol::Gemini) => |status, body, model| {
            let (chat, _) = gemini::response::to_openai(status, body, model);
            anthropic::response::from_openai(status, chat.as_bytes(), model)
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

pub struct SseTranslator<H> {
    splitter: SseSplitter,
    pub handler: H,
}

impl<H: StreamHandler> SseTranslator<H> {
    pub fn new(handler: H) -> Self {
        SseTranslator {
            splitter: SseSplitter::new(),
            handler,
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
        let handler = &mut self.handler;
        self.splitter.feed(&body, &mut |e| handler.on_event(e, &mut out));
        self.splitter.finish(&mut |e| handler.on_event(e, &mut out));
        handler.on_end(&mut out);
        Bytes::from(out)
    }

    fn piece(&mut self, piece: Bytes) -> Emit {
        let mut out = String::new();
        let handler = &mut self.handler;
        self.splitter.feed(&piece, &mut |e| handler.on_event(e, &mut out));
        emit(out)
    }

    fn end(&mut self) -> Emit {
        let mut out = String::new();
        let handler = &mut self.handler;
        self.splitter.finish(&mut |e| handler.on_event(e, &mut out));
        handler.on_end(&mut out);
        emit(out)
    }

    fn fail(&mut self, message: &str) -> Emit {
        let mut out = String::new();
        self.handler.on_fail(message, &mut out);
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

/// A non-streamed answer (or any error answer): collected, then mapped in one go.
pub struct WholeBody {
    status: u16,
    model: String,
    map: WholeMap,
    buf: Vec<u8>,
    overflow: bool,
    usage: Usage,
}

impl WholeBody {
    pub fn new(status: u16, model: String, map: WholeMap) -> Self {
        WholeBody {
            status,
            model,
            map,
            buf: Vec::new(),
            overflow: false,
            usage: Usage::default(),
        }
    }
}

impl ResponseTransform for WholeBody {
    fn content_type(&self) -> Option<&'static [u8]> {
        Some(b"application/json")
    }

    fn full(&mut self, status: u16, body: Bytes) -> Bytes {
        let (out, usage) = (self.map)(status, &body, &self.model);
        self.usage = usage;
        Bytes::from(out)
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
        let (out, usage) = (self.map)(status, &body, &self.model);
        self.usage = usage;
        emit(out)
    }

    fn fail(&mut self, _message: &str) -> Emit {
        Emit::new()
    }

    fn usage(&self) -> Usage {
        self.usage
    }
}
