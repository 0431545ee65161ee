//! Validation and compilation: `FileConfig` -> `Config`, with one precise message per rule
//! (providers and their keys are in `provider.rs`).
//!
//! Invariant: whatever this returns `Ok` for is fully usable by the rest of rotor without
//! re-checking (addresses parsed, secrets resolved, every enabled provider has keys, every
//! `default_model`/fallback target has a route). Errors name the key path and what is allowed;
//! they never quote a secret (clashing client keys are reported by client name).

use std::net::SocketAddr;
use std::time::Duration;

use ahash::AHashMap;

use super::compile_storage::{cache, storage};
use super::file::{ClientConfig, FileConfig, RetryConfig, RoutingConfig, ServerConfig, UpstreamConfig};
use super::model::*;
use super::secret::Resolver;
use super::{provider, routes, ConfigError};

pub(crate) fn compile(file: FileConfig, r: &Resolver<'_>, source: ConfigSource) -> Result<Config, ConfigError> {
    let server = server(file.server, r)?;
    let cluster = super::cluster::cluster(file.cluster, server.listen.port(), r)?;
    let upstream = upstream(file.upstream, r)?;
    let retry = retry(&file.retry)?;
    let storage = storage(file.storage)?;
    let cache = cache(&file.cache)?;
    let clients = clients(file.clients, r)?;
    let providers = provider::providers(file.providers, r, upstream.first_byte_timeout)?;
    let routes = routes::build(&providers);
    let routing = routing(file.routing, &routes)?;
    Ok(Config {
        server,
        upstream,
        retry,
        storage,
        routing,
        cache,
        clients,
        providers,
        routes,
        source,
        cluster,
    })
}

const DISCONNECT_POLICIES: &[(&str, DisconnectPolicy)] =
    &[("cancel", DisconnectPolicy::Cancel), ("drain", DisconnectPolicy::Drain)];

const DRIVERS: &[(&str, Driver)] = &[
    ("auto", Driver::Auto),
    ("io_uring", Driver::IoUring),
    ("legacy", Driver::Legacy),
];

fn server(s: ServerConfig, r: &Resolver<'_>) -> Result<Server, ConfigError> {
    let listen = s.listen.parse::<SocketAddr>().map_err(|_| {
        let hint = "an IP:port address such as \"127.0.0.1:8080\" or \"[::]:8080\" (host names are not resolved)";
        ConfigError::at("server.listen", format!("{:?} is not {hint}", s.listen))
    })?;
    let workers = match s.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let admin_key = match s.admin_key.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(r.secret(raw, "server.admin_key")?),
    };
    let admin_login = admin_login(s.admin_user.as_deref(), s.admin_password.as_deref(), r)?;
    let admin_listen = match s.admin_listen.as_str() {
        "" => None,
        raw => {
            let addr = raw
                .parse::<SocketAddr>()
                .map_err(|_| ConfigError::at("server.admin_listen", format!("{raw:?} is not an IP:port address")))?;
            if addr == listen && addr.port() != 0 {
                let why = format!("{raw:?} is server.listen itself; give admin its own address or leave it \"\"");
                return Err(ConfigError::at("server.admin_listen", why));
            }
            if admin_key.is_none() && admin_login.is_none() {
                let why = "needs server.admin_key or server.admin_user + server.admin_password (admin is off)";
                return Err(ConfigError::at("server.admin_listen", why));
            }
            Some(addr)
        }
    };
    let metrics_key = match s.metrics_key.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(r.secret(raw, "server.metrics_key")?),
    };
    if s.metrics_max_bytes < MIN_METRICS_BYTES {
        let why = format!("must be at least {MIN_METRICS_BYTES} (the fixed families alone take a few KiB)");
        return Err(ConfigError::at("server.metrics_max_bytes", why));
    }
    let max_body_bytes = positive(s.max_body_bytes, "server.max_body_bytes")?;
    if s.max_body_bytes_in_flight < max_body_bytes {
        let what = format!(
            "{} is less than server.max_body_bytes ({max_body_bytes}): a body that large could never be read; raise it or lower max_body_bytes",
            s.max_body_bytes_in_flight
        );
        return Err(ConfigError::at("server.max_body_bytes_in_flight", what));
    }
    Ok(Server {
        listen,
        workers,
        pin_workers: s.pin_workers,
        driver: one_of(&s.driver, DRIVERS, "server.driver")?,
        max_connections: positive(s.max_connections, "server.max_connections")?,
        max_header_bytes: positive(s.max_header_bytes, "server.max_header_bytes")?,
        max_body_bytes,
        header_read_timeout: positive_ms(s.header_read_timeout_ms, "server.header_read_timeout_ms")?,
        body_read_timeout: positive_ms(s.body_read_timeout_ms, "server.body_read_timeout_ms")?,
        max_body_bytes_in_flight: s.max_body_bytes_in_flight,
        keepalive_timeout: positive_ms(s.keepalive_timeout_ms, "server.keepalive_timeout_ms")?,
        // 0 is meaningful here: stop without waiting for in-flight requests.
        shutdown_grace: Duration::from_millis(s.shutdown_grace_ms),
        sse_keepalive: (s.sse_keepalive_ms > 0).then(|| Duration::from_millis(s.sse_keepalive_ms)),
        max_json_depth: json_depth(s.max_json_depth)?,
        admin_key,
        admin_login,
        admin_listen,
        admin_session_ttl: positive_ms(s.admin_session_ttl_ms, "server.admin_session_ttl_ms")?,
        metrics_key,
        metrics_max_series: positive(s.metrics_max_series, "server.metrics_max_series")?,
        metrics_max_bytes: s.metrics_max_bytes,
    })
}

/// `admin_user` and `admin_password` come together or not at all.
fn admin_login(
    user: Option<&str>,
    password: Option<&str>,
    r: &Resolver<'_>,
) -> Result<Option<AdminLogin>, ConfigError> {
    match (user.filter(|u| !u.is_empty()), password.filter(|p| !p.is_empty())) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::at(
            "server.admin_password",
            "is needed when server.admin_user is set",
        )),
        (None, Some(_)) => Err(ConfigError::at(
            "server.admin_user",
            "is needed when server.admin_password is set",
        )),
        (Some(user), Some(raw)) => {
            if user.len() > 256 || user.chars().any(char::is_control) {
                let why = "must be at most 256 characters without control characters";
                return Err(ConfigError::at("server.admin_user", why));
            }
            let password = r.secret(raw, "server.admin_password")?;
            if password.expose().len() < 8 {
                return Err(ConfigError::at(
                    "server.admin_password",
                    "must be at least 8 characters",
                ));
            }
            Ok(Some(AdminLogin {
                user: user.to_owned(),
                password,
            }))
        }
    }
}

/// Smallest `server.metrics_max_bytes`: room for every unlabelled family and the histograms.
const MIN_METRICS_BYTES: usize = 65_536;

fn upstream(u: UpstreamConfig, r: &Resolver<'_>) -> Result<Upstream, ConfigError> {
    let ca_file = match u.ca_file.as_str() {
        "" => None,
        raw => {
            let path = r.path(raw);
            if !path.is_file() {
                let what = format!("{} is not a readable file (PEM roots expected)", path.display());
                return Err(ConfigError::at("upstream.ca_file", what));
            }
            Some(path)
        }
    };
    Ok(Upstream {
        // 0 is meaningful: no idle connections kept, every request connects anew.
        pool_max_idle_per_host: u.pool_max_idle_per_host,
        pool_idle_timeout: positive_ms(u.pool_idle_timeout_ms, "upstream.pool_idle_timeout_ms")?,
        connect_timeout: positive_ms(u.connect_timeout_ms, "upstream.connect_timeout_ms")?,
        first_byte_timeout: positive_ms(u.first_byte_timeout_ms, "upstream.first_byte_timeout_ms")?,
        stream_idle_timeout: positive_ms(u.stream_idle_timeout_ms, "upstream.stream_idle_timeout_ms")?,
        request_timeout: (u.request_timeout_ms > 0).then(|| Duration::from_millis(u.request_timeout_ms)),
        on_client_disconnect: one_of(
            &u.on_client_disconnect,
            DISCONNECT_POLICIES,
            "upstream.on_client_disconnect",
        )?,
        ca_file,
        max_cancels_in_flight: cancels_in_flight(u.max_cancels_in_flight)?,
        cancel_timeout: positive_ms(u.cancel_timeout_ms, "upstream.cancel_timeout_ms")?,
    })
}

fn retry(r: &RetryConfig) -> Result<Retry, ConfigError> {
    if r.max_attempts == 0 {
        return Err(ConfigError::at(
            "retry.max_attempts",
            "must be at least 1 (1 = no retries)",
        ));
    }
    Ok(Retry {
        max_attempts: r.max_attempts,
        backoff: Duration::from_millis(r.backoff_ms),
        cooldown: positive_ms(r.cooldown_ms, "retry.cooldown_ms")?,
        wait_for_key: Duration::from_millis(r.wait_for_key_ms),
        quarantine_after_failures: r.quarantine_after_failures,
        quarantine: positive_ms(r.quarantine_ms, "retry.quarantine_ms")?,
        breaker: breaker(r)?,
    })
}

fn breaker(r: &RetryConfig) -> Result<Option<Breaker>, ConfigError> {
    if r.breaker_failures == 0 {
        return Ok(None);
    }
    let window = positive_ms(r.breaker_window_ms, "retry.breaker_window_ms")?;
    let open = positive_ms(r.breaker_open_ms, "retry.breaker_open_ms")?;
    // An hour-long breaker would be an outage, not a pause: the probe is what reopens traffic.
    if open > Duration::from_secs(300) {
        return Err(ConfigError::at(
            "retry.breaker_open_ms",
            "must be at most 300000 (one probe request decides when it ends)",
        ));
    }
    Ok(Some(Breaker {
        failures: r.breaker_failures,
        window,
        open,
    }))
}

fn clients(list: Vec<ClientConfig>, r: &Resolver<'_>) -> Result<Vec<Client>, ConfigError> {
    let mut out: Vec<Client> = Vec::with_capacity(list.len());
    for (i, c) in list.into_iter().enumerate() {
        let at = |k: &str| format!("clients[{i}].{k}");
        check_name(&c.name, &at("name"))?;
        if let Some(j) = out.iter().position(|o| o.name == c.name) {
            return Err(ConfigError::at(
                &at("name"),
                format!("{:?} is already the name of clients[{j}]", c.name),
            ));
        }
        let key = r.secret(&c.key, &at("key"))?;
        if let Some(other) = out.iter().find(|o| o.key.expose() == key.expose()) {
            let what = format!(
                "client {:?} has the same key as client {:?}; every client needs its own key",
                c.name, other.name
            );
            return Err(ConfigError::at(&at("key"), what));
        }
        let models = c.models.unwrap_or_else(|| vec!["*".to_string()]);
        if models.is_empty() {
            let what = "an empty list allows no model; leave `models` out or use [\"*\"] for every model";
            return Err(ConfigError::at(&at("models"), what));
        }
        if let Some(j) = models.iter().position(|m| m.trim().is_empty()) {
            return Err(ConfigError::at(&format!("clients[{i}].models[{j}]"), "empty pattern"));
        }
        let limits = limits(c.rpm, c.rpd, c.tpm, &at(""))?;
        out.push(Client {
            index: out.len(),
            name: c.name,
            key,
            allowed: super::glob::ModelSet::new(&models),
            models,
            limits,
        });
    }
    Ok(out)
}

fn routing(r: RoutingConfig, routes: &RouteTable) -> Result<Routing, ConfigError> {
    let no_route = |model: &str| {
        format!("{model:?} has no route: no enabled provider lists it in `models` or `aliases`, and none has an empty `models` (serves any model)")
    };
    let default_model = match r.default_model.as_str() {
        "" => None,
        m if routes.get(m).is_none() => return Err(ConfigError::at("routing.default_model", no_route(m))),
        m => Some(m.to_string()),
    };
    let mut fallbacks = AHashMap::with_capacity(r.fallbacks.len());
    for (model, targets) in r.fallbacks {
        for (j, t) in targets.iter().enumerate() {
            let here = format!("routing.fallbacks.{model}[{j}]");
            if *t == model {
                return Err(ConfigError::at(&here, format!("{model:?} cannot fall back to itself")));
            }
            if routes.get(t).is_none() {
                return Err(ConfigError::at(&here, no_route(t)));
            }
        }
        fallbacks.insert(model, targets);
    }
    Ok(Routing {
        default_model,
        fallbacks,
    })
}

/// Names appear in metrics labels, logs and the `x-rotor-provider` header: printable ASCII,
/// no spaces or quotes.
pub(super) fn check_name(name: &str, path: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::at(path, "name is empty"));
    }
    if name.bytes().any(|b| !b.is_ascii_graphic() || b == b'"' || b == b'\\') {
        let what = format!("{name:?}: names may use printable ASCII only, without spaces, quotes or backslashes");
        return Err(ConfigError::at(path, what));
    }
    Ok(())
}

/// `at` is the key path prefix ending in `.`, e.g. `clients[0].`.
pub(super) fn limits(rpm: i64, rpd: i64, tpm: i64, at: &str) -> Result<Limits, ConfigError> {
    let one = |v: i64, k: &str| match v {
        -1 => Ok(Limit::Unlimited),
        0 => Ok(Limit::Disabled),
        n if n > 0 => Ok(Limit::Max(n.unsigned_abs())),
        n => Err(ConfigError::at(
            &format!("{at}{k}"),
            format!("{n} is not a limit; use -1 (unlimited), 0 (disabled) or a positive count"),
        )),
    };
    Ok(Limits {
        rpm: one(rpm, "rpm")?,
        rpd: one(rpd, "rpd")?,
        tpm: one(tpm, "tpm")?,
    })
}

pub(super) fn one_of<T: Copy>(value: &str, table: &[(&str, T)], path: &str) -> Result<T, ConfigError> {
    match table.iter().find(|(name, _)| *name == value) {
        Some((_, v)) => Ok(*v),
        None => {
            let allowed: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
            Err(ConfigError::at(
                path,
                format!("{value:?} is not one of {}", allowed.join(" | ")),
            ))
        }
    }
}

fn positive(v: usize, path: &str) -> Result<usize, ConfigError> {
    if v == 0 {
        return Err(ConfigError::at(path, "must be greater than 0"));
    }
    Ok(v)
}

/// `server.max_json_depth`: at least 1, at most what a worker's stack survives.
fn json_depth(v: usize) -> Result<usize, ConfigError> {
    use crate::codec::depth::MAX_DEPTH_CEILING;
    if v == 0 || v > MAX_DEPTH_CEILING {
        let what = format!("must be between 1 and {MAX_DEPTH_CEILING} (nesting levels), got {v}");
        return Err(ConfigError::at("server.max_json_depth", what));
    }
    Ok(v)
}

fn cancels_in_flight(n: usize) -> Result<usize, ConfigError> {
    if !(1..=100_000).contains(&n) {
        let what = format!("must be between 1 and 100000 (upstream cancels at once per worker), got {n}");
        return Err(ConfigError::at("upstream.max_cancels_in_flight", what));
    }
    Ok(n)
}

pub(super) fn positive_ms(v: u64, path: &str) -> Result<Duration, ConfigError> {
    if v == 0 {
        return Err(ConfigError::at(path, "must be greater than 0 (milliseconds)"));
    }
    Ok(Duration::from_millis(v))
}
