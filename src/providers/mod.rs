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
//! | `/v1/responses`       | passthrough (native) or responses <-> chat | responses <-> chat <-> messages | responses <-> chat <-> gemini |
//! | other `/v1/*`         | passthrough            | unsupported         | unsupported              |
//! | Gemini `:generateContent`, `:streamGenerateContent` | gemini <-> chat | gemini <-> chat <-> messages | passthrough |
//! | other Gemini methods (`:countTokens`, ...) | unsupported | unsupported     | passthrough              |
//!
//! Vertex (`vertex.rs`) is the anthropic column for `claude-*` models and the gemini column
//! for the rest, at its publisher paths.
//! `ondemand` takes chat and messages like `gemini`, through a `dialog` (a session is opened or
//! continued per conversation before the query).
//!
//! Replicate (predictions) and Cohere (Chat v2) are served like Gemini: chat <-> their own
//! shape, and messages <-> chat <-> theirs. Cloudflare is OpenAI-compatible at a base URL built
//! from its account id.
//!
//! Invariant: the same-protocol path never parses or re-encodes the body (only the model
//! splice), so `cache_control`, thinking blocks and unknown fields survive it byte for byte.
//! Every JSON a translation parses (the request, embedded tool arguments, each upstream event,
//! a whole upstream answer) is first bounded by `server.max_json_depth` (`codec::depth`).

pub mod adapter;
pub mod anthropic;
pub mod chat_stream_in;
pub mod chat_stream_out;
pub mod cohere;
#[cfg(test)]
mod depth_tests;
pub mod dialog;
pub mod fidelity;
pub mod follow;
pub mod gemini;
pub mod ondemand;
pub mod openai;
#[cfg(test)]
mod passthrough_tests;
pub mod prepared;
pub mod replicate;
#[cfg(test)]
mod request_map_tests;
pub mod responses;
#[cfg(test)]
mod stream_tests;
pub mod transform;
pub mod translator;
pub mod vertex;
mod whole;
pub mod write;

use bytes::Bytes;

pub use self::adapter::Adapter;
pub use self::translator::{Chain, SseTranslator, StreamHandler};
pub use self::whole::WholeBody;

use self::transform::ResponseTransform;
use crate::config::ProviderKind;
use crate::usage::Usage;

/// A wire protocol, named by its API rather than a vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    OpenAi,
    Anthropic,
    Gemini,
    /// on-demand.io sessions (`ondemand`): served through a `dialog::Dialog`.
    OnDemand,
    /// Replicate predictions (a prompt in, tokens out; several requests per answer).
    Replicate,
    /// Cohere Chat v2.
    Cohere,
}

impl Protocol {
    /// The protocol a provider kind speaks; `None` for Vertex, which speaks one per model
    /// (`vertex::protocol`).
    pub fn of_provider(kind: ProviderKind) -> Option<Protocol> {
        match kind {
            ProviderKind::Anthropic => Some(Protocol::Anthropic),
            ProviderKind::Gemini => Some(Protocol::Gemini),
            ProviderKind::OnDemand => Some(Protocol::OnDemand),
            ProviderKind::Replicate => Some(Protocol::Replicate),
            ProviderKind::Cohere => Some(Protocol::Cohere),
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
    /// `POST /v1/responses`: passed through to a native upstream (`responses = "native"`, see
    /// `Adapter::prepare`), translated through chat to every other.
    Responses,
    /// Any other OpenAI route (completions, embeddings, passthrough).
    Other,
    /// The Gemini front door (`/v1beta/models/{model}:{method}`, `gemini::door`).
    Gemini,
}

impl Front {
    /// The front door of a client path. The proxy knows it from its route (`ClientPath`), so
    /// the request path never matches the path again for it.
    pub fn of_path(path: &str) -> Front {
        match path {
            "/v1/chat/completions" => Front::Chat,
            "/v1/messages" => Front::Messages,
            "/v1/responses" => Front::Responses,
            p if gemini::door::door_path(p).is_some() => Front::Gemini,
            _ => Front::Other,
        }
    }
}

/// The client's request path and the front door it came in by (`Front::of_path` of it).
#[derive(Debug, Clone, Copy)]
pub struct ClientPath<'a> {
    pub path: &'a str,
    pub front: Front,
}

impl<'a> ClientPath<'a> {
    /// `path` with its front door found from the path itself.
    pub fn of(path: &'a str) -> Self {
        ClientPath {
            path,
            front: Front::of_path(path),
        }
    }
}

/// How a request reaches one provider.
pub struct Prepared {
    pub body: Bytes,
    /// Path after the provider's base URL path, with a query when the adapter sets one (the
    /// client's query is then not forwarded). Borrowed only for rotor's own constants (a fixed
    /// front door passed through), so never client text: those need no `check_path`.
    pub path: std::borrow::Cow<'static, str>,
    pub translation: Option<Translation>,
    /// The upstream takes more than one exchange (an on-demand turn): `path` and `body` are
    /// then unused placeholders, the dialog's steps are sent instead. Boxed: inline, the rare
    /// plan (~250 bytes) made every `Prepared` a `memcpy` to move (about 60 instructions a
    /// chat request, callgrind, issue 18).
    pub dialog: Option<Box<dialog::Plan>>,
    /// One more request header the protocol needs (Replicate's `prefer: wait=N`).
    pub header: Option<(&'static str, String)>,
}

impl Prepared {
    /// The plan of a request relayed on its own protocol to a fixed path: `body` as the client
    /// sent it (or with the model spliced), nothing translated.
    pub fn relayed(body: Bytes, path: &'static str) -> Prepared {
        Prepared {
            body,
            path: std::borrow::Cow::Borrowed(path),
            translation: None,
            dialog: None,
            header: None,
        }
    }
}

#[derive(Debug)]
pub enum PrepareError {
    /// This provider cannot serve this front door: try the next candidate.
    Unsupported(String),
    /// The client's body cannot be translated: a 400 for the client.
    BadRequest(String),
    /// What the client asks for cannot exist at this provider (a stored Responses API object
    /// behind a provider that translates): try the next candidate; a 404 when none has it.
    Unavailable(String),
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
    /// Where the upstream keeps the finished answer's record (Replicate's `urls.get`), learned
    /// from its first answer: the stream translator reads usage there at the end.
    pub record_url: Option<String>,
}

/// The upstream path of a request relayed on its own protocol: the client's path without its
/// `/v1`. A fixed front door's is a constant: no allocation per request (~90 instructions with
/// its free, callgrind, issue 18), and nothing in it for `check_path` to judge. The three doors
/// with a `Front` of their own are each one exact path, known without matching it again.
fn passthrough_path(client: ClientPath<'_>) -> std::borrow::Cow<'static, str> {
    use std::borrow::Cow::{Borrowed, Owned};
    match (client.front, client.path) {
        (Front::Chat, _) => Borrowed("/chat/completions"),
        (Front::Messages, _) => Borrowed("/messages"),
        (Front::Responses, _) => Borrowed("/responses"),
        (_, "/v1/completions") => Borrowed("/completions"),
        (_, "/v1/embeddings") => Borrowed("/embeddings"),
        (_, other) => Owned(other.get(3..).unwrap_or("").to_owned()),
    }
}

/// Plans one attempt. `same` builds the same-protocol body (the model splice). A body to
/// translate that nests deeper than `max_depth` is a `BadRequest`.
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    client: ClientPath<'_>,
    kind: ProviderKind,
    poll: crate::config::Poll,
    body: &Bytes,
    upstream_model: &str,
    client_model: &str,
    max_depth: usize,
    same: impl FnOnce() -> Bytes,
) -> Result<Prepared, PrepareError> {
    if kind == ProviderKind::Vertex {
        return vertex::prepare(client, body, upstream_model, client_model, max_depth);
    }
    let (client_path, front) = (client.path, client.front);
    let upstream = Protocol::of_provider(kind)
        .ok_or_else(|| PrepareError::Unsupported(format!("provider kind {kind:?} has no protocol adapter yet")))?;
    let model = if upstream_model.is_empty() {
        client_model
    } else {
        upstream_model
    };
    let same = match front {
        Front::Gemini => match gemini::door::plan(client_path, upstream, model, same)? {
            Ok(prepared) => return Ok(prepared),
            Err(same) => same,
        },
        _ => same,
    };
    let passthrough = || Prepared {
        body: same(),
        path: passthrough_path(client),
        translation: None,
        dialog: None,
        header: None,
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
        (Front::Responses, Protocol::OnDemand) => {
            return Err(PrepareError::Unsupported(
                "the Responses API is not translated to on-demand.io sessions".to_owned(),
            ))
        }
        (Front::Chat, _) => openai::read_chat(body, max_depth).map_err(PrepareError::BadRequest)?,
        (Front::Messages, _) => {
            anthropic::front_request::to_chat(body, model, max_depth).map_err(PrepareError::BadRequest)?
        }
        (Front::Responses, _) => responses::request::to_chat(body, max_depth).map_err(PrepareError::BadRequest)?,
        (Front::Gemini, _) => {
            let stream = gemini::door::door_path(client_path).is_some_and(|p| p.stream());
            gemini::front_request::to_chat(body, model, stream, max_depth).map_err(PrepareError::BadRequest)?
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
        record_url: None,
    };
    let mut plan = None;
    let mut header = None;
    let (body, path) = match upstream {
        Protocol::Anthropic => (
            anthropic::request::from_chat(&chat, model, max_depth),
            "/messages".to_owned(),
        ),
        Protocol::Gemini => (
            gemini::request::from_chat(&chat, max_depth),
            gemini::request::path(model, stream),
        ),
        Protocol::Replicate => {
            let (body, path) = replicate::request::from_chat(&chat, model, stream).map_err(PrepareError::BadRequest)?;
            // A stream's create answer must come at once (it carries the stream URL).
            if !stream {
                header = Some(("prefer", replicate::prefer_wait(poll.prefer_wait)));
            }
            (Ok(body), path)
        }
        Protocol::Cohere => (cohere::request::from_chat(&chat, model), "/chat".to_owned()),
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
        Protocol::OnDemand => {
            plan = Some(Box::new(
                ondemand::Conversation::from_chat(&chat, model).map_err(PrepareError::BadRequest)?,
            ));
            (Ok(Vec::new()), "/sessions".to_owned())
        }
    };
    let body = body.map_err(PrepareError::BadRequest)?;
    Ok(Prepared {
        body: Bytes::from(body),
        path: path.into(),
        translation: Some(translation),
        dialog: plan,
        header,
    })
}

impl Translation {
    /// The transform for an answer with this status.
    pub fn transform(&self, status: u16) -> Box<dyn ResponseTransform> {
        if self.upstream == Protocol::OnDemand {
            // Without its dialog's turn (nothing to commit), as `dialog::Turn::transform`.
            return ondemand::transform(self, status, 0, None);
        }
        let model = self.model.clone();
        let ok = (200..300).contains(&status);
        let depth = self.max_depth;
        if self.front == Front::Responses && ok && self.stream {
            return self.responses_stream(&model, depth);
        }
        match (self.front, self.upstream, ok && self.stream) {
            (Front::Messages, Protocol::OpenAi, true) => Box::new(SseTranslator::new(
                anthropic::front_stream::OpenAiToAnthropic::new(&model),
                depth,
            )),
            (Front::Messages, Protocol::Gemini, true) => Box::new(Chain {
                first: SseTranslator::new(gemini::stream::GeminiToOpenAi::new(&model, true), depth),
                second: SseTranslator::new(anthropic::front_stream::OpenAiToAnthropic::new(&model), depth),
            }),
            (Front::Gemini, Protocol::OpenAi, true) => Box::new(SseTranslator::new(
                gemini::front_stream::OpenAiToGemini::new(&model, depth),
                depth,
            )),
            (Front::Gemini, Protocol::Cohere, true) => Box::new(Chain {
                first: SseTranslator::new(cohere::stream::CohereToOpenAi::new(&model, true), depth),
                second: SseTranslator::new(gemini::front_stream::OpenAiToGemini::new(&model, depth), depth),
            }),
            (Front::Gemini, Protocol::Replicate, true) => Box::new(Chain {
                first: SseTranslator::new(self.replicate_stream(true), depth),
                second: SseTranslator::new(gemini::front_stream::OpenAiToGemini::new(&model, depth), depth),
            }),
            (Front::Gemini, _, true) => Box::new(Chain {
                first: SseTranslator::new(anthropic::stream::AnthropicToOpenAi::new(&model, true), depth),
                second: SseTranslator::new(gemini::front_stream::OpenAiToGemini::new(&model, depth), depth),
            }),
            (Front::Messages, Protocol::Replicate, true) => Box::new(Chain {
                first: SseTranslator::new(self.replicate_stream(true), depth),
                second: SseTranslator::new(anthropic::front_stream::OpenAiToAnthropic::new(&model), depth),
            }),
            (Front::Messages, Protocol::Cohere, true) => Box::new(Chain {
                first: SseTranslator::new(cohere::stream::CohereToOpenAi::new(&model, true), depth),
                second: SseTranslator::new(anthropic::front_stream::OpenAiToAnthropic::new(&model), depth),
            }),
            (_, Protocol::Cohere, true) => Box::new(SseTranslator::new(
                cohere::stream::CohereToOpenAi::new(&model, self.include_usage),
                depth,
            )),
            (_, Protocol::Replicate, true) => {
                Box::new(SseTranslator::new(self.replicate_stream(self.include_usage), depth))
            }
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

    /// Chat chunks (from the upstream, or from the hub) to Responses events.
    fn responses_stream(&self, model: &str, depth: usize) -> Box<dyn ResponseTransform> {
        let last = SseTranslator::new(responses::stream::ChatToResponses::new(model), depth);
        match self.upstream {
            Protocol::OpenAi => Box::new(last),
            Protocol::Anthropic => Box::new(Chain {
                first: SseTranslator::new(anthropic::stream::AnthropicToOpenAi::new(model, true), depth),
                second: last,
            }),
            Protocol::Gemini => Box::new(Chain {
                first: SseTranslator::new(gemini::stream::GeminiToOpenAi::new(model, true), depth),
                second: last,
            }),
            // `prepare` refuses the Responses API toward on-demand.io: no answer reaches here.
            Protocol::Cohere => Box::new(Chain {
                first: SseTranslator::new(cohere::stream::CohereToOpenAi::new(model, true), depth),
                second: last,
            }),
            Protocol::Replicate => Box::new(Chain {
                first: SseTranslator::new(self.replicate_stream(true), depth),
                second: last,
            }),
            Protocol::OnDemand => Box::new(last),
        }
    }

    fn replicate_stream(&self, include_usage: bool) -> replicate::stream::ReplicateToOpenAi {
        replicate::stream::ReplicateToOpenAi::new(&self.model, include_usage, self.record_url.clone())
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
        (Front::Messages, Protocol::Replicate) => |status, body, model, depth| {
            let (chat, _) = replicate::response::to_openai(status, body, model, depth);
            anthropic::response::from_openai(status, chat.as_bytes(), model, depth)
        },
        (Front::Messages, Protocol::Cohere) => |status, body, model, depth| {
            let (chat, _) = cohere::response::to_openai(status, body, model, depth);
            anthropic::response::from_openai(status, chat.as_bytes(), model, depth)
        },
        (Front::Messages, _) => anthropic::response::from_openai,
        (Front::Responses, Protocol::OpenAi) => responses::response::from_chat,
        (Front::Responses, Protocol::Anthropic) => |status, body, model, depth| {
            let (chat, _) = anthropic::response::to_openai(status, body, model, depth);
            responses::response::from_chat(status, chat.as_bytes(), model, depth)
        },
        (Front::Responses, Protocol::Gemini) => |status, body, model, depth| {
            let (chat, _) = gemini::response::to_openai(status, body, model, depth);
            responses::response::from_chat(status, chat.as_bytes(), model, depth)
        },
        (Front::Responses, Protocol::Replicate) => |status, body, model, depth| {
            let (chat, _) = replicate::response::to_openai(status, body, model, depth);
            responses::response::from_chat(status, chat.as_bytes(), model, depth)
        },
        (Front::Responses, Protocol::Cohere) => |status, body, model, depth| {
            let (chat, _) = cohere::response::to_openai(status, body, model, depth);
            responses::response::from_chat(status, chat.as_bytes(), model, depth)
        },
        (Front::Gemini, Protocol::OpenAi) => gemini::front_response::from_openai,
        (Front::Gemini, Protocol::Replicate) => |status, body, model, depth| {
            let (chat, _) = replicate::response::to_openai(status, body, model, depth);
            gemini::front_response::from_openai(status, chat.as_bytes(), model, depth)
        },
        (Front::Gemini, Protocol::Cohere) => |status, body, model, depth| {
            let (chat, _) = cohere::response::to_openai(status, body, model, depth);
            gemini::front_response::from_openai(status, chat.as_bytes(), model, depth)
        },
        (Front::Gemini, _) => |status, body, model, depth| {
            let (chat, _) = anthropic::response::to_openai(status, body, model, depth);
            gemini::front_response::from_openai(status, chat.as_bytes(), model, depth)
        },
        (_, Protocol::Gemini) => gemini::response::to_openai,
        (_, Protocol::Replicate) => replicate::response::to_openai,
        (_, Protocol::Cohere) => cohere::response::to_openai,
        (_, _) => anthropic::response::to_openai,
    }
}
