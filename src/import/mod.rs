//! `rotor import PATH` (DESIGN 1.1): another gateway's config -> a rotor TOML on stdout, with
//! notes on stderr for everything that could not be carried over. Formats: api-together's
//! `apis.json` (`api_together`), pro-api's and uni-api's `api.yaml` (`api_yaml`), the on-demand
//! proxy's `config.json` (`ondemand`). Each reader fills a `Draft`; `finish` renders it and
//! runs rotor's own config check on the result.
//! Invariant: the TOML printed passes `rotor check` (a provider or client the check refuses,
//! such as a kind this build cannot serve yet, is printed commented out with the reason, and
//! said on stderr); secrets are kept as given; nothing is dropped without a note.

mod api_together;
mod api_yaml;
mod draft;
mod ondemand;

use std::path::Path;

pub use draft::{Draft, DraftClient, DraftProvider};

/// The imported config and what could not be expressed.
pub struct Imported {
    /// Which tool's format the file was read as.
    pub format: &'static str,
    pub toml: String,
    pub notes: Vec<String>,
    /// The TOML passes `rotor check` (false only when nothing usable is left, such as a file
    /// whose only provider is of a kind this build cannot serve).
    pub passes: bool,
}

/// Reads `path` and converts it. Errors: unreadable file, unknown format, malformed content.
pub fn import(path: &Path) -> Result<Imported, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    from_text(path, &text)
}

/// Converts `text`, read from `path` (its name picks YAML or JSON).
pub fn from_text(path: &Path, text: &str) -> Result<Imported, String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let (format, draft) = if name.ends_with(".yaml") || name.ends_with(".yml") {
        api_yaml::read(text)?
    } else {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("{}: not valid JSON: {e}", path.display()))?;
        if value.get("apis").is_some() {
            ("api-together apis.json", api_together::read(&value)?)
        } else if value.get("accounts").is_some() || ondemand::looks_like(&value) {
            ("on-demand proxy config.json", ondemand::read(&value)?)
        } else {
            return Err(format!(
                "{}: not a format rotor imports (api-together apis.json has \"apis\", the on-demand proxy's \
                 config.json has \"accounts\"; pro-api / uni-api files end in .yaml)",
                path.display()
            ));
        }
    };
    let source = path.display().to_string();
    Ok(finish(format, &source, draft))
}

/// Renders `draft` and checks it with rotor's config compiler; what the check refuses is
/// commented out with the reason, so the printed config always passes `rotor check`.
pub fn finish(format: &'static str, source: &str, mut draft: Draft) -> Imported {
    for _ in 0..=draft.providers.len() + draft.clients.len() + 1 {
        let toml = draft.render(format, source);
        let Err(e) = crate::config::parse_str(&toml, crate::config::ConfigSource::Environment) else {
            return Imported {
                format,
                toml,
                notes: draft.notes,
                passes: true,
            };
        };
        let message = e.to_string();
        if !draft.set_aside(&message) {
            draft
                .notes
                .push(format!("the output does not pass `rotor check`: {message}"));
            return Imported {
                format,
                toml,
                notes: draft.notes,
                passes: false,
            };
        }
    }
    let toml = draft.render(format, source);
    let passes = crate::config::parse_str(&toml, crate::config::ConfigSource::Environment).is_ok();
    Imported {
        format,
        toml,
        notes: draft.notes,
        passes,
    }
}

/// A name rotor accepts (printable ASCII, no spaces or quotes), unique among `taken`.
pub(crate) fn unique_name(wanted: &str, fallback: &str, taken: &mut Vec<String>) -> String {
    let clean: String = wanted
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches('-').to_owned();
    let base = if clean.chars().any(|c| c.is_ascii_alphanumeric()) {
        clean
    } else {
        fallback.to_owned()
    };
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    taken.push(name.clone());
    name
}

/// A JSON or YAML value as text when it is a string or a number.
pub(crate) fn scalar(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.trim().to_owned()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A string or a list of strings as a list.
pub(crate) fn string_list(value: Option<&serde_json::Value>) -> Vec<String> {
    match value {
        Some(serde_json::Value::Array(items)) => items.iter().filter_map(scalar).filter(|s| !s.is_empty()).collect(),
        Some(v) => scalar(v).filter(|s| !s.is_empty()).into_iter().collect(),
        None => Vec::new(),
    }
}
