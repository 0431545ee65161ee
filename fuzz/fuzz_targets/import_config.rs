//! `rotor import` on arbitrary text, read as JSON (first byte even) or YAML (odd): never
//! panics, and a result that says it passes is a config rotor's own check accepts. Text naming
//! device or proc files is skipped (an imported key such as `file:/dev/zero` is a reference).
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rotor::config::{parse_str, ConfigSource};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    if text.contains("/dev/") || text.contains("/proc/") || text.contains("/sys/") || text.contains("env:") {
        return;
    }
    let name = if pick % 2 == 0 { "fuzz.json" } else { "api.yaml" };
    if let Ok(imported) = rotor::import::from_text(Path::new(name), text) {
        if imported.passes {
            assert!(parse_str(&imported.toml, ConfigSource::Environment).is_ok(), "{}", imported.toml);
        }
    }
});
