//! Phase `classify` of one attempt, and the judging of an attempt that failed: the upstream's
//! status decides between delivering an answer and retrying elsewhere, and a failed send or an
//! answer that broke before the client saw it is judged like a retried answer.
//! Invariant: every attempt that reached the upstream is judged (`Attempts::judge`) exactly
//! once, and a key's reservation is refunded only when the upstream was never reached.

use super::{KeyTry, Picked};
use crate::codec::response::ResponseHead;
use crate::config::Provider;
use crate::health::now_ms;
use crate::limits::learned;
use crate::proxy::admit::never_reached;
use crate::proxy::attempts::Attempts;
use crate::proxy::classify::{
    classify_error, classify_status, error_may_repeat, may_repeat, Penalty, Subject, Verdict,
};
use crate::proxy::error::{ErrorKind, ProxyError, Side};
use crate::proxy::forward::Target;
use crate::proxy::send::discard;
use crate::proxy::{Core, RequestContext};
use crate::storage::windows::unix_now_ms;
use crate::upstream::{Exchange, UpstreamError, UpstreamErrorKind};

/// Phase `send` failed: refund the key when the upstream was never reached, judge the key.
pub(super) fn send_failed(
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
    judge_failure(ctx, provider, subject, attempt, error);
    Ok(KeyTry::Failed)
}

/// What phase `classify` decided for an upstream answer.
pub(super) enum Judged {
    /// The answer goes to the client, with its metrics outcome; the key is judged.
    Deliver(&'static str),
    /// The answer is to be discarded and the next candidate tried (`retry_elsewhere`).
    Retry(Verdict),
}

/// Phase `classify`: the upstream's status decides between delivering this answer and retrying
/// elsewhere. It reads only the head, so it is a plain function: as an `async fn` taking the
/// exchange and head by value and handing them back, every call moved both into and out of
/// its future, and its state widened every attempt's future.
pub(super) fn classify(
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
pub(super) async fn retry_elsewhere(
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

/// The answer broke (or its follow-up failed) before anything reached the client: as good as
/// a failed send, the key is judged and the next one may be tried.
pub(super) fn unsent(
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
    judge_failure(ctx, provider, subject, attempt, error);
}

/// An attempt that failed with `error` is judged by its kind and kept as the last error.
fn judge_failure(
    ctx: &RequestContext,
    provider: &Provider,
    subject: &Subject<'_>,
    attempt: &mut Attempts,
    error: UpstreamError,
) {
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
