//! Validation and compilation: `FileConfig` -> `Config`, with one precise message per rule.
//!
//! Invariant: whatever this returns `Ok` for is fully usable by the rest of rotor without
//! re-checking (addresses parsed, secrets resolved, every enabled provider has keys, every
//! `default_model`/fallback target has a route). Errors name the key path and what is allowed;
//! they never quote a secret (clashing client keys are reported by client name).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ahash::{AHashMap, AHashSet};

use super::file::{
    ClientConfig, FileConfig, ProviderConfig, RetryConfig, RoutingConfig, ServerConfig,
    StorageConfig, UpstreamConfig,
};
use super::model::*;
use super::secret::{Resolver, Secret};
use super::{routes, url, ConfigError};

pub(crate) fn compile(
    file: FileConfig,
    r: &Resolver<'_>,
    source: ConfigSource,
) -> Result<Config, ConfigError> {
    let server = server(file.server, r)?;
    let upstream = upstream(file.upstream, r)?;
    let retry = retry(&file.retry)?;
    let storage = storage(file.storage)?;
    let clients = clients(file.clients, r)?;
    let providers = providers(file.providers, r)?;
    let routes = routes::build(&providers);
    let routing = routing(file.routing, &routes)?;
    Ok(Config {
        server,
        upstream,
        retry,
        storage,
        routing,
        clients,
        providers,
        routes,
        source,
    })
}

const DRIVERS: &[(&str, Driver)] = &[
    ("auto", Driver::Auto),
    ("io_uring", Driver::IoUring),
    ("legacy", Driver::Legacy),
];

const KINDS: &[(&str, ProviderKind)] = &[
    ("openai", ProviderKind::OpenAi),
    ("anthropic", ProviderKind::Anthropic),
    ("gemini", ProviderKind::Gemini),
    ("vertex", ProviderKind::Vertex),
    ("replicate", ProviderKind::Replicate),
    ("cohere", ProviderKind::Cohere),
    ("cloudflare", ProviderKind::Cloudflare),
    ("ondemand", ProviderKind::OnDemand),
];

const STRATEGIES: &[(&str, KeyStrategy)] = &[
    ("round-robin", KeyStrategy::RoundRobin),
    ("random", KeyStrategy::Random),
    ("least-used", KeyStrategy::LeastUsed),
    ("highest-balance", KeyStrategy::HighestBalance),
];

/// Headers rotor itself frames or sets per request; a configured value would corrupt framing
/// or fight the pool key.
const RESERVED_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding", "connection"];

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
    Ok(Server {
        listen,
        workers,
        pin_workers: s.pin_workers,
        driver: one_of(&s.driver, DRIVERS, "server.driver")?,
        max_connections: positive(s.max_connections, "server.max_connections")?,
        max_header_bytes: positive(s.max_header_bytes, "server.max_header_bytes")?,
        max_body_bytes: positive(s.max_body_bytes, "server.max_body_bytes")?,
        header_read_timeout: positive_ms(
            s.header_read_timeout_ms,
            "server.header_read_timeout_ms",
        )?,
        keepalive_timeout: positive_ms(s.keepalive_timeout_ms, "server.keepalive_timeout_ms")?,
        // 0 is meaningful here: stop without waiting for in-flight requests.
        shutdown_grace: Duration::from_millis(s.shutdown_grace_ms),
        admin_key,
    })
}

fn upstream(u: UpstreamConfig, r: &Resolver<'_>) -> Result<Upstream, ConfigError> {
    let ca_file = match u.ca_file.as_str() {
        "" => None,
        raw => {
            let path = r.path(raw);
            if !path.is_file() {
                let what = format!(
                    "{} is not a readable file (PEM roots expected)",
                    path.display()
                );
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
        stream_idle_timeout: positive_ms(
            u.stream_idle_timeout_ms,
            "upstream.stream_idle_timeout_ms",
        )?,
        ca_file,
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
    })
}

fn storage(s: StorageConfig) -> Result<Storage, ConfigError> {
    if s.retention_days == 0 {
        return Err(ConfigError::at(
            "storage.retention_days",
            "must be at least 1 (days of request logs kept)",
        ));
    }
    // Relative to the working directory, like the default "data/rotor.db".
    let path = (!s.path.is_empty()).then(|| s.path.into());
    Ok(Storage {
        path,
        log_requests: s.log_requests,
        retention_days: s.retention_days,
    })
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
            let what =
                "an empty list allows no model; leave `models` out or use [\"*\"] for every model";
            return Err(ConfigError::at(&at("models"), what));
        }
        if let Some(j) = models.iter().position(|m| m.trim().is_empty()) {
            return Err(ConfigError::at(
                &format!("clients[{i}].models[{j}]"),
                "empty pattern",
            ));
        }
        let limits = limits(c.rpm, c.rpd, c.tpm, &at(""))?;
        out.push(Client {
            name: c.name,
            key,
            models,
            limits,
        });
    }
    Ok(out)
}

fn providers(
    list: Vec<ProviderConfig>,
    r: &Resolver<'_>,
) -> Result<Vec<Arc<Provider>>, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::at(
            "providers",
            "no [[providers]] defined; rotor needs at least one upstream",
        ));
    }
    let mut out: Vec<Arc<Provider>> = Vec::with_capacity(list.len());
    for (i, p) in list.into_iter().enumerate() {
        let provider = provider(i, p, r)?;
        if let Some(j) = out.iter().position(|o| o.name == provider.name) {
            let what = format!("{:?} is already the name of providers[{j}]", provider.name);
            return Err(ConfigError::at(&format!("providers[{i}].name"), what));
        }
        out.push(Arc::new(provider));
    }
    Ok(out)
}

fn provider(i: usize, p: ProviderConfig, r: &Resolver<'_>) -> Result<Provider, ConfigError> {
    let at = |k: &str| format!("providers[{i}].{k}");
    check_name(&p.name, &at("name"))?;
    let kind = one_of(&p.kind, KINDS, &at("kind"))?;
    let base_url =
        url::parse_base_url(&p.base_url).map_err(|e| ConfigError::at(&at("base_url"), e))?;
    let keys = keys(i, &p, r)?;
    if p.enabled && keys.is_empty() {
        let what = format!("provider {:?} is enabled but has no keys (from `keys` or `keys_file`); add keys or set enabled = false", p.name);
        return Err(ConfigError::at(&at("keys"), what));
    }
    let key_strategy = one_of(&p.key_strategy, STRATEGIES, &at("key_strategy"))?;
    if p.weight == 0 {
        return Err(ConfigError::at(
            &at("weight"),
            "must be at least 1 (to stop using a provider, set enabled = false)",
        ));
    }
    let limits = limits(p.rpm, p.rpd, p.tpm, &at(""))?;
    for (j, m) in p.models.iter().enumerate() {
        let here = format!("providers[{i}].models[{j}]");
        if m.trim().is_empty() {
            return Err(ConfigError::at(&here, "empty model name"));
        }
        if p.models[..j].contains(m) {
            return Err(ConfigError::at(&here, format!("{m:?} is listed twice")));
        }
    }
    for (alias, target) in &p.aliases {
        let here = format!("providers[{i}].aliases.{alias}");
        if alias.trim().is_empty() || target.trim().is_empty() {
            return Err(ConfigError::at(
                &here,
                "alias and target must both be non-empty model names",
            ));
        }
        if p.models.contains(alias) {
            let what = format!(
                "{alias:?} is also in `models`; one name can have one meaning per provider"
            );
            return Err(ConfigError::at(&here, what));
        }
    }
    let mut headers = Vec::with_capacity(p.headers.len());
    for (name, value) in &p.headers {
        headers.push(header(
            name,
            value,
            &format!("providers[{i}].headers.{name}"),
        )?);
    }
    Ok(Provider {
        index: i,
        kind,
        base_url,
        keys,
        key_strategy,
        weight: p.weight,
        enabled: p.enabled,
        limits,
        models: p.models,
        aliases: p.aliases.into_iter().collect(),
        headers,
        name: p.name,
    })
}

/// Keys from `keys` (secret references) then `keys_file` (one literal key per line, blank
/// lines and `#` comments skipped), duplicates dropped keeping the first.
fn keys(i: usize, p: &ProviderConfig, r: &Resolver<'_>) -> Result<Vec<Key>, ConfigError> {
    let mut secrets = Vec::with_capacity(p.keys.len());
    for (j, raw) in p.keys.iter().enumerate() {
        secrets.push(r.secret(raw, &format!("providers[{i}].keys[{j}]"))?);
    }
    if !p.keys_file.is_empty() {
        let path = r.path(&p.keys_file);
        let here = format!("providers[{i}].keys_file");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError::at(&here, format!("cannot read {}: {e}", path.display())))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.bytes().any(|b| b.is_ascii_control()) {
                let what = format!(
                    "line {} of {} contains control characters",
                    n + 1,
                    path.display()
                );
                return Err(ConfigError::at(&here, what));
            }
            secrets.push(Secret::new(line));
        }
    }
    let mut seen = AHashSet::with_capacity(secrets.len());
    Ok(secrets
        .into_iter()
        .filter(|s| seen.insert(s.expose().to_string()))
        .map(|secret| Key {
            id: KeyId::of(&p.name, secret.expose()),
            secret,
        })
        .collect())
}

impl KeyId {
    /// The id of `secret` in provider `provider`: FNV-1a 64 with a splitmix64 finaliser. A
    /// fixed function, not a randomly seeded hasher, so the id is the same across reloads and
    /// restarts (persisted limit windows are keyed by it). Not a MAC: it is never shown as a
    /// way to identify a key to outsiders; masked keys are.
    pub fn of(provider: &str, secret: &str) -> KeyId {
        const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut h = FNV_OFFSET;
        // 0xFF never occurs in UTF-8, so ("ab", "c") and ("a", "bc") hash differently.
        for &b in provider
            .as_bytes()
            .iter()
            .chain(&[0xFF])
            .chain(secret.as_bytes())
        {
            h = (h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        KeyId(h ^ (h >> 31))
    }
}

fn routing(r: RoutingConfig, routes: &RouteTable) -> Result<Routing, ConfigError> {
    let no_route = |model: &str| {
        format!("{model:?} has no route: no enabled provider lists it in `models` or `aliases`, and none has an empty `models` (serves any model)")
    };
    let default_model = match r.default_model.as_str() {
        "" => None,
        m if routes.get(m).is_none() => {
            return Err(ConfigError::at("routing.default_model", no_route(m)))
        }
        m => Some(m.to_string()),
    };
    let mut fallbacks = AHashMap::with_capacity(r.fallbacks.len());
    for (model, targets) in r.fallbacks {
        for (j, t) in targets.iter().enumerate() {
            let here = format!("routing.fallbacks.{model}[{j}]");
            if *t == model {
                return Err(ConfigError::at(
                    &here,
                    format!("{model:?} cannot fall back to itself"),
                ));
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
fn check_name(name: &str, path: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::at(path, "name is empty"));
    }
    if name
        .bytes()
        .any(|b| !b.is_ascii_graphic() || b == b'"' || b == b'\\')
    {
        let what = format!(
            "{name:?}: names may use printable ASCII only, without spaces, quotes or backslashes"
        );
        return Err(ConfigError::at(path, what));
    }
    Ok(())
}

fn header(name: &str, value: &str, path: &str) -> Result<(String, String), ConfigError> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(tchar) {
        return Err(ConfigError::at(
            path,
            "not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)",
        ));
    }
    let name = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(ConfigError::at(
            path,
            format!("{name} is set by rotor itself and cannot be configured"),
        ));
    }
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(ConfigError::at(path, "header value contains CR, LF or NUL"));
    }
    Ok((name, value.to_string()))
}

/// `at` is the key path prefix ending in `.`, e.g. `clients[0].`.
fn limits(rpm: i64, rpd: i64, tpm: i64, at: &str) -> Result<Limits, ConfigError> {
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

fn one_of<T: Copy>(value: &str, table: &[(&str, T)], path: &str) -> Result<T, ConfigError> {
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

fn positive_ms(v: u64, path: &str) -> Result<Duration, ConfigError> {
    if v == 0 {
        return Err(ConfigError::at(
            path,
            "must be greater than 0 (milliseconds)",
        ));
    }
    Ok(Duration::from_millis(v))
}
