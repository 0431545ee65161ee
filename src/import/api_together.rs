//! api-together's `apis.json`: `server.port`, `server.apiKey` (the one client key) and `apis[]`
//! (`id`, `name`, `baseUrl`, `apiKey`, `rpm`, `rpd`, `enabled`, `models`, `modelMapping`).
//! Each API becomes an OpenAI-kind provider with one key: its rpm/rpd were per API, which is
//! per key here, so the limits keep their meaning (-1 unlimited, 0 disabled in both tools).

use serde_json::Value;

use super::{scalar, string_list, unique_name, Draft, DraftClient, DraftProvider};

pub fn read(root: &Value) -> Result<Draft, String> {
    let mut draft = Draft::default();
    let server = root.get("server");
    if let Some(port) = server.and_then(|s| s.get("port")).and_then(Value::as_u64) {
        // api-together listens on every interface.
        draft.listen = Some(format!("0.0.0.0:{port}"));
    }
    match server.and_then(|s| s.get("apiKey")).and_then(scalar) {
        Some(key) if !key.is_empty() => draft.clients.push(DraftClient {
            name: "api-together".into(),
            key,
            models: Vec::new(),
            rpm: -1,
            rpd: -1,
            refused: None,
        }),
        _ => draft.notes.push(
            "server.apiKey is not set: the imported gateway has no client keys (open to anyone who reaches it)".into(),
        ),
    }
    let apis = root
        .get("apis")
        .and_then(Value::as_array)
        .ok_or("apis.json: `apis` must be a list")?;
    let mut taken = Vec::new();
    for (i, api) in apis.iter().enumerate() {
        let id = api.get("id").and_then(scalar).unwrap_or_default();
        let label = api.get("name").and_then(scalar).unwrap_or_default();
        let name = unique_name(&id, &format!("api{}", i + 1), &mut taken);
        let Some(base) = api.get("baseUrl").and_then(scalar).filter(|b| !b.is_empty()) else {
            draft.notes.push(format!("apis[{i}] ({name}) has no baseUrl: left out"));
            continue;
        };
        // api-together adds /v1 to a base URL that has none.
        let base = base.trim_end_matches('/');
        let base_url = if base.contains("/v1") {
            base.to_owned()
        } else {
            format!("{base}/v1")
        };
        let comment = format!("apis[{i}] {label:?} (id {id:?})");
        let mut p = DraftProvider::new(name.clone(), "openai", base_url, comment);
        p.keys = string_list(api.get("apiKey"));
        p.enabled = api.get("enabled").and_then(Value::as_bool).unwrap_or(true);
        if p.keys.is_empty() && p.enabled {
            draft
                .notes
                .push(format!("apis[{i}] ({name}) has no apiKey: imported disabled"));
            p.enabled = false;
        }
        p.rpm = limit(api.get("rpm"));
        p.rpd = limit(api.get("rpd"));
        p.models = string_list(api.get("models"));
        if let Some(map) = api.get("modelMapping").and_then(Value::as_object) {
            for (from, to) in map {
                let Some(to) = scalar(to) else { continue };
                if p.models.contains(from) {
                    draft.notes.push(format!(
                        "{name}: modelMapping {from:?} -> {to:?} is also listed in models; rotor keeps the mapping"
                    ));
                    p.models.retain(|m| m != from);
                }
                p.aliases.insert(from.clone(), to);
            }
        }
        draft.providers.push(p);
    }
    if draft.providers.len() > 1 {
        draft.notes.push(
            "api-together picks an available API at random; rotor rotates between providers serving a model \
             (smooth weighted round-robin, equal weights here)"
                .into(),
        );
    }
    Ok(draft)
}

/// A limit: a number, -1 for none; absent = unlimited.
fn limit(value: Option<&Value>) -> i64 {
    value.and_then(Value::as_i64).map_or(-1, |n| n.max(-1))
}
