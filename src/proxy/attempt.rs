//! One attempt on one provider, as the phases `select` (a key), `send`, `classify` and `relay`
//! (see the table in `proxy/mod.rs`), each a function of that name. `forward` drives the
//! attempts; this module runs one.
//! Invariant: each attempt charges its key once: the key's reservation is refunded only when
//! the upstream was never reached and settled only from usage the upstream reported, and every
//! attempt that reached the upstream is judged (`Attempts::judge`) exactly once.

use std::sync::Arc;

use super::admit::{never_reached, pick_available_key, KeyPin};
use super::attempts::{usable_in, Attempts};
use super::classify::{classify_error, classify_status, error_may_repeat, may_repeat, Penalty, Subject, Verdict};
use super::credential::{plain_secret, send_authenticated};
use super::error::{ErrorKind, ProxyError, Side};
use super::follow::{follow, Fetcher, Followed, Unfollowed};
use super::forward::{Job, Target};
use super::relay::{relay as relay_answer, Relay, RelayInput, Relayed};
use super::send::{backoff, discard, send, send_turn};
use super::{Core, RequestContext};
use crate::codec::response::ResponseHead;
use crate::config::Provider;
use crate::health::{clock, now_ms, KeyHealth, ProviderHealth};
use crate::limits::select::Skipped;
use crate::limits::{self, learned, LimitSet, Reservation};
use crate::providers::adapter::Transform;
use crate::providers::dialog::Turn;
use crate::providers::Front;
use crate::server::Responder;
use crate::storage::windows::unix_now_ms;
use crate::upstream::{Exchange, UpstreamError, UpstreamErrorKind};
use crate::usage::Usage;

pub(super) enum KeyTry {
    /// An answer went to the client.
    Delivered(Usage),
    /// The attempt failed; the next key may be tried.
    Failed,
    /// No usable key left on this provider for this pass.
    NoKey,
}

/// The key phase `select` picked, with what the later phases charge and judge.
struct Picked<'g> {
    index: usize,
    reservation: Reservation,
    health: &'g Arc<KeyHealth>,
    provider_health: &'g Arc<ProviderHealth>,
    limits: Option<&'g LimitSet>,
}

/// Phases `select` (one key) to `relay` for one attempt.
pub(super) async fn try_key(
    core: &Core,
    ctx: &RequestContext,
    job: &Job<'_>,
    res: &mut Responder<'_>,
    target: &Target<'_>,
    attempt: &mut Attempts,
) -> Result<KeyTry, ProxyError> {
    let provider = target.provider;
    let config = &ctx.generation.config;
    // The attempt's start: the key's windows and health, and rotor's own time before it.
    let mut started = clock::read();
    let mut now = clock::ms_at(started);
    let pinned = target.key_pin();
    let Some(key) = select(core, ctx, provider, attempt, now, pinned) else {
        return Ok(KeyTry::NoKey);
    };
    if attempt.made > 0 {
        backoff(config.retry.backoff).await;
        started = clock::read();
        now = clock::ms_at(started);
    }
    attempt.made += 1;
    let _in_flight = key.health.enter();
    note_attempt(
        ctx,
        provider,
        target.upstream_model,
        job.model,
        key.index,
        attempt.made,
        started,
    );
    let subject = Subject {
        provider: &provider.name,
        provider_health: key.provider_health,
        keys: ctx.generation.key_health.provider(provider.index),
        key: key.index,
        started: now,
    };
    let pool_key = provider.keys.get(key.index);
    let secret = pool_key.map_or("", |k| k.secret.expose());
    // A dialog's turn is bound to the key: upstream state it uses was created with it.
    let mut turn = target.dialog.as_ref().zip(pool_key).map(|(d, k)| d.turn(k.id));
    let sent = match turn.as_mut() {
        Some(turn) => Box::pin(send_turn(core, ctx, job.req, provider, secret, turn)).await,
        // A plain secret (every key but a minted credential's) is sent by `send` itself: the
        // answer (exchange and head, 304 bytes) then crosses one future less on its way here.
        None => match plain_secret(&ctx.generation, provider, key.index) {
            // Sent from the answer's buffer, lent while nothing was written to the client.
            Some(auth) => send(core, ctx, job.req, target, auth, &mut res.lend()).await,
            // Boxed: the rare credential path's states stay out of every attempt's future.
            None => Box::pin(send_authenticated(core, ctx, job.req, target, key.index)).await,
        },
    };
    // The answer goes straight into the `Followed` it is relayed from (destructured first and
    // then rebuilt, it was copied once more).
    let mut answer = match sent {
        Ok((exchange, head)) => Followed::unfollowed(exchange, head),
        Err(error) => return send_failed(core, ctx, provider, &key, &subject, attempt, error),
    };
    let outcome = match classify(core, ctx, target, &key, &subject, attempt, &answer.head) {
        Judged::Deliver(outcome) => outcome,
        Judged::Retry(verdict) => {
            let (exchange, head) = (answer.exchange, answer.head);
            Box::pin(retry_elsewhere(ctx, target, &subject, attempt, verdict, exchange, head)).await;
            return Ok(KeyTry::Failed);
        }
    };
    let fetcher = Fetcher {
        core,
        ctx,
        provider,
        adapter: target.adapter,
        key: secret,
    };
    // Without a follow-up (every protocol but Replicate) the first answer is the client's: no
    // boxed `follow` future is built, copied and freed for it.
    if target.translation.is_some() && target.adapter.has_follow_up() {
        let (exchange, head) = (answer.exchange, answer.head);
        answer = match Box::pin(follow(&fetcher, target, res, exchange, head)).await {
            Ok(answer) => answer,
            Err(Unfollowed::Upstream(error)) => {
                unsent(core, ctx, provider, &key, &subject, attempt, error);
                return Ok(KeyTry::Failed);
            }
            Err(Unfollowed::ClientGone) => return Err(client_left(ctx)),
        };
    }
    // A follow-up's own answer (a poll's 429, the stream URL's head) is judged like the first.
    let mut outcome = outcome;
    if answer.followed && answer.body.is_none() {
        match classify(core, ctx, target, &key, &subject, attempt, &answer.head) {
            Judged::Deliver(judged) => outcome = judged,
            Judged::Retry(verdict) => {
                let (exchange, head) = (answer.exchange, answer.head);
                Box::pin(retry_elsewhere(ctx, target, &subject, attempt, verdict, exchange, head)).await;
                if let Some(url) = &answer.cancel_url {
                    super::cancel::spawn(&fetcher, url);
                }
                return Ok(KeyTry::Failed);
            }
        }
    }
    relay(
        core,
        ctx,
        job,
        res,
        target,
        &key,
        &subject,
        attempt,
        &fetcher,
        &mut answer,
        outcome,
        turn,
    )
    .await
}

/// Phase `select`: one usable key of the provider, its windows reserved. Notes when the
/// soonest cooling key frees up, for the wait of `attempt_all`.
fn select<'g>(
    core: &Core,
    ctx: &'g RequestContext,
    provider: &Provider,
    attempt: &mut Attempts,
    now: u64,
    pinned: Option<KeyPin>,
) -> Option<Picked<'g>> {
    let table = &ctx.generation.key_health;
    let tried = attempt.tried_keys(provider.index);
    let mut skipped = Skipped::default();
    let picked = pick_available_key(core, ctx, provider, &tried, attempt.tokens, now, &mut skipped, pinned);
    if let Some(until) = skipped.soonest {
        attempt.note_cooling(until);
    }
    if skipped.leasing {
        // Answered like a full window (429, Retry-After 1) if no lease comes in time.
        attempt.leasing = true;
        attempt.note_cooling(now + 1_000);
    }
    attempt.cluster_down |= skipped.unavailable;
    let (index, reservation) = picked?;
    let (Some(health), Some(provider_health)) =
        (table.get(provider.index, index), table.provider_health(provider.index))
    else {
        return None;
    };
    attempt.mark_tried(provider.index, index, false);
    Some(Picked {
        index,
        reservation,
        health,
        provider_health,
        limits: ctx.generation.limits.key(provider.index, index),
    })
}

/// Phase `send` failed: refund the key when the upstream was never reached, judge the key.
fn send_failed(
    core: &Core,
    ctx: &RequestContext,
    provider: &Provider,
    key: &Picked<'_>,
    subject: &Subject<'_>,
    attempt: &mut Attempts,
    error: UpstreamError,
) -> Result<KeyTry, ProxyError> {
    tracing::debug!(provider = %provider.name, key = %key.health.masked, "attempt {} failed: {error}", attempt.made);
    core.metrics.lock().attempt(&provider.name, "error");
    if never_reached(&error) {
        if let Some(limits) = key.limits {
            limits.refund(&key.reservation);
        }
    }
    if error.kind == UpstreamErrorKind::Encode {
        // Every key and provider would refuse the same head: nothing to retry.
        return Err(ProxyError::new(ErrorKind::Internal, Side::Internal, error.message));
    }
    let repeat = error_may_repeat(&error);
    attempt.judge(
        subject,
        provider.index,
        classify_error(&error),
        repeat,
        &ctx.generation.config.retry,
    );
    attempt.last_error = Some(error.into());
    Ok(KeyTry::Failed)
}

/// What phase `classify` decided for an upstream answer.
enum Judged {
    /// The answer goes to the client, with its metrics outcome; the key is judged.
    Deliver(&'static str),
    /// The answer is to be discarded and the next candidate tried (`retry_elsewhere`).
    Retry(Verdict),
}

/// Phase `classify`: the upstream's status decides between delivering this answer and retrying
/// elsewhere. It reads only the head, so it is a plain function: as an `async fn` taking the
/// exchange and head by value and handing them back, every call moved both into and out of
/// its future, and its state widened every attempt's future.
fn classify(
    core: &Core,
    ctx: &RequestContext,
    target: &Target<'_>,
    key: &Picked<'_>,
    subject: &Subject<'_>,
    attempt: &mut Attempts,
    head: &ResponseHead,
) -> Judged {
    let provider = target.provider;
    let config = &ctx.generation.config;
    if let Some(wait) = learned::spent_for(&head.headers, unix_now_ms) {
        tracing::debug!(provider = %provider.name, key = %key.health.masked, wait_ms = wait, "upstream says the key is spent");
        let now = now_ms();
        key.health.cool_until(now + wait, now);
    }
    let verdict = classify_status(head.status, &head.headers, config.retry.cooldown);
    let outcome = match verdict {
        Verdict::Deliver { .. } => "ok",
        // Out of attempts: the upstream's own answer goes to the client.
        Verdict::Retry(_) if attempt.made >= attempt.max => "error",
        Verdict::Retry(_) => {
            core.metrics.lock().attempt(&provider.name, "retried");
            tracing::debug!(provider = %provider.name, key = %key.health.masked, status = head.status, "retrying elsewhere");
            let message = format!("upstream '{}' answered {}", provider.name, head.status);
            attempt.last_error = Some(match head.status {
                // Overloaded keeps its meaning when no other key is left (issue 16 item 8).
                503 | 529 => ProxyError::overloaded(head.status, message),
                _ => ProxyError::new(ErrorKind::UpstreamFailed, Side::Upstream, message),
            });
            return Judged::Retry(verdict);
        }
    };
    attempt.judge(subject, provider.index, verdict, false, &config.retry);
    Judged::Deliver(outcome)
}

/// A retried answer (the rare path, boxed by its callers): its body is read and dropped, and
/// the key judged. Gemini puts its 429 wait in the body (`RetryInfo.retryDelay`), not a header.
async fn retry_elsewhere(
    ctx: &RequestContext,
    target: &Target<'_>,
    subject: &Subject<'_>,
    attempt: &mut Attempts,
    mut verdict: Verdict,
    exchange: Exchange,
    head: ResponseHead,
) {
    let config = &ctx.generation.config;
    let error_body = discard(ctx, exchange, &head).await;
    if let (Verdict::Retry(Penalty::Cool(_)), Some(body)) = (verdict, &error_body) {
        if let Some(wait) = target.adapter.retry_delay(body, config.server.max_json_depth) {
            verdict = Verdict::Retry(Penalty::Cool(wait));
        }
    }
    attempt.judge(
        subject,
        target.provider.index,
        verdict,
        may_repeat(verdict),
        &config.retry,
    );
}

/// Phase `relay`: the answer through the adapter's transform to the client, then the key's
/// windows settled from the usage it reported. An answer that broke before the client saw a
/// byte is a failed attempt like a failed send.
#[allow(clippy::too_many_arguments)]
async fn relay(
    core: &Core,
    ctx: &RequestContext,
    job: &Job<'_>,
    res: &mut Responder<'_>,
    target: &Target<'_>,
    key: &Picked<'_>,
    subject: &Subject<'_>,
    attempt: &mut Attempts,
    fetcher: &Fetcher<'_>,
    answer: &mut Followed,
    outcome: &'static str,
    turn: Option<Turn<'_>>,
) -> Result<KeyTry, ProxyError> {
    let provider = target.provider;
    // Borrowed from `try_key`'s future, not moved: the answer (exchange and head, 392 bytes)
    // by value was copied into this future and again into `RelayInput`.
    let (record_url, cancel_url) = (answer.record_url.take(), answer.cancel_url.take());
    // A 503 tells the client when to come back, whether or not the upstream did.
    let retry_after = (answer.head.status == 503).then(|| usable_in(ctx, job.plan_providers()));
    let input = RelayInput {
        provider,
        attempts: attempt.made,
        head: &answer.head,
        exchange: &mut answer.exchange,
        body: answer.body.take(),
        fetcher,
        deadline: job.deadline,
        retry_after,
    };
    let front = Front::of_path(job.req.head.path());
    // The request's own generation: a `gateway.peek` here cost an `arc_swap` load and its
    // thread-local per request (~70 instructions, callgrind, issue 18).
    let max_depth = ctx.generation.config.server.max_json_depth;
    // A follow-up learned where the finished answer's record is: the transform reads it.
    let learned = record_url.and_then(|url| {
        let mut t = target.translation.clone()?;
        t.record_url = Some(url);
        Some(t)
    });
    let translation = learned.as_ref().or(target.translation.as_ref());
    let mut transform = match (turn, translation) {
        (Some(turn), Some(translation)) => Transform::Boxed(turn.transform(translation, input.head.status)),
        _ => target
            .adapter
            .transform(translation, front, target.usage_mode, input.head.status, max_depth),
    };
    if job.records && (200..300).contains(&input.head.status) {
        let max_pins = ctx.generation.config.storage.max_pins;
        if let Some(pool_key) = provider.keys.get(key.index) {
            let tap = super::pinning::tap(transform.boxed(), &core.gateway, provider, pool_key.id, max_pins);
            transform = Transform::Boxed(tap);
        }
    }
    let cache_key = job.cache.borrow_mut().take();
    let mut tee = None;
    let status = input.head.status;
    let transform: &mut dyn crate::providers::transform::ResponseTransform = match cache_key {
        Some(key) => tee.insert(super::cached::tee(core, ctx, key, status, transform.as_dyn())),
        None => transform.as_dyn(),
    };
    let result = relay_answer(ctx, res, input, transform).await;
    // A job whose answer did not reach its end (the client left, the stream broke, a poll's
    // error went to the client) may still run upstream.
    let finished = matches!(
        result,
        Ok(Relay::Done(Relayed {
            failure: None,
            status: 200..=299,
            ..
        }))
    );
    if let Some(url) = cancel_url.filter(|_| !finished) {
        super::cancel::spawn(fetcher, &url);
    }
    let mut relayed = match result? {
        Relay::Done(relayed) => relayed,
        Relay::Unsent(error) => {
            // The next attempt may still store its answer.
            *job.cache.borrow_mut() = tee.and_then(|t| t.into_key());
            unsent(core, ctx, provider, key, subject, attempt, error);
            return Ok(KeyTry::Failed);
        }
    };
    core.metrics.lock().attempt(&provider.name, outcome);
    relayed.usage = relayed.usage.bounded();
    let ended = {
        let mut trace = ctx.trace.borrow_mut();
        trace.usage = relayed.usage;
        trace.relay_failure = relayed.failure;
        trace.ended_at
    };
    tracing::debug!(
        request_id = ?ctx.request_id,
        provider = %provider.name,
        status = relayed.status,
        streamed = relayed.streamed,
        failure = ?relayed.failure,
        usage = ?relayed.usage,
        "relayed"
    );
    if let (Some(limits), true) = (key.limits, relayed.usage.reported) {
        // Settled as of the answer's end (the relay read it), like the metrics.
        let at = limits::from_health_ms(clock::ms_at(ended.unwrap_or_else(clock::read)));
        limits.settle(&key.reservation, relayed.usage.total(), at);
    }
    Ok(KeyTry::Delivered(relayed.usage))
}

/// The answer broke (or its follow-up failed) before anything reached the client: as good as
/// a failed send, the key is judged and the next one may be tried.
fn unsent(
    core: &Core,
    ctx: &RequestContext,
    provider: &Provider,
    key: &Picked<'_>,
    subject: &Subject<'_>,
    attempt: &mut Attempts,
    error: UpstreamError,
) {
    tracing::debug!(provider = %provider.name, key = %key.health.masked, "answer failed before the client saw it: {error}");
    let retried = attempt.made < attempt.max;
    core.metrics
        .lock()
        .attempt(&provider.name, if retried { "retried" } else { "error" });
    let repeat = error_may_repeat(&error);
    attempt.judge(
        subject,
        provider.index,
        classify_error(&error),
        repeat,
        &ctx.generation.config.retry,
    );
    attempt.last_error = Some(error.into());
}

/// The client left while its answer was still being prepared (a polled job): recorded as a
/// client abort, like a client that leaves during the relay.
fn client_left(ctx: &RequestContext) -> ProxyError {
    ctx.trace.borrow_mut().relay_failure = Some(crate::metrics::health::RelayFailure::ClientAbort);
    let message = "client connection lost while the upstream job was polled";
    ProxyError::new(ErrorKind::Internal, Side::Downstream, message)
}

/// Records who is being tried, for the request record and metrics; the first attempt's
/// `started` ends rotor's own time before the upstream.
fn note_attempt(
    ctx: &RequestContext,
    provider: &Provider,
    upstream_model: &str,
    model: &str,
    key_index: usize,
    n: usize,
    started: clock::Moment,
) {
    let mut trace = ctx.trace.borrow_mut();
    if trace.before_upstream_ns.is_none() {
        trace.before_upstream_ns = Some(started.nanos_since(ctx.received_at));
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
