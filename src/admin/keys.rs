//! `/admin/keys` (DESIGN 1.3): the key pool of every provider, listed masked, exported whole,
//! changed through the control thread (`keys::command`).
//! Invariant: a secret leaves rotor only through `GET /admin/keys/export`; everything else
//! shows keys masked to their last 4 characters, and a bad body is refused before any change.

use std::collections::BTreeMap;

use serde::Serialize;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

use super::{error, AdminAnswer, Query};
use crate::config::Secret;
use crate::gateway::commands::Command;
use crate::gateway::Gateway;
use crate::health::{now_ms, KeyState};
use crate::keys::command::KeysCommand;

#[derive(Serialize)]
struct Listed {
    provider: String,
    /// Masked to the last 4 characters.
    key: String,
    /// The stable key id (hex): a hash of provider and secret, not the secret.
    id: String,
    /// `config` | `keys_file` | `runtime`.
    origin: &'static str,
    /// `active` | `cooling` | `quarantined` | `invalid` (refused on validation) | `disabled`.
    state: &'static str,
    /// Last fetched balance, in the provider's currency unit (`null` = not known).
    balance: Option<f64>,
    /// Unix ms of the last balance fetch.
    balance_at: Option<u64>,
    /// Unix ms of the last validation.
    last_validated: Option<u64>,
    /// Status of the last validation answer.
    last_status: Option<u16>,
    /// Why the last validation did not pass (never the key itself).
    last_error: Option<String>,
    in_flight: u32,
    successes: u64,
    failures: u64,
    /// `{"rpm":{"used","limit"}, ...}` for each limited window.
    limits: BTreeMap<&'static str, Usage>,
}

#[derive(Serialize)]
struct Usage {
    used: u64,
    limit: u64,
}

#[derive(Serialize)]
struct Listing {
    generation: u64,
    data: Vec<Listed>,
}

/// `GET /admin/keys`: every key of every provider, disabled config keys included.
pub(super) fn list(gateway: &Gateway) -> AdminAnswer {
    let generation = gateway.current();
    let now = now_ms();
    let limits_now = crate::limits::now();
    let mut data = Vec::new();
    for p in generation.config.providers.iter() {
        for (i, key) in p.keys.iter().enumerate() {
            let health = generation.key_health.get(p.index, i);
            let care = health.map(|h| &h.care);
            let state = match health.map(|h| h.state(now)) {
                _ if !p.enabled => "disabled",
                Some(KeyState::Cooling(_)) => "cooling",
                Some(KeyState::Quarantined(_)) if care.is_some_and(|c| c.is_invalid()) => "invalid",
                Some(KeyState::Quarantined(_)) => "quarantined",
                Some(KeyState::Active) | None => "active",
            };
            let limits = generation
                .limits
                .key(p.index, i)
                .map(|set| set.usage(limits_now))
                .unwrap_or_default()
                .into_iter()
                .map(|(kind, used, limit)| (kind.name(), Usage { used, limit }))
                .collect();
            data.push(Listed {
                provider: p.name.clone(),
                key: key.secret.masked(),
                id: format!("{:016x}", key.id.0),
                origin: key.origin.name(),
                state,
                balance: care.and_then(|c| c.balance()),
                balance_at: care.and_then(|c| c.balance_at()),
                last_validated: care.and_then(|c| c.validated_at()),
                last_status: care.and_then(|c| c.last_status()),
                last_error: care.and_then(|c| c.last_error()),
                in_flight: health.map_or(0, |h| h.in_flight()),
                successes: health.map_or(0, |h| h.successes()),
                failures: health.map_or(0, |h| h.failures()),
                limits,
            });
        }
    }
    for d in gateway.keys.snapshot().disabled {
        data.push(Listed {
            provider: d.provider,
            key: d.masked,
            id: format!("{:016x}", d.id.0),
            origin: d.origin.name(),
            state: "disabled",
            balance: None,
            balance_at: None,
            last_validated: None,
            last_status: None,
            last_error: None,
            in_flight: 0,
            successes: 0,
            failures: 0,
            limits: BTreeMap::new(),
        });
    }
    json(&Listing {
        generation: generation.id,
        data,
    })
}

/// `GET /admin/keys/export`: `{"providers":{"name":["key",...]}}`, the keys in use, in full.
pub(super) fn export(gateway: &Gateway) -> AdminAnswer {
    let generation = gateway.current();
    let providers: BTreeMap<&str, Vec<&str>> = generation
        .config
        .providers
        .iter()
        .map(|p| (p.name.as_str(), p.keys.iter().map(|k| k.secret.expose()).collect()))
        .collect();
    #[derive(Serialize)]
    struct Export<'a> {
        providers: BTreeMap<&'a str, Vec<&'a str>>,
    }
    json(&Export { providers })
}

/// `POST /admin/keys/validate`: no body (or `{}`) = every key of every provider;
/// `{"provider":"p"}` = that provider's keys; `{"provider":"p","keys":["k1"]}` = those keys;
/// `{"provider":"p","ids":["<id>"]}` = the keys with those ids (as listed, so the dashboard
/// never needs a secret). A cheap authenticated call per key; refused keys are disabled, valid
/// ones restored.
pub(super) async fn validate(core: &crate::proxy::Core, body: &[u8]) -> AdminAnswer {
    let (provider, keys) = match selection(&core.gateway, body) {
        Ok(selected) => selected,
        Err(answer) => return answer,
    };
    match crate::proxy::keycare::validate(core, provider.as_deref(), &keys).await {
        Ok(data) => {
            #[derive(Serialize)]
            struct Validated {
                data: Vec<crate::proxy::keycare::Checked>,
            }
            json(&Validated { data })
        }
        Err(message) => error(404, &message),
    }
}

/// The provider and whole keys a validation body selects (ids resolved to their keys).
fn selection(gateway: &Gateway, body: &[u8]) -> Result<(Option<String>, Vec<String>), AdminAnswer> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((None, Vec::new()));
    }
    let value: sonic_rs::Value = match sonic_rs::from_slice(body) {
        Ok(v) if sonic_rs::JsonValueTrait::is_object(&v) => v,
        _ => return Err(error(400, "the body must be a JSON object (or empty for every key)")),
    };
    let provider = value.get("provider").and_then(|p| p.as_str()).map(str::to_owned);
    let mut keys = [strings(&value, "key")?, strings(&value, "keys")?].concat();
    let ids = [strings(&value, "id")?, strings(&value, "ids")?].concat();
    let Some(name) = provider.as_deref() else {
        if keys.is_empty() && ids.is_empty() {
            return Ok((None, keys));
        }
        return Err(error(400, "name the `provider` of the keys to validate"));
    };
    for id in &ids {
        let secret = secret_by_id(gateway, name, id, false)
            .ok_or_else(|| error(404, &format!("provider {name:?} has no key with id {id:?}")))?;
        keys.push(secret.expose().to_owned());
    }
    Ok((provider, keys))
}

/// `POST /admin/keys` with `{"provider":"p","keys":["k1","k2"]}`, `"keys":"k1\nk2"` (a pasted
/// list: whitespace, commas or semicolons between keys) or `"key":"k1"`; `"ids":["<id>"]`
/// enables disabled config keys again by their listed id.
pub(super) fn add(gateway: &Gateway, body: &[u8]) -> Result<Command, AdminAnswer> {
    let (provider, value) = parse(body)?;
    let mut secrets = Vec::new();
    for id in strings(&value, "id")?.into_iter().chain(strings(&value, "ids")?) {
        let secret = secret_by_id(gateway, &provider, &id, true)
            .ok_or_else(|| error(404, &format!("provider {provider:?} has no key with id {id:?}")))?;
        secrets.push(secret);
    }
    let mut push = |text: &str| {
        secrets.extend(
            text.split(|c: char| c.is_whitespace() || c == ',' || c == ';')
                .filter(|s| !s.is_empty())
                .map(Secret::new),
        )
    };
    for field in ["key", "keys"] {
        let Some(v) = value.get(field) else { continue };
        if let Some(s) = v.as_str() {
            push(s);
        } else if let Some(list) = v.as_array() {
            for item in list.iter() {
                let s = item
                    .as_str()
                    .ok_or_else(|| error(400, &format!("`{field}` must list strings")))?;
                push(s);
            }
        } else {
            return Err(error(400, &format!("`{field}` must be a string or a list of strings")));
        }
    }
    if secrets.is_empty() {
        return Err(error(
            400,
            "no keys given: send {\"provider\":\"p\",\"keys\":[\"k1\",\"k2\"]}",
        ));
    }
    Ok(Command::Keys(KeysCommand::Add { provider, secrets }))
}

/// `DELETE /admin/keys` with `{"provider":"p","key":"k1"}` or `?provider=p&key=k1`, or the
/// listed id instead of the key (`"id":"<id>"`, `&id=<id>`).
pub(super) fn remove(gateway: &Gateway, query: &Query, body: &[u8]) -> Result<Command, AdminAnswer> {
    const HOW: &str = "send {\"provider\":\"p\",\"key\":\"k1\"} (or \"id\") or ?provider=p&key=k1 (or &id=)";
    let (provider, key, id) = match query.get("provider") {
        Some(p) if query.get("key").is_some() || query.get("id").is_some() => (
            p.to_owned(),
            query.get("key").map(str::to_owned),
            query.get("id").map(str::to_owned),
        ),
        _ => {
            let (provider, value) = parse(body)?;
            let text = |field: &str| {
                value
                    .get(field)
                    .and_then(|k| k.as_str())
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned)
            };
            (provider, text("key"), text("id"))
        }
    };
    let secret = match (key, id) {
        (Some(key), _) => Secret::new(key),
        (None, Some(id)) => secret_by_id(gateway, &provider, &id, false)
            .ok_or_else(|| error(404, &format!("provider {provider:?} has no key with id {id:?}")))?,
        (None, None) => return Err(error(400, HOW)),
    };
    Ok(Command::Keys(KeysCommand::Remove { provider, secret }))
}

/// The secret of the key listed with `id` in `provider`: a key serving now, or (with
/// `disabled`) also a config key disabled through `DELETE /admin/keys`.
fn secret_by_id(gateway: &Gateway, provider: &str, id: &str, disabled: bool) -> Option<Secret> {
    let id = u64::from_str_radix(id.trim(), 16).ok()?;
    let find = |config: &crate::config::Config| {
        config
            .providers
            .iter()
            .find(|p| p.name == provider)
            .and_then(|p| p.keys.iter().find(|k| k.id.0 == id))
            .map(|k| k.secret.clone())
    };
    find(&gateway.current().config).or_else(|| disabled.then(|| find(&gateway.base_config().0)).flatten())
}

/// The strings of `field`: absent = none, a string = one, a list of strings = those.
fn strings(value: &sonic_rs::Value, field: &str) -> Result<Vec<String>, AdminAnswer> {
    match value.get(field) {
        None => Ok(Vec::new()),
        Some(v) if v.as_str().is_some() => Ok(v.as_str().map(str::to_owned).into_iter().collect()),
        Some(v) => match v.as_array() {
            Some(list) if list.iter().all(|k| k.as_str().is_some()) => {
                Ok(list.iter().filter_map(|k| k.as_str().map(str::to_owned)).collect())
            }
            _ => Err(error(400, &format!("`{field}` must be a string or a list of strings"))),
        },
    }
}

/// The JSON object of a body and its `provider`.
fn parse(body: &[u8]) -> Result<(String, sonic_rs::Value), AdminAnswer> {
    let value: sonic_rs::Value =
        sonic_rs::from_slice(body).map_err(|_| error(400, "the body must be a JSON object"))?;
    if !value.is_object() {
        return Err(error(400, "the body must be a JSON object"));
    }
    let provider = value
        .get("provider")
        .and_then(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| error(400, "`provider` (a provider name) is required"))?
        .to_owned();
    Ok((provider, value))
}

fn json<T: Serialize>(value: &T) -> AdminAnswer {
    super::json(200, value)
}
