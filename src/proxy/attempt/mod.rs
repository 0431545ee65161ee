//! One attempt on one provider, as the phases `select` (a key), `send`, `classify` and `relay`
//! (see the table in `proxy/mod.rs`), each a function of that name: `select` and the attempt's
//! course here, `classify` and the judging of failed attempts in `judge`, `relay` in
//! `deliver`. `forward` drives the attempts; this module runs one.
//! Invariant: each attempt charges its key once: the key's reservation is refunded only when
//! the upstream was never reached and settled only from usage the upstream reported, and every
//! attempt that reached the upstream is judged (`Attempts::judge`) exactly once.

mod deliver;
mod judge;

use std::sync::Arc;

use super::admit::{pick_available_key, KeyPin};
use super::attempts::Attempts;
use super::classify::Subject;
use super::credential::{plain_secret, send_authenticated};
use super::error::{ErrorKind, ProxyError, Side};
use super::follow::{follow, Fetcher, Followed, Unfollowed};
use super::forward::{Job, Target};
use super::send::{answer_kept, backoff, send, send_turn};
use super::{Core, RequestContext};
use crate::config::Provider;
use crate::health::{clock, KeyHealth, ProviderHealth};
use crate::limits::select::Skipped;
use crate::limits::{LimitSet, Reservation};
use crate::server::Responder;
use crate::usage::Usage;
use deliver::relay;
use judge::{classify, retry_elsewhere, send_failed, unsent, Judged};

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
    // The answer lands straight in the `Followed` it is relayed from, in this future's state
    // (returned through `send`'s future, it was moved out of it and once more into here).
    let mut landed: Option<Followed> = None;
    let mut land = |exchange, head| landed = Some(Followed::unfollowed(exchange, head));
    let sent = match turn.as_mut() {
        Some(turn) => match Box::pin(send_turn(core, ctx, job.req, provider, secret, turn)).await {
            Ok((exchange, head)) => {
                land(exchange, head);
                Ok(())
            }
            Err(error) => Err(error),
        },
        // A plain secret (every key but a minted credential's) is sent by `send` itself.
        None => match plain_secret(&ctx.generation, provider, key.index) {
            // Sent from the answer's buffer, lent while nothing was written to the client.
            Some(auth) => send(core, ctx, job.req, target, auth, &mut res.lend(), land).await,
            // Boxed: the rare credential path's states stay out of every attempt's future.
            None => match Box::pin(send_authenticated(core, ctx, job.req, target, key.index)).await {
                Ok((exchange, head)) => {
                    land(exchange, head);
                    Ok(())
                }
                Err(error) => Err(error),
            },
        },
    };
    let answer = match sent.and_then(|()| answer_kept(landed.as_mut())) {
        Ok(answer) => answer,
        Err(error) => return send_failed(core, ctx, provider, &key, &subject, attempt, error),
    };
    let outcome = match classify(core, ctx, target, &key, &subject, attempt, &answer.head) {
        Judged::Deliver(outcome) => outcome,
        Judged::Retry(verdict) => {
            if let Some(Followed { exchange, head, .. }) = landed.take() {
                Box::pin(retry_elsewhere(ctx, target, &subject, attempt, verdict, exchange, head)).await;
            }
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
        if let Some(Followed { exchange, head, .. }) = landed.take() {
            landed = Some(match Box::pin(follow(&fetcher, target, res, exchange, head)).await {
                Ok(answer) => answer,
                Err(Unfollowed::Upstream(error)) => {
                    unsent(core, ctx, provider, &key, &subject, attempt, error);
                    return Ok(KeyTry::Failed);
                }
                Err(Unfollowed::ClientGone) => return Err(client_left(ctx)),
            });
        }
    }
    let Some(answer) = landed.as_mut() else {
        return Ok(KeyTry::Failed);
    };
    // A follow-up's own answer (a poll's 429, the stream URL's head) is judged like the first.
    let mut outcome = outcome;
    if answer.followed && answer.body.is_none() {
        match classify(core, ctx, target, &key, &subject, attempt, &answer.head) {
            Judged::Deliver(judged) => outcome = judged,
            Judged::Retry(verdict) => {
                let cancel_url = answer.cancel_url.take();
                if let Some(Followed { exchange, head, .. }) = landed.take() {
                    Box::pin(retry_elsewhere(ctx, target, &subject, attempt, verdict, exchange, head)).await;
                }
                if let Some(url) = &cancel_url {
                    super::cancel::spawn(&fetcher, url);
                }
                return Ok(KeyTry::Failed);
            }
        }
    }
    relay(
        core, ctx, job, res, target, &key, &subject, attempt, &fetcher, answer, outcome, turn,
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
