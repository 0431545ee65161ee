//! Config loading never panics on arbitrary text: TOML parse, validation and compile either
//! give a `Config` or a `ConfigError`. `env:` secrets resolve through a fixed map (the process
//! environment is never read); text naming device or proc files is skipped, since `keys_file`
//! and `file:` secrets really read the path (a read of /dev/zero would never end).
#![no_main]
use libfuzzer_sys::fuzz_target;
use rotor::config::{parse_str_with_env, ConfigSource};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if text.contains("/dev/") || text.contains("/proc/") || text.contains("/sys/") {
        return;
    }
    let env = |name: &str| (name == "FUZZ_KEY").then(|| "sk-fuzz-0001".to_owned());
    if let Ok(config) = parse_str_with_env(text, ConfigSource::Environment, &env) {
        let _ = config.warnings();
    }
});
