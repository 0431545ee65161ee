//! The response cache on the request path (`[cache]`, DESIGN 1.3): phase `lookup` runs after
//! `admit` and before `select`; a hit is answered here without any upstream work, a miss
//! carries its key to `relay`, whose tee keeps the client's bytes and stores them when the
//! upstream answer completes cleanly with a 2xx.
//! With `[cluster]` on (and `cluster.cache_wait_ms` > 0) a local miss asks the fleet's cache
//! in Redis through the cluster data thread, waiting at most that deadline, and a stored answer
//! is offered to the fleet (`cluster::remote_cache`).
//! Invariant: with `[cache]` off nothing is hashed or copied; a request with
//! `Cache-Control: no-cache` neither reads nor writes the cache; only a 2xx answer the client
//! got whole (no cut, no error event, within `max_entry_bytes`) is stored.

use std::sync::Arc;

use super::error::{ErrorKind, ProxyError, Side};
use super::{Core, Endpoint, RequestContext};
use crate::cache::tee::{Pending, Tee};
use crate::cache::{Answer, CacheKey, Outcome};
use crate::config::Client;
use crate::health::now_ms;
use crate::server::{Request, Responder};

/// What the lookup found.
pub(super) enum Lookup {
    /// Cache off, or an endpoint whose answers are not cached.
    Off,
    Bypass,
    Hit(Arc<Answer>),
    /// Not there: store the answer under this key if it qualifies.
    Miss(CacheKey),
}

/// Endpoints whose answers depend only on the request. The Responses API is left out: its
/// answers carry ids of objects the upstream stores (`store` defaults to true), and a replayed
/// id would name someone else's object.
fn cacheable(endpoint: Endpoint) -> bool {
    matches!(
        endpoint,
        Endpoint::ChatCompletions
            | Endpoint::Completions
            | Endpoint::Embeddings
            | Endpoint::Messages
            | Endpoint::Gemini
    )
}

/// `Cache-Control: no-cache` (or `no-store`) in any of the request's `Cache-Control` headers.
fn no_cache(req: &Request) -> bool {
    req.head
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(b"cache-control"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|d| {
            let d = d.trim_ascii();
            d.eq_ignore_ascii_case(b"no-cache") || d.eq_ignore_ascii_case(b"no-store")
        })
}

/// The path and its query without the client's `key` (Gemini's `?key=`, a secret): the query
/// may change the answer's shape (`alt=sse` on the Gemini door).
fn keyed_target(req: &Request) -> std::borrow::Cow<'_, str> {
    let path = req.head.path();
    match req.head.query() {
        None => path.into(),
        Some(query) => {
            let mut target = format!("{path}?");
            for (name, value) in form_urlencoded::parse(query.as_bytes()).filter(|(n, _)| n != "key") {
                target.push_str(&name);
                target.push('=');
                target.push_str(&value);
                target.push('&');
            }
            target.into()
        }
    }
}

/// Whether phase `lookup` runs for this request: the cache is on and the endpoint's answers
/// are cached. `forward` asks first, so a request with the cache off builds no lookup future
/// (about 50 instructions a chat request, callgrind, issue 18).
pub(super) fn applies(ctx: &RequestContext, endpoint: Endpoint) -> bool {
    ctx.generation.config.cache.enabled && cacheable(endpoint)
}

/// Phase `lookup`: the local cache, then (`[cluster]` sharing it) the fleet's, waiting for
/// Redis at most `cluster.cache_wait_ms`; a hit there is kept locally too.
pub(super) async fn lookup(
    core: &Core,
    ctx: &RequestContext,
    endpoint: Endpoint,
    client: Option<&Client>,
    req: &Request,
    model: &str,
    stream: bool,
) -> Lookup {
    let settings = &ctx.generation.config.cache;
    if !applies(ctx, endpoint) {
        return Lookup::Off;
    }
    let cache = &core.gateway.cache;
    let (lookup, flag, outcome) = if no_cache(req) {
        (Lookup::Bypass, "bypass", Outcome::Bypass)
    } else {
        let client = client.map_or("", |c| c.name.as_str());
        let target = keyed_target(req);
        let key = CacheKey::new(client, model, &target, stream, req.body.bytes().clone());
        match cache.get(&key, now_ms()) {
            Some(answer) => (Lookup::Hit(answer), "hit", Outcome::Hit),
            None => match shared_cache(core, ctx) {
                None => (Lookup::Miss(key), "miss", Outcome::Miss),
                Some((shared, wait)) => match shared.cache_lookup(key.digest(), wait).await {
                    None => (Lookup::Miss(key), "miss", Outcome::Miss),
                    Some((answer, left_ms)) => {
                        let answer = Arc::new(answer);
                        let ttl = (settings.ttl.as_millis() as u64).min(left_ms);
                        cache.put(key, answer.clone(), now_ms(), ttl, settings.max_bytes);
                        (Lookup::Hit(answer), "hit", Outcome::Miss)
                    }
                },
            },
        }
    };
    cache.count(outcome);
    ctx.trace.borrow_mut().cache = Some(flag);
    lookup
}

/// The fleet's cache, when `[cluster]` shares it (`cluster.cache_wait_ms` > 0).
fn shared_cache<'a>(core: &'a Core, ctx: &RequestContext) -> Option<(&'a crate::cluster::Shared, std::time::Duration)> {
    let wait = ctx.generation.config.cluster.as_ref()?.cache_wait;
    let shared = core.gateway.cluster.as_deref()?;
    (!wait.is_zero()).then_some((shared, wait))
}

/// A hit, answered as the client first got it: the same status and bytes, streamed as SSE when
/// the original was.
pub(super) async fn serve_hit(
    ctx: &RequestContext,
    res: &mut Responder<'_>,
    answer: &Answer,
) -> Result<(), ProxyError> {
    let headers: [(&str, &[u8]); 5] = [
        ("content-type", answer.content_type),
        ("x-request-id", &ctx.request_id),
        ("x-rotor-cache", b"hit"),
        ("x-rotor-provider", b"cache"),
        ("x-rotor-attempts", b"0"),
    ];
    let sent = if answer.streamed {
        match res.start(answer.status, &headers, None).await {
            Ok(()) => res.piece_and_finish(&answer.body).await,
            Err(e) => Err(e),
        }
    } else {
        res.send(answer.status, &headers, answer.body.clone()).await
    };
    // The whole answer went out in one go: its first byte and its end are one reading.
    let at = crate::health::clock::read();
    let mut trace = ctx.trace.borrow_mut();
    trace.first_byte_at = Some(at);
    trace.ended_at = Some(at);
    drop(trace);
    sent.map_err(|e| {
        ProxyError::new(
            ErrorKind::Internal,
            Side::Downstream,
            format!("client connection lost: {e}"),
        )
    })
}

/// The tee for a missed request's answer, capped at `cache.max_entry_bytes`: it stores the
/// answer under `key` when the upstream answer completes with a 2xx.
pub(super) fn tee<'a>(
    core: &'a Core,
    ctx: &RequestContext,
    key: CacheKey,
    status: u16,
    transform: &'a mut dyn crate::providers::transform::ResponseTransform,
) -> Tee<'a> {
    let settings = &ctx.generation.config.cache;
    let pending = Pending {
        cache: &core.gateway.cache,
        key,
        status,
        stream: ctx.trace.borrow().stream,
        now_ms: now_ms(),
        ttl_ms: settings.ttl.as_millis() as u64,
        max_bytes: settings.max_bytes,
        remote: shared_cache(core, ctx).and_then(|(shared, _)| {
            let max = ctx.generation.config.cluster.as_ref()?.cache_max_entry_bytes;
            Some((shared, max))
        }),
    };
    Tee::new(transform, settings.max_entry_bytes as usize, Some(pending))
}
