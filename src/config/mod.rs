//! Configuration: TOML file -> validated, compiled `Config` (see `model.rs`, the contract).
//!
//! Flow: `file.rs` (serde, unknown keys rejected with their path) -> `compile.rs` (every rule,
//! secrets resolved, route table built) -> `model.rs` (what the rest of rotor reads). Runs on
//! the control thread at start and on reload; a failure leaves the running config untouched.
//! Invariant: every error is one `ConfigError` whose message names the key path, what is wrong
//! and what is allowed, and never contains a secret.

pub mod cluster;
mod compile;
mod compile_storage;
pub mod file;
pub mod glob;
pub mod model;
mod provider;
pub mod remote;
mod routes;
pub mod secret;
mod url;
pub mod vertex;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

pub use model::*;
pub use remote::Remote;
pub use secret::Secret;
pub(crate) use url::parse_base_url;

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

/// Fetches the config at `remote.url` (blocking: control thread or start-up), then parses and
/// compiles it. Relative paths in it (`keys_file`, `ca_file`, `file:` secrets) start from the
/// working directory.
pub fn load_remote(remote: &Remote) -> Result<Config, ConfigError> {
    let text = remote.fetch()?;
    let source = Remote {
        digest: KeyId::of("config-file", &text).0,
        ..remote.clone()
    };
    parse_str(&text, ConfigSource::Remote(source))
        .map_err(|e| ConfigError(format!("{e} (in the config fetched from {})", remote.display())))
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
        ConfigSource::Environment | ConfigSource::Remote(_) => None,
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

/// Zero-config quick start from the process environment; `None` when neither
/// `ROTOR_UPSTREAM_URL`, `ROTOR_UPSTREAM_KEYS` nor `REPLICATE_API_KEYS` is set. See
/// `from_env_map`.
pub fn from_env() -> Result<Option<Config>, ConfigError> {
    from_env_map(|name| std::env::var(name).ok())
}

/// Builds a one-provider config from `ROTOR_UPSTREAM_URL`, `ROTOR_UPSTREAM_KEYS`,
/// `ROTOR_UPSTREAM_KIND` (default `openai`), `ROTOR_AUTH_KEYS` (client keys; none = open
/// gateway), `ROTOR_LISTEN` and, beyond DESIGN 1.1, `ROTOR_ADMIN_KEY` (admin API on when set).
/// The seed tools' variables work too: `REPLICATE_API_KEYS` (keys; the kind becomes
/// `replicate` unless `ROTOR_UPSTREAM_KIND` says otherwise), `AUTH_KEY` (client keys) and
/// `PORT` (listen on `0.0.0.0:PORT`, as those tools do, when `ROTOR_LISTEN` is unset). The URL
/// may be left out for kinds with a default base URL. The provider is `default`, with no
/// model list, so it serves any model name. Everything else takes the file defaults.
pub fn from_env_map(get: impl Fn(&str) -> Option<String>) -> Result<Option<Config>, ConfigError> {
    let var = |name: &str| get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let replicate_keys = var("REPLICATE_API_KEYS");
    let (keys_var, keys) = match (var("ROTOR_UPSTREAM_KEYS"), &replicate_keys) {
        (None, Some(keys)) => ("REPLICATE_API_KEYS", Some(keys.clone())),
        (keys, _) => ("ROTOR_UPSTREAM_KEYS", keys),
    };
    let url = var("ROTOR_UPSTREAM_URL");
    if url.is_none() && keys.is_none() {
        return Ok(None);
    }
    let default_kind = if replicate_keys.is_some() {
        "replicate"
    } else {
        "openai"
    };
    let kind = var("ROTOR_UPSTREAM_KIND").unwrap_or_else(|| default_kind.to_owned());
    let url = match url {
        Some(url) => {
            url::parse_base_url(&url).map_err(|e| ConfigError::at("ROTOR_UPSTREAM_URL", e))?;
            url
        }
        // A kind with a default base URL needs none; the provider check names a bad kind.
        None => String::new(),
    };
    let keys = comma_list(keys);
    if keys.is_empty() {
        return Err(ConfigError::at(
            keys_var,
            "no upstream keys; set ROTOR_UPSTREAM_KEYS (or REPLICATE_API_KEYS) to the comma-separated upstream keys",
        ));
    }
    let listen = match (var("ROTOR_LISTEN"), var("PORT")) {
        (Some(listen), _) => listen,
        (None, Some(port)) => match port.parse::<u16>() {
            Ok(port) if port > 0 => format!("0.0.0.0:{port}"),
            _ => {
                return Err(ConfigError::at(
                    "PORT",
                    format!("{port:?} is not a port number in 1..=65535"),
                ))
            }
        },
        (None, None) => "127.0.0.1:8080".into(),
    };
    if listen.parse::<SocketAddr>().is_err() {
        return Err(ConfigError::at(
            "ROTOR_LISTEN",
            format!("{listen:?} is not an IP:port address, e.g. \"127.0.0.1:8080\""),
        ));
    }
    let clients = comma_list(var("ROTOR_AUTH_KEYS").or_else(|| var("AUTH_KEY")))
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
        kind,
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
        project: String::new(),
        region: String::new(),
        token_url: String::new(),
        google_oauth: None,
        service_account: None,
        responses: String::new(),
        session_timeout_ms: None,
        max_sessions: None,
        account_id: None,
        poll_interval_ms: None,
        poll_max_wait_ms: None,
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
        .map_err(|e| {
            ConfigError(format!(
                "{} (from the environment: ROTOR_UPSTREAM_KIND names the kind)",
                e.0
            ))
        })
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
