//! The on-demand proxy's `config.json`: `{"accounts":[{"email","password"}]}` (sign-in
//! accounts), served on `PORT` (7860) with a built-in model table (OpenAI model name ->
//! on-demand.io endpoint id), unknown models sent to Claude 3.7 Sonnet and a chat session kept
//! 10 minutes. rotor's `ondemand` kind takes on-demand.io API keys: accounts that carry one
//! (`apikey`, `api_key`) become keys; e-mail/password sign-in cannot be expressed and is listed.

use serde_json::Value;

use super::{scalar, string_list, Draft, DraftProvider};

/// The proxy's built-in table: client model name -> on-demand.io endpoint id.
const MODELS: &[(&str, &str)] = &[
    ("gpto3-mini", "predefined-openai-gpto3-mini"),
    ("gpt-4o", "predefined-openai-gpt4o"),
    ("gpt-4.1", "predefined-openai-gpt4.1"),
    ("gpt-4.1-mini", "predefined-openai-gpt4.1-mini"),
    ("gpt-4.1-nano", "predefined-openai-gpt4.1-nano"),
    ("gpt-4o-mini", "predefined-openai-gpt4o-mini"),
    ("deepseek-v3", "predefined-deepseek-v3"),
    ("deepseek-r1", "predefined-deepseek-r1"),
    ("claude-3.7-sonnet", "predefined-claude-3.7-sonnet"),
    ("gemini-2.0-flash", "predefined-gemini-2.0-flash"),
];

/// Key fields an account or the file itself may carry.
const KEY_FIELDS: &[&str] = &["apikey", "apiKey", "api_key", "api_keys", "apikeys", "ONDEMAND_APIKEYS"];

pub fn looks_like(root: &Value) -> bool {
    KEY_FIELDS.iter().any(|f| root.get(f).is_some())
}

pub fn read(root: &Value) -> Result<Draft, String> {
    let mut draft = Draft {
        listen: Some("0.0.0.0:7860".into()),
        default_model: Some("claude-3.7-sonnet".into()),
        ..Default::default()
    };
    let mut keys: Vec<String> = KEY_FIELDS.iter().flat_map(|f| string_list(root.get(f))).collect();
    let accounts = root
        .get("accounts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut sign_ins = 0;
    for account in &accounts {
        let own: Vec<String> = KEY_FIELDS.iter().flat_map(|f| string_list(account.get(f))).collect();
        if own.is_empty() && account.get("email").and_then(scalar).is_some() {
            sign_ins += 1;
        }
        keys.extend(own);
    }
    keys.dedup();
    if sign_ins > 0 {
        draft.notes.push(format!(
            "{sign_ins} account(s) sign in with e-mail and password, which rotor cannot do: add on-demand.io \
             API keys (app.on-demand.io, API keys) to the ondemand provider's `keys`"
        ));
    }
    let mut p = DraftProvider::new(
        "ondemand".into(),
        "ondemand",
        "https://api.on-demand.io/chat/v1".into(),
        "the on-demand proxy's accounts; model names map to on-demand.io endpoint ids".into(),
    );
    p.enabled = !keys.is_empty();
    if !p.enabled {
        draft.notes.push(
            "no API key found: the ondemand provider is imported disabled (set `enabled = true` once it has keys)"
                .into(),
        );
        draft.default_model = None;
    }
    p.keys = keys;
    p.aliases = MODELS.iter().map(|(m, e)| ((*m).to_owned(), (*e).to_owned())).collect();
    // The proxy starts a new session after 10 minutes without a request.
    p.extra.push(("session_timeout_ms", toml::Value::Integer(600_000)));
    draft.providers.push(p);
    draft.notes.push(
        "the proxy had no client keys (anyone reaching port 7860 could use it); the imported gateway is open too \
         until you add [[clients]]"
            .into(),
    );
    draft.notes.push(
        "the proxy sent only the latest user message (with an instruction to answer in Chinese) and relied on the \
         session for context; rotor sends the conversation as the client gives it"
            .into(),
    );
    Ok(draft)
}
