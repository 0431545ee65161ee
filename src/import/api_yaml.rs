//! pro-api's and uni-api's `api.yaml`. Both list `providers` whose `model` entries are a name or
//! `upstream: alias`. pro-api: `name`, `provider` (the kind), `api_key`, `balance` (per-model
//! weights), `tokens` (client keys with model globs and `all`), `server.default_model`.
//! uni-api: `provider` (the name), `base_url` (a full endpoint), `api`, `preferences`,
//! `api_keys` (client keys with `provider/*` and `<name>` entries).
//! Invariant: a model's weight in `balance` stays its weight in rotor: a provider whose models
//! carry different weights becomes one rotor provider per weight, with the same keys.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{scalar, string_list, unique_name, Draft, DraftClient, DraftProvider};

/// Provider fields read (anything else is listed as not carried over).
const KNOWN: &[&str] = &[
    "provider",
    "name",
    "base_url",
    "api_key",
    "api",
    "model",
    "balance",
    "preferences",
    "tools",
    "notes",
    "engine",
    "PROJECT_ID",
    "CLIENT_ID",
    "CLIENT_SECRET",
    "REFRESH_TOKEN",
    "project_id",
    "account_id",
    "cf_account_id",
    "private_key",
    "client_email",
];

pub fn read(text: &str) -> Result<(&'static str, Draft), String> {
    let root: Value = serde_yaml::from_str(text).map_err(|e| format!("api.yaml: not valid YAML: {e}"))?;
    let uni = root.get("api_keys").is_some()
        || root
            .get("providers")
            .and_then(Value::as_array)
            .is_some_and(|ps| ps.iter().any(|p| p.get("api").is_some()));
    let format = if uni { "uni-api api.yaml" } else { "pro-api api.yaml" };
    let providers = root
        .get("providers")
        .and_then(Value::as_array)
        .ok_or("api.yaml: `providers` must be a list")?;
    let mut draft = Draft::default();
    let mut taken = Vec::new();
    // Client-facing model names per imported provider name (for uni-api's `name/*`).
    let mut served: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, p) in providers.iter().enumerate() {
        let before = draft.providers.len();
        provider(i, p, uni, &mut draft, &mut taken);
        let own = p.get("provider").and_then(scalar).unwrap_or_default();
        let names: Vec<String> = draft.providers[before..]
            .iter()
            .flat_map(|d| d.models.iter().chain(d.aliases.keys()).cloned())
            .collect();
        let wildcard = draft.providers[before..].iter().any(|d| d.models.is_empty());
        served.insert(own, if wildcard { vec!["*".into()] } else { names });
    }
    if uni {
        uni_clients(&root, &served, &mut draft);
    } else {
        pro_clients(&root, &mut draft);
        server(&root, &mut draft);
    }
    Ok((format, draft))
}

/// One `providers[i]` entry as one or more rotor providers.
fn provider(i: usize, p: &Value, uni: bool, draft: &mut Draft, taken: &mut Vec<String>) {
    let tool = p.get("provider").and_then(scalar).unwrap_or_default();
    let label = if uni {
        tool.clone()
    } else {
        p.get("name").and_then(scalar).unwrap_or_else(|| tool.clone())
    };
    let base = p.get("base_url").and_then(scalar).unwrap_or_default();
    let engine = p.get("engine").and_then(scalar).unwrap_or_default();
    let Some((kind, base_url)) = kind_and_url(&tool, &base, &engine, uni) else {
        draft.notes.push(format!(
            "providers[{i}] ({label}): provider {tool:?} at {base:?} is not a kind rotor serves: left out"
        ));
        return;
    };
    let mut fallback = kind.to_owned();
    if kind == "openai" && !tool.is_empty() {
        fallback = tool.clone();
    }
    let name = unique_name(&label, &format!("{fallback}-{}", i + 1), taken);
    let comment = format!("providers[{i}] {label:?} ({tool})");
    let mut d = DraftProvider::new(name.clone(), kind, base_url, comment);
    d.keys = string_list(p.get(if uni { "api" } else { "api_key" }));
    for (field, value) in p.as_object().into_iter().flatten() {
        if !KNOWN.contains(&field.as_str()) {
            draft
                .notes
                .push(format!("{name}: `{field}` is not carried over ({})", short(value)));
        }
    }
    kind_settings(i, p, kind, &mut d, draft);
    if d.keys.is_empty() && kind != "vertex" {
        draft.notes.push(format!("{name}: no API key: imported disabled"));
        d.enabled = false;
    }
    if let Some(prefs) = p.get("preferences") {
        preferences(&name, prefs, &mut d, draft);
    }
    let weights = models(&name, p.get("model"), &mut d, draft);
    if kind == "cohere" {
        draft.notes.push(format!(
            "{name}: the Cohere v1 API is replaced by v2 Chat (rotor's cohere kind) at {}",
            d.base_url
        ));
    }
    split_by_weight(d, p.get("balance"), weights, draft, taken);
}

/// rotor's kind and base URL for a provider entry; `None` = no rotor kind serves it.
fn kind_and_url(tool: &str, base: &str, engine: &str, uni: bool) -> Option<(&'static str, String)> {
    let lower = format!(
        "{} {} {}",
        tool.to_lowercase(),
        base.to_lowercase(),
        engine.to_lowercase()
    );
    let trimmed = base.trim_end_matches('/');
    let strip = |suffix: &str| trimmed.strip_suffix(suffix).unwrap_or(trimmed).to_owned();
    if lower.contains("azure") || lower.contains("aws") || lower.contains("bedrock") {
        return None;
    }
    if lower.contains("vertex") {
        return Some(("vertex", String::new()));
    }
    if lower.contains("cloudflare") {
        return Some(("cloudflare", "https://api.cloudflare.com/client/v4".into()));
    }
    if lower.contains("cohere") {
        return Some(("cohere", "https://api.cohere.com/v2".into()));
    }
    if engine == "claude" || (engine.is_empty() && (lower.contains("anthropic") || trimmed.ends_with("/messages"))) {
        let url = strip("/messages");
        return Some((
            "anthropic",
            if url.is_empty() {
                "https://api.anthropic.com/v1".into()
            } else {
                url
            },
        ));
    }
    if engine == "gemini" || (engine.is_empty() && (lower.contains("generativelanguage") || tool == "gemini")) {
        let url = if trimmed.is_empty() {
            "https://generativelanguage.googleapis.com/v1beta".into()
        } else {
            trimmed.to_owned()
        };
        return Some(("gemini", url));
    }
    if trimmed.is_empty() {
        return (!uni && tool == "openai").then(|| ("openai", "https://api.openai.com/v1".into()));
    }
    Some(("openai", strip("/chat/completions")))
}

/// Vertex credentials and region, Cloudflare's account.
fn kind_settings(i: usize, p: &Value, kind: &str, d: &mut DraftProvider, draft: &mut Draft) {
    let get = |f: &str| p.get(f).and_then(scalar).filter(|v| !v.is_empty());
    match kind {
        "vertex" => {
            let claude = p
                .get("provider")
                .and_then(scalar)
                .unwrap_or_default()
                .contains("claude");
            let region = if claude { "us-east5" } else { "us-central1" };
            d.base_url = format!("https://{region}-aiplatform.googleapis.com/v1");
            d.extra.push((
                "project",
                toml::Value::String(get("PROJECT_ID").or(get("project_id")).unwrap_or_default()),
            ));
            d.extra.push(("region", toml::Value::String(region.into())));
            match (get("CLIENT_ID"), get("CLIENT_SECRET"), get("REFRESH_TOKEN")) {
                (Some(id), Some(secret), Some(refresh)) => {
                    let oauth: toml::map::Map<String, toml::Value> =
                        [("client_id", id), ("client_secret", secret), ("refresh_token", refresh)]
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), toml::Value::String(v)))
                            .collect();
                    d.extra.push(("google_oauth", toml::Value::Table(oauth)));
                }
                _ => {
                    draft.notes.push(format!(
                        "providers[{i}] ({}): Vertex service-account fields (private_key, client_email) are not \
                         carried over; save the service account JSON and set `service_account = \"file:sa.json\"`",
                        d.name
                    ));
                    d.enabled = false;
                }
            }
            draft.notes.push(format!(
                "{}: Vertex region set to {region} (the source did not name one); change `region` and `base_url` if needed",
                d.name
            ));
        }
        "cloudflare" => {
            let account = get("account_id").or(get("cf_account_id")).unwrap_or_default();
            d.extra.push(("account_id", toml::Value::String(account)));
        }
        _ => {}
    }
}

/// `model` entries: a name (served as is) or `upstream: alias`. Returns the client-facing names
/// in order (for `balance`).
fn models(name: &str, list: Option<&Value>, d: &mut DraftProvider, draft: &mut Draft) -> Vec<String> {
    let mut names = Vec::new();
    let mut renamed: Vec<(String, String)> = Vec::new();
    for item in list.and_then(Value::as_array).into_iter().flatten() {
        if let Some(m) = scalar(item) {
            if !d.models.contains(&m) {
                d.models.push(m.clone());
                names.push(m);
            }
        } else if let Some(map) = item.as_object() {
            renamed.extend(map.iter().filter_map(|(up, alias)| Some((up.clone(), scalar(alias)?))));
        }
    }
    for (upstream, alias) in renamed {
        if d.models.contains(&alias) {
            draft.notes.push(format!(
                "{name}: {upstream:?} renamed to {alias:?}, which the provider also serves under its own name: the rename is left out"
            ));
        } else if let Some(first) = d.aliases.get(&alias) {
            if *first != upstream {
                draft.notes.push(format!(
                    "{name}: {alias:?} names both {first:?} and {upstream:?}: the first is kept"
                ));
            }
        } else {
            d.aliases.insert(alias.clone(), upstream);
            names.push(alias);
        }
    }
    names
}

/// uni-api `preferences`: per-key rate limits, key order, headers; the rest is listed.
fn preferences(name: &str, prefs: &Value, d: &mut DraftProvider, draft: &mut Draft) {
    for (field, value) in prefs.as_object().into_iter().flatten() {
        match field.as_str() {
            "api_key_rate_limit" if value.is_string() => {
                for part in value.as_str().unwrap_or_default().split(',') {
                    let (n, per) = part.trim().split_once('/').unwrap_or(("", ""));
                    match (n.trim().parse::<i64>(), per.trim()) {
                        (Ok(n), "min") => d.rpm = n,
                        (Ok(n), "day") => d.rpd = n,
                        _ => draft.notes.push(format!("{name}: rate limit {part:?} is not carried over (rotor has per-minute and per-day windows)")),
                    }
                }
            }
            "api_key_schedule_algorithm" => match value.as_str().unwrap_or_default() {
                "round_robin" => {}
                "random" => d.extra.push(("key_strategy", toml::Value::String("random".into()))),
                other => draft.notes.push(format!(
                    "{name}: key order {other:?} is not carried over (rotor rotates keys)"
                )),
            },
            "headers" => {
                for (h, v) in value.as_object().into_iter().flatten() {
                    if let Some(v) = scalar(v) {
                        d.headers.insert(h.clone(), v);
                    }
                }
            }
            _ => draft.notes.push(format!(
                "{name}: preferences.{field} is not carried over ({})",
                short(value)
            )),
        }
    }
}

/// pro-api `balance` (`- model: weight`): one rotor provider per distinct weight.
fn split_by_weight(
    d: DraftProvider,
    balance: Option<&Value>,
    names: Vec<String>,
    draft: &mut Draft,
    taken: &mut Vec<String>,
) {
    let mut weight_of: BTreeMap<String, u32> = BTreeMap::new();
    let entries = balance.and_then(Value::as_array).cloned().unwrap_or_default();
    let maps = entries
        .iter()
        .filter_map(Value::as_object)
        .chain(balance.and_then(Value::as_object));
    for map in maps {
        for (model, w) in map {
            match w.as_u64().and_then(|w| u32::try_from(w).ok()).filter(|w| *w > 0) {
                Some(w) => {
                    weight_of.insert(model.clone(), w);
                }
                None => draft.notes.push(format!(
                    "{}: balance weight {w} for {model:?} is not a positive integer: 1 used",
                    d.name
                )),
            }
        }
    }
    for model in weight_of.keys().filter(|m| !names.contains(m)) {
        draft.notes.push(format!(
            "{}: balance names {model:?}, which the provider does not serve",
            d.name
        ));
    }
    let weights: BTreeSet<u32> = names.iter().map(|m| weight_of.get(m).copied().unwrap_or(1)).collect();
    if weights.len() <= 1 {
        let mut d = d;
        d.weight = weights.into_iter().next().unwrap_or(1);
        draft.providers.push(d);
        return;
    }
    for (n, w) in weights.into_iter().enumerate() {
        let mut part = DraftProvider::new(
            if n == 0 {
                d.name.clone()
            } else {
                unique_name(&format!("{}-w{w}", d.name), "p", taken)
            },
            d.kind,
            d.base_url.clone(),
            format!("{} - the models it weighs {w}", d.comment),
        );
        part.keys = d.keys.clone();
        part.enabled = d.enabled;
        part.rpm = d.rpm;
        part.rpd = d.rpd;
        part.headers = d.headers.clone();
        part.extra = d.extra.clone();
        part.weight = w;
        let mine = |m: &String| weight_of.get(m).copied().unwrap_or(1) == w;
        part.models = d.models.iter().filter(|m| mine(m)).cloned().collect();
        part.aliases = d
            .aliases
            .iter()
            .filter(|(a, _)| mine(a))
            .map(|(a, u)| (a.clone(), u.clone()))
            .collect();
        draft.providers.push(part);
    }
}

/// pro-api `tokens`: client keys; `all` = every model, `*` globs kept.
fn pro_clients(root: &Value, draft: &mut Draft) {
    for (i, t) in root
        .get("tokens")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(key) = t.get("api_key").and_then(scalar).filter(|k| !k.is_empty()) else {
            draft.notes.push(format!("tokens[{i}] has no api_key: left out"));
            continue;
        };
        let mut models: Vec<String> = string_list(t.get("model"))
            .into_iter()
            .map(|m| if m == "all" { "*".into() } else { m })
            .collect();
        if models.iter().any(|m| m == "*") {
            models = Vec::new();
        }
        draft.clients.push(DraftClient {
            name: format!("token-{}", i + 1),
            key,
            models,
            rpm: -1,
            rpd: -1,
            refused: None,
        });
    }
}

/// uni-api `api_keys`: `name` (any provider), `provider/*` (every model of that provider),
/// `provider/name` and `<name>`.
fn uni_clients(root: &Value, served: &BTreeMap<String, Vec<String>>, draft: &mut Draft) {
    let mut taken = Vec::new();
    for (i, k) in root
        .get("api_keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(key) = k.get("api").and_then(scalar).filter(|k| !k.is_empty()) else {
            draft.notes.push(format!("api_keys[{i}] has no api: left out"));
            continue;
        };
        let role = k.get("role").and_then(scalar).unwrap_or_default();
        let name = unique_name(&role, &format!("key-{}", i + 1), &mut taken);
        let mut models = Vec::new();
        for entry in string_list(k.get("model")) {
            if let Some(literal) = entry.strip_prefix('<').and_then(|e| e.strip_suffix('>')) {
                models.push(literal.to_owned());
            } else if let Some((provider, model)) = entry.split_once('/').filter(|(p, _)| served.contains_key(*p)) {
                if model == "*" {
                    models.extend(served.get(provider).cloned().unwrap_or_default());
                } else {
                    draft.notes.push(format!(
                        "{name}: {entry:?} allows {model:?} from every provider serving it (rotor scopes client keys by model name)"
                    ));
                    models.push(model.to_owned());
                }
            } else {
                models.push(entry);
            }
        }
        if models.iter().any(|m| m == "*") {
            models = Vec::new();
        }
        if let Some(prefs) = k.get("preferences") {
            draft
                .notes
                .push(format!("{name}: preferences are not carried over ({})", short(prefs)));
        }
        draft.clients.push(DraftClient {
            name,
            key,
            models,
            rpm: -1,
            rpd: -1,
            refused: None,
        });
    }
}

/// pro-api `server`: the default model, the admin login; the rest is listed.
fn server(root: &Value, draft: &mut Draft) {
    let Some(server) = root.get("server").and_then(Value::as_object) else {
        return;
    };
    draft.default_model = server.get("default_model").and_then(scalar).filter(|m| !m.is_empty());
    let admin = server.get("admin_server").and_then(Value::as_bool).unwrap_or(false);
    let user = server.get("username").and_then(scalar).unwrap_or_default();
    let password = server.get("password").and_then(scalar).unwrap_or_default();
    if admin && !user.is_empty() {
        if password.len() >= 8 {
            draft.admin_user = Some((user, password));
        } else {
            draft.notes.push(
                "server.username/password: the admin password is shorter than rotor's minimum of 8 characters; \
                 set server.admin_user and server.admin_password (the dashboard is at /admin/)"
                    .into(),
            );
        }
    }
    if server.get("db_cache").and_then(Value::as_bool) == Some(true) {
        draft
            .notes
            .push("server.db_cache (replaying earlier answers) is not carried over".into());
    }
    for field in ["db_path", "save_log_file"] {
        if server.contains_key(field) {
            draft.notes.push(format!(
                "server.{field}: rotor logs requests to storage.path (data/rotor.db by default)"
            ));
        }
    }
}

/// What kind of value a setting held, for a note: never the value itself (it may be a
/// secret, such as a proxy URL with a password).
fn short(value: &Value) -> &'static str {
    match value {
        Value::Object(_) => "a map",
        Value::Array(_) => "a list",
        _ => "a value",
    }
}
