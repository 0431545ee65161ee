//! Phase `send`: one upstream attempt (request out, response head in) over a pooled
//! connection, the pause between attempts, and the clean-up of an answer that will be retried.
//! Invariant: a pooled connection is reused only from a clean message boundary: an answer that
//! is not relayed is either read to its end (small) or its connection is dropped.

use std::future::Future;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::forward::Target;
use super::headers::{upstream_request_head, Auth};
use super::{Core, RequestContext};
use crate::codec::head::Method;
use crate::codec::response::{ResponseFraming, ResponseHead};
use crate::config::Provider;
use crate::providers::dialog::{Turn, MAX_STEPS};
use crate::server::Request;
use crate::upstream::{self, Exchange, UpstreamError, UpstreamErrorKind};

/// Discarded error bodies up to this are read so the connection can be pooled.
const DISCARD_LIMIT: u64 = 64 * 1024;
/// Largest setup answer read (an on-demand session create is well under 1 KiB).
const SETUP_LIMIT: usize = 64 * 1024;

/// Jittered pause between attempts (50-150 % of `backoff_ms`), so retries from many requests do
/// not arrive in lockstep.
pub(super) async fn backoff(base: Duration) {
    if base.is_zero() {
        return;
    }
    let ms = base.as_millis() as u64;
    let jittered = ms / 2 + fastrand::u64(0..=ms);
    crate::deadline::sleep(Duration::from_millis(jittered)).await;
}

/// Reads a small error body so the connection can be reused (and returns it, for retry hints
/// in bodies); larger ones are dropped.
pub(super) async fn discard(ctx: &RequestContext, mut exchange: Exchange, head: &ResponseHead) -> Option<Bytes> {
    let small = matches!(head.framing, ResponseFraming::Empty)
        || matches!(head.framing, ResponseFraming::Length(n) if n <= DISCARD_LIMIT);
    if !small {
        return None;
    }
    let idle = ctx.generation.config.upstream.stream_idle_timeout;
    let body = exchange.read_to_end(idle, DISCARD_LIMIT as usize).await.ok()?;
    exchange.release();
    Some(body)
}

/// Phase `send`: one attempt on one provider with one key. A failure on a reused pooled
/// connection before any response byte is retried once on a fresh connection (the pooled one
/// was probably closed by the upstream while idle); that retry does not count as an attempt.
/// A plain function returning `send_to`'s future: as an `async fn` it was one more future
/// on the request path, initialised, moved into and resumed at every poll of the attempt.
/// The request is written into `out` and sent from it (the answer's lent buffer, see
/// `Responder::lend`), which is left empty; the answer (exchange and head) is handed to
/// `land`, which writes it straight into the caller's state (see `upstream::send_pooled`).
#[inline(always)]
pub(super) fn send<'a>(
    core: &'a Core,
    ctx: &'a RequestContext,
    req: &'a Request,
    target: &'a Target<'_>,
    auth: Auth<'a>,
    out: &'a mut BytesMut,
    land: impl FnOnce(Exchange, ResponseHead) + 'a,
) -> impl Future<Output = Result<(), UpstreamError>> + 'a {
    let extra = target.header.as_ref().map(|(n, v)| (*n, v.as_str()));
    let body = OutBody {
        prefix: target.body_prefix,
        rest: target.body.bytes().clone(),
    };
    let request = (target.provider, body, target.path.as_ref(), extra);
    send_to(core, ctx, req, auth, request, out, land)
}

/// `send` of one request: the provider, body, upstream path and the adapter's extra header.
type Outgoing<'a> = (&'a Provider, OutBody, &'a str, Option<(&'a str, &'a str)>);

/// A request body as it goes upstream: `prefix` (what rotor puts in front, written behind the
/// head: the usage member, see `forward::usage_plan`), then `rest`, the target's body (with a
/// prefix, a slice of the client's own bytes rather than a copy: a copy was held for a stream's
/// whole length, issue 18). `rest` is a reference of its own, dropped when the send ends, so a
/// `HeldBody::release` frees it.
pub(super) struct OutBody {
    pub prefix: &'static [u8],
    pub rest: Bytes,
}

/// `send` from its parts: the upstream head's writer and the pooled exchange that sends it,
/// built here and handed to `upstream::send_pooled` (see there), whose future this returns:
/// as an `async fn` around it this was one more future resumed at every poll of an attempt,
/// and the answer was moved out of that future into this one. `#[inline(always)]` here and
/// on `send` is what builds the future in place: built apart, it (the whole exchange's
/// states) was copied into `try_key`'s state (memcpy +296, chat 18,763 instructions against
/// 18,407, callgrind, issue 18).
#[inline(always)]
fn send_to<'a>(
    core: &'a Core,
    ctx: &'a RequestContext,
    req: &'a Request,
    auth: Auth<'a>,
    (provider, OutBody { prefix, rest }, upstream_path, extra): Outgoing<'a>,
    out: &'a mut BytesMut,
    land: impl FnOnce(Exchange, ResponseHead) + 'a,
) -> impl Future<Output = Result<(), UpstreamError>> + 'a {
    let upstream_config = &ctx.generation.config.upstream;
    let connector = &ctx.generation.connector;
    let prepared = ctx.generation.heads.get(provider.index);
    let trip = upstream::Trip {
        pool: &core.pool,
        connector,
        key: connector.pool_key(provider.index, &provider.base_url),
        connect_timeout: upstream_config.connect_timeout,
        first_byte_timeout: upstream_config.first_byte_timeout,
        head_request: req.head.method == Method::Head,
    };
    let length = prefix.len() + rest.len();
    let build = move |out: &mut BytesMut| {
        upstream_request_head(out, &req.head, provider, prepared, auth, upstream_path, length, extra)
            .map(|()| out.extend_from_slice(prefix))
            .map_err(|e| UpstreamError::new(UpstreamErrorKind::Encode, e.to_string()))
    };
    upstream::send_pooled(trip, out, rest, build, land)
}

/// The answer a `land` closure kept (see `upstream::send_pooled`), for a caller that goes on
/// once its send succeeded: a send that succeeded without landing one (which `send_pooled`
/// never does) is a protocol error, not a panic.
pub(super) fn answer_kept<T>(kept: Option<T>) -> Result<T, UpstreamError> {
    kept.ok_or_else(|| UpstreamError::new(UpstreamErrorKind::Protocol, "the upstream answer was not kept"))
}

/// Phase `send` for an upstream that takes more than one exchange (`providers::dialog`): each
/// step goes out like `send` (same pool, connector and timeouts, so every step is bounded by
/// `connect_timeout_ms`, `first_byte_timeout_ms` and `stream_idle_timeout_ms`). A setup that
/// succeeds is read (at most `SETUP_LIMIT`) and handed back to the turn; any other answer is
/// the attempt's, classified like any other, unless the turn replaces it (a lost session), and
/// then it is discarded. At most `MAX_STEPS` requests.
pub(super) async fn send_turn(
    core: &Core,
    ctx: &RequestContext,
    req: &Request,
    provider: &Provider,
    key: &str,
    turn: &mut Turn<'_>,
) -> Result<(Exchange, ResponseHead), UpstreamError> {
    let protocol = |message: String| UpstreamError::new(UpstreamErrorKind::Protocol, message);
    let idle = ctx.generation.config.upstream.stream_idle_timeout;
    let mut step = turn.first().map_err(protocol)?;
    // A buffer of the dialog's own (a rare path: the answer's is lent to `send` only).
    let mut out = BytesMut::new();
    for _ in 0..MAX_STEPS {
        let auth = Auth {
            key,
            line: None,
            post: None,
        };
        let mut landed = None;
        let land = |exchange, head| landed = Some((exchange, head));
        send_to(
            core,
            ctx,
            req,
            auth,
            (
                provider,
                OutBody {
                    prefix: b"",
                    rest: step.body.clone(),
                },
                &step.path,
                None,
            ),
            &mut out,
            land,
        )
        .await?;
        let (mut exchange, head) = answer_kept(landed)?;
        let ok = (200..300).contains(&head.status);
        if step.setup && ok {
            let body = exchange.read_to_end(idle, SETUP_LIMIT).await?;
            exchange.release();
            step = turn.setup_answered(&body).map_err(protocol)?;
            continue;
        }
        match turn.answered(step.setup, head.status) {
            Some(next) => {
                discard(ctx, exchange, &head).await;
                step = next;
            }
            None => return Ok((exchange, head)),
        }
    }
    Err(protocol(format!(
        "the upstream dialog took more than {MAX_STEPS} requests"
    )))
}
