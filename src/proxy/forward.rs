//! Proxied endpoints from `inspect` to `finish`: read the model strictly, check the client may
//! use it, then try candidates (keys within a provider, then providers, then fallback models)
//! until one answers, and relay that answer.
//! Invariant: nothing reaches the client before an upstream answer is chosen for delivery, so
//! every retry is invisible to the client; at most `retry.max_attempts` upstream requests are
//! made per client request (a stale pooled connection retried once does not count).

use std::time::Duration;

use bytes::Bytes;
use smallvec::SmallVec;

use super::admit::admit_client;
use super::admit::KeyPin;
use super::attempt::{try_key, KeyTry};
use super::attempts::{usable_in, Attempts};
use super::cached::{self, Lookup};
use super::error::{ErrorKind, ProxyError, Side};
use super::inspect::{default_model_for, inspect, validate_model_name};
use super::pinning::Owner;
use super::target::{check_passthrough_path, check_upstream_path};
use super::{Core, Endpoint, RequestContext};
use crate::codec::json::{Inspection, ModelName};
use crate::config::{Client, Config, Provider, Route};
use crate::health::clock::Moment;
use crate::health::{now_ms, Gate};
use crate::limits;
use crate::limits::estimate::estimate_tokens;
use crate::providers::dialog::Dialog;
use crate::providers::{self, Adapter, ClientPath, PrepareError, Prepared};
use crate::route::find_route;
use crate::server::{HeldBody, Request, Responder};
use crate::usage::openai::{include_usage_prefix, inject_include_usage, Mode};
use crate::usage::Usage;

pub(super) async fn forward(
    core: &Core,
    ctx: &RequestContext,
    endpoint: Endpoint,
    client: Option<&Client>,
    req: &Request,
    res: &mut Responder<'_>,
) -> Result<(), ProxyError> {
    let config = &ctx.generation.config;
    if endpoint == Endpoint::Passthrough {
        check_passthrough_path(req.head.path())?;
    }
    let max_json_depth = config.server.max_json_depth;
    let (asked, inspection) = match inspect(endpoint, req, max_json_depth)? {
        // `inspect` copied the name out of the body, once (a `String` was an allocation and
        // its free).
        Some((asked, inspection)) => {
            if !asked.is_plain() {
                validate_model_name(&asked)?;
            }
            (asked, inspection)
        }
        None => (ModelName::from(default_model_for(config)?), Inspection::default()),
    };
    if let Some(client) = client {
        if !client.allows(&asked) {
            let message = format!("this API key may not use model '{asked}'");
            return Err(ProxyError::new(ErrorKind::Forbidden, Side::Downstream, message).with_code("model_not_allowed"));
        }
    }
    let (route, defaulted) = find_route(config, &asked).map_err(|_| {
        let message = format!("the model '{asked}' does not exist or has no route");
        ProxyError::new(ErrorKind::NoRoute, Side::Downstream, message)
            .with_param("model")
            .with_code("model_not_found")
    })?;
    // Only a model that routed is recorded (a refused name labels nothing).
    let model: &str = ctx.model.get_or_init(|| asked).as_str();
    {
        let mut trace = ctx.trace.borrow_mut();
        trace.defaulted = defaulted;
        trace.stream = inspection.stream;
    }
    // An account-scoped object lives with the key that created it: only that one is asked.
    // Only a path under an object collection names or creates pinned objects: one check here
    // spares every other request both look-ups.
    let on_collection = crate::pins::creates_objects(req.head.path());
    let owner = if on_collection {
        super::pinning::owner(&core.gateway, config, req)?
    } else {
        None
    };
    // Filled in place: returned by value, the plan (a 144-byte `SmallVec`) was copied out of
    // `plan` and again into this future.
    let mut plan = SmallVec::new();
    match owner {
        Some(owner) => {
            let (route, candidate) = super::pinning::route_of(config, route, owner)?;
            plan.push(Step { route, candidate });
        }
        None => fill_plan(core, ctx, route, model, &mut plan),
    }
    let tokens = if ctx.generation.limits.any_tpm {
        estimate_tokens(req.body.len(), &inspection)
    } else {
        0
    };
    let client_limits = client.and_then(|c| Some((c, ctx.generation.limits.clients.get(c.index)?)));
    let client_reservation = match client_limits {
        Some((client, limits)) if !limits.is_unlimited() => {
            let admitted = admit_client(client, limits, tokens, lease_wait(config)).await;
            if admitted.is_err() {
                core.metrics.lock().limit_rejection("client");
            }
            Some((limits, admitted?))
        }
        _ => None,
    };
    // With the cache off (the default) no lookup future is built, moved and dropped.
    let looked_up = match cached::applies(ctx, endpoint) {
        true => cached::lookup(core, ctx, endpoint, client, req, model, inspection.stream).await,
        false => Lookup::Off,
    };
    let cache = match looked_up {
        Lookup::Hit(answer) => {
            // No upstream call: the client's request windows count it, its TPM window is
            // charged nothing (no tokens were generated for it).
            if let Some((limits, reservation)) = &client_reservation {
                limits.settle(reservation, 0, limits::now());
            }
            return cached::serve_hit(ctx, res, &answer).await;
        }
        Lookup::Miss(key) => Some(key),
        Lookup::Off | Lookup::Bypass => None,
    };
    let mut attempt = Attempts::new(config.retry.max_attempts.max(1) as usize, tokens);
    let deadline = config.upstream.request_timeout.map(|t| req.received_at + t);
    let job = Job {
        req,
        client_path: ClientPath {
            path: req.head.path(),
            front: endpoint.front(),
        },
        inspection: &inspection,
        model,
        endpoint,
        deadline,
        plan: &plan,
        cache: std::cell::RefCell::new(cache),
        owner,
        records: on_collection && super::pinning::records(req),
    };
    // The passes over the plan run here, not in an `attempt_all` future of their own: that was
    // one more state machine resumed at every poll of every request. One pass over every
    // candidate, more passes while attempts remain and keys failed in ways that may not repeat
    // (a 5xx, a broken connection), and one more after a wait when every key was cooling or
    // full and `wait_for_key_ms` allows waiting for the soonest.
    let result = 'attempts: {
        let mut waited = false;
        // From the request's arrival (read once already): a clock read per request saved.
        let lease_deadline = ctx.received_at + lease_wait(config);
        loop {
            let made_before = attempt.made;
            for step in job.plan {
                match try_provider(core, ctx, &job, res, step, &mut attempt).await {
                    Ok(Some(usage)) => break 'attempts Ok(usage),
                    Ok(None) => {}
                    Err(error) => break 'attempts Err(error),
                }
                if attempt.made >= attempt.max {
                    break;
                }
            }
            if attempt.made >= attempt.max {
                break;
            }
            if attempt.made > made_before && attempt.next_pass() {
                continue;
            }
            if attempt.made == 0 && std::mem::take(&mut attempt.leasing) && Moment::now() < lease_deadline {
                // A key had no cluster lease in hand: the cluster thread is drawing one.
                crate::deadline::sleep(super::admit::LEASE_POLL).await;
                continue;
            }
            let wait = attempt.soonest_cool.map(|until| until.saturating_sub(now_ms()));
            match wait {
                Some(ms) if !waited && attempt.made == 0 && ms <= config.retry.wait_for_key.as_millis() as u64 => {
                    crate::deadline::sleep(Duration::from_millis(ms)).await;
                    attempt.soonest_cool = None;
                    waited = true;
                }
                _ => break,
            }
        }
        Err(exhausted(core, ctx, &job, &mut attempt))
    };
    // The client's own windows: settle TPM to what the upstream reported; give everything
    // back when no upstream was ever asked (every key full, cooling or unusable).
    if let Some((limits, reservation)) = client_reservation {
        match &result {
            Ok(usage) if usage.reported => limits.settle(&reservation, usage.total(), limits::now()),
            _ if attempt.made == 0 => limits.refund(&reservation),
            _ => {}
        }
    }
    result.map(|_| ())
}

/// The longest a request waits for a cluster lease (zero without `[cluster]`).
fn lease_wait(config: &Config) -> Duration {
    config.cluster.as_ref().map_or(Duration::ZERO, |c| c.lease_wait)
}

/// What every attempt of one client request shares.
pub(super) struct Job<'a> {
    pub(super) req: &'a Request,
    /// The request's path and its front door (from the route: the path is not matched again).
    pub(super) client_path: ClientPath<'a>,
    pub(super) inspection: &'a Inspection,
    pub(super) model: &'a str,
    pub(super) endpoint: Endpoint,
    pub(super) deadline: Option<Moment>,
    pub(super) plan: &'a [Step<'a>],
    /// A cache miss's key: the delivered answer is stored under it when it qualifies.
    pub(super) cache: std::cell::RefCell<Option<crate::cache::CacheKey>>,
    /// The creator of an object the request names (see `pinning`).
    pub(super) owner: Option<Owner>,
    /// A 2xx answer's ids are pinned to the key that made it (a create under a collection).
    pub(super) records: bool,
}

impl Job<'_> {
    /// The providers of the plan (for `Retry-After`, on the rare 503 path).
    pub(super) fn plan_providers(&self) -> impl Iterator<Item = usize> + '_ {
        self.plan
            .iter()
            .filter_map(|s| s.route.candidates.get(s.candidate))
            .map(|c| c.provider)
    }
}

/// Every pass over the plan is over and nothing was delivered: the error that says why.
fn exhausted(core: &Core, ctx: &RequestContext, job: &Job<'_>, attempt: &mut Attempts) -> ProxyError {
    let error = std::mem::take(attempt).exhausted(job.model, || usable_in(ctx, job.plan_providers()));
    if error.kind() == ErrorKind::RateLimited {
        core.metrics.lock().limit_rejection("key");
    }
    error
}

/// One provider candidate in the order to try.
pub(super) struct Step<'a> {
    route: &'a Route,
    candidate: usize,
}

/// The route's candidates in balancing order, then each fallback model's, into `steps`.
fn fill_plan<'a>(
    core: &Core,
    ctx: &'a RequestContext,
    route: &'a Route,
    model: &str,
    steps: &mut SmallVec<[Step<'a>; 8]>,
) {
    let config: &'a Config = &ctx.generation.config;
    let mut balance = core.balance.borrow_mut();
    balance.sync(ctx.generation.id, config);
    balance.order(config, route, |candidate| steps.push(Step { route, candidate }));
    for fallback in config.routing.fallbacks.get(model).into_iter().flatten() {
        if let Some(fallback_route) = config.routes.by_model.get(fallback.as_str()) {
            balance.order(config, fallback_route, |candidate| {
                steps.push(Step {
                    route: fallback_route,
                    candidate,
                })
            });
        }
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
    let config = &ctx.generation.config;
    let Some(candidate) = step.route.candidates.get(step.candidate) else {
        return Ok(None);
    };
    let Some(provider) = config.providers.get(candidate.provider).filter(|p| p.enabled) else {
        return Ok(None);
    };
    let Some(provider_health) = ctx.generation.key_health.provider_health(provider.index) else {
        return Ok(None);
    };
    // The provider's breaker: closed (one atomic load, no clock read), open, or half-open with
    // this request as its one probe.
    let probe = match provider_health.open_until().map(|_| provider_health.gate(now_ms())) {
        None | Some(Gate::Closed) => None,
        Some(Gate::Probe(permit)) => Some(permit),
        Some(Gate::Open(_)) => {
            attempt.breaker_open = true;
            return Ok(None);
        }
    };
    let max_depth = config.server.max_json_depth;
    // Filled in place: returned by value, the target was copied out of the result.
    let mut slot = None;
    adapt(
        core,
        ctx,
        job,
        provider,
        &candidate.upstream_model,
        max_depth,
        attempt,
        &mut slot,
    )?;
    let Some(target) = slot.as_ref() else {
        return Ok(None);
    };
    while attempt.made < attempt.max {
        match try_key(core, ctx, job, res, target, attempt).await? {
            KeyTry::Delivered(usage) => return Ok(Some(usage)),
            KeyTry::NoKey => return Ok(None),
            KeyTry::Failed => {}
        }
        // A half-open probe is a single attempt: while the breaker is open, move on.
        if probe.is_some() && provider_health.open_until().is_some() {
            return Ok(None);
        }
    }
    Ok(None)
}

/// Phase `adapt`: passthrough (model splice only) or a protocol translation, as the provider's
/// adapter plans it, into `slot`. Left `None` = this provider cannot serve this request (kept
/// as the last error, the next candidate is tried).
#[allow(clippy::too_many_arguments)]
fn adapt<'a>(
    core: &Core,
    ctx: &RequestContext,
    job: &Job<'_>,
    provider: &'a Provider,
    upstream_model: &'a str,
    max_depth: usize,
    attempt: &mut Attempts,
    slot: &mut Option<Target<'a>>,
) -> Result<(), ProxyError> {
    let Job {
        req, inspection, model, ..
    } = *job;
    let body = req.body.bytes();
    let same = || super::inspect::adapt(&body, inspection, upstream_model, model);
    let adapter = Adapter::of(provider);
    let prepared = match adapter.relayed_path(job.client_path.front) {
        // A fixed door on the provider's own protocol (most requests): what `prepare` plans
        // for it, without its dispatch and the plan's moves out of it and out of a `Result`
        // (~150 and ~30 instructions a chat request, callgrind, issue 18).
        Some(path) => Prepared::relayed(same(), path),
        None => match adapter.prepare(job.client_path, &body, upstream_model, model, max_depth, same) {
            Ok(prepared) => prepared,
            Err(error) => return refused(provider, attempt, error),
        },
    };
    // A borrowed path is one of rotor's constants (see `Prepared::path`): nothing to judge.
    if let std::borrow::Cow::Owned(path) = &prepared.path {
        check_upstream_path(job.endpoint, path)?;
    }
    let owned = job.owner.filter(|o| o.provider == provider.index);
    let dialog = prepared.dialog.map(|plan| {
        let clients = &ctx.generation.config.clients;
        let client = ctx.trace.borrow().client.and_then(|i| clients.get(i));
        Box::new(Dialog::open(
            *plan,
            &core.gateway.sessions,
            provider,
            client.map_or("", |c| c.name.as_str()),
        ))
    });
    // Same protocol: rotor may ask for usage the client did not (and hide it again).
    let (body, body_prefix, usage_mode) = match prepared.translation {
        None => usage_plan(job, prepared.body, max_depth),
        Some(_) => (prepared.body, &b""[..], Mode::Observe),
    };
    *slot = Some(Target {
        provider,
        adapter,
        upstream_model,
        body: HeldBody::new(body),
        body_prefix,
        usage_mode,
        path: prepared.path,
        translation: prepared.translation,
        dialog,
        header: prepared.header,
        owned_key: owned.map(|o| o.key),
    });
    Ok(())
}

/// The provider's adapter cannot plan this request: an error for the client, or (kept as the
/// last error) the next candidate.
fn refused(provider: &Provider, attempt: &mut Attempts, error: PrepareError) -> Result<(), ProxyError> {
    match error {
        PrepareError::Unsupported(reason) => {
            let message = format!("provider '{}' cannot serve this request: {reason}", provider.name);
            attempt.last_error = Some(ProxyError::new(ErrorKind::UpstreamFailed, Side::Upstream, message));
        }
        PrepareError::BadRequest(message) => return Err(ProxyError::bad_request(message)),
        PrepareError::Unavailable(reason) => {
            // A 404 unless an earlier candidate failed for real.
            if attempt.last_error.is_none() {
                let message = format!("provider '{}': {reason}", provider.name);
                attempt.last_error = Some(ProxyError::new(ErrorKind::NotFound, Side::Downstream, message));
            }
        }
    }
    Ok(())
}

/// One provider, ready to send to.
pub(super) struct Target<'a> {
    pub(super) provider: &'a Provider,
    pub(super) adapter: Adapter,
    pub(super) upstream_model: &'a str,
    /// Sent behind `body_prefix` (empty but for the usage member, see `usage_plan`); let go
    /// of, like the client's, once a stream's answer starts.
    pub(super) body: HeldBody,
    pub(super) body_prefix: &'static [u8],
    pub(super) usage_mode: Mode,
    pub(super) path: std::borrow::Cow<'static, str>,
    pub(super) translation: Option<providers::Translation>,
    /// An upstream that takes more than one exchange per attempt (an on-demand session): it
    /// names the key to prefer and the requests to send. Boxed: the rare case would otherwise
    /// widen every `Target`, which lives in each request's future.
    pub(super) dialog: Option<Box<Dialog>>,
    /// The adapter's own request header (Replicate's `prefer: wait=N`).
    pub(super) header: Option<(&'static str, String)>,
    /// The key that created the object the request names: the only one tried.
    pub(super) owned_key: Option<usize>,
}

impl Target<'_> {
    /// The key the request is bound to, if any (see `admit::pick_available_key`).
    pub(super) fn key_pin(&self) -> Option<KeyPin> {
        match self.owned_key {
            Some(index) => Some(KeyPin::Only(index)),
            None => self
                .dialog
                .as_ref()
                .and_then(|d| d.pinned_key(self.provider))
                .map(KeyPin::Prefer),
        }
    }
}

/// Streams of chat and completions always carry usage upstream: when the client did not ask
/// for it, rotor asks, and the relay hides the extra chunk again (DESIGN 1.4). The body to
/// send, what goes in front of it, and the mode. A body that opens with `{` (every SDK's) is
/// sent as the member's prefix and the rest of the client's own bytes, not copied: the copy
/// lived as long as the stream (a 16 KB prompt: about 20 KB more an open stream).
fn usage_plan(job: &Job<'_>, body: Bytes, max_json_depth: usize) -> (Bytes, &'static [u8], Mode) {
    let streams_tokens = matches!(job.endpoint, Endpoint::ChatCompletions | Endpoint::Completions);
    if !job.inspection.stream || !streams_tokens || job.inspection.include_usage {
        return (body, b"", Mode::Observe);
    }
    if !job.inspection.has_stream_options {
        if let Some(prefix) = include_usage_prefix(&body) {
            return (body.slice(1..), prefix, Mode::Hide);
        }
    }
    match inject_include_usage(&body, job.inspection.has_stream_options, max_json_depth) {
        Some(injected) => (injected, b"", Mode::Hide),
        None => (body, b"", Mode::Observe),
    }
}
