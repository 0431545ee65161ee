//! Keys that look after themselves (DESIGN 1.2a, `validate_interval_ms`, `balance`): a cheap
//! authenticated call per key (`GET <base>/models`) says whether the provider still accepts
//! it; a key refused with 401/403/402 is disabled and restored when it validates again; a
//! runtime key refused twice in a row is deleted when the provider sets `remove_invalid`.
//! Balances are fetched from the provider's balance endpoint on `balance_interval_ms`, with
//! every validation, and after use (at most every `AFTER_USE`).
//! Runs on worker 0's housekeeping task and in `POST /admin/keys/validate`, as async work on
//! the worker's own pool: nothing here blocks a worker or waits on one. Removals go to the
//! control thread as a command.
//! Invariant: at most `MAX_PER_TICK` calls per housekeeping tick and `CONCURRENCY` at once.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;
use sonic_rs::JsonValueTrait;

use super::{probe, Core};
use crate::config::{Key, KeyOrigin, Provider};
use crate::gateway::commands::Command;
use crate::gateway::Generation;
use crate::health::{now_ms, KeyHealth};
use crate::keys::care::{unix_ms, Verdict};
use crate::keys::command::KeysCommand;

/// Upstream calls started per housekeeping tick (one tick a second on worker 0).
const MAX_PER_TICK: usize = 16;
/// Calls in flight at once in an admin validation.
const CONCURRENCY: usize = 16;
/// A used key's balance is fetched again after this long.
const AFTER_USE: Duration = Duration::from_secs(30);
/// Refusals in a row before `remove_invalid` deletes a runtime key.
const REMOVE_AFTER: u32 = 2;

/// One key's validation result, for the admin answer.
#[derive(Serialize)]
pub struct Checked {
    pub provider: String,
    /// Masked to the last 4 characters.
    pub key: String,
    /// `true` valid, `false` refused by the provider, `null` no verdict (no answer, 5xx, 429).
    pub valid: Option<bool>,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub balance: Option<f64>,
    /// The key was deleted (`remove_invalid`).
    pub removed: bool,
}

/// Background duties of worker 0: validation and balances that are due.
pub(super) async fn tick(core: &Core, generation: &Arc<Generation>) {
    let now = unix_ms();
    let mut due = Vec::new();
    for p in generation.config.providers.iter().filter(|p| p.enabled) {
        for (i, key) in p.keys.iter().enumerate() {
            let Some(health) = generation.key_health.get(p.index, i) else {
                continue;
            };
            let validate = p
                .validate_interval
                .is_some_and(|every| older_than(health.care.validated_at(), every, now));
            let balance = !validate && p.balance.is_some() && balance_due(p, health, now);
            if (validate || balance) && due.len() < MAX_PER_TICK {
                due.push((p, key, health, validate));
            }
        }
    }
    let work = due.into_iter().map(|(p, key, health, validate)| async move {
        if validate {
            check(core, generation, p, key, health).await;
        } else {
            fetch_balance(core, generation, p, key, health).await;
        }
    });
    join_all(work).await;
}

fn older_than(at: Option<u64>, every: Duration, now: u64) -> bool {
    at.is_none_or(|t| now.saturating_sub(t) >= every.as_millis() as u64)
}

fn balance_due(p: &Provider, health: &KeyHealth, now: u64) -> bool {
    let at = health.care.balance_at();
    let used = health.successes() != health.care.balance_seen_successes();
    p.balance_interval.is_some_and(|every| older_than(at, every, now)) || (used && older_than(at, AFTER_USE, now))
}

/// `POST /admin/keys/validate`: the selected keys (`None` = every provider; a provider and
/// optionally some of its keys), `CONCURRENCY` at a time.
pub async fn validate(core: &Core, provider: Option<&str>, keys: &[String]) -> Result<Vec<Checked>, String> {
    let generation = core.gateway.current();
    let mut selected = Vec::new();
    for p in generation.config.providers.iter() {
        if provider.is_some_and(|name| name != p.name) {
            continue;
        }
        for (i, key) in p.keys.iter().enumerate() {
            if !keys.is_empty() && !keys.iter().any(|k| k == key.secret.expose()) {
                continue;
            }
            if let Some(health) = generation.key_health.get(p.index, i) {
                selected.push((p, key, health));
            }
        }
    }
    if let Some(name) = provider {
        if !generation.config.providers.iter().any(|p| p.name == name) {
            return Err(format!("no provider named {name:?}"));
        }
    }
    if selected.is_empty() {
        return Err("no key matches (keys must be given whole and be in the provider's pool)".into());
    }
    let mut out = Vec::with_capacity(selected.len());
    for batch in selected.chunks(CONCURRENCY) {
        let work = batch
            .iter()
            .map(|(p, key, health)| check(core, &generation, p, key, health));
        out.extend(join_all(work).await);
    }
    Ok(out)
}

/// Validates one key, applies the verdict, fetches its balance when the provider has one.
async fn check(core: &Core, generation: &Arc<Generation>, p: &Provider, key: &Key, health: &KeyHealth) -> Checked {
    let path = crate::providers::Adapter::of(p).probe_path(p);
    let credential = super::credential::current_of(generation, p, key);
    let answer = probe::get(core, generation, p, &credential, &path).await;
    let (status, verdict, error) = match &answer {
        Ok((status, body)) => {
            let verdict = Verdict::of(Some(*status), body);
            let error = (verdict != Verdict::Valid).then(|| format!("GET /models answered {status}"));
            (Some(*status), verdict, error)
        }
        Err(why) => (None, Verdict::Unknown, Some(format!("GET /models: {why}"))),
    };
    let refusals = health.care.record(verdict, status, error.clone(), unix_ms());
    let mut removed = false;
    match verdict {
        Verdict::Valid => {
            if health.is_quarantined() {
                health.restore(now_ms());
                tracing::info!(provider = %p.name, key = %health.masked, "key restored: it validates again");
            }
        }
        Verdict::Refused => {
            health.disable_invalid(now_ms());
            tracing::warn!(provider = %p.name, key = %health.masked, status, "key refused on validation: disabled");
            if p.remove_invalid && key.origin == KeyOrigin::Runtime && refusals >= REMOVE_AFTER {
                removed = remove(core, p, key).await;
            }
        }
        Verdict::Unknown => {}
    }
    if verdict != Verdict::Refused && p.balance.is_some() {
        fetch_balance(core, generation, p, key, health).await;
    }
    Checked {
        provider: p.name.clone(),
        key: health.masked.clone(),
        valid: match verdict {
            Verdict::Valid => Some(true),
            Verdict::Refused => Some(false),
            Verdict::Unknown => None,
        },
        status,
        error,
        balance: health.care.balance(),
        removed,
    }
}

async fn remove(core: &Core, p: &Provider, key: &Key) -> bool {
    let command = Command::Keys(KeysCommand::Remove {
        provider: p.name.clone(),
        secret: key.secret.clone(),
    });
    let done = core.gateway.commands.call(command).await.is_ok();
    if done {
        tracing::warn!(provider = %p.name, key = %key.secret.masked(), "invalid runtime key removed (remove_invalid)");
    }
    done
}

/// Fetches and records one key's balance; a failed fetch keeps the last known one.
async fn fetch_balance(core: &Core, generation: &Arc<Generation>, p: &Provider, key: &Key, health: &KeyHealth) {
    let Some(source) = &p.balance else { return };
    let seen = health.successes();
    let credential = super::credential::current_of(generation, p, key);
    let balance = match probe::get(core, generation, p, &credential, &source.path).await {
        Ok((200..=299, body)) => read_number(&body, &source.field, generation.config.server.max_json_depth),
        _ => None,
    };
    match balance {
        Some(b) => health.care.set_balance(b, unix_ms(), seen),
        None => health.care.balance_attempted(unix_ms(), seen),
    }
}

/// The number at JSON pointer `field` (a number, or a string holding one). A body nested
/// deeper than `max_depth` (`server.max_json_depth`) is not parsed: the balance stays unknown.
pub fn read_number(body: &[u8], field: &str, max_depth: usize) -> Option<f64> {
    crate::codec::check_depth(body, max_depth).ok()?;
    let root: sonic_rs::Value = sonic_rs::from_slice(body).ok()?;
    let mut at = &root;
    for raw in field.split('/').skip(1) {
        let part = raw.replace("~1", "/").replace("~0", "~");
        at = match part.parse::<usize>() {
            Ok(i) if at.is_array() => at.get(i)?,
            _ => at.get(part.as_str())?,
        };
    }
    at.as_f64().or_else(|| at.as_str().and_then(|s| s.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::read_number;

    #[test]
    fn balances_are_read_from_numbers_or_strings_at_a_pointer() {
        let siliconflow = br#"{"data":{"totalBalance":"12.50"}}"#;
        assert_eq!(read_number(siliconflow, "/data/totalBalance", 128), Some(12.5));
        let deepseek = br#"{"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":"110.00"}]}"#;
        assert_eq!(
            read_number(deepseek, "/balance_infos/0/total_balance", 128),
            Some(110.0)
        );
        let openrouter = br#"{"data":{"limit_remaining":null}}"#;
        assert_eq!(read_number(openrouter, "/data/limit_remaining", 128), None);
        assert_eq!(read_number(br#"{"a":{"b/c":-3}}"#, "/a/b~1c", 128), Some(-3.0));
        assert_eq!(read_number(b"not json", "/a", 128), None);
        // Too deep for the bound: not parsed (a recursive parse would overflow the stack).
        let deep = format!(r#"{{"a":1,"b":{}{}}}"#, "[".repeat(30_000), "]".repeat(30_000));
        assert_eq!(read_number(deep.as_bytes(), "/a", 128), None);
        assert_eq!(read_number(br#"{"a":[[2]]}"#, "/a/0/0", 3), Some(2.0));
    }
}
