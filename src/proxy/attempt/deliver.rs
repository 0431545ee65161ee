//! Phase `relay` of one attempt: the chosen answer through the adapter's transform (with the
//! pinning tap and the cache tee when they apply) to the client, then the key's windows settled
//! from the usage the answer reported.
//! Invariant: an answer that broke before the client saw a byte is judged as a failed attempt
//! (`unsent`) and never settled; a delivered one is settled only from reported usage.

use super::judge::unsent;
use super::{KeyTry, Picked};
use crate::health::clock;
use crate::limits;
use crate::providers::adapter::Transform;
use crate::providers::dialog::Turn;
use crate::proxy::attempts::{usable_in, Attempts};
use crate::proxy::classify::Subject;
use crate::proxy::error::ProxyError;
use crate::proxy::follow::{Fetcher, Followed};
use crate::proxy::forward::{Job, Target};
use crate::proxy::relay::{self, Relay, RelayInput, Relayed};
use crate::proxy::{Core, RequestContext};
use crate::server::Responder;

/// Phase `relay`: the answer through the adapter's transform to the client, then the key's
/// windows settled from the usage it reported. An answer that broke before the client saw a
/// byte is a failed attempt like a failed send.
#[allow(clippy::too_many_arguments)]
pub(super) async fn relay(
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
    let mut input = RelayInput {
        provider,
        attempts: attempt.made,
        head: &mut answer.head,
        exchange: &mut answer.exchange,
        fetcher,
        deadline: job.deadline,
        retry_after,
        bodies: [&job.req.body, &target.body],
    };
    let front = job.client_path.front;
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
            let tap = crate::proxy::pinning::tap(transform.boxed(), &core.gateway, provider, pool_key.id, max_pins);
            transform = Transform::Boxed(tap);
        }
    }
    let cache_key = job.cache.borrow_mut().take();
    let mut tee = None;
    let status = input.head.status;
    let transform: &mut dyn crate::providers::transform::ResponseTransform = match cache_key {
        Some(key) => tee.insert(crate::proxy::cached::tee(core, ctx, key, status, transform.as_dyn())),
        None => transform.as_dyn(),
    };
    // An answer all here (a chat answer) is written where this future awaits it; only one
    // still to be read or streamed takes the relay's own future.
    let result = match relay::ready(ctx, res, &mut input, answer.body.take(), transform) {
        Some(Ok(ready)) => {
            let written = crate::server::write_staged!(res, ready.staged);
            relay::sent_ready(ctx, ready.status, written, transform)
        }
        Some(Err(error)) => Err(error),
        None => relay::relay(ctx, res, input, transform).await,
    };
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
        crate::proxy::cancel::spawn(fetcher, &url);
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
    relayed.usage = relayed.usage.bounded();
    let ended = {
        let mut trace = ctx.trace.borrow_mut();
        // Counted by `finish`, under the request's lock and memo entry.
        trace.delivered = Some(outcome);
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
