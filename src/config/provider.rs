//! Providers: `[[providers]]` -> `Provider`, with their keys, headers and stable key ids.
//!
//! Invariant: every enabled provider comes out with at least one key, keys deduplicated in
//! file order, each with a `KeyId` that depends only on (provider name, secret), so limit
//! windows and key health carry over across reloads and restarts.

use std::sync::Arc;

use ahash::AHashSet;

use super::compile::{check_name, limits, one_of};
use super::file::ProviderConfig;
use super::model::*;
use super::secret::{Resolver, Secret};
use super::{url, ConfigError};
use crate::codec::response_head::ProviderLines;

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

/// Kinds and strategies the config language names (DESIGN 1.2) that this build cannot honour
/// yet. They are refused with the key's path instead of running as something else: a
/// `replicate` provider sent OpenAI requests, a `least-used` pool rotated round-robin.
const NOT_YET_KINDS: &[ProviderKind] = &[];

/// The base URL a provider of this kind gets when `base_url` is left out (DESIGN 1.2a).
pub(crate) fn default_base_url(kind: ProviderKind) -> Option<&'static str> {
    match kind {
        ProviderKind::Replicate => Some("https://api.replicate.com/v1"),
        ProviderKind::Cohere => Some("https://api.cohere.com/v2"),
        ProviderKind::Cloudflare => Some("https://api.cloudflare.com/client/v4"),
        ProviderKind::OnDemand => Some("https://api.on-demand.io/chat/v1"),
        _ => None,
    }
}
const NOT_YET_STRATEGIES: &[KeyStrategy] = &[];

/// `value` from `table`, refused when this build lists it in `not_yet`.
fn honoured<T: Copy + PartialEq>(
    value: &str,
    table: &[(&str, T)],
    not_yet: &[T],
    path: &str,
) -> Result<T, ConfigError> {
    let v = one_of(value, table, path)?;
    if not_yet.contains(&v) {
        let usable: Vec<&str> = table
            .iter()
            .filter(|(_, t)| !not_yet.contains(t))
            .map(|(n, _)| *n)
            .collect();
        let what = format!(
            "{value:?} is not supported by this build of rotor yet; use {}",
            usable.join(" | ")
        );
        return Err(ConfigError::at(path, what));
    }
    Ok(v)
}

/// Headers rotor itself frames or sets per request; a configured value would corrupt framing
/// or fight the pool key.
const RESERVED_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding", "connection"];

/// `first_byte` (`upstream.first_byte_timeout_ms`) bounds how long an upstream may be asked to
/// hold its first answer (Replicate's `Prefer: wait`).
pub(super) fn providers(
    list: Vec<ProviderConfig>,
    r: &Resolver<'_>,
    first_byte: std::time::Duration,
) -> Result<Vec<Arc<Provider>>, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::at(
            "providers",
            "no [[providers]] defined; rotor needs at least one upstream",
        ));
    }
    let mut out: Vec<Arc<Provider>> = Vec::with_capacity(list.len());
    for (i, p) in list.into_iter().enumerate() {
        let provider = provider(i, p, r, first_byte)?;
        if let Some(j) = out.iter().position(|o| o.name == provider.name) {
            let what = format!("{:?} is already the name of providers[{j}]", provider.name);
            return Err(ConfigError::at(&format!("providers[{i}].name"), what));
        }
        out.push(Arc::new(provider));
    }
    Ok(out)
}

fn provider(
    i: usize,
    p: ProviderConfig,
    r: &Resolver<'_>,
    first_byte: std::time::Duration,
) -> Result<Provider, ConfigError> {
    let at = |k: &str| format!("providers[{i}].{k}");
    check_name(&p.name, &at("name"))?;
    let kind = honoured(&p.kind, KINDS, NOT_YET_KINDS, &at("kind"))?;
    let (vertex, keys, mut base_url) = match super::vertex::compile(i, &p, kind, r)? {
        Some((vertex, keys, base_url)) => (Some(Arc::new(vertex)), keys, base_url),
        None => {
            let raw_base = match (p.base_url.as_str(), default_base_url(kind)) {
                ("", Some(default)) => default,
                (raw, _) => raw,
            };
            let base_url = url::parse_base_url(raw_base).map_err(|e| ConfigError::at(&at("base_url"), e))?;
            (None, keys(i, &p, r)?, base_url)
        }
    };
    if let Some(path) = account_path(kind, p.account_id.as_deref(), &at("account_id"))? {
        base_url.path.push_str(&path);
    }
    let poll = poll(kind, &p, &at(""), first_byte)?;
    if p.enabled && keys.is_empty() {
        let what = format!(
            "provider {:?} is enabled but has no keys (from `keys` or `keys_file`); add keys or set enabled = false",
            p.name
        );
        return Err(ConfigError::at(&at("keys"), what));
    }
    let key_strategy = honoured(&p.key_strategy, STRATEGIES, NOT_YET_STRATEGIES, &at("key_strategy"))?;
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
            let what = format!("{alias:?} is also in `models`; one name can have one meaning per provider");
            return Err(ConfigError::at(&here, what));
        }
    }
    let mut headers = Vec::with_capacity(p.headers.len());
    for (name, value) in &p.headers {
        let here = format!("providers[{i}].headers.{name}");
        let (name, value) = header(name, value, &here)?;
        // Names are case-insensitive: "X-A" and "x-a" would send the header twice.
        if headers.iter().any(|(n, _)| *n == name) {
            return Err(ConfigError::at(
                &here,
                format!("{name} is configured twice (header names ignore case)"),
            ));
        }
        headers.push((name, value));
    }
    let validate_interval = match p.validate_interval_ms {
        0 => None,
        ms if ms < 1_000 => {
            return Err(ConfigError::at(
                &at("validate_interval_ms"),
                "must be 0 (off) or at least 1000",
            ))
        }
        ms => Some(std::time::Duration::from_millis(ms)),
    };
    let balance = balance_source(&p, &base_url, &at("balance"))?;
    let balance_interval = match p.balance_interval_ms {
        0 => None,
        ms if ms < 1_000 => {
            return Err(ConfigError::at(
                &at("balance_interval_ms"),
                "must be 0 (only when keys are validated) or at least 1000",
            ))
        }
        ms => Some(std::time::Duration::from_millis(ms)),
    };
    if key_strategy == KeyStrategy::HighestBalance && balance.is_none() {
        let what = format!(
            "highest-balance needs balances: rotor knows SiliconFlow, DeepSeek and OpenRouter by host; for {:?} set balance = {{ path = \"/user/info\", field = \"/data/totalBalance\" }}",
            base_url.host
        );
        return Err(ConfigError::at(&at("key_strategy"), what));
    }
    let responses = responses_mode(&p.responses, kind, &base_url, &at("responses"))?;
    let sessions = session_limits(i, kind, &p)?;
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
        validate_interval,
        remove_invalid: p.remove_invalid,
        balance,
        balance_interval,
        vertex,
        responses,
        sessions,
        poll,
        answer_lines: ProviderLines::new(p.name.as_bytes()),
        name: p.name,
    })
}

/// `responses`: "native" or "translate"; unset = native only for OpenAI's own API host (other
/// OpenAI-compatible servers mostly serve chat completions only). Only OpenAI-kind providers
/// can be native: no other kind's API has a Responses endpoint.
fn responses_mode(value: &str, kind: ProviderKind, base: &BaseUrl, path: &str) -> Result<ResponsesMode, ConfigError> {
    const MODES: &[(&str, ResponsesMode)] = &[
        ("native", ResponsesMode::Native),
        ("translate", ResponsesMode::Translate),
    ];
    if value.is_empty() {
        let openai = kind == ProviderKind::OpenAi && base.host.eq_ignore_ascii_case("api.openai.com");
        return Ok(if openai {
            ResponsesMode::Native
        } else {
            ResponsesMode::Translate
        });
    }
    let mode = one_of(value, MODES, path)?;
    if mode == ResponsesMode::Native && kind != ProviderKind::OpenAi {
        let what =
            format!("\"native\" needs kind = \"openai\" (a {kind:?} upstream has no Responses API); use \"translate\"");
        return Err(ConfigError::at(path, what));
    }
    Ok(mode)
}

/// Default `session_timeout_ms` (DESIGN 1.2a) and `max_sessions`.
const SESSION_TIMEOUT_MS: u64 = 1_800_000;
const MAX_SESSIONS: u64 = 10_000;
/// `max_sessions` above this is refused: each session costs ~150 bytes of shared memory.
const MAX_SESSIONS_CEILING: u64 = 1_000_000;

/// `session_timeout_ms` and `max_sessions`: an on-demand provider's, refused on other kinds
/// (they would do nothing there).
fn session_limits(i: usize, kind: ProviderKind, p: &ProviderConfig) -> Result<Option<SessionLimits>, ConfigError> {
    let at = |k: &str| format!("providers[{i}].{k}");
    if kind != ProviderKind::OnDemand {
        for (name, set) in [
            ("session_timeout_ms", p.session_timeout_ms.is_some()),
            ("max_sessions", p.max_sessions.is_some()),
        ] {
            if set {
                return Err(ConfigError::at(&at(name), "only kind = \"ondemand\" has sessions"));
            }
        }
        return Ok(None);
    }
    let timeout = p.session_timeout_ms.unwrap_or(SESSION_TIMEOUT_MS);
    if !(1_000..=86_400_000).contains(&timeout) {
        return Err(ConfigError::at(
            &at("session_timeout_ms"),
            "must be between 1000 (1 s) and 86400000 (24 h)",
        ));
    }
    let max = p.max_sessions.unwrap_or(MAX_SESSIONS);
    if !(1..=MAX_SESSIONS_CEILING).contains(&max) {
        return Err(ConfigError::at(
            &at("max_sessions"),
            format!("must be between 1 and {MAX_SESSIONS_CEILING}"),
        ));
    }
    Ok(Some(SessionLimits {
        timeout: std::time::Duration::from_millis(timeout),
        max: max as usize,
    }))
}

/// Cloudflare's `account_id`: required there (Workers AI's OpenAI-compatible endpoint is
/// `{base}/accounts/{account_id}/ai/v1`), refused on every other kind.
fn account_path(kind: ProviderKind, account_id: Option<&str>, path: &str) -> Result<Option<String>, ConfigError> {
    match (kind, account_id) {
        (ProviderKind::Cloudflare, Some(id)) => {
            let clean = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
            if id.is_empty() || id.len() > 64 || !id.bytes().all(clean) {
                return Err(ConfigError::at(
                    path,
                    "must be the Cloudflare account id (letters, digits, - and _ only, up to 64)",
                ));
            }
            Ok(Some(format!("/accounts/{id}/ai/v1")))
        }
        (ProviderKind::Cloudflare, None) => Err(ConfigError::at(
            path,
            "kind = \"cloudflare\" needs account_id (Workers AI URLs name the account)",
        )),
        (_, Some(_)) => Err(ConfigError::at(path, "only kind = \"cloudflare\" takes account_id")),
        (_, None) => Ok(None),
    }
}

/// `poll_interval_ms` and `poll_max_wait_ms` (Replicate only): bounded so a prediction that
/// never finishes cannot hold a request, and polls cannot hammer the upstream.
fn poll(
    kind: ProviderKind,
    p: &ProviderConfig,
    at: &str,
    first_byte: std::time::Duration,
) -> Result<Poll, ConfigError> {
    let path = |k: &str| format!("{at}{k}");
    if kind != ProviderKind::Replicate {
        for (name, set) in [
            ("poll_interval_ms", p.poll_interval_ms.is_some()),
            ("poll_max_wait_ms", p.poll_max_wait_ms.is_some()),
        ] {
            if set {
                return Err(ConfigError::at(
                    &path(name),
                    "only kind = \"replicate\" polls; remove it",
                ));
            }
        }
        return Ok(Poll::default());
    }
    let default = Poll::default();
    let interval = p.poll_interval_ms.unwrap_or(default.interval.as_millis() as u64);
    if !(50..=60_000).contains(&interval) {
        return Err(ConfigError::at(&path("poll_interval_ms"), "must be within 50..=60000"));
    }
    let max_wait = p.poll_max_wait_ms.unwrap_or(default.max_wait.as_millis() as u64);
    if !(1_000..=3_600_000).contains(&max_wait) || max_wait < interval {
        return Err(ConfigError::at(
            &path("poll_max_wait_ms"),
            "must be within 1000..=3600000 and at least poll_interval_ms",
        ));
    }
    let max_wait = std::time::Duration::from_millis(max_wait);
    // Replicate holds a request at most 60 s; rotor never asks for longer than it waits for a
    // first byte (else a slow prediction would look like a dead upstream and be re-created).
    let second = std::time::Duration::from_secs(1);
    let prefer_wait = max_wait
        .min(std::time::Duration::from_secs(60))
        .min(first_byte.saturating_sub(second))
        .max(second);
    Ok(Poll {
        interval: std::time::Duration::from_millis(interval),
        max_wait,
        prefer_wait,
    })
}

/// The configured balance endpoint, else the one of a provider known by its host.
fn balance_source(p: &ProviderConfig, base: &BaseUrl, path: &str) -> Result<Option<BalanceSource>, ConfigError> {
    if let Some(b) = &p.balance {
        let clean =
            |s: &str| s.starts_with('/') && !s.bytes().any(|c| c <= b' ' || c == b'?' || c == b'#' || c == 0x7f);
        if !clean(&b.path) {
            return Err(ConfigError::at(
                &format!("{path}.path"),
                "must be a path starting with / (no spaces, query or fragment)",
            ));
        }
        if !b.field.starts_with('/') {
            return Err(ConfigError::at(
                &format!("{path}.field"),
                "must be a JSON pointer such as \"/data/totalBalance\"",
            ));
        }
        return Ok(Some(BalanceSource {
            path: format!("{}{}", base.path, b.path),
            field: b.field.clone(),
        }));
    }
    let host = base.host.to_ascii_lowercase();
    let known = |domain: &str| host == domain || host.ends_with(&format!(".{domain}"));
    Ok(if known("siliconflow.cn") || known("siliconflow.com") {
        Some(BalanceSource {
            path: format!("{}/user/info", base.path),
            field: "/data/totalBalance".into(),
        })
    } else if known("deepseek.com") {
        Some(BalanceSource {
            path: "/user/balance".into(),
            field: "/balance_infos/0/total_balance".into(),
        })
    } else if known("openrouter.ai") {
        Some(BalanceSource {
            path: format!("{}/key", base.path),
            field: "/data/limit_remaining".into(),
        })
    } else {
        None
    })
}

/// Keys from `keys` (secret references) then `keys_file` (one literal key per line, blank
/// lines and `#` comments skipped), duplicates dropped keeping the first.
fn keys(i: usize, p: &ProviderConfig, r: &Resolver<'_>) -> Result<Vec<Key>, ConfigError> {
    let mut secrets = Vec::with_capacity(p.keys.len());
    for (j, raw) in p.keys.iter().enumerate() {
        secrets.push((r.secret(raw, &format!("providers[{i}].keys[{j}]"))?, KeyOrigin::Config));
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
                let what = format!("line {} of {} contains control characters", n + 1, path.display());
                return Err(ConfigError::at(&here, what));
            }
            secrets.push((Secret::new(line), KeyOrigin::KeysFile));
        }
    }
    let mut seen = AHashSet::with_capacity(secrets.len());
    Ok(secrets
        .into_iter()
        .filter(|(s, _)| seen.insert(s.expose().to_string()))
        .map(|(secret, origin)| Key {
            id: KeyId::of(&p.name, secret.expose()),
            secret,
            origin,
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
        for &b in provider.as_bytes().iter().chain(&[0xFF]).chain(secret.as_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        KeyId(h ^ (h >> 31))
    }
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
