//! Tests of the whole pipeline (text -> `Config`): one per validation rule, each asserting
//! that the message names the key path. This file: parsing, server/upstream/retry/storage
//! sections and limits; `providers.rs`: providers and keys; `shipped.rs`: clients, routing,
//! the env quick start and the shipped example and demo configs.

use std::path::PathBuf;

use super::*;

mod providers;
mod shipped;

pub(super) const PROVIDER: &str = r#"
[[providers]]
name = "p"
kind = "openai"
base_url = "https://api.example.com/v1"
keys = ["sk-test-key-00000001"]
"#;

pub(super) fn env(name: &str) -> Option<String> {
    match name {
        "ROTOR_ADMIN_KEY" => Some("admin-secret-000000ad".into()),
        "WEB_CLIENT_KEY" => Some("web-client-key-0000we".into()),
        "OPENAI_KEY_1" => Some("sk-openai-key-0000001".into()),
        "OPENAI_KEY_2" => Some("sk-openai-key-0000002".into()),
        _ => None,
    }
}

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_str_with_env(text, ConfigSource::Environment, &env)
}

pub(super) fn ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|e| panic!("{e}"))
}

/// The error for `text`; asserts it names every one of `parts`.
pub(super) fn err(text: &str, parts: &[&str]) -> String {
    let e = match parse(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.0,
    };
    assert!(e.starts_with("config: "), "{e}");
    for part in parts {
        assert!(e.contains(part), "{e:?} should contain {part:?}");
    }
    e
}

pub(super) fn manifest_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn minimal_config_takes_defaults() {
    let c = ok(PROVIDER);
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert!(c.server.workers >= 1, "0 resolves to the core count");
    assert_eq!(c.server.driver, Driver::Auto);
    assert_eq!(c.server.max_body_bytes, 33_554_432);
    assert_eq!(c.server.body_read_timeout, std::time::Duration::from_secs(60));
    assert_eq!(c.server.max_body_bytes_in_flight, 64 * 1024 * 1024);
    assert_eq!(c.upstream.connect_timeout, std::time::Duration::from_millis(5000));
    assert_eq!(c.retry.max_attempts, 3);
    assert_eq!(c.storage.path, Some(PathBuf::from("data/rotor.db")));
    assert!(c.server.admin_key.is_none() && c.clients.is_empty());
    let p = &c.providers[0];
    assert_eq!(
        (p.kind, p.key_strategy, p.weight, p.enabled),
        (ProviderKind::OpenAi, KeyStrategy::RoundRobin, 1, true)
    );
    assert_eq!(p.limits.rpm, Limit::Unlimited);
    assert!(c.routes.wildcard.is_some(), "no models = serves any model");
}

#[test]
fn unknown_key_names_its_path_and_line() {
    let text = format!("{PROVIDER}modelz = [\"x\"]\n");
    err(
        &text,
        &["providers[0].modelz", "unknown field", "expected one of", "(line 7)"],
    );
    err(
        "[server]\nlisten_addr = \"x\"\n",
        &["server.listen_addr", "unknown field"],
    );
    err("[sever]\n", &["sever", "unknown field"]);
}

#[test]
fn type_errors_name_their_path() {
    err(
        &format!("[server]\nworkers = \"four\"\n{PROVIDER}"),
        &["server.workers", "(line 2)"],
    );
    err(&format!("[server]\nworkers = -1\n{PROVIDER}"), &["server.workers"]);
    err(&format!("{PROVIDER}weight = -2\n"), &["providers[0].weight"]);
    err("[[providers]]\nname = \"p\"\n", &["providers[0]", "missing field"]);
    let e = err("[server\n", &["line 1"]);
    assert!(!e.contains('\n'), "one line: {e}");
}

#[test]
fn listen_must_be_a_socket_address() {
    err(
        &format!("[server]\nlisten = \"localhost:8080\"\n{PROVIDER}"),
        &["server.listen", "localhost:8080", "IP:port"],
    );
    let c = ok(&format!("[server]\nlisten = \"[::1]:9000\"\nworkers = 3\n{PROVIDER}"));
    assert_eq!((c.server.listen.port(), c.server.workers), (9000, 3));
}

#[test]
fn driver_is_one_of_three() {
    err(
        &format!("[server]\ndriver = \"epoll\"\n{PROVIDER}"),
        &["server.driver", "auto | io_uring | legacy"],
    );
    assert_eq!(
        ok(&format!("[server]\ndriver = \"legacy\"\n{PROVIDER}")).server.driver,
        Driver::Legacy
    );
}

#[test]
fn zero_sizes_and_durations_are_refused_where_meaningless() {
    for (section, key) in [
        ("server", "max_connections"),
        ("server", "max_header_bytes"),
        ("server", "max_body_bytes"),
        ("server", "header_read_timeout_ms"),
        ("server", "body_read_timeout_ms"),
        ("server", "max_body_bytes_in_flight"),
        ("server", "keepalive_timeout_ms"),
        ("upstream", "pool_idle_timeout_ms"),
        ("upstream", "connect_timeout_ms"),
        ("upstream", "first_byte_timeout_ms"),
        ("upstream", "stream_idle_timeout_ms"),
        ("retry", "max_attempts"),
        ("retry", "cooldown_ms"),
        ("storage", "retention_days"),
        ("server", "metrics_max_series"),
        ("server", "metrics_max_bytes"),
        ("storage", "rollup_retention_days"),
        ("storage", "health_window_ms"),
        ("storage", "max_db_bytes"),
    ] {
        let path = format!("{section}.{key}");
        err(&format!("[{section}]\n{key} = 0\n{PROVIDER}"), &[&path]);
    }
    let c = ok(&format!(
        "[server]\nshutdown_grace_ms = 0\n[upstream]\npool_max_idle_per_host = 0\n[retry]\nbackoff_ms = 0\n{PROVIDER}"
    ));
    assert!(c.server.shutdown_grace.is_zero());
}

#[test]
fn breaker_settings_default_validate_and_switch_off() {
    let c = ok(PROVIDER);
    let b = c.retry.breaker.expect("on by default");
    assert_eq!(b.failures, 5);
    assert_eq!(b.window, std::time::Duration::from_millis(2000));
    assert_eq!(b.open, std::time::Duration::from_millis(1000));
    assert_eq!(c.retry.quarantine_after_failures, 5);
    let off = ok(&format!(
        "[retry]\nbreaker_failures = 0\nquarantine_after_failures = 0\n{PROVIDER}"
    ));
    assert!(off.retry.breaker.is_none());
    assert_eq!(off.retry.quarantine_after_failures, 0, "0 = never, not 1");
    for key in ["breaker_window_ms", "breaker_open_ms"] {
        err(&format!("[retry]\n{key} = 0\n{PROVIDER}"), &[&format!("retry.{key}")]);
    }
    err(
        &format!("[retry]\nbreaker_open_ms = 300001\n{PROVIDER}"),
        &["retry.breaker_open_ms", "300000"],
    );
}

#[test]
fn max_json_depth_defaults_to_128_and_refuses_0_and_absurd_values() {
    assert_eq!(ok(PROVIDER).server.max_json_depth, 128);
    assert_eq!(
        ok(&format!("[server]\nmax_json_depth = 1\n{PROVIDER}"))
            .server
            .max_json_depth,
        1
    );
    assert_eq!(
        ok(&format!("[server]\nmax_json_depth = 1024\n{PROVIDER}"))
            .server
            .max_json_depth,
        1024
    );
    for bad in ["0", "1025", "100000"] {
        err(
            &format!("[server]\nmax_json_depth = {bad}\n{PROVIDER}"),
            &["server.max_json_depth", "between 1 and 1024", bad],
        );
    }
    err(
        &format!("[server]\nmax_json_depth = -1\n{PROVIDER}"),
        &["server.max_json_depth"],
    );
}

#[test]
fn metrics_settings_are_checked() {
    err(
        &format!("[server]\nmetrics_max_bytes = 1000\n{PROVIDER}"),
        &["server.metrics_max_bytes", "65536"],
    );
    err(
        &format!("[server]\nmetrics_key = \"env:NO_METRICS_KEY\"\n{PROVIDER}"),
        &["server.metrics_key", "NO_METRICS_KEY"],
    );
    let c = ok(PROVIDER);
    assert!(c.server.metrics_key.is_none(), "open by default");
    assert_eq!(
        (c.server.metrics_max_series, c.server.metrics_max_bytes),
        (4096, 8_388_608)
    );
    let c = ok(&format!("[server]\nmetrics_key = \"env:ROTOR_ADMIN_KEY\"\n{PROVIDER}"));
    assert_eq!(
        c.server.metrics_key.as_ref().map(Secret::expose),
        Some("admin-secret-000000ad")
    );
}

#[test]
fn body_budget_below_the_largest_body_is_refused() {
    err(
        &format!("[server]\nmax_body_bytes = 2048\nmax_body_bytes_in_flight = 1024\n{PROVIDER}"),
        &["server.max_body_bytes_in_flight", "1024", "max_body_bytes (2048)"],
    );
    let c = ok(&format!(
        "[server]\nmax_body_bytes = 2048\nmax_body_bytes_in_flight = 2048\nbody_read_timeout_ms = 500\n{PROVIDER}"
    ));
    assert_eq!(c.server.max_body_bytes_in_flight, 2048);
    assert_eq!(c.server.body_read_timeout, std::time::Duration::from_millis(500));
}

#[test]
fn limits_map_and_reject_below_minus_one() {
    let c = ok(&format!("{PROVIDER}rpm = 60\nrpd = 0\ntpm = -1\n"));
    let l = c.providers[0].limits;
    assert_eq!(
        (l.rpm, l.rpd, l.tpm),
        (Limit::Max(60), Limit::Disabled, Limit::Unlimited)
    );
    err(
        &format!("{PROVIDER}tpm = -5\n"),
        &["providers[0].tpm", "-5", "-1 (unlimited)"],
    );
    err(
        &format!("[[clients]]\nname = \"c\"\nkey = \"client-key-1\"\nrpd = -2\n{PROVIDER}"),
        &["clients[0].rpd"],
    );
}

#[test]
fn the_request_log_is_bounded_by_default_and_bounds_are_checked() {
    let memory = ok(&format!("[storage]\npath = \"\"\n{PROVIDER}"));
    let s = &memory.storage;
    assert_eq!(s.max_records, Some(100_000), "in memory: bounded by default");
    assert_eq!(s.max_db_bytes, Some(1 << 30));
    assert_eq!((s.sample_rate, s.rollup_retention_days), (1.0, 400));
    assert_eq!(s.health_window, std::time::Duration::from_secs(30));
    let disk = ok(PROVIDER);
    assert_eq!(
        disk.storage.max_records, None,
        "on disk: bounded by max_db_bytes and retention"
    );
    let c = ok(&format!(
        "[storage]\nmax_records = 0\nmax_db_bytes = -1\nsample_rate = 0.25\n{PROVIDER}"
    ));
    assert_eq!(
        (c.storage.max_records, c.storage.max_db_bytes, c.storage.sample_rate),
        (Some(0), None, 0.25)
    );
    err(
        &format!("[storage]\npath = \"\"\nmax_records = -1\n{PROVIDER}"),
        &["storage.max_records", "in-memory"],
    );
    err(
        &format!("[storage]\nmax_records = -2\n{PROVIDER}"),
        &["storage.max_records", "-2"],
    );
    err(
        &format!("[storage]\nmax_db_bytes = 4096\n{PROVIDER}"),
        &["storage.max_db_bytes", "1048576"],
    );
    for bad in ["1.5", "-0.1", "nan"] {
        err(
            &format!("[storage]\nsample_rate = {bad}\n{PROVIDER}"),
            &["storage.sample_rate"],
        );
    }
    assert_eq!(memory.storage.max_stat_models, 10_000);
    for bad in ["0", "1000001"] {
        err(
            &format!("[storage]\nmax_stat_models = {bad}\n{PROVIDER}"),
            &["storage.max_stat_models", bad],
        );
    }
}

/// `storage.writer_class`: "auto" by default, "idle" only where this process may leave the
/// idle class again (refused with the key's path elsewhere), anything else refused.
#[test]
fn the_writer_class_is_auto_by_default_and_idle_only_where_it_can_be_honoured() {
    use crate::config::WriterClass;
    assert_eq!(ok(PROVIDER).storage.writer_class, WriterClass::Auto);
    let normal = ok(&format!("[storage]\nwriter_class = \"normal\"\n{PROVIDER}"));
    assert_eq!(normal.storage.writer_class, WriterClass::Normal);
    let idle = format!("[storage]\nwriter_class = \"idle\"\n{PROVIDER}");
    if crate::storage::idle_class::may_leave_idle_class() {
        assert_eq!(ok(&idle).storage.writer_class, WriterClass::Idle);
    } else {
        err(&idle, &["storage.writer_class", "CAP_SYS_NICE"]);
    }
    err(
        &format!("[storage]\nwriter_class = \"low\"\n{PROVIDER}"),
        &["storage.writer_class", "auto | idle | normal"],
    );
}

#[test]
fn upstream_cancel_bounds_default_and_are_checked() {
    let c = ok(PROVIDER);
    assert_eq!(c.upstream.max_cancels_in_flight, 256);
    assert_eq!(c.upstream.cancel_timeout.as_millis(), 10_000);
    for bad in ["0", "100001"] {
        err(
            &format!("[upstream]\nmax_cancels_in_flight = {bad}\n{PROVIDER}"),
            &["upstream.max_cancels_in_flight", bad],
        );
    }
    err(
        &format!("[upstream]\ncancel_timeout_ms = 0\n{PROVIDER}"),
        &["upstream.cancel_timeout_ms"],
    );
}

#[test]
fn cache_is_off_by_default_and_its_bounds_are_checked() {
    let c = ok(PROVIDER);
    assert!(!c.cache.enabled);
    assert_eq!((c.cache.max_bytes, c.cache.max_entry_bytes), (256 << 20, 1 << 20));
    let c = ok(&format!("[cache]\nenabled = true\nttl_ms = 1000\n{PROVIDER}"));
    assert!(c.cache.enabled && c.cache.ttl.as_millis() == 1000);
    for (line, path) in [
        ("max_bytes = 0", "cache.max_bytes"),
        ("max_bytes = 1099511627776", "cache.max_bytes"),
        ("ttl_ms = 999", "cache.ttl_ms"),
        ("max_entry_bytes = 0", "cache.max_entry_bytes"),
        ("max_bytes = 16384\nmax_entry_bytes = 1025", "cache.max_entry_bytes"),
        ("max_entry_bytes = 16777217", "cache.max_entry_bytes"),
    ] {
        err(&format!("[cache]\n{line}\n{PROVIDER}"), &[path]);
    }
    err(&format!("[cache]\nenable = true\n{PROVIDER}"), &["enable"]);
}
