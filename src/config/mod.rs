//! Configuration: TOML file -> validated, compiled `Config` (see `model.rs`, the contract).
//!
//! Flow: `file.rs` (serde, unknown keys rejected with their path) -> `compile.rs` (every rule,
//! secrets resolved, route table built) -> `model.rs` (what the rest of rotor reads). Runs on
//! the control thread at start and on reload; a failure leaves the running config untouched.
//! Invariant: every error is one `ConfigError` whose message names the key path, what is wrong
//! and what is allowed, and never contains a secret.

pub mod cluster;
mod compile;
pub mod file;
pub mod glob;
pub mod model;
mod provider;
mod routes;
pub mod secret;
mod url;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

pub use model::*;
pub use secret::Secret;

use file::{ClientConfig, FileConfig, ProviderConfig, ServerConfig};
use secret::Resolver;

/// Why a config was refused. The message is complete (starts with `config:`), so `rotor check`
/// and `/admin/reload` print it as is.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl ConfigError {
    /// `config: <key path>: <what is wrong>`.
    pub(crate) fn at(key_path: &str, what: impl fmt::Display) -> Self {
        ConfigError(format!("config: {key_path}: {what}"))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Reads, parses and compiles the file at `path`; secrets come from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("config: cannot read {}: {e}", path.display())))?;
    parse_str(&text, ConfigSource::File(path.to_path_buf()))
}

/// Parses and compiles config text. With `ConfigSource::File`, relative `keys_file`, `ca_file`
/// and `file:` secret paths start from the file's directory; otherwise from the working one.
pub fn parse_str(text: &str, source: ConfigSource) -> Result<Config, ConfigError> {
    parse_str_with_env(text, source, &|name| std::env::var(name).ok())
}

/// `parse_str` with `env:` references looked up through `env`, so tests (and fuzz targets)
/// never mutate the process environment, which is shared by every test thread.
pub fn parse_str_with_env(
    text: &str,
    source: ConfigSource,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let file = parse_toml(text)?;
    let base_dir = match &source {
        ConfigSource::File(p) => p.parent().map(Path::to_path_buf),
        ConfigSource::Environment => None,
    };
    let resolver = Resolver {
        env,
        base_dir: base_dir.as_deref(),
    };
    compile::compile(file, &resolver, source)
}

/// TOML -> `FileConfig`, with the failing key's path (`providers[1].modelz`) and line.
fn parse_toml(text: &str) -> Result<FileConfig, ConfigError> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.span().map(|s| format!(" (line {})", line_of(text, s.start)));
        let line = line.unwrap_or_default();
        // toml's messages may span lines ("invalid table header\nexpected ..."): keep one line.
        let what = inner.message().trim_end().replace('\n', "; ");
        if path == "." {
            ConfigError(format!("config: {what}{line}"))
        } else {
            ConfigError(format!("config: {path}: {what}{line}"))
        }
    })
}

/// 1-based line number of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    let before = text.as_bytes().get(..at).unwrap_or(text.as_bytes());
    1 + before.iter().filter(|&&b| b == b'\n').count()
}

/// Zero-config quick start from the process environment; `None` when `ROTOR_UPSTREAM_URL`
/// is unset. See `from_env_map`.
pub fn from_env() -> Result<Option<Config>, ConfigError> {
    from_env_map(|name| std::env::var(name).ok())
}

/// Builds a one-provider config from `ROTOR_UPSTREAM_URL`, `ROTOR_UPSTREAM_KEYS`,
/// `ROTOR_AUTH_KEYS` (client keys; none = open gateway), `ROTOR_LISTEN` and, beyond DESIGN
/// 1.1, `ROTOR_ADMIN_KEY` (admin API on when set). The provider is `default`, kind openai,
/// with no model list, so it serves any model name. Everything else takes the file defaults.
pub fn from_env_map(get: impl Fn(&str) -> Option<String>) -> Result<Option<Config>, ConfigError> {
    let var = |name: &str| get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let Some(url) = var("ROTOR_UPSTREAM_URL") else {
        return Ok(None);
    };
    url::parse_base_url(&url).map_err(|e| ConfigError::at("ROTOR_UPSTREAM_URL", e))?;
    let keys = comma_list(var("ROTOR_UPSTREAM_KEYS"));
    if keys.is_empty() {
        return Err(ConfigError::at(
            "ROTOR_UPSTREAM_KEYS",
            "no upstream keys; set it to the comma-separated keys for ROTOR_UPSTREAM_URL",
        ));
    }
    let listen = var("ROTOR_LISTEN").unwrap_or_else(|| "127.0.0.1:8080".into());
    if listen.parse::<SocketAddr>().is_err() {
        return Err(ConfigError::at(
            "ROTOR_LISTEN",
            format!("{listen:?} is not an IP:port address, e.g. \"127.0.0.1:8080\""),
        ));
    }
    let clients = comma_list(var("ROTOR_AUTH_KEYS"))
        .into_iter()
        .enumerate()
        .map(|(i, key)| ClientConfig {
            name: format!("client-{}", i + 1),
            key,
            models: None,
            rpm: -1,
            rpd: -1,
            tpm: -1,
        })
        .collect();
    let provider = ProviderConfig {
        name: "default".into(),
        kind: "openai".into(),
        base_url: url,
        keys,
        keys_file: String::new(),
        key_strategy: "round-robin".into(),
        weight: 1,
        enabled: true,
        rpm: -1,
        rpd: -1,
        tpm: -1,
        models: Vec::new(),
        aliases: Default::default(),
        headers: Default::default(),
        validate_interval_ms: 0,
        remove_invalid: false,
        balance: None,
        balance_interval_ms: 300_000,
    };
    let file = FileConfig {
        server: ServerConfig {
            listen,
            admin_key: var("ROTOR_ADMIN_KEY"),
            ..Default::default()
        },
        clients,
        providers: vec![provider],
        ..Default::default()
    };
    let resolver = Resolver {
        env: &get,
        base_dir: None,
    };
    compile::compile(file, &resolver, ConfigSource::Environment)
        .map(Some)
        .map_err(|e| ConfigError(format!("{} (from the ROTOR_* environment variables)", e.0)))
}

/// `"a, b,,c "` -> `["a", "b", "c"]`.
fn comma_list(value: Option<String>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}
