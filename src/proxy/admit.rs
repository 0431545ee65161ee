//! Phase `admit` and the limit side of `select`: the client's own windows are admitted before
//! any upstream work, and a key is picked only with its windows reserved. See `limits` for
//! the window algorithm.
//! Invariant: a reservation is given back only when the request provably never reached the
//! upstream (no attempt at all, or the connection was never made); otherwise it stays counted.

use std::time::{Duration, Instant};

use super::error::{ErrorKind, ProxyError, Side};
use super::{Core, RequestContext};
use crate::config::{Client, KeyStrategy, Provider};
use crate::limits::select::{highest_balance, least_used, pick_key, PickInput, Skipped};
use crate::limits::{self, Admission, LimitSet, Reservation};
use crate::upstream::{UpstreamError, UpstreamErrorKind};

/// The client's own windows, before any upstream work: over a limit -> 429 with Retry-After;
/// a limit of 0 -> 429 without one (waiting will not help). With `[cluster]`, a window with
/// no lease in hand is asked again every few ms up to `lease_wait`, then answered like a
/// full one; shared windows refused while Redis is down (`on_redis_down = "refuse"`) -> 503.
pub(super) async fn admit_client(
    client: &Client,
    limits: &LimitSet,
    tokens: u64,
    lease_wait: Duration,
) -> Result<Reservation, ProxyError> {
    let deadline = Instant::now() + lease_wait;
    loop {
        let now = limits::now();
        match limits.admit(tokens, now) {
            Admission::Leasing(_) if Instant::now() < deadline => {
                crate::deadline::sleep(LEASE_POLL).await;
            }
            Admission::Leasing(kind) => return Err(client_full(client, kind, 1)),
            other => return client_answer(client, other, now),
        }
    }
}

/// How often a request starved of a lease looks again.
pub(super) const LEASE_POLL: Duration = Duration::from_millis(2);

fn client_full(client: &Client, kind: crate::limits::Kind, seconds: u64) -> ProxyError {
    let message = format!(
        "client '{}' is over its {} limit; retry in {seconds} s",
        client.name,
        kind.name()
    );
    ProxyError::new(ErrorKind::RateLimited, Side::Downstream, message)
        .with_code("rate_limit_exceeded")
        .with_retry_after(seconds)
}

fn client_answer(client: &Client, admission: Admission, now: u64) -> Result<Reservation, ProxyError> {
    match admission {
        Admission::Admitted(reservation) => Ok(reservation),
        Admission::Leasing(kind) => Err(client_full(client, kind, 1)),
        Admission::Unavailable(kind) => {
            let message = format!(
                "client '{}' has a shared {} limit and the cluster's Redis is unreachable (cluster.on_redis_down = \"refuse\"); retry in 1 s",
                client.name,
                kind.name()
            );
            Err(ProxyError::new(ErrorKind::NoUsableKey, Side::Downstream, message)
                .with_code("cluster_unavailable")
                .with_retry_after(1))
        }
        Admission::Full { free_at, kind } => {
            let seconds = free_at.saturating_sub(now).div_ceil(1000).max(1);
            Err(client_full(client, kind, seconds))
        }
        Admission::Disabled(kind) => {
            let message = format!(
                "client '{}' has its {} limit set to 0 (disabled)",
                client.name,
                kind.name()
            );
            Err(ProxyError::new(ErrorKind::RateLimited, Side::Downstream, message).with_code("limit_disabled"))
        }
    }
}

/// The provider's next key by its strategy, skipping keys already tried for this request,
/// keys that are cooling or quarantined, and keys whose windows are full or disabled (noting
/// when the soonest cooling or full one frees up). The key comes with its windows reserved.
/// `now` is the health clock (`health::now_ms`). `pinned` (the key holding the request's
/// upstream state): `Prefer` (an on-demand session, see `providers::dialog`) goes first when it
/// is usable, whatever the strategy; `Only` (the key that created an account-scoped object,
/// see `pinning`) is the one key tried, cooling or not, its windows reserved when they admit.
/// Inlined into `attempt::select`, its one caller: built apart, its eight arguments were
/// passed on the stack and its own frame set up per attempt (select 318 -> 286, callgrind).
#[allow(clippy::too_many_arguments)]
#[inline]
pub(super) fn pick_available_key(
    core: &Core,
    ctx: &RequestContext,
    provider: &Provider,
    tried: &[usize],
    tokens: u64,
    now: u64,
    skipped: &mut Skipped,
    pinned: Option<KeyPin>,
) -> Option<(usize, Reservation)> {
    if provider.keys.is_empty() {
        return None;
    }
    if let Some(KeyPin::Only(only)) = pinned {
        if tried.contains(&only) || only >= provider.keys.len() {
            return None;
        }
        let limits = ctx.generation.limits.provider(provider.index).get(only);
        let reservation = match limits.map(|l| l.admit(tokens, limits::from_health_ms(now))) {
            Some(Admission::Admitted(reservation)) => reservation,
            _ => Reservation::default(),
        };
        return Some((only, reservation));
    }
    let start = core.balance.borrow_mut().pick_key(provider);
    // `now` (health clock) serves both clocks.
    let mut input = PickInput {
        health: ctx.generation.key_health.provider(provider.index),
        limits: ctx.generation.limits.provider(provider.index),
        start,
        tried,
        tokens,
        now,
        limits_now: limits::from_health_ms(now),
    };
    match provider.key_strategy {
        KeyStrategy::LeastUsed => input.start = least_used(&input),
        KeyStrategy::HighestBalance => input.start = highest_balance(&input, start),
        KeyStrategy::RoundRobin | KeyStrategy::Random => {}
    }
    let preferred = match pinned {
        Some(KeyPin::Prefer(index)) => Some(index),
        _ => None,
    };
    if let Some(pinned) = preferred.filter(|p| *p < provider.keys.len() && !tried.contains(p)) {
        input.start = pinned;
    }
    pick_key(&input, skipped)
}

/// A key a request is bound to (see `pick_available_key`).
#[derive(Debug, Clone, Copy)]
pub(super) enum KeyPin {
    Prefer(usize),
    Only(usize),
}

/// The request never left rotor (no connection, no TLS, or a head the writer refused), so the
/// upstream did not count it.
pub(super) fn never_reached(error: &UpstreamError) -> bool {
    matches!(
        error.kind,
        UpstreamErrorKind::Dns
            | UpstreamErrorKind::Connect
            | UpstreamErrorKind::ConnectTimeout
            | UpstreamErrorKind::Tls
            | UpstreamErrorKind::Encode
    )
}
