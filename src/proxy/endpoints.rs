//! Endpoints rotor answers itself: `GET /health`, `GET /v1/models`, `GET /v1/status` and
//! `GET /metrics`.

use crate::codec::Field;
use bytes::Bytes;
use serde::Serialize;

use super::error::{ErrorKind, ProxyError, Side};
use super::{Core, RequestContext};
use crate::codec::head::RequestHead;
use crate::config::Client;
use crate::gateway::Generation;
use crate::server::Responder;

#[derive(Serialize)]
struct Health<'a> {
    status: &'a str,
    generation: u64,
    uptime_s: u64,
    providers: usize,
    usable_keys: usize,
    open_connections: usize,
    worker: usize,
    /// `ok`, or `failing` while storage is closed or a write failure or dropped record is
    /// more recent than `storage.health_window_ms`.
    storage: &'a str,
    storage_error: Option<String>,
    log_dropped: u64,
    /// Request rows in the log now.
    log_rows: u64,
    /// `[cluster]` on: Redis state, the fallback in force, live instances.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<crate::cluster::Status>,
}

pub(super) async fn health(core: &Core, ctx: &RequestContext, res: &mut Responder<'_>) -> Result<(), ProxyError> {
    let config = &ctx.generation.config;
    let now = crate::health::now_ms();
    // Keys not cooling and not quarantined, of enabled providers whose breaker is not open.
    let table = &ctx.generation.key_health;
    let usable_keys = config
        .providers
        .iter()
        .filter(|p| p.enabled)
        .filter(|p| {
            table
                .provider_health(p.index)
                .is_none_or(|h| h.breaker_state(now) != "open")
        })
        .flat_map(|p| table.provider(p.index))
        .filter(|h| h.available(now))
        .count();
    let storage = core
        .gateway
        .storage_status
        .state(config.storage.health_window, core.gateway.records.last_drop_ms());
    let cluster = core.gateway.cluster.as_ref().map(|c| c.status());
    let cluster_ok = cluster.as_ref().is_none_or(|c| c.redis == "up");
    let body = Health {
        cluster,
        status: if usable_keys > 0 && storage.ok && cluster_ok {
            "ok"
        } else {
            "degraded"
        },
        storage: if storage.ok { "ok" } else { "failing" },
        storage_error: storage.error,
        log_dropped: core.gateway.records.dropped(),
        log_rows: core.gateway.storage_status.size().0,
        generation: ctx.generation.id,
        uptime_s: core.gateway.started.elapsed().as_secs(),
        providers: config.providers.iter().filter(|p| p.enabled).count(),
        usable_keys,
        open_connections: core.gateway.gate.open_connections(),
        worker: core.worker,
    };
    send_json(res, ctx, &body).await
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelEntry<'a>>,
}

#[derive(Serialize)]
struct ModelEntry<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'a str,
}

/// Every client-facing model name (aliases included) this client may use, sorted.
pub(super) async fn models(
    ctx: &RequestContext,
    client: Option<&Client>,
    res: &mut Responder<'_>,
) -> Result<(), ProxyError> {
    let config = &ctx.generation.config;
    let mut data: Vec<ModelEntry> = config
        .routes
        .by_model
        .values()
        .filter(|route| client.is_none_or(|c| c.allows(&route.model)))
        .map(|route| ModelEntry {
            id: &route.model,
            object: "model",
            created: 0,
            owned_by: route
                .candidates
                .first()
                .and_then(|c| config.providers.get(c.provider))
                .map_or("rotor", |p| p.name.as_str()),
        })
        .collect();
    data.sort_by(|a, b| a.id.cmp(b.id));
    send_json(res, ctx, &ModelList { object: "list", data }).await
}

async fn send_json<T: Serialize>(res: &mut Responder<'_>, ctx: &RequestContext, value: &T) -> Result<(), ProxyError> {
    let body = sonic_rs::to_vec(value).map_err(|e| {
        ProxyError::new(
            ErrorKind::Internal,
            Side::Internal,
            format!("cannot encode response: {e}"),
        )
    })?;
    let headers: [(&str, &[u8]); 2] = [("content-type", b"application/json"), ("x-request-id", &ctx.request_id)];
    res.send(200, &headers, Bytes::from(body)).await.map_err(|e| {
        ProxyError::new(
            ErrorKind::Internal,
            Side::Downstream,
            format!("client connection lost: {e}"),
        )
    })
}

#[derive(Serialize)]
struct Status<'a> {
    generation: u64,
    providers: Vec<ProviderStatus<'a>>,
    /// The calling client's own limits (other clients' names are not shown to it).
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<ClientStatus<'a>>,
    /// `[cluster]` on: this instance, Redis state and the live instances.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<crate::cluster::Status>,
}

#[derive(Serialize)]
struct ClientStatus<'a> {
    name: &'a str,
    limits: LimitsStatus,
}

#[derive(Serialize)]
struct LimitUsage {
    used: u64,
    /// 0 = disabled.
    limit: u64,
}

/// `{"rpm":{"used":3,"limit":5}, ...}` for each limited window (unlimited ones left out).
type LimitsStatus = std::collections::BTreeMap<&'static str, LimitUsage>;

fn limits_status(set: Option<&crate::limits::LimitSet>, now: u64) -> LimitsStatus {
    set.map(|s| s.usage(now))
        .unwrap_or_default()
        .into_iter()
        .map(|(kind, used, limit)| (kind.name(), LimitUsage { used, limit }))
        .collect()
}

#[derive(Serialize)]
struct ProviderStatus<'a> {
    name: &'a str,
    kind: String,
    enabled: bool,
    weight: u32,
    /// The provider's circuit breaker: `closed`, `open` or `half_open`.
    breaker: &'static str,
    keys: Vec<KeyStatus>,
}

#[derive(Serialize)]
struct KeyStatus {
    /// Masked to the last 4 characters.
    key: String,
    /// `active` | `cooling` | `quarantined` | `disabled`.
    state: &'static str,
    /// Seconds until a cooling key is usable again, or until a quarantined key is probed.
    retry_in_s: Option<u64>,
    in_flight: u32,
    successes: u64,
    failures: u64,
    limits: LimitsStatus,
}

/// Each provider and key with its state and usage against its limits; keys are masked.
pub(super) async fn status(
    core: &Core,
    ctx: &RequestContext,
    client: Option<&Client>,
    res: &mut Responder<'_>,
) -> Result<(), ProxyError> {
    let body = status_json(&ctx.generation, client, core.gateway.cluster.as_deref());
    let headers: [(&str, &[u8]); 2] = [("content-type", b"application/json"), ("x-request-id", &ctx.request_id)];
    res.send(200, &headers, Bytes::from(body)).await.map_err(|e| {
        ProxyError::new(
            ErrorKind::Internal,
            Side::Downstream,
            format!("client connection lost: {e}"),
        )
    })
}

/// The `GET /v1/status` body (also the dashboard's Status page, through `/admin/status`).
pub fn status_json(
    generation: &Generation,
    client: Option<&Client>,
    cluster: Option<&crate::cluster::Shared>,
) -> Vec<u8> {
    use crate::health::{now_ms, KeyState};
    let config = &generation.config;
    let now = now_ms();
    let limits_now = crate::limits::now();
    let table = &generation.limits;
    let providers = config
        .providers
        .iter()
        .map(|p| ProviderStatus {
            name: &p.name,
            kind: format!("{:?}", p.kind).to_lowercase(),
            enabled: p.enabled,
            weight: p.weight,
            breaker: generation
                .key_health
                .provider_health(p.index)
                .map_or("closed", |h| h.breaker_state(now)),
            keys: generation
                .key_health
                .provider(p.index)
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let (state, until) = match h.state(now) {
                        _ if !p.enabled => ("disabled", None),
                        KeyState::Active => ("active", None),
                        KeyState::Cooling(until) => ("cooling", Some(until)),
                        KeyState::Quarantined(until) => ("quarantined", Some(until)),
                    };
                    KeyStatus {
                        key: h.masked.clone(),
                        state,
                        retry_in_s: until.map(|u| u.saturating_sub(now).div_ceil(1000)),
                        in_flight: h.in_flight(),
                        successes: h.successes(),
                        failures: h.failures(),
                        limits: limits_status(table.key(p.index, i), limits_now),
                    }
                })
                .collect(),
        })
        .collect();
    let status = Status {
        cluster: cluster.map(|c| c.status()),
        generation: generation.id,
        providers,
        client: client.map(|c| ClientStatus {
            name: &c.name,
            limits: limits_status(table.clients.get(c.index), limits_now),
        }),
    };
    // Plain structs of numbers and strings: encoding cannot fail.
    sonic_rs::to_vec(&status).unwrap_or_default()
}

/// `GET /metrics`: Prometheus text, summed over every core's shard at scrape time, at most
/// `server.metrics_max_bytes`; behind `Authorization: Bearer <metrics_key>` when that is set.
pub(super) async fn metrics(
    core: &Core,
    ctx: &RequestContext,
    head: &RequestHead,
    res: &mut Responder<'_>,
) -> Result<(), ProxyError> {
    use crate::health::{now_ms, KeyState};
    use crate::metrics::health::ProviderSample;
    use crate::metrics::Extra;
    let config = &ctx.generation.config;
    if let Some(key) = &config.server.metrics_key {
        if !bearer(head).is_some_and(|presented| key.ct_eq(presented)) {
            let message = "/metrics needs the metrics key: send 'Authorization: Bearer <metrics_key>'";
            return Err(
                ProxyError::new(ErrorKind::Unauthorized, Side::Downstream, message).with_code("invalid_api_key")
            );
        }
    }
    let now = now_ms();
    let mut key_states = Vec::new();
    for provider in config.providers.iter() {
        for health in ctx.generation.key_health.provider(provider.index) {
            let state = match health.state(now) {
                _ if !provider.enabled => "disabled",
                KeyState::Active => "active",
                KeyState::Cooling(_) => "cooling",
                KeyState::Quarantined(_) => "quarantined",
            };
            key_states.push((provider.name.as_str(), health.masked.as_str(), state));
        }
    }
    let extra = Extra {
        key_states,
        log_dropped: core.gateway.records.dropped(),
        open_connections: core.gateway.gate.open_connections(),
    };
    let mut body = core.gateway.metrics.render(&extra);
    core.gateway.gate.body.write_metrics(&mut body);
    core.gateway.cache.write_metrics(&mut body);
    core.gateway
        .storage_status
        .render(&mut body, core.gateway.rollups.overflow());
    let samples: Vec<ProviderSample> = config
        .providers
        .iter()
        .filter_map(|p| {
            let health = ctx.generation.key_health.provider_health(p.index)?;
            Some(ProviderSample {
                provider: &p.name,
                breaker: health.breaker_state(now),
                counters: &health.counters,
            })
        })
        .collect();
    crate::metrics::health::render(&mut body, &samples);
    core.gateway.admin.render_metrics(&mut body);
    core.gateway.tokens.render_metrics(&mut body);
    core.gateway.sessions.render_metrics(&mut body);
    if let Some(cluster) = &core.gateway.cluster {
        crate::metrics::cluster::render(&mut body, cluster);
    }
    core.gateway.pins.render_metrics(&mut body);
    // The size bound covers every family, the health ones included.
    let body = crate::metrics::fit(body, config.server.metrics_max_bytes);
    let headers: [(&str, &[u8]); 2] = [
        ("content-type", b"text/plain; version=0.0.4; charset=utf-8"),
        ("x-request-id", &ctx.request_id),
    ];
    res.send(200, &headers, Bytes::from(body)).await.map_err(|e| {
        ProxyError::new(
            ErrorKind::Internal,
            Side::Downstream,
            format!("client connection lost: {e}"),
        )
    })
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer(head: &RequestHead) -> Option<&[u8]> {
    let value = head.field(Field::Authorization)?.trim_ascii();
    let scheme = value.get(..7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then(|| value[7..].trim_ascii())
}
