//! Phases `inspect` to `finish` for proxied endpoints: read `model`/`stream` strictly, check the
//! client may use the model, pick provider and key, rewrite an alias, send over a pooled
//! connection and relay the answer as it arrives.
//! Invariant: nothing reaches the client until an upstream has answered with a response head;
//! until then a connection-level failure may move to the next candidate.

use bytes::Bytes;

use super::error::{ErrorKind, ProxyError, Side};
use super::headers::{response_headers, upstream_request_head};
use super::{Core, Endpoint, RequestContext};
use crate::codec::head::Method;
use crate::codec::json::{inspect_body, multipart_field, splice_model, Inspection};
use crate::codec::response::{ResponseFraming, ResponseHead};
use crate::config::{Client, Config, Provider, ProviderKind};
use crate::route::find_route;
use crate::server::{Request, Responder};
use crate::upstream::{self, Exchange, PoolKey, UpstreamError};

/// Sized upstream bodies up to this are read whole and sent in one write; larger ones stream.
const BUFFER_WHOLE_LIMIT: u64 = 256 * 1024;

/// The request as the upstream will see it, for one candidate.
struct Outgoing<'a> {
    provider: &'a Provider,
    body: Bytes,
}

pub(super) async fn forward(
    core: &Core,
    ctx: &RequestContext,
    endpoint: Endpoint,
    client: Option<&Client>,
    req: Request,
    res: &mut Responder<'_>,
) -> Result<(), ProxyError> {
    let config = &ctx.generation.config;
    let model = inspect(endpoint, &req)?;
    let (model_name, inspection) = match model {
        Some((name, inspection)) => (name, inspection),
        None => (default_model_for(config)?, Inspection::default()),
    };
    if let Some(client) = client {
        if !client.allows(&model_name) {
            return Err(ProxyError::new(
                ErrorKind::Forbidden,
                Side::Downstream,
                format!("this API key may not use model '{model_name}'"),
            )
            .with_code("model_not_allowed"));
        }
    }
    let (route, _defaulted) = find_route(config, &model_name).map_err(|_| {
        ProxyError::new(
            ErrorKind::NoRoute,
            Side::Downstream,
            format!("the model '{model_name}' does not exist or has no route"),
        )
        .with_param("model")
        .with_code("model_not_found")
    })?;
    let order = {
        let mut balance = core.balance.borrow_mut();
        balance.sync(ctx.generation.id, config);
        balance.order(config, route)
    };
    let upstream_path = req.head.path().get(3..).unwrap_or("");
    let max_attempts = config.retry.max_attempts.max(1) as usize;
    let mut last_error: Option<ProxyError> = None;
    let mut attempts = 0usize;
    for &candidate_index in order.iter() {
        if attempts >= max_attempts {
            break;
        }
        let Some(candidate) = route.candidates.get(candidate_index) else {
            continue;
        };
        let Some(provider) = config.providers.get(candidate.provider) else {
            continue;
        };
        if !speaks_openai(provider.kind) {
            last_error = Some(ProxyError::new(
                ErrorKind::UpstreamFailed,
                Side::Upstream,
                format!(
                    "provider '{}' is of kind {:?}, which needs protocol translation (not available yet)",
                    provider.name, provider.kind
                ),
            ));
            continue;
        }
        attempts += 1;
        let body = adapt(&req.body, &inspection, &candidate.upstream_model, &model_name);
        let outgoing = Outgoing { provider, body };
        match send(core, ctx, &req, &outgoing, upstream_path).await {
            Ok((exchange, head)) => {
                return relay(core, ctx, &req, res, outgoing.provider, attempts, exchange, head).await;
            }
            Err(e) => {
                tracing::debug!(provider = %provider.name, "attempt {attempts} failed: {e}");
                last_error = Some(e.into());
            }
        }
    }
    Err(last_error.unwrap_or_else(|| {
        ProxyError::new(
            ErrorKind::NoUsableKey,
            Side::Upstream,
            format!("no usable provider for model '{model_name}'"),
        )
    }))
}

fn speaks_openai(kind: ProviderKind) -> bool {
    !matches!(
        kind,
        ProviderKind::Anthropic | ProviderKind::Gemini | ProviderKind::Vertex
    )
}

/// Phase `inspect`: the model name (and stream flag) from a JSON body, or the multipart `model`
/// field; `None` when the request carries no model at all (a bodiless passthrough like
/// `GET /v1/files`).
fn inspect(endpoint: Endpoint, req: &Request) -> Result<Option<(String, Inspection)>, ProxyError> {
    let content_type = req.head.header("content-type").map(|v| v.as_ref()).unwrap_or(b"");
    let is_multipart = content_type.len() >= 19 && content_type[..19].eq_ignore_ascii_case(b"multipart/form-data");
    if is_multipart {
        let model = multipart_field(&req.body, content_type, "model")
            .and_then(|m| std::str::from_utf8(m).ok())
            .map(|m| m.trim().to_owned());
        return match model {
            Some(m) if !m.is_empty() => Ok(Some((m, Inspection::default()))),
            _ => Err(ProxyError::bad_request("the multipart form has no 'model' field").with_param("model")),
        };
    }
    if req.body.is_empty() {
        if endpoint == Endpoint::Passthrough && matches!(req.head.method, Method::Get | Method::Delete | Method::Head) {
            return Ok(None);
        }
        return Err(ProxyError::bad_request(
            "the request body is empty; a JSON object is required",
        ));
    }
    let inspection =
        inspect_body(&req.body).map_err(|e| ProxyError::bad_request(format!("invalid JSON body: {}", e.0)))?;
    match inspection.model.clone() {
        Some(m) => Ok(Some((m, inspection))),
        None if endpoint == Endpoint::Passthrough => Ok(None),
        None => Err(ProxyError::bad_request("you must provide a model parameter").with_param("model")),
    }
}

/// For requests without a model: `routing.default_model`, else the first OpenAI-kind provider's
/// route (files, batches and similar account-level endpoints).
fn default_model_for(config: &Config) -> Result<String, ProxyError> {
    if let Some(model) = &config.routing.default_model {
        return Ok(model.clone());
    }
    if config.routes.wildcard.is_some() {
        return Ok(String::new());
    }
    config
        .routes
        .by_model
        .values()
        .min_by_key(|r| r.index)
        .map(|r| r.model.clone())
        .ok_or_else(|| {
            ProxyError::new(
                ErrorKind::NoRoute,
                Side::Downstream,
                "no provider can serve this request",
            )
        })
}

/// Phase `adapt` (same protocol): the body as sent, with only the model value replaced when the
/// client used an alias.
fn adapt(body: &Bytes, inspection: &Inspection, upstream_model: &str, client_model: &str) -> Bytes {
    match &inspection.model_span {
        Some(span) if !upstream_model.is_empty() && upstream_model != client_model => {
            Bytes::from(splice_model(body, span.clone(), upstream_model))
        }
        _ => body.clone(),
    }
}

/// Phase `send`: one attempt on one provider. A failure on a reused pooled connection before
/// any response byte is retried once on a fresh connection (the pooled one was probably closed
/// by the upstream while idle); that retry does not count as an attempt.
async fn send(
    core: &Core,
    ctx: &RequestContext,
    req: &Request,
    outgoing: &Outgoing<'_>,
    upstream_path: &str,
) -> Result<(Exchange, ResponseHead), UpstreamError> {
    let provider = outgoing.provider;
    let upstream_config = &ctx.generation.config.upstream;
    let connector = &ctx.generation.connector;
    let pool_key = PoolKey::for_base(&provider.base_url, connector.tls_id);
    let key_index = core.balance.borrow_mut().pick_key(provider);
    let key = provider.keys.get(key_index).map(|k| k.secret.expose()).unwrap_or("");
    let head_request = req.head.method == Method::Head;
    let mut exchange = upstream::checkout(&core.pool, connector, &pool_key, upstream_config.connect_timeout).await?;
    loop {
        let head = upstream_request_head(&req.head, provider, key, upstream_path, outgoing.body.len());
        let result = match exchange.send(head, &outgoing.body).await {
            Ok(()) => {
                exchange
                    .read_head(upstream_config.first_byte_timeout, head_request)
                    .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(head) => return Ok((exchange, head)),
            Err(e) if exchange.reused && e.before_response() => {
                exchange = upstream::connect_fresh(connector, &pool_key, upstream_config.connect_timeout).await?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Phases `relay` and `finish`: the upstream answer goes to the client as it arrives; the
/// connection returns to the pool only if the body was completely read.
#[allow(clippy::too_many_arguments)]
async fn relay(
    core: &Core,
    ctx: &RequestContext,
    req: &Request,
    res: &mut Responder<'_>,
    provider: &Provider,
    attempts: usize,
    mut exchange: Exchange,
    head: ResponseHead,
) -> Result<(), ProxyError> {
    let upstream_config = &ctx.generation.config.upstream;
    let idle = upstream_config.stream_idle_timeout;
    let mut digits = itoa::Buffer::new();
    let attempts_text = digits.format(attempts).as_bytes().to_vec();
    let headers = response_headers(&head.headers, &ctx.request_id, &provider.name, &attempts_text);
    let pool_key = PoolKey::for_base(&provider.base_url, ctx.generation.connector.tls_id);
    let _ = req;
    match head.framing {
        ResponseFraming::Empty => {
            let result = res.send(head.status, &headers, Bytes::new()).await;
            upstream::checkin(&core.pool, &pool_key, exchange);
            result.map_err(client_gone)
        }
        ResponseFraming::Length(n) if n <= BUFFER_WHOLE_LIMIT => {
            let body = exchange.read_to_end(idle, n as usize).await?;
            upstream::checkin(&core.pool, &pool_key, exchange);
            res.send(head.status, &headers, body).await.map_err(client_gone)
        }
        framing => {
            let length = match framing {
                ResponseFraming::Length(n) => Some(n),
                _ => None,
            };
            res.start(head.status, &headers, length).await.map_err(client_gone)?;
            loop {
                match exchange.next_piece(idle).await {
                    Ok(Some(piece)) => {
                        // A failed write means the client left: the upstream connection is
                        // dropped (not pooled), which cancels the generation upstream.
                        res.piece(&piece).await.map_err(client_gone)?;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(provider = %provider.name, "upstream failed mid-response: {e}");
                        res.abort();
                        return Ok(());
                    }
                }
            }
            res.finish().await.map_err(client_gone)?;
            upstream::checkin(&core.pool, &pool_key, exchange);
            Ok(())
        }
    }
}

fn client_gone(e: std::io::Error) -> ProxyError {
    ProxyError::new(
        ErrorKind::Internal,
        Side::Downstream,
        format!("client connection lost: {e}"),
    )
}
