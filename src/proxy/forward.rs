//! Proxied endpoints from `inspect` to `finish`: read the model strictly, check the client may
//! use it, then try candidates (keys within a provider, then providers, then fallback models)
//! until one answers, and relay that answer.
//! Invariant: nothing reaches the client before an upstream answer is chosen for delivery, so
//! every retry is invisible to the client; at most `retry.max_attempts` upstream requests are
//! made per client request (a stale pooled connection retried once does not count).

use std::time::{Duration, Instant};

use bytes::Bytes;
use smallvec::SmallVec;

use super::admit::{admit_client, never_reached, pick_available_key, usage_tokens};
use super::classify::{classify_error, classify_status, Penalty, Verdict};
use super::error::{ErrorKind, ProxyError, Side};
use super::inspect::{adapt, default_model_for, inspect};
use super::relay::{relay, RelayInput};
use super::send::{backoff, discard, send};
use super::transform::ResponseTransform;
use super::{Core, Endpoint, RequestContext};
use crate::codec::json::Inspection;
use crate::config::{Client, Config, Provider, Route};
use crate::health::{now_ms, KeyHealth};
use crate::limits::estimate::estimate_tokens;
use crate::limits::{self, learned};
use crate::providers::{self, PrepareError};
use crate::route::find_route;
use crate::server::{Request, Responder};
use crate::storage::windows::unix_now_ms;
use crate::upstream::PoolKey;
use crate::usage::anthropic::AnthropicUsageTap;
use crate::usage::openai::{inject_include_usage, Mode, OpenAiUsageTap};
use crate::usage::Usage;

pub(super) async fn forward(
    core: &Core,
    ctx: &RequestContext,
    endpoint: Endpoint,
    client: Option<&Client>,
    req: Request,
    res: &mut Responder<'_>,
) -> Result<(), ProxyError> {
    let config = &ctx.generation.config;
    let max_json_depth = config.server.max_json_depth;
    let (model, inspection) = match inspect(endpoint, &req, max_json_depth)? {
        Some(found) => found,
        None => (default_model_for(config)?, Inspection::default()),
    };
    if let Some(client) = client {
        if !client.allows(&model) {
            let message = format!("this API key may not use model '{model}'");
            return Err(ProxyError::new(ErrorKind::Forbidden, Side::Downstream, message).with_code("model_not_allowed"));
        }
    }
    let (route, _defaulted) = find_route(config, &model).map_err(|_| {
        let message = format!("the model '{model}' does not exist or has no route");
        ProxyError::new(ErrorKind::NoRoute, Side::Downstream, message)
            .with_param("model")
            .with_code("model_not_found")
    })?;
    {
        let mut trace = ctx.trace.borrow_mut();
        trace.model = model.clone();
        trace.stream = inspection.stream;
    }
    let plan = plan(core, ctx, route, &model);
    let tokens = if ctx.generation.limits.any_tpm {
        estimate_tokens(req.body.len(), &inspection)
    } else {
        0
    };
    let client_limits = client.and_then(|c| Some((c, ctx.generation.limits.clients.get(c.index)?)));
    let client_reservation = match client_limits {
        Some((client, limits)) if !limits.is_unlimited() => {
            let admitted = admit_client(client, limits, tokens);
            if admitted.is_err() {
                core.metrics.lock().limit_rejection("client");
            }
            Some((limits, admitted?))
        }
        _ => None,
    };
    let mut attempt = Attempts {
        max: config.retry.max_attempts.max(1) as usize,
        made: 0,
        tokens,
        soonest_cool: None,
        last_error: None,
        last_penalty: None,
    };
    let deadline = config.upstream.request_timeout.map(|t| req.received_at + t);
    let job = Job {
        req: &req,
        inspection: &inspection,
        model: &model,
        endpoint,
        deadline,
    };
    let result = attempt_all(core, ctx, &job, res, &plan, &mut attempt).await;
    // The client's own windows: settle TPM to what the upstream reported; give everything
    // back when no upstream was ever asked (every key full, cooling or unusable).
    if let Some((limits, reservation)) = client_reservation {
        match &result {
            Ok(usage) if usage.reported => limits.settle(&reservation, usage_tokens(usage), limits::now()),
            _ if attempt.made == 0 => limits.refund(&reservation),
            _ => {}
        }
    }
    result.map(|_| ())
}

/// What every attempt of one client request shares.
struct Job<'a> {
    req: &'a Request,
    inspection: &'a Inspection,
    model: &'a str,
    endpoint: Endpoint,
    deadline: Option<Instant>,
}

/// Tries the plan (twice when every key was cooling or full and `wait_for_key_ms` allows
/// waiting for the soonest); the usage of the delivered answer.
async fn attempt_all(
    core: &Core,
    ctx: &RequestContext,
    job: &Job<'_>,
    res: &mut Responder<'_>,
    plan: &[Step<'_>],
    attempt: &mut Attempts,
) -> Result<Usage, ProxyError> {
    let config = &ctx.generation.config;
    for round in 0..2 {
        for step in plan {
            if let Some(usage) = try_provider(core, ctx, job, res, step, attempt).await? {
                return Ok(usage);
            }
            if attempt.made >= attempt.max {
                break;
            }
        }
        let wait = attempt.soonest_cool.map(|until| until.saturating_sub(now_ms()));
        match wait {
            Some(ms) if round == 0 && attempt.made == 0 && ms <= config.retry.wait_for_key.as_millis() as u64 => {
                Box::pin(monoio::time::sleep(Duration::from_millis(ms))).await;
                attempt.soonest_cool = None;
            }
            _ => break,
        }
    }
    let error = std::mem::take(attempt).exhausted(job.model);
    if error.kind() == ErrorKind::RateLimited {
        core.metrics.lock().limit_rejection("key");
    }
    Err(error)
}

/// One provider candidate in the order to try.
struct Step<'a> {
    route: &'a Route,
    candidate: usize,
}

/// The route's candidates in balancing order, then each fallback model's.
fn plan<'a>(core: &Core, ctx: &'a RequestContext, route: &'a Route, model: &str) -> SmallVec<[Step<'a>; 8]> {
    let config: &'a Config = &ctx.generation.config;
    let mut balance = core.balance.borrow_mut();
    balance.sync(ctx.generation.id, config);
    let mut steps: SmallVec<[Step<'a>; 8]> = balance
        .order(config, route)
        .into_iter()
        .map(|candidate| Step { route, candidate })
        .collect();
    for fallback in config.routing.fallbacks.get(model).into_iter().flatten() {
        if let Some(fallback_route) = config.routes.by_model.get(fallback.as_str()) {
            let order = balance.order(config, fallback_route);
            steps.extend(order.into_iter().map(|candidate| Step {
                route: fallback_route,
                candidate,
            }));
        }
    }
    steps
}

#[derive(Default)]
struct Attempts {
    max: usize,
    made: usize,
    /// Tokens reserved against TPM windows for each attempt.
    tokens: u64,
    /// Earliest moment a cooling candidate key frees up (monotonic ms).
    soonest_cool: Option<u64>,
    last_error: Option<ProxyError>,
    last_penalty: Option<Penalty>,
}

impl Attempts {
    fn note_cooling(&mut self, until: u64) {
        self.soonest_cool = Some(self.soonest_cool.map_or(until, |s| s.min(until)));
    }

    /// The error when no candidate delivered: 429 when keys are only cooling, 503 when none is
    /// usable at all, else the last upstream failure.
    fn exhausted(self, model: &str) -> ProxyError {
        let cooling_only = self.made == 0 || matches!(self.last_penalty, Some(Penalty::Cool(_)));
        if let (true, Some(until)) = (cooling_only, self.soonest_cool) {
            let seconds = until.saturating_sub(now_ms()).div_ceil(1000).max(1);
            let message = format!("every key for model '{model}' is rate limited; retry in {seconds} s");
            return ProxyError::new(ErrorKind::RateLimited, Side::Upstream, message)
                .with_code("rate_limit_exceeded")
                .with_retry_after(seconds);
        }
        if let Some(error) = self.last_error {
            return error;
        }
        let message = format!("no usable upstream key for model '{model}' (all quarantined or disabled)");
        ProxyError::new(ErrorKind::NoUsableKey, Side::Upstream, message).with_code("no_usable_key")
    }
}

/// Tries keys of one provider until one delivers, the provider has no usable key left, or the
/// attempts are used up. `Ok(Some(usage))` = an answer went to the client.
async fn try_provider(
    core: &Core,
    ctx: &RequestContext,
    job: &Job<'_>,
    res: &mut Responder<'_>,
    step: &Step<'_>,
    attempt: &mut Attempts,
) -> Result<Option<Usage>, ProxyError> {
    let Job {
        req,
        inspection,
        model,
        deadline,
        ..
    } = *job;
    let config = &ctx.generation.config;
    let Some(candidate) = step.route.candidates.get(step.candidate) else {
        return Ok(None);
    };
    let Some(provider) = config.providers.get(candidate.provider) else {
        return Ok(None);
    };
    if !provider.enabled {
        return Ok(None);
    }
    // Phase `adapt`: passthrough (model splice only) or a protocol translation.
    let same = || adapt(&req.body, inspection, &candidate.upstream_model, model);
    let prepared = match providers::prepare(
        req.head.path(),
        provider.kind,
        &req.body,
        &candidate.upstream_model,
        model,
        config.server.max_json_depth,
        same,
    ) {
        Ok(prepared) => prepared,
        Err(PrepareError::Unsupported(reason)) => {
            let message = format!("provider '{}' cannot serve this request: {reason}", provider.name);
            attempt.last_error = Some(ProxyError::new(ErrorKind::UpstreamFailed, Side::Upstream, message));
            return Ok(None);
        }
        Err(PrepareError::BadRequest(message)) => return Err(ProxyError::bad_request(message)),
    };
    // Same protocol: rotor may ask for usage the client did not (and hide it again).
    let (body, usage_mode) = match prepared.translation {
        None => usage_plan(job, prepared.body.clone(), config.server.max_json_depth),
        Some(_) => (prepared.body.clone(), Mode::Observe),
    };
    let upstream_path = prepared.path.as_str();
    let mut tried: SmallVec<[usize; 4]> = SmallVec::new();
    while attempt.made < attempt.max {
        let mut soonest = None;
        let picked = pick_available_key(core, ctx, provider, &tried, attempt.tokens, &mut soonest);
        if let Some(until) = soonest {
            attempt.note_cooling(until);
        }
        let Some((key_index, reservation)) = picked else {
            return Ok(None);
        };
        tried.push(key_index);
        let key_limits = ctx.generation.limits.key(provider.index, key_index);
        let Some(health) = ctx.generation.key_health.get(provider.index, key_index) else {
            return Ok(None);
        };
        if attempt.made > 0 {
            backoff(config.retry.backoff).await;
        }
        attempt.made += 1;
        let _in_flight = health.enter();
        note_attempt(ctx, provider, &candidate.upstream_model, model, key_index, attempt.made);
        let key = provider.keys.get(key_index).map_or("", |k| k.secret.expose());
        let sent = send(core, ctx, req, provider, key, &body, upstream_path).await;
        let (exchange, head) = match sent {
            Ok(answer) => answer,
            Err(error) => {
                tracing::debug!(provider = %provider.name, key = %health.masked, "attempt {} failed: {error}", attempt.made);
                core.metrics.lock().attempt(&provider.name, "error");
                if never_reached(&error) {
                    if let Some(limits) = key_limits {
                        limits.refund(&reservation);
                    }
                }
                apply(health, classify_error(&error), config, attempt);
                attempt.last_error = Some(error.into());
                continue;
            }
        };
        if let Some(wait) = learned::spent_for(&head.headers, unix_now_ms) {
            tracing::debug!(provider = %provider.name, key = %health.masked, wait_ms = wait, "upstream says the key is spent");
            health.cool_until(now_ms() + wait);
        }
        let mut verdict = classify_status(head.status, &head.headers, config.retry.cooldown);
        let last_chance = attempt.made >= attempt.max;
        match verdict {
            Verdict::Deliver { key_ok } => {
                core.metrics.lock().attempt(&provider.name, "ok");
                if key_ok {
                    health.record_success();
                }
            }
            Verdict::Retry(_) if last_chance => {
                core.metrics.lock().attempt(&provider.name, "error");
                apply(health, verdict, config, attempt);
            }
            Verdict::Retry(_) => {
                core.metrics.lock().attempt(&provider.name, "retried");
                tracing::debug!(provider = %provider.name, key = %health.masked, status = head.status, "retrying elsewhere");
                let message = format!("upstream '{}' answered {}", provider.name, head.status);
                attempt.last_error = Some(ProxyError::new(ErrorKind::UpstreamFailed, Side::Upstream, message));
                // Boxed: a retried answer is the rare path.
                let error_body = Box::pin(discard(core, ctx, provider, exchange, &head)).await;
                // Gemini puts its 429 wait in the body (`RetryInfo.retryDelay`), not a header.
                if let (Verdict::Retry(Penalty::Cool(_)), Some(body)) = (verdict, &error_body) {
                    if let Some(wait) = providers::retry_delay(provider.kind, body, config.server.max_json_depth) {
                        verdict = Verdict::Retry(Penalty::Cool(wait));
                    }
                }
                apply(health, verdict, config, attempt);
                continue;
            }
        }
        let pool_key = PoolKey::for_base(&provider.base_url, ctx.generation.connector.tls_id);
        let input = RelayInput {
            provider,
            pool_key,
            attempts: attempt.made,
            head,
            exchange,
            deadline,
        };
        let mut transform: Box<dyn ResponseTransform> = match &prepared.translation {
            Some(translation) => translation.transform(input.head.status),
            // Anthropic to Anthropic: bytes untouched, usage read on the way.
            None if job.endpoint == Endpoint::Messages => {
                Box::new(AnthropicUsageTap::new(config.server.max_json_depth))
            }
            None => Box::new(OpenAiUsageTap::new(usage_mode, config.server.max_json_depth)),
        };
        let relayed = relay(core, ctx, res, input, transform.as_mut()).await?;
        ctx.trace.borrow_mut().usage = relayed.usage;
        tracing::debug!(
            request_id = ?ctx.request_id,
            provider = %provider.name,
            status = relayed.status,
            streamed = relayed.streamed,
            complete = relayed.complete,
            usage = ?relayed.usage,
            "relayed"
        );
        if let (Some(limits), true) = (key_limits, relayed.usage.reported) {
            limits.settle(&reservation, usage_tokens(&relayed.usage), limits::now());
        }
        return Ok(Some(relayed.usage));
    }
    Ok(None)
}

/// Records who is being tried, for the request record and metrics.
fn note_attempt(
    ctx: &RequestContext,
    provider: &Provider,
    upstream_model: &str,
    model: &str,
    key_index: usize,
    n: usize,
) {
    let mut trace = ctx.trace.borrow_mut();
    if trace.before_upstream.is_none() {
        trace.before_upstream = Some(ctx.received_at.elapsed());
    }
    trace.attempts = n as u32;
    trace.provider = Some(provider.index);
    if upstream_model.is_empty() || upstream_model == model {
        trace.upstream_model.clear();
    } else if trace.upstream_model != upstream_model {
        trace.upstream_model = upstream_model.to_owned();
    }
    trace.key = Some((provider.index, key_index));
}

/// Streams of chat and completions always carry usage upstream: when the client did not ask
/// for it, rotor asks, and the relay hides the extra chunk again (DESIGN 1.4).
fn usage_plan(job: &Job<'_>, body: Bytes, max_json_depth: usize) -> (Bytes, Mode) {
    let streams_tokens = matches!(job.endpoint, Endpoint::ChatCompletions | Endpoint::Completions);
    if !job.inspection.stream || !streams_tokens || job.inspection.include_usage {
        return (body, Mode::Observe);
    }
    match inject_include_usage(&body, job.inspection.has_stream_options, max_json_depth) {
        Some(injected) => (injected, Mode::Hide),
        None => (body, Mode::Observe),
    }
}

fn apply(health: &KeyHealth, verdict: Verdict, config: &Config, attempt: &mut Attempts) {
    let Verdict::Retry(penalty) = verdict else { return };
    let now = now_ms();
    let quarantine_ms = config.retry.quarantine.as_millis() as u64;
    match penalty {
        Penalty::Cool(wait) => {
            let until = now + wait.as_millis() as u64;
            health.cool_until(until);
            attempt.note_cooling(until);
        }
        Penalty::Reject => {
            tracing::warn!(key = %health.masked, "upstream rejected the key; quarantined until a probe succeeds");
            health.quarantine(now, quarantine_ms);
        }
        Penalty::Failure => health.record_failure(now, config.retry.quarantine_after_failures, quarantine_ms),
    }
    attempt.last_penalty = Some(penalty);
}
