//! Cancels of upstream jobs nobody waits for any more: a Replicate prediction whose client
//! left, whose `poll_max_wait_ms` ran out or whose exchange failed is canceled with
//! `POST <urls.cancel>` and the key that created it, so it stops running (and billing)
//! upstream. Each cancel runs in a task of its own: no client answer waits for it.
//! Invariant: bounded: at most `upstream.max_cancels_in_flight` cancels per core at once (more
//! are shed), each finished or abandoned within `upstream.cancel_timeout_ms`; every cancel
//! asked for is counted in `rotor_upstream_cancels_total` by outcome (`ok`, `failed`, `shed`);
//! the key never appears in a log line but masked.

use std::cell::Cell;

use super::follow::{Fetcher, Via};

/// A cancel's answer (the prediction) is read at most this far, then the connection is closed.
const CANCEL_BODY_LIMIT: usize = 1024 * 1024;

thread_local! {
    /// Cancels running on this core (a worker is one thread).
    static IN_FLIGHT: Cell<usize> = const { Cell::new(0) };
}

/// Leaves the in-flight count when the cancel task ends, however it ends.
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        IN_FLIGHT.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// Cancels the job at `url` with the attempt's key, off the request's path.
pub(super) fn spawn(fetcher: &Fetcher<'_>, url: &str) {
    let metrics = fetcher.core.metrics.clone();
    let name = &fetcher.provider.name;
    let masked = crate::config::Secret::new(fetcher.key).masked();
    let upstream = &fetcher.ctx.generation.config.upstream;
    let timeout = upstream.cancel_timeout;
    if IN_FLIGHT.with(Cell::get) >= upstream.max_cancels_in_flight {
        tracing::warn!(provider = %name, key = %masked, "too many upstream cancels in flight: one shed, its job runs on");
        metrics.lock().upstream_cancel(name, "shed");
        return;
    }
    let Some(provider) = fetcher
        .ctx
        .generation
        .config
        .providers
        .get(fetcher.provider.index)
        .cloned()
    else {
        return;
    };
    let (pool, generation) = (fetcher.core.pool.clone(), fetcher.ctx.generation.clone());
    let (adapter, key, url) = (fetcher.adapter, fetcher.key.to_owned(), url.to_owned());
    IN_FLIGHT.with(|n| n.set(n.get() + 1));
    let running = Running;
    monoio::spawn(async move {
        let _running = running;
        let via = Via {
            pool: &pool,
            generation: &generation,
            provider: &provider,
            adapter,
            key: &key,
        };
        let outcome = match crate::net::within(timeout, cancel(&via, &url)).await {
            Ok(Ok(())) => "ok",
            Ok(Err(why)) => {
                tracing::warn!(provider = %provider.name, key = %masked, "upstream cancel failed: {why}");
                "failed"
            }
            Err(_) => {
                tracing::warn!(provider = %provider.name, key = %masked, "upstream cancel timed out");
                "failed"
            }
        };
        tracing::debug!(provider = %provider.name, key = %masked, outcome, "upstream job canceled");
        metrics.lock().upstream_cancel(&provider.name, outcome);
    });
}

/// `POST url`, its answer read (bounded) so the connection may be pooled.
async fn cancel(via: &Via<'_>, url: &str) -> Result<(), String> {
    let (mut exchange, head) = via.request(url, None).await.map_err(|e| e.to_string())?;
    let idle = via.generation.config.upstream.stream_idle_timeout;
    if exchange.read_to_end(idle, CANCEL_BODY_LIMIT).await.is_ok() {
        exchange.release();
    }
    match head.status {
        200..=299 => Ok(()),
        status => Err(format!("the upstream answered {status}")),
    }
}
