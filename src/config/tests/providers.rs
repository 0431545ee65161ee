//! Provider rules: kinds, strategies, weights, names, keys and key files, base URLs, headers,
//! models and aliases, key ids.

use super::super::*;
use super::*;

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
        "{}key_strategy = \"random\"\n",
        PROVIDER.replace("\"openai\"", "\"gemini\"")
    ));
    assert_eq!(
        (c.providers[0].kind, c.providers[0].key_strategy),
        (ProviderKind::Gemini, KeyStrategy::Random)
    );
}

#[test]
fn kinds_and_strategies_this_build_cannot_honour_are_refused() {
    // Every kind the design names has its adapter now (`NOT_YET_KINDS` is empty); a kind the
    // design does not name is refused with the key's path.
    for kind in ["anthropic", "gemini", "replicate", "cohere", "ondemand"] {
        ok(&PROVIDER.replace("\"openai\"", &format!("{kind:?}")));
    }
    err(&PROVIDER.replace("\"openai\"", "\"bedrock\""), &["providers[0].kind"]);
    let c = ok(&format!("{PROVIDER}key_strategy = \"least-used\"\n"));
    assert_eq!(c.providers[0].key_strategy, KeyStrategy::LeastUsed);
}

#[test]
fn ondemand_session_settings_have_defaults_bounds_and_only_that_kind() {
    let ondemand = PROVIDER.replace("\"openai\"", "\"ondemand\"");
    let c = ok(&ondemand);
    assert_eq!(c.providers[0].kind, ProviderKind::OnDemand);
    let limits = c.providers[0].sessions.unwrap();
    assert_eq!((limits.timeout.as_millis(), limits.max), (1_800_000, 10_000));
    let c = ok(&format!("{ondemand}session_timeout_ms = 60000\nmax_sessions = 5\n"));
    let limits = c.providers[0].sessions.unwrap();
    assert_eq!((limits.timeout.as_millis(), limits.max), (60_000, 5));
    err(
        &format!("{ondemand}session_timeout_ms = 10\n"),
        &["providers[0].session_timeout_ms", "between 1000"],
    );
    err(
        &format!("{ondemand}max_sessions = 0\n"),
        &["providers[0].max_sessions", "between 1 and 1000000"],
    );
    err(
        &format!("{PROVIDER}max_sessions = 5\n"),
        &["providers[0].max_sessions", "only kind = \"ondemand\""],
    );
    err(
        &format!("{PROVIDER}session_timeout_ms = 5000\n"),
        &["providers[0].session_timeout_ms", "only kind = \"ondemand\""],
    );
    assert_eq!(ok(PROVIDER).providers[0].sessions, None);
}

#[test]
fn key_pool_settings_are_checked_with_their_paths() {
    err(
        &format!("{PROVIDER}key_strategy = \"highest-balance\"\n"),
        &[
            "providers[0].key_strategy",
            "highest-balance needs balances",
            "balance = {",
        ],
    );
    let c = ok(&format!(
        "{PROVIDER}key_strategy = \"highest-balance\"\nbalance = {{ path = \"/user/info\", field = \"/data/totalBalance\" }}\n"
    ));
    let p = &c.providers[0];
    assert_eq!(p.key_strategy, KeyStrategy::HighestBalance);
    let balance = p.balance.as_ref().unwrap();
    assert!(balance.path.ends_with("/user/info"), "{}", balance.path);
    assert_eq!(balance.field, "/data/totalBalance");
    assert_eq!(p.balance_interval, Some(std::time::Duration::from_millis(300_000)));
    assert_eq!((p.validate_interval, p.remove_invalid), (None, false));
    err(
        &format!("{PROVIDER}balance = {{ path = \"user/info\", field = \"/a\" }}\n"),
        &["providers[0].balance.path", "starting with /"],
    );
    err(
        &format!("{PROVIDER}balance = {{ path = \"/user/info\", field = \"data\" }}\n"),
        &["providers[0].balance.field", "JSON pointer"],
    );
    err(
        &format!("{PROVIDER}balance = {{ path = \"/u\", field = \"/a\", every = 1 }}\n"),
        &["providers[0].balance", "every"],
    );
    err(
        &format!("{PROVIDER}validate_interval_ms = 500\n"),
        &["providers[0].validate_interval_ms", "at least 1000"],
    );
    err(
        &format!("{PROVIDER}balance_interval_ms = 10\n"),
        &["providers[0].balance_interval_ms", "at least 1000"],
    );
    let c = ok(&format!(
        "{PROVIDER}validate_interval_ms = 60000\nremove_invalid = true\nbalance_interval_ms = 0\n"
    ));
    let p = &c.providers[0];
    assert_eq!(p.validate_interval, Some(std::time::Duration::from_secs(60)));
    assert!(p.remove_invalid);
    assert_eq!(p.balance_interval, None);
    // Known providers get their balance endpoint from the host.
    for (base, path, field) in [
        (
            "https://api.deepseek.com",
            "/user/balance",
            "/balance_infos/0/total_balance",
        ),
        (
            "https://api.deepseek.com/v1",
            "/user/balance",
            "/balance_infos/0/total_balance",
        ),
        ("https://api.siliconflow.cn/v1", "/v1/user/info", "/data/totalBalance"),
        ("https://openrouter.ai/api/v1", "/api/v1/key", "/data/limit_remaining"),
    ] {
        let c = ok(&PROVIDER.replace("https://api.example.com/v1", base));
        let balance = c.providers[0].balance.clone().unwrap();
        assert_eq!((balance.path.as_str(), balance.field.as_str()), (path, field), "{base}");
    }
    assert_eq!(ok(PROVIDER).providers[0].balance, None);
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
    err(&format!("{PROVIDER}{PROVIDER}"), &["providers[1].name", "providers[0]"]);
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
    std::fs::write(
        dir.path().join("keys.txt"),
        "# pool\n\nsk-file-key-0001\n  sk-file-key-0002  \nsk-test-key-00000001\nsk-file-key-0001\n",
    )
    .unwrap();
    let text = format!("{PROVIDER}keys_file = \"keys.txt\"\n");
    let c = parse_str_with_env(&text, ConfigSource::File(dir.path().join("rotor.toml")), &env).unwrap();
    let keys: Vec<&str> = c.providers[0].keys.iter().map(|k| k.secret.expose()).collect();
    assert_eq!(keys, ["sk-test-key-00000001", "sk-file-key-0001", "sk-file-key-0002"]);
    let e = parse_str_with_env(
        &format!("{PROVIDER}keys_file = \"missing.txt\"\n"),
        ConfigSource::File(dir.path().join("r.toml")),
        &env,
    )
    .unwrap_err()
    .0;
    assert!(e.contains("providers[0].keys_file") && e.contains("missing.txt"), "{e}");
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
    let c = ok(&format!("[server]\nadmin_key = \"env:ROTOR_ADMIN_KEY\"\n{PROVIDER}"));
    assert_eq!(
        c.server.admin_key.as_ref().map(Secret::expose),
        Some("admin-secret-000000ad")
    );
}

#[test]
fn base_url_errors_name_the_key() {
    err(
        &PROVIDER.replace("https://api.example.com/v1", "https://u:p@api.example.com/v1"),
        &["providers[0].base_url", "user info"],
    );
    err(
        &PROVIDER.replace("https://api.example.com/v1", "https://api.example.com/v1?x=1"),
        &["providers[0].base_url", "query"],
    );
    let c = ok(&PROVIDER.replace("https://api.example.com/v1", "http://[::1]:18080/v1/"));
    let u = &c.providers[0].base_url;
    assert_eq!(
        (u.host.as_str(), u.port, u.path.as_str(), u.host_header.as_str()),
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
    assert_eq!(a.providers[0].keys[0].id, KeyId::of("p", "sk-test-key-00000001"));
}

#[test]
fn header_names_ignore_case_when_checking_duplicates() {
    err(
        &format!("{PROVIDER}headers = {{ \"X-A\" = \"1\", \"x-a\" = \"2\" }}\n"),
        &["providers[0].headers.x-a", "twice"],
    );
}

#[test]
fn ca_file_and_file_secrets_resolve_against_the_config_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    std::fs::write(dir.path().join("admin.key"), "admin-key-from-file-01\n").unwrap();
    let text = format!("[server]\nadmin_key = \"file:admin.key\"\n[upstream]\nca_file = \"ca.pem\"\n{PROVIDER}");
    let source = ConfigSource::File(dir.path().join("rotor.toml"));
    let c = parse_str_with_env(&text, source.clone(), &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.upstream.ca_file, Some(dir.path().join("ca.pem")));
    assert_eq!(
        c.server.admin_key.as_ref().map(Secret::expose),
        Some("admin-key-from-file-01")
    );
    let missing = text.replace("ca.pem", "nope.pem");
    let e = parse_str_with_env(&missing, source, &env).unwrap_err().0;
    assert!(e.contains("upstream.ca_file") && e.contains("nope.pem"), "{e}");
}

#[test]
fn responses_mode_defaults_to_native_only_for_openai_itself_and_is_checked() {
    let c = ok(PROVIDER);
    assert_eq!(c.providers[0].responses, ResponsesMode::Translate);
    let c = ok(&PROVIDER.replace("api.example.com", "api.openai.com"));
    assert_eq!(c.providers[0].responses, ResponsesMode::Native);
    let c = ok(&format!(
        "{}responses = \"translate\"\n",
        PROVIDER.replace("api.example.com", "api.openai.com")
    ));
    assert_eq!(c.providers[0].responses, ResponsesMode::Translate);
    let c = ok(&format!("{PROVIDER}responses = \"native\"\n"));
    assert_eq!(c.providers[0].responses, ResponsesMode::Native);
    err(
        &format!("{PROVIDER}responses = \"passthrough\"\n"),
        &["providers[0].responses", "native | translate"],
    );
    err(
        &format!(
            "{}responses = \"native\"\n",
            PROVIDER.replace("\"openai\"", "\"anthropic\"")
        ),
        &["providers[0].responses", "needs kind = \"openai\""],
    );
    let c = ok(&PROVIDER.replace("\"openai\"", "\"gemini\""));
    assert_eq!(c.providers[0].responses, ResponsesMode::Translate);
}

#[test]
fn kind_defaults_and_kind_only_settings() {
    let replicate = "[[providers]]\nname = \"r\"\nkind = \"replicate\"\nkeys = [\"r8_k\"]\n";
    let c = ok(replicate);
    let p = &c.providers[0];
    assert_eq!(
        (p.base_url.host.as_str(), p.base_url.path.as_str()),
        ("api.replicate.com", "/v1")
    );
    assert_eq!(p.poll, Poll::default());
    let c = ok(&format!("{replicate}poll_interval_ms = 250\npoll_max_wait_ms = 5000\n"));
    assert_eq!(c.providers[0].poll.interval, std::time::Duration::from_millis(250));
    assert_eq!(c.providers[0].poll.max_wait, std::time::Duration::from_millis(5000));
    err(
        &format!("{replicate}poll_interval_ms = 10\n"),
        &["providers[0].poll_interval_ms", "50..=60000"],
    );
    err(
        &format!("{replicate}poll_max_wait_ms = 100\n"),
        &["providers[0].poll_max_wait_ms", "1000..=3600000"],
    );
    err(
        &format!("{replicate}poll_interval_ms = 5000\npoll_max_wait_ms = 2000\n"),
        &["providers[0].poll_max_wait_ms", "at least poll_interval_ms"],
    );
    err(
        &format!("{PROVIDER}poll_interval_ms = 500\n"),
        &["providers[0].poll_interval_ms", "only kind = \"replicate\""],
    );
    err(
        &format!("{PROVIDER}account_id = \"abc\"\n"),
        &["providers[0].account_id", "only kind = \"cloudflare\""],
    );
    let cloudflare = "[[providers]]\nname = \"cf\"\nkind = \"cloudflare\"\nkeys = [\"cf_k\"]\n";
    err(cloudflare, &["providers[0].account_id", "needs account_id"]);
    let c = ok(&format!("{cloudflare}account_id = \"0123abcd\"\n"));
    let p = &c.providers[0];
    assert_eq!(
        (p.base_url.host.as_str(), p.base_url.path.as_str()),
        ("api.cloudflare.com", "/client/v4/accounts/0123abcd/ai/v1")
    );
    err(
        &format!("{cloudflare}account_id = \"a/b\"\n"),
        &["providers[0].account_id", "letters, digits"],
    );
    // Kinds without a default base URL still need one.
    err(
        "[[providers]]\nname = \"o\"\nkind = \"openai\"\nkeys = [\"k\"]\n",
        &["providers[0].base_url"],
    );
}

#[test]
fn replicate_prefer_wait_stays_below_the_first_byte_timeout() {
    let replicate = "[[providers]]\nname = \"r\"\nkind = \"replicate\"\nkeys = [\"r8_k\"]\n";
    let c = ok(replicate);
    assert_eq!(c.providers[0].poll.prefer_wait, std::time::Duration::from_secs(60));
    let c = ok(&format!("[upstream]\nfirst_byte_timeout_ms = 20000\n{replicate}"));
    assert_eq!(c.providers[0].poll.prefer_wait, std::time::Duration::from_secs(19));
    let c = ok(&format!("{replicate}poll_max_wait_ms = 5000\n"));
    assert_eq!(c.providers[0].poll.prefer_wait, std::time::Duration::from_secs(5));
}
