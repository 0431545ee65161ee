//! Tests of the whole pipeline (text -> `Config`): one per validation rule, each asserting
//! that the message names the key path, plus the shipped example and demo configs.

use std::path::PathBuf;

use super::*;

const PROVIDER: &str = r#"
[[providers]]
name = "p"
kind = "openai"
base_url = "https://api.example.com/v1"
keys = ["sk-test-key-00000001"]
"#;

fn env(name: &str) -> Option<String> {
    match name {
        "ROTOR_ADMIN_KEY" => Some("admin-secret-000000ad".into()),
        "WEB_CLIENT_KEY" => Some("web-client-key-0000we".into()),
        "OPENAI_KEY_1" => Some("sk-openai-key-0000001".into()),
        "OPENAI_KEY_2" => Some("sk-openai-key-0000002".into()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_str_with_env(text, ConfigSource::Environment, &env)
}

fn ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|e| panic!("{e}"))
}

/// The error for `text`; asserts it names every one of `parts`.
fn err(text: &str, parts: &[&str]) -> String {
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

fn manifest_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn minimal_config_takes_defaults() {
    let c = ok(PROVIDER);
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert!(c.server.workers >= 1, "0 resolves to the core count");
    assert_eq!(c.server.driver, Driver::Auto);
    assert_eq!(c.server.max_body_bytes, 33_554_432);
    assert_eq!(
        c.upstream.connect_timeout,
        std::time::Duration::from_millis(5000)
    );
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
        &[
            "providers[0].modelz",
            "unknown field",
            "expected one of",
            "(line 7)",
        ],
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
    err(
        &format!("[server]\nworkers = -1\n{PROVIDER}"),
        &["server.workers"],
    );
    err(
        &format!("{PROVIDER}weight = -2\n"),
        &["providers[0].weight"],
    );
    err(
        "[[providers]]\nname = \"p\"\n",
        &["providers[0]", "missing field"],
    );
    err("[server\n", &["line 1"]);
}

#[test]
fn listen_must_be_a_socket_address() {
    err(
        &format!("[server]\nlisten = \"localhost:8080\"\n{PROVIDER}"),
        &["server.listen", "localhost:8080", "IP:port"],
    );
    let c = ok(&format!(
        "[server]\nlisten = \"[::1]:9000\"\nworkers = 3\n{PROVIDER}"
    ));
    assert_eq!((c.server.listen.port(), c.server.workers), (9000, 3));
}

#[test]
fn driver_is_one_of_three() {
    err(
        &format!("[server]\ndriver = \"epoll\"\n{PROVIDER}"),
        &["server.driver", "auto | io_uring | legacy"],
    );
    assert_eq!(
        ok(&format!("[server]\ndriver = \"legacy\"\n{PROVIDER}"))
            .server
            .driver,
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
        ("server", "keepalive_timeout_ms"),
        ("upstream", "pool_idle_timeout_ms"),
        ("upstream", "connect_timeout_ms"),
        ("upstream", "first_byte_timeout_ms"),
        ("upstream", "stream_idle_timeout_ms"),
        ("retry", "max_attempts"),
        ("retry", "cooldown_ms"),
        ("storage", "retention_days"),
    ] {
        let path = format!("{section}.{key}");
        err(&format!("[{section}]\n{key} = 0\n{PROVIDER}"), &[&path]);
    }
    let c = ok(&format!("[server]\nshutdown_grace_ms = 0\n[upstream]\npool_max_idle_per_host = 0\n[retry]\nbackoff_ms = 0\n{PROVIDER}"));
    assert!(c.server.shutdown_grace.is_zero());
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
fn provider_kind_and_strategy_are_checked() {
    err(
        &PROVIDER.replace("\"openai\"", "\"openai-compatible\""),
        &[
            "providers[0].kind",
            "openai | anthropic | gemini | vertex | replicate | cohere | cloudflare | ondemand",
        ],
    );
    err(
        &format!("{PROVIDER}key_strategy = \"fastest\"\n"),
        &[
            "providers[0].key_strategy",
            "round-robin | random | least-used | highest-balance",
        ],
    );
    let c = ok(&format!(
        "{}key_strategy = \"highest-balance\"\n",
        PROVIDER.replace("\"openai\"", "\"ondemand\"")
    ));
    assert_eq!(
        (c.providers[0].kind, c.providers[0].key_strategy),
        (ProviderKind::OnDemand, KeyStrategy::HighestBalance)
    );
}

#[test]
fn weight_must_be_at_least_one() {
    err(
        &format!("{PROVIDER}weight = 0\n"),
        &["providers[0].weight", "at least 1"],
    );
}

#[test]
fn provider_names_unique_and_non_empty() {
    err(
        &format!("{PROVIDER}{PROVIDER}"),
        &["providers[1].name", "providers[0]"],
    );
    err(
        &PROVIDER.replace("name = \"p\"", "name = \"\""),
        &["providers[0].name", "empty"],
    );
    err(
        &PROVIDER.replace("name = \"p\"", "name = \"my provider\""),
        &["providers[0].name", "printable ASCII"],
    );
}

#[test]
fn at_least_one_provider() {
    err("", &["providers", "at least one"]);
}

#[test]
fn enabled_provider_needs_keys_disabled_does_not() {
    let no_keys = PROVIDER.replace("keys = [\"sk-test-key-00000001\"]", "");
    err(&no_keys, &["providers[0].keys", "no keys"]);
    let c = ok(&format!(
        "{PROVIDER}{}enabled = false\n",
        no_keys.replace("\"p\"", "\"off\"")
    ));
    assert!(!c.providers[1].enabled);
    assert!(c.route_table_text().contains("\"off\" is disabled"));
}

#[test]
fn keys_file_is_read_relative_to_the_config_and_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keys.txt"), "# pool\n\nsk-file-key-0001\n  sk-file-key-0002  \nsk-test-key-00000001\nsk-file-key-0001\n").unwrap();
    let text = format!("{PROVIDER}keys_file = \"keys.txt\"\n");
    let c = parse_str_with_env(
        &text,
        ConfigSource::File(dir.path().join("rotor.toml")),
        &env,
    )
    .unwrap();
    let keys: Vec<&str> = c.providers[0]
        .keys
        .iter()
        .map(|k| k.secret.expose())
        .collect();
    assert_eq!(
        keys,
        [
            "sk-test-key-00000001",
            "sk-file-key-0001",
            "sk-file-key-0002"
        ]
    );
    let e = parse_str_with_env(
        &format!("{PROVIDER}keys_file = \"missing.txt\"\n"),
        ConfigSource::File(dir.path().join("r.toml")),
        &env,
    )
    .unwrap_err()
    .0;
    assert!(
        e.contains("providers[0].keys_file") && e.contains("missing.txt"),
        "{e}"
    );
}

#[test]
fn missing_env_secret_names_variable_and_path() {
    err(
        &PROVIDER.replace(
            "\"sk-test-key-00000001\"",
            "\"sk-a-literal-key-1\", \"env:NOT_SET_ANYWHERE\"",
        ),
        &["providers[0].keys[1]", "NOT_SET_ANYWHERE"],
    );
    err(
        &format!("[server]\nadmin_key = \"env:NO_ADMIN\"\n{PROVIDER}"),
        &["server.admin_key", "NO_ADMIN"],
    );
    let c = ok(&format!(
        "[server]\nadmin_key = \"env:ROTOR_ADMIN_KEY\"\n{PROVIDER}"
    ));
    assert_eq!(
        c.server.admin_key.as_ref().map(Secret::expose),
        Some("admin-secret-000000ad")
    );
}

#[test]
fn base_url_errors_name_the_key() {
    err(
        &PROVIDER.replace(
            "https://api.example.com/v1",
            "https://u:p@api.example.com/v1",
        ),
        &["providers[0].base_url", "user info"],
    );
    err(
        &PROVIDER.replace(
            "https://api.example.com/v1",
            "https://api.example.com/v1?x=1",
        ),
        &["providers[0].base_url", "query"],
    );
    let c = ok(&PROVIDER.replace("https://api.example.com/v1", "http://[::1]:18080/v1/"));
    let u = &c.providers[0].base_url;
    assert_eq!(
        (
            u.host.as_str(),
            u.port,
            u.path.as_str(),
            u.host_header.as_str()
        ),
        ("::1", 18080, "/v1", "[::1]:18080")
    );
}

#[test]
fn headers_are_tokens_lowercased_without_crlf() {
    let c = ok(&format!(
        "{PROVIDER}headers = {{ \"OpenAI-Organization\" = \"org-1\" }}\n"
    ));
    assert_eq!(
        c.providers[0].headers,
        [("openai-organization".to_string(), "org-1".to_string())]
    );
    err(
        &format!("{PROVIDER}headers = {{ \"bad name\" = \"x\" }}\n"),
        &["providers[0].headers.bad name", "header name"],
    );
    err(
        &format!("{PROVIDER}headers = {{ \"x-a\" = \"v\\r\\nx-b: 1\" }}\n"),
        &["providers[0].headers.x-a", "CR, LF"],
    );
    err(
        &format!("{PROVIDER}headers = {{ \"Host\" = \"evil\" }}\n"),
        &["providers[0].headers.Host", "set by rotor"],
    );
}

#[test]
fn models_and_aliases_are_checked() {
    err(
        &format!("{PROVIDER}models = [\"a\", \"b\", \"a\"]\n"),
        &["providers[0].models[2]", "twice"],
    );
    err(
        &format!("{PROVIDER}models = [\"a\"]\naliases = {{ \"a\" = \"b\" }}\n"),
        &["providers[0].aliases.a", "also in `models`"],
    );
    err(
        &format!("{PROVIDER}aliases = {{ \"a\" = \"\" }}\n"),
        &["providers[0].aliases.a", "non-empty"],
    );
}

#[test]
fn client_names_and_keys_unique_without_revealing_the_key() {
    let client =
        |name: &str, key: &str| format!("[[clients]]\nname = \"{name}\"\nkey = \"{key}\"\n");
    err(
        &format!(
            "{}{}{PROVIDER}",
            client("a", "client-key-1"),
            client("a", "client-key-2")
        ),
        &["clients[1].name", "clients[0]"],
    );
    let e = err(
        &format!(
            "{}{}{PROVIDER}",
            client("a", "same-secret-key-1"),
            client("b", "same-secret-key-1")
        ),
        &["clients[1].key", "\"a\"", "\"b\""],
    );
    assert!(!e.contains("same-secret"), "{e}");
    err(
        &format!("{}models = []\n{PROVIDER}", client("a", "client-key-1")),
        &["clients[0].models", "[\"*\"]"],
    );
    let c = ok(&format!("{}{PROVIDER}", client("a", "client-key-1")));
    assert_eq!(c.clients[0].models, ["*"]);
    assert!(c.clients[0].allows("anything"));
}

#[test]
fn default_model_and_fallbacks_need_routes() {
    let listed = format!("{PROVIDER}models = [\"gpt-4o\", \"gpt-4o-mini\"]\n");
    err(
        &format!("[routing]\ndefault_model = \"nope\"\n{listed}"),
        &["routing.default_model", "\"nope\" has no route"],
    );
    err(
        &format!("[routing]\nfallbacks = {{ \"gpt-4o\" = [\"gpt-4o-mini\", \"nope\"] }}\n{listed}"),
        &["routing.fallbacks.gpt-4o[1]", "\"nope\" has no route"],
    );
    err(
        &format!("[routing]\nfallbacks = {{ \"gpt-4o\" = [\"gpt-4o\"] }}\n{listed}"),
        &["routing.fallbacks.gpt-4o[0]", "itself"],
    );
    let c = ok(&format!("[routing]\ndefault_model = \"gpt-4o-mini\"\nfallbacks = {{ \"gpt-4o\" = [\"gpt-4o-mini\"] }}\n{listed}"));
    assert_eq!(c.routing.default_model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(c.routing.fallbacks["gpt-4o"], ["gpt-4o-mini"]);
    // A wildcard provider serves any name, so any default is routable.
    assert!(parse(&format!(
        "[routing]\ndefault_model = \"whatever\"\n{PROVIDER}"
    ))
    .is_ok());
}

#[test]
fn key_ids_are_stable_and_distinct() {
    assert_eq!(KeyId::of("p", "sk-1"), KeyId::of("p", "sk-1"));
    assert_ne!(KeyId::of("p", "sk-1"), KeyId::of("p", "sk-2"));
    assert_ne!(KeyId::of("p", "sk-1"), KeyId::of("q", "sk-1"));
    assert_ne!(KeyId::of("ab", "c"), KeyId::of("a", "bc"));
    // Fixed across processes and versions: persisted limit windows are keyed by it.
    assert_eq!(KeyId::of("p", "sk-1"), KeyId::of("p", "sk-1"));
    let a = ok(PROVIDER);
    let b = ok(PROVIDER);
    assert_eq!(
        a.providers[0].keys[0].id, b.providers[0].keys[0].id,
        "same across reloads"
    );
    assert_eq!(
        a.providers[0].keys[0].id,
        KeyId::of("p", "sk-test-key-00000001")
    );
}

#[test]
fn config_debug_never_contains_secrets() {
    let c = ok(&format!("[server]\nadmin_key = \"env:ROTOR_ADMIN_KEY\"\n[[clients]]\nname = \"c\"\nkey = \"client-secret-value-1\"\n{PROVIDER}"));
    let dbg = format!("{c:?}");
    for secret in ["admin-secret", "client-secret-value", "sk-test-key"] {
        assert!(!dbg.contains(secret), "{secret} leaked");
    }
    let text = c.route_table_text();
    assert!(
        !text.contains("sk-test-key") && text.contains("…0001"),
        "{text}"
    );
}

#[test]
fn env_quick_start() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |n: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        }
    };
    assert!(from_env_map(vars(&[])).unwrap().is_none());
    let c = from_env_map(vars(&[
        ("ROTOR_UPSTREAM_URL", "https://api.example.com/v1"),
        (
            "ROTOR_UPSTREAM_KEYS",
            " sk-env-key-0001 , ,sk-env-key-0002,",
        ),
        ("ROTOR_AUTH_KEYS", "client-key-one,client-key-two"),
        ("ROTOR_LISTEN", "0.0.0.0:9090"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(c.source, ConfigSource::Environment);
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:9090");
    let p = &c.providers[0];
    assert_eq!(
        (p.name.as_str(), p.kind, p.keys.len()),
        ("default", ProviderKind::OpenAi, 2)
    );
    assert!(p.models.is_empty() && c.routes.wildcard.is_some() && c.routes.by_model.is_empty());
    let names: Vec<&str> = c.clients.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["client-1", "client-2"]);
    assert!(c.clients[1].key.ct_eq(b"client-key-two"));

    let open = from_env_map(vars(&[
        ("ROTOR_UPSTREAM_URL", "http://127.0.0.1:1"),
        ("ROTOR_UPSTREAM_KEYS", "k-00000001"),
    ]))
    .unwrap()
    .unwrap();
    assert!(open.clients.is_empty() && open.server.listen.to_string() == "127.0.0.1:8080");
    assert!(open.route_table_text().contains("open gateway"));

    let e = from_env_map(vars(&[
        ("ROTOR_UPSTREAM_URL", "http://h"),
        ("ROTOR_UPSTREAM_KEYS", " , "),
    ]))
    .unwrap_err()
    .0;
    assert!(e.contains("ROTOR_UPSTREAM_KEYS"), "{e}");
    let e = from_env_map(vars(&[
        ("ROTOR_UPSTREAM_URL", "h:1"),
        ("ROTOR_UPSTREAM_KEYS", "k"),
    ]))
    .unwrap_err()
    .0;
    assert!(e.contains("ROTOR_UPSTREAM_URL"), "{e}");
    let e = from_env_map(vars(&[
        ("ROTOR_UPSTREAM_URL", "http://h"),
        ("ROTOR_UPSTREAM_KEYS", "k"),
        ("ROTOR_LISTEN", "nope"),
    ]))
    .unwrap_err()
    .0;
    assert!(e.contains("ROTOR_LISTEN"), "{e}");
}

#[test]
fn example_config_parses_with_every_key() {
    let path = manifest_path("config/rotor.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let c =
        parse_str_with_env(&text, ConfigSource::File(path), &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.providers[0].keys.len(), 2);
    assert_eq!(c.clients[0].key.expose(), "web-client-key-0000we");
    assert!(c.server.admin_key.is_some());
    assert!(c.clients[0].allows("gpt-4o") && !c.clients[0].allows("gemini-pro"));
    assert_eq!(
        c.routes.get("gpt-3.5").unwrap().candidates[0].upstream_model,
        "gpt-4o-mini"
    );
}

#[test]
fn demo_config_routes_as_documented() {
    let path = manifest_path("config/demo.toml");
    let c = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert!(c.storage.path.is_none());
    assert!(c.clients[0].key.ct_eq(b"demo-key"));
    let cand = |model: &str| -> Vec<(usize, String)> {
        let r = &c.routes.by_model[model];
        r.candidates
            .iter()
            .map(|c| (c.provider, c.upstream_model.clone()))
            .collect()
    };
    let s = |x: &str| x.to_string();
    assert_eq!(
        cand("gpt-4o-mini"),
        [(0, s("gpt-4o-mini")), (1, s("gpt-4o-mini"))]
    );
    assert_eq!(cand("gpt-4o"), [(0, s("gpt-4o"))]);
    assert_eq!(cand("gpt-3.5-turbo"), [(0, s("gpt-4o-mini"))]);
    assert_eq!(
        cand("text-embedding-3-small"),
        [(1, s("text-embedding-3-small"))]
    );
    assert!(c.routes.wildcard.is_none());
    assert_eq!(c.routes.len, 4);
    let mut idx: Vec<usize> = c.routes.by_model.values().map(|r| r.index).collect();
    idx.sort_unstable();
    assert_eq!(idx, [0, 1, 2, 3], "dense indices");
    assert_eq!((c.providers[0].weight, c.providers[1].weight), (1, 2));
    assert_eq!(
        (c.providers[0].keys.len(), c.providers[1].keys.len()),
        (3, 2)
    );
    let text = c.route_table_text();
    assert!(
        text.contains("mock-a  upstream gpt-4o-mini  weight 1  3 keys (…00a1, …00a2, …00a3)"),
        "{text}"
    );
    assert!(!text.contains("sk-mock"), "{text}");
}

#[test]
fn wildcard_route_is_last_and_disabled_providers_are_left_out() {
    let text = format!(
        "{PROVIDER}models = [\"m\"]\n{}{}",
        PROVIDER.replace("\"p\"", "\"any\""),
        PROVIDER
            .replace("\"p\"", "\"off\"")
            .replace("keys = [", "models = [\"m\"]\nenabled = false\nkeys = [")
    );
    let c = ok(&text);
    let w = c.routes.wildcard.as_ref().unwrap();
    assert_eq!((w.index, c.routes.len), (1, 2));
    assert_eq!(
        w.candidates,
        [Candidate {
            provider: 1,
            upstream_model: String::new()
        }]
    );
    assert_eq!(
        c.routes.by_model["m"].candidates.len(),
        1,
        "disabled provider not a candidate"
    );
    assert_eq!(c.routes.get("other").map(|r| r.index), Some(1));
}
