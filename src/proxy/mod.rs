//! The request path, as named phases run top to bottom for every request:
//!
//! | phase        | reads                               | writes            | errors      |
//! |--------------|-------------------------------------|-------------------|-------------|
//! | route        | method, path                        |                   | 404, 405    |
//! | authenticate | `Authorization` / `x-api-key` / `x-goog-api-key` / `?key=`, clients | the `Client` | 401 |
//! | inspect      | body (`model`, `stream`, strictly), passthrough path | | 400         |
//! | authorize    | client model globs                  |                   | 403         |
//! | admit        | client limit windows                | window counts     | 429         |
//! | lookup       | `[cache]`, client, model, path, body, `Cache-Control` | cache (a hit is answered here) | |
//! | select       | route table, balance, key health and windows | cursors, windows | 404, 429, 503 |
//! | adapt        | alias -> upstream model, or a protocol translation | request body | 400     |
//! | send         | per-core pool, connector            | pool              | 502, 504    |
//! | classify     | upstream status                     | key health        | (retry)     |
//! | follow       | the adapter's follow-up (Replicate: poll, stream URL) | pool | 502, 504 |
//! | relay        | upstream response, through a `ResponseTransform` | client connection | error event |
//! | finish       | the request's `Trace`               | metrics shard, record queue |   |
//!
//! `route`/`authenticate` live here; `inspect` in `inspect` (paths and URL-bound names in
//! `target`), `admit` in `admit`; `forward` walks the candidates (keys, providers, fallbacks)
//! and runs `adapt` per provider; one attempt is `attempt::try_key`, the functions `select`,
//! `send` (the wire work in `send`; `send::send_turn` for a `providers::dialog` turn, whose
//! session create precedes the query on the same pool), `classify` (the decisions in
//! `classify`), `follow` (more requests of one answer, in `follow`) and `relay` (the body loop
//! in `relay`); `finish` in `finish`. What depends on a provider's wire protocol is
//! asked of its `providers::Adapter`. The only error-to-HTTP mapping is `error::render_as`. Invariant: one request holds one config
//! generation from start to end, so a reload never changes a request midway.

mod admit;
mod answer_fields;
mod attempt;
mod attempts;
mod cached;
mod cancel;
mod classify;
mod credential;
mod endpoints;
pub mod error;
mod finish;
mod follow;
mod forward;
mod gemini_door;
pub mod headers;
mod inspect;
pub mod keycare;
mod pinning;
mod probe;
mod relay;
pub mod request_id;
mod send;
mod target;
mod tick;

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

pub use endpoints::status_json;
pub use error::{ErrorKind, ProxyError, Side};

use crate::codec::head::{Method, RequestHead};
use crate::config::Client;
use crate::gateway::{Gateway, Generation};
use crate::route::CoreBalance;
use crate::server::{Limits, Request, Responder, Service};
use crate::upstream::Pool;

/// One worker's gateway state. Lives on its core only (`Rc`, `Cell`, `RefCell`); no borrow is
/// ever held across an `.await`.
pub struct Core {
    pub worker: usize,
    pub gateway: Arc<Gateway>,
    pub pool: Rc<Pool>,
    balance: RefCell<CoreBalance>,
    /// This core's copy of the live generation, replaced when the gateway's live id moves
    /// (`Core::generation`); housekeeping refreshes it too, so an idle core lets an old one go
    /// within a second of a reload.
    live: RefCell<Arc<Generation>>,
    pool_generation: Cell<u64>,
    /// This core's metrics shard (only this core writes it).
    metrics: Arc<parking_lot::Mutex<crate::metrics::Shard>>,
    /// This core's stats rollups (only this core writes them; the control thread collects).
    rollups: Arc<parking_lot::Mutex<crate::usage::rollup::RollupShard>>,
    /// This core's lane of the request record queue (only this core pushes to it).
    log_lane: Arc<crate::usage::record::Lane>,
    /// The labels of this core's last request records and what they were made of (`finish`).
    last_labels: RefCell<finish::KeptLabels>,
}

/// What every phase of one request may read.
pub struct RequestContext {
    pub generation: Arc<Generation>,
    pub request_id: request_id::RequestId,
    /// When the request head arrived.
    pub received_at: crate::health::clock::Moment,
    /// The model the request names (or the default model it was given), set once by
    /// `forward` and borrowed from here until `finish`: kept in the `Trace` as well, it was
    /// cloned per request (an allocation, a copy and a free, about 120 instructions). Inline
    /// when short (`ModelName`): as a `String` it was one allocation and free per request.
    pub model: OnceCell<crate::codec::ModelName>,
    /// What the phases learn, for `finish`; borrowed briefly, never across an `.await`.
    pub trace: RefCell<finish::Trace>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Health,
    Metrics,
    /// `/admin/*` (admin key, DESIGN 1.3).
    Admin,
    Models,
    /// Providers and keys with their state (`GET /v1/status`).
    Status,
    ChatCompletions,
    Completions,
    Embeddings,
    /// The Anthropic Messages front door (`POST /v1/messages`), errors in Anthropic's envelope.
    Messages,
    /// The OpenAI Responses API (`POST /v1/responses`): passed through or translated.
    Responses,
    /// Any other `/v1/*`, relayed to an OpenAI-kind provider.
    Passthrough,
    /// The Gemini front door (`/v1beta/models/{model}:generateContent` and its siblings, also
    /// under `/v1/models/`), errors in Google's envelope.
    Gemini,
    /// `GET /v1beta/models[/{model}]`, answered by rotor in Gemini's shape.
    GeminiModels,
}

impl Endpoint {
    /// The front door of a proxied endpoint's requests: `Front::of_path` of every path `route`
    /// gives it (a door path is always `Gemini`, `/v1/chat/completions` the only
    /// `ChatCompletions`), found here without matching the path again.
    pub fn front(self) -> crate::providers::Front {
        use crate::providers::Front;
        match self {
            Endpoint::ChatCompletions => Front::Chat,
            Endpoint::Messages => Front::Messages,
            Endpoint::Responses => Front::Responses,
            Endpoint::Gemini => Front::Gemini,
            _ => Front::Other,
        }
    }

    /// The label used in metrics and request records.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Health => "health",
            Endpoint::Metrics => "metrics",
            Endpoint::Admin => "admin",
            Endpoint::Models => "models",
            Endpoint::Status => "status",
            Endpoint::ChatCompletions => "chat/completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Messages => "messages",
            Endpoint::Responses => "responses",
            Endpoint::Passthrough => "passthrough",
            Endpoint::Gemini => "gemini",
            Endpoint::GeminiModels => "gemini/models",
        }
    }
}

impl Core {
    pub fn new(worker: usize, gateway: Arc<Gateway>) -> Self {
        let generation = gateway.current();
        let upstream = &generation.config.upstream;
        Core {
            worker,
            pool: Rc::new(Pool::new(upstream.pool_max_idle_per_host, upstream.pool_idle_timeout)),
            balance: RefCell::new(CoreBalance::new(worker)),
            pool_generation: Cell::new(generation.id),
            live: RefCell::new(generation.clone()),
            metrics: gateway.metrics.shard(),
            rollups: gateway.rollups.shard(),
            log_lane: gateway.records.lane(),
            last_labels: RefCell::default(),
            gateway,
        }
    }

    /// Per-core periodic work: reap idle upstream connections, follow pool settings on reload.
    pub async fn housekeeping(core: Rc<Core>) {
        while !core.gateway.shutdown.is_stopping() {
            crate::deadline::sleep(Duration::from_secs(1)).await;
            let generation = core.generation();
            if core.pool_generation.get() != generation.id {
                core.pool_generation.set(generation.id);
                let upstream = &generation.config.upstream;
                core.pool
                    .resize(upstream.pool_max_idle_per_host, upstream.pool_idle_timeout);
            }
            core.pool.reap();
            crate::spare::trim();
            crate::heap::trim_recycled();
            crate::heap::release_freed_memory();
            // One worker probes quarantined keys, so each key gets one probe per due time.
            if core.worker == 0 {
                probe::probe_due_keys(&core, &generation).await;
                keycare::tick(&core, &generation).await;
            }
        }
    }

    /// The live generation, from this core's copy: one atomic load per request where loading
    /// the gateway's `ArcSwap` (twice: `limits` and `serve_at`) cost about 130 instructions per
    /// chat request (callgrind, issue 18). A request holds what this returns to its end.
    pub fn generation(&self) -> Arc<Generation> {
        self.with_generation(Arc::clone)
    }

    /// Reads the live generation from this core's copy, refreshed first if the gateway has
    /// another; no borrow outlives `read`.
    fn with_generation<R>(&self, read: impl FnOnce(&Arc<Generation>) -> R) -> R {
        let live_id = self.gateway.live_id();
        if self.live.borrow().id != live_id {
            let fresh = self.gateway.current();
            // Dropped after the borrow ends: it may be an old generation's last reference.
            let _old = std::mem::replace(&mut *self.live.borrow_mut(), fresh);
        }
        read(&self.live.borrow())
    }

    /// Phases `route` and `authenticate`, which await nothing: the endpoint, and the client
    /// for the endpoints that have one (`/health`, `/metrics` and admin authenticate their own
    /// way). A plain function: `serve_at` then awaits the endpoint's own future, where an
    /// `async fn handle` around them was one more state machine resumed at every poll of every
    /// request.
    fn admit<'c>(
        &self,
        ctx: &'c RequestContext,
        head: &RequestHead,
        door: Door,
    ) -> Result<(Endpoint, Option<&'c Client>), ProxyError> {
        let endpoint = route(head)?;
        ctx.trace.borrow_mut().endpoint = endpoint.name();
        if door == Door::Admin && endpoint != Endpoint::Admin {
            let message = "this address (server.admin_listen) serves only /admin/";
            return Err(ProxyError::new(ErrorKind::NotFound, Side::Downstream, message).with_code("unknown_url"));
        }
        if matches!(endpoint, Endpoint::Health | Endpoint::Metrics | Endpoint::Admin) {
            return Ok((endpoint, None));
        }
        let client = authenticate(&ctx.generation.config.clients, head)?;
        if let Some(client) = client {
            ctx.trace.borrow_mut().client = Some(client.index);
        }
        Ok((endpoint, client))
    }

    /// The endpoints rotor answers itself, but for `/health`. Boxed by `serve_at`: their
    /// states (the admin API's above all) would otherwise widen every proxied request's future.
    async fn answer_own(
        &self,
        ctx: &RequestContext,
        req: &Request,
        res: &mut Responder<'_>,
        door: Door,
        (own, client): (Own, Option<&Client>),
    ) -> Result<(), ProxyError> {
        match own {
            Own::Metrics => endpoints::metrics(self, ctx, &req.head, res).await,
            Own::Admin => {
                let answer = match door {
                    // With `server.admin_listen`, admin answers there only.
                    Door::Api if self.gateway.admin_apart() => None,
                    _ => crate::admin::handle(self, req).await,
                };
                let Some(answer) = answer else {
                    return Err(
                        ProxyError::new(ErrorKind::NotFound, Side::Downstream, "the admin API is off")
                            .with_code("unknown_url"),
                    );
                };
                crate::admin::send(res, answer, &ctx.request_id).await.map_err(|e| {
                    ProxyError::new(
                        ErrorKind::Internal,
                        Side::Downstream,
                        format!("client connection lost: {e}"),
                    )
                })
            }
            Own::Models => endpoints::models(ctx, client, res).await,
            Own::Status => endpoints::status(self, ctx, client, res).await,
            Own::GeminiModels => gemini_door::models(ctx, client, &req.head, res).await,
        }
    }
}

/// The endpoints `Core::answer_own` answers: rotor's own, but for `/health` (answered inline).
#[derive(Debug, Clone, Copy)]
enum Own {
    Metrics,
    Admin,
    Models,
    Status,
    GeminiModels,
}

impl Own {
    /// `endpoint` if rotor answers it itself (in `answer_own`), else `None`.
    fn of(endpoint: Endpoint) -> Option<Own> {
        match endpoint {
            Endpoint::Metrics => Some(Own::Metrics),
            Endpoint::Admin => Some(Own::Admin),
            Endpoint::Models => Some(Own::Models),
            Endpoint::Status => Some(Own::Status),
            Endpoint::GeminiModels => Some(Own::GeminiModels),
            _ => None,
        }
    }
}

impl Service for Core {
    fn limits(&self) -> Limits {
        self.with_generation(|generation| {
            let server = &generation.config.server;
            Limits {
                max_header_bytes: server.max_header_bytes,
                max_body_bytes: server.max_body_bytes,
                header_read_timeout: server.header_read_timeout,
                keepalive_timeout: server.keepalive_timeout,
                body_read_timeout: server.body_read_timeout,
                max_body_bytes_in_flight: server.max_body_bytes_in_flight,
            }
        })
    }

    /// `serve_at`'s future itself: an `async fn` around it was one more future on the request
    /// path, moved into and resumed at every poll.
    fn call(&self, req: &Request, res: &mut Responder<'_>) -> impl std::future::Future<Output = ()> {
        self.serve_at(req, res, Door::Api)
    }
}

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// `server.listen`: the API, and admin unless `server.admin_listen` is set.
    Api,
    /// `server.admin_listen`: admin and the dashboard only.
    Admin,
}

/// The service of the `server.admin_listen` listener: the worker's own core, admin only.
pub struct AdminDoor(pub Rc<Core>);

impl Service for AdminDoor {
    fn limits(&self) -> Limits {
        self.0.limits()
    }

    fn call(&self, req: &Request, res: &mut Responder<'_>) -> impl std::future::Future<Output = ()> {
        self.0.serve_at(req, res, Door::Admin)
    }
}

impl Core {
    async fn serve_at(&self, req: &Request, res: &mut Responder<'_>, door: Door) {
        let ctx = RequestContext {
            generation: self.generation(),
            request_id: request_id::RequestId::of(&req.head),
            received_at: req.received_at,
            model: OnceCell::new(),
            trace: RefCell::new(finish::Trace {
                bytes_in: req.body.len() as u64,
                ..Default::default()
            }),
        };
        let result = match self.admit(&ctx, &req.head, door) {
            Ok((Endpoint::Health, _)) => endpoints::health(self, &ctx, res).await,
            Ok((endpoint, client)) => match Own::of(endpoint) {
                Some(own) => Box::pin(self.answer_own(&ctx, req, res, door, (own, client))).await,
                None => forward::forward(self, &ctx, endpoint, client, req, res).await,
            },
            Err(err) => Err(err),
        };
        if let Err(err) = result {
            tracing::debug!(request_id = ?ctx.request_id, status = err.status(), "{}", err.message());
            ctx.trace.borrow_mut().error = err.kind_name();
            error::render_as(&err, res, &ctx.request_id, envelope(&req.head)).await;
        }
        finish::finish(self, &ctx, res.status(), res.bytes_out());
    }
}

/// The error envelope a request's errors are written in, chosen only when one is: it was
/// chosen for every request, ~90 instructions a chat request (callgrind, issue 18).
fn envelope(head: &RequestHead) -> error::Envelope {
    match gemini_door::lists_models_under_v1(head) {
        true => error::Envelope::Google,
        false => error::Envelope::for_path(head.path()),
    }
}

/// Phase `route`: path and method -> endpoint.
fn route(head: &RequestHead) -> Result<Endpoint, ProxyError> {
    let path = head.path();
    // rotor's fixed paths first: none is a Google path or a model list, so the Gemini door's
    // checks (a door-path parse, the key fields) run only for paths they may claim (~75
    // instructions a chat request, callgrind, issue 18).
    let (endpoint, method) = match path {
        "/v1/chat/completions" => (Endpoint::ChatCompletions, Method::Post),
        "/v1/completions" => (Endpoint::Completions, Method::Post),
        "/v1/embeddings" => (Endpoint::Embeddings, Method::Post),
        "/v1/messages" => (Endpoint::Messages, Method::Post),
        "/v1/responses" => (Endpoint::Responses, Method::Post),
        "/health" => (Endpoint::Health, Method::Get),
        "/metrics" => (Endpoint::Metrics, Method::Get),
        "/v1/status" => (Endpoint::Status, Method::Get),
        p if gemini_door::owns(p) => gemini_door::route(p)?,
        _ if gemini_door::lists_models_under_v1(head) => (Endpoint::GeminiModels, Method::Get),
        "/v1/models" => (Endpoint::Models, Method::Get),
        p if p.starts_with("/v1/") => return Ok(Endpoint::Passthrough),
        p if p.starts_with("/admin/") || p == "/admin" => return Ok(Endpoint::Admin),
        _ => {
            return Err(
                ProxyError::new(ErrorKind::NotFound, Side::Downstream, format!("unknown path {path}"))
                    .with_code("unknown_url"),
            )
        }
    };
    let allowed = head.method == method || (method == Method::Get && head.method == Method::Head);
    if !allowed {
        return Err(ProxyError::new(
            ErrorKind::MethodNotAllowed,
            Side::Downstream,
            format!("{path} accepts {method:?} only"),
        ));
    }
    Ok(endpoint)
}

/// Phase `authenticate`: the client key from `Authorization: Bearer`, `x-api-key`,
/// `x-goog-api-key` or the `key` query parameter, compared in constant time against every
/// configured client. No clients configured = open gateway.
fn authenticate<'c>(clients: &'c [Client], head: &RequestHead) -> Result<Option<&'c Client>, ProxyError> {
    if clients.is_empty() {
        return Ok(None);
    }
    let presented = headers::client_key(head).ok_or_else(|| {
        ProxyError::new(
            ErrorKind::Unauthorized,
            Side::Downstream,
            "missing API key: send it as 'Authorization: Bearer <key>', 'x-api-key', 'x-goog-api-key' or '?key='",
        )
        .with_code("missing_api_key")
    })?;
    // Every client is compared (no early exit), so timing does not reveal which prefix matched.
    let mut found = None;
    for client in clients {
        if client.key.ct_eq(presented) && found.is_none() {
            found = Some(client);
        }
    }
    found.map(Some).ok_or_else(|| {
        ProxyError::new(ErrorKind::Unauthorized, Side::Downstream, "invalid API key").with_code("invalid_api_key")
    })
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;

#[cfg(test)]
mod release_tests;
