//! Background probes of quarantined keys: a cheap authenticated request (`GET <base>/models`,
//! or the provider's own, see `Adapter::probe_path`)
//! once a key's quarantine time is up; success restores the key, failure doubles the wait.
//! Runs on worker 0's housekeeping task, so probes use the same client, pool and TLS as traffic.
//! `get` is also the one upstream call of key validation and balance fetches (`keycare`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;

use super::Core;
use crate::config::Provider;
use crate::gateway::Generation;
use crate::health::now_ms;
use crate::providers::Adapter;
use crate::upstream::{self, UpstreamErrorKind};

const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn probe_due_keys(core: &Core, generation: &Generation) {
    let config = &generation.config;
    for provider in config.providers.iter().filter(|p| p.enabled) {
        for index in 0..provider.keys.len() {
            let Some(health) = generation.key_health.get(provider.index, index) else {
                continue;
            };
            if !health.probe_due(now_ms()) {
                continue;
            }
            // A Vertex credential probes with its current access token.
            let credential = super::credential::current(generation, provider, index);
            let ok = probe(core, generation, provider, &credential).await;
            if ok {
                health.restore(now_ms());
                if let Some(provider_health) = generation.key_health.provider_health(provider.index) {
                    provider_health.counters.restores.fetch_add(1, Ordering::Relaxed);
                }
                tracing::info!(provider = %provider.name, key = %health.masked, "key restored: its probe succeeded");
            } else {
                let wait = health.quarantine(now_ms(), config.retry.quarantine.as_millis() as u64);
                tracing::info!(provider = %provider.name, key = %health.masked, probe_in_ms = wait, "probe failed; key stays quarantined");
            }
        }
    }
}

async fn probe(core: &Core, generation: &Generation, provider: &Provider, key: &str) -> bool {
    let path = Adapter::of(provider).probe_path(provider);
    matches!(get(core, generation, provider, key, &path).await, Ok((200..=299, _)))
}

/// `GET <path>` upstream with the key in the provider's way: the status and up to 4 MiB of
/// body, or why there was no answer. Async on this core's pool; never blocks the worker.
pub(super) async fn get(
    core: &Core,
    generation: &Generation,
    provider: &Provider,
    key: &str,
    path: &str,
) -> Result<(u16, Bytes), &'static str> {
    let connector = &generation.connector;
    let pool_key = connector.pool_key(provider.index, &provider.base_url);
    let work = async {
        let mut head = Adapter::of(provider)
            .get_head(provider, key, path)
            .ok_or("the key or a header cannot be sent")?;
        let mut exchange = upstream::checkout(&core.pool, connector, &pool_key, PROBE_TIMEOUT)
            .await
            .map_err(|_| "cannot connect")?;
        let head = exchange
            .round_trip(&mut head, &Bytes::new(), PROBE_TIMEOUT, false)
            .await
            .map_err(|e| match e.kind {
                UpstreamErrorKind::Send => "cannot send",
                _ => "no answer",
            })?;
        let body = exchange
            .read_to_end(PROBE_TIMEOUT, 4 * 1024 * 1024)
            .await
            .map_err(|_| "answer cut or too large")?;
        exchange.release();
        Ok((head.status, body))
    };
    crate::net::within(PROBE_TIMEOUT * 2, work)
        .await
        .unwrap_or(Err("timed out"))
}
