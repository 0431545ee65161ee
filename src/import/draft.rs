//! The imported config before it is printed: rotor's own settings, filled by a format reader,
//! rendered as commented TOML. `set_aside` comments out what `rotor check` refuses.
//! Invariant: strings are written through `toml::Value`, so any key, model name or secret is
//! escaped correctly.

use std::collections::BTreeMap;
use std::fmt::Write;

use toml::Value;

#[derive(Default)]
pub struct Draft {
    pub listen: Option<String>,
    pub admin_user: Option<(String, String)>,
    pub default_model: Option<String>,
    pub clients: Vec<DraftClient>,
    pub providers: Vec<DraftProvider>,
    /// What could not be expressed (stderr).
    pub notes: Vec<String>,
}

pub struct DraftClient {
    pub name: String,
    pub key: String,
    /// Glob patterns; empty = all.
    pub models: Vec<String>,
    pub rpm: i64,
    pub rpd: i64,
    /// Set when `rotor check` refused it: printed commented out.
    pub refused: Option<String>,
}

pub struct DraftProvider {
    pub name: String,
    pub kind: &'static str,
    pub base_url: String,
    pub keys: Vec<String>,
    pub weight: u32,
    pub enabled: bool,
    pub rpm: i64,
    pub rpd: i64,
    pub models: Vec<String>,
    /// Client name -> upstream name.
    pub aliases: BTreeMap<String, String>,
    pub headers: BTreeMap<String, String>,
    /// Kind-specific settings (`project`, `region`, `google_oauth`, `account_id`, ...).
    pub extra: Vec<(&'static str, Value)>,
    /// A comment printed above the table (where it came from).
    pub comment: String,
    pub refused: Option<String>,
}

impl DraftProvider {
    pub fn new(name: String, kind: &'static str, base_url: String, comment: String) -> Self {
        DraftProvider {
            name,
            kind,
            base_url,
            keys: Vec::new(),
            weight: 1,
            enabled: true,
            rpm: -1,
            rpd: -1,
            models: Vec::new(),
            aliases: BTreeMap::new(),
            headers: BTreeMap::new(),
            extra: Vec::new(),
            comment,
            refused: None,
        }
    }
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

fn list(items: &[String]) -> Value {
    Value::Array(items.iter().map(|i| s(i)).collect())
}

fn table(map: &BTreeMap<String, String>) -> Value {
    Value::Table(map.iter().map(|(k, v)| (k.clone(), s(v))).collect())
}

impl Draft {
    pub fn render(&self, format: &str, source: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Imported by `rotor import` from {source} ({format}).");
        let _ = writeln!(
            out,
            "# Check it with `rotor check --config FILE`; what could not be carried over was listed on stderr.\n"
        );
        let mut server = Vec::new();
        if let Some(listen) = &self.listen {
            server.push(format!("listen = {}", s(listen)));
        }
        if let Some((user, password)) = &self.admin_user {
            server.push(format!("admin_user = {}", s(user)));
            server.push(format!("admin_password = {}", s(password)));
        }
        if !server.is_empty() {
            let _ = writeln!(out, "[server]\n{}\n", server.join("\n"));
        }
        if let Some(model) = &self.default_model {
            let _ = writeln!(out, "[routing]\ndefault_model = {}\n", s(model));
        }
        for c in self.clients.iter().filter(|c| c.refused.is_none()) {
            out.push_str(&client(c));
        }
        for p in self.providers.iter().filter(|p| p.refused.is_none()) {
            out.push_str(&provider(p));
        }
        for (what, why, text) in self.set_aside_blocks() {
            let _ = writeln!(out, "# {what}, left out: {}", why.replace('\n', " "));
            for line in text.lines() {
                let _ = writeln!(out, "# {line}");
            }
            out.push('\n');
        }
        out
    }

    fn set_aside_blocks(&self) -> Vec<(String, String, String)> {
        let clients = self
            .clients
            .iter()
            .filter_map(|c| Some((format!("client {}", c.name), c.refused.clone()?, client(c))));
        let providers = self
            .providers
            .iter()
            .filter_map(|p| Some((format!("provider {}", p.name), p.refused.clone()?, provider(p))));
        clients.chain(providers).collect()
    }

    /// Sets aside the client or provider (or the default model) a `rotor check` error names;
    /// false when the error names none of them.
    pub fn set_aside(&mut self, message: &str) -> bool {
        let message = &clean(message);
        if message.contains("routing.default_model") {
            if let Some(model) = self.default_model.take() {
                self.notes.push(format!("default model {model:?} dropped: {message}"));
                return true;
            }
        }
        if let Some(i) = index_after(message, "providers[") {
            if let Some(p) = self.providers.iter_mut().filter(|p| p.refused.is_none()).nth(i) {
                self.notes.push(format!(
                    "provider {} left out (commented in the output): {message}",
                    p.name
                ));
                p.refused = Some(message.to_owned());
                return true;
            }
        }
        if let Some(i) = index_after(message, "clients[") {
            if let Some(c) = self.clients.iter_mut().filter(|c| c.refused.is_none()).nth(i) {
                self.notes.push(format!(
                    "client {} left out (commented in the output): {message}",
                    c.name
                ));
                c.refused = Some(message.to_owned());
                return true;
            }
        }
        false
    }
}

/// A check message without what only makes sense in the intermediate text: its line number
/// and the list of fields the loader expected.
fn clean(message: &str) -> String {
    let mut text = message.to_owned();
    if let Some(at) = text.find(", expected one of") {
        text.truncate(at);
    }
    if let Some(at) = text.rfind(" (line ") {
        text.truncate(at);
    }
    text
}

/// `N` in the first `prefix` + `N]` of `message`.
fn index_after(message: &str, prefix: &str) -> Option<usize> {
    let at = message.find(prefix)? + prefix.len();
    let rest = message.get(at..)?;
    rest.split(']').next()?.parse().ok()
}

fn client(c: &DraftClient) -> String {
    let mut out = format!("[[clients]]\nname = {}\nkey = {}\n", s(&c.name), s(&c.key));
    if !c.models.is_empty() {
        let _ = writeln!(out, "models = {}", list(&c.models));
    }
    if c.rpm != -1 {
        let _ = writeln!(out, "rpm = {}", c.rpm);
    }
    if c.rpd != -1 {
        let _ = writeln!(out, "rpd = {}", c.rpd);
    }
    out.push('\n');
    out
}

fn provider(p: &DraftProvider) -> String {
    let mut out = String::new();
    for line in p.comment.lines() {
        let _ = writeln!(out, "# {line}");
    }
    let _ = writeln!(out, "[[providers]]\nname = {}\nkind = {}", s(&p.name), s(p.kind));
    let _ = writeln!(out, "base_url = {}", s(&p.base_url));
    // A Vertex provider mints tokens from its credential and has no `keys`.
    if !p.keys.is_empty() || p.kind != "vertex" {
        let _ = writeln!(out, "keys = {}", list(&p.keys));
    }
    for (key, value) in &p.extra {
        let _ = writeln!(out, "{key} = {value}");
    }
    if p.weight != 1 {
        let _ = writeln!(out, "weight = {}", p.weight);
    }
    if !p.enabled {
        let _ = writeln!(out, "enabled = false");
    }
    if p.rpm != -1 {
        let _ = writeln!(out, "rpm = {}", p.rpm);
    }
    if p.rpd != -1 {
        let _ = writeln!(out, "rpd = {}", p.rpd);
    }
    if !p.models.is_empty() {
        let _ = writeln!(out, "models = {}", list(&p.models));
    }
    if !p.aliases.is_empty() {
        let _ = writeln!(out, "aliases = {}", table(&p.aliases));
    }
    if !p.headers.is_empty() {
        let _ = writeln!(out, "headers = {}", table(&p.headers));
    }
    out.push('\n');
    out
}
