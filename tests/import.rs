//! `rotor import` (issue 16 item 7) on sample files modelled on each tool's README
//! (tests/fixtures/import/): the binary prints a TOML that `rotor check` accepts and lists what
//! it could not carry over on stderr; the imported routes are the original's (models, renames,
//! weights, client scopes), and a request through the imported config reaches the upstream the
//! original would have used, with its key and its upstream model name.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use rotor::config::{self, Config, ConfigSource};
use rotor::mock::MockServer;
use rotor::runtime;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(name)
}

/// `rotor import PATH`: (exit ok, stdout, stderr).
fn import(path: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rotor"))
        .arg("import")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Writes `toml` and runs `rotor check` on it.
fn check(toml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("imported.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rotor"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rotor check refused the import:\n{}\n{toml}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("config OK"));
}

fn parse(toml: &str) -> Config {
    config::parse_str(toml, ConfigSource::Environment).unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

/// (provider name, upstream model, weight) of each candidate for `model`.
fn candidates(c: &Config, model: &str) -> Vec<(String, String, u32)> {
    let route = c
        .routes
        .by_model
        .get(model)
        .unwrap_or_else(|| panic!("no route for {model}"));
    route
        .candidates
        .iter()
        .map(|cand| {
            let p = &c.providers[cand.provider];
            (p.name.clone(), cand.upstream_model.clone(), p.weight)
        })
        .collect()
}

fn triple(p: &str, m: &str, w: u32) -> (String, String, u32) {
    (p.to_owned(), m.to_owned(), w)
}

/// The imported text with every upstream URL pointed at the mock and the listener on a free
/// loopback port, started.
fn start_imported(toml: &str, urls: &[&str], mock: MockServer) -> Harness {
    let mut text = toml.to_owned();
    for url in urls {
        text = text.replace(url, mock.base_url().trim_end_matches("/v1"));
    }
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("listen = ") {
                "listen = \"127.0.0.1:0\""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut config = config::parse_str(&format!("{text}\n[storage]\npath = \"\"\n"), ConfigSource::Environment)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    // An import without a listen line gets the default port; the test takes a free one.
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    let running = runtime::start(config, None).unwrap();
    let addr = running.addr;
    Harness {
        mock: Some(mock),
        running: Some(running),
        addr,
    }
}

fn chat_as(h: &Harness, key: &str, model: &str) -> Response {
    let auth = format!("Bearer {key}");
    h.client().request(
        "POST",
        "/v1/chat/completions",
        &[("authorization", &auth), ("content-type", "application/json")],
        chat(model).as_bytes(),
    )
}

/// (bearer key, upstream model) of the last chat the mock saw.
fn last_upstream(h: &Harness) -> (String, String) {
    let r = h
        .recorded()
        .into_iter()
        .rev()
        .find(|r| r.target.ends_with("/chat/completions"))
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    (
        r.bearer().unwrap().to_owned(),
        body["model"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn api_together_apis_json() {
    let (ok, toml, notes) = import(&fixture("apis.json"));
    assert!(ok, "{notes}");
    check(&toml);
    assert!(notes.contains("as api-together apis.json"), "{notes}");
    assert!(notes.contains("picks an available API at random"), "{notes}");
    let c = parse(&toml);
    assert_eq!(c.server.listen.port(), 3001);
    assert_eq!(
        candidates(&c, "gpt-4"),
        [triple("api1", "gpt-4", 1), triple("api2", "gpt-4", 1)],
        "the disabled api3 does not serve"
    );
    assert_eq!(candidates(&c, "gpt-3.5"), [triple("api1", "gpt-3.5-turbo", 1)]);
    assert_eq!(candidates(&c, "claude-2"), [triple("api2", "claude-2", 1)]);
    assert!(toml.contains("rpm = 60") && toml.contains("rpd = 1000") && toml.contains("rpd = 500"));

    // Live: the mapped model reaches api1 with its key and the target name; the client key works.
    let h = start_imported(
        &toml,
        &["https://api.openai.com", "https://backup.example.com"],
        start_mock(),
    );
    let r = chat_as(&h, "sk-together-client-1", "gpt-3.5");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        last_upstream(&h),
        ("sk-together-openai-0001".to_owned(), "gpt-3.5-turbo".to_owned())
    );
    assert_eq!(chat_as(&h, "sk-together-client-1", "claude-2").status, 200);
    assert_eq!(last_upstream(&h).0, "sk-together-backup-0002");
    assert_eq!(chat_as(&h, "not-a-client", "gpt-4").status, 401);
}

#[test]
fn pro_api_yaml() {
    let (ok, toml, notes) = import(&fixture("pro-api.yaml"));
    assert!(ok, "{notes}");
    check(&toml);
    assert!(notes.contains("as pro-api api.yaml"), "{notes}");
    let c = parse(&toml);
    // Renames: only the new name routes, to the upstream name.
    assert_eq!(
        candidates(&c, "qwen2-7b"),
        [triple("siliconflow", "Qwen/Qwen2-7B-Instruct", 1)]
    );
    assert!(!c.routes.by_model.contains_key("Qwen/Qwen2-7B-Instruct"));
    // A name served by two providers balances over both.
    assert_eq!(
        candidates(&c, "deepseek-chat"),
        [
            triple("siliconflow", "deepseek-ai/DeepSeek-V2-Chat", 1),
            triple("deepseek", "deepseek-chat", 1)
        ]
    );
    // balance weights per model are kept (Gemini2 weighs its models 2, 2 and 3).
    assert_eq!(
        candidates(&c, "gemini-1.5-flash"),
        [
            triple("gemini1", "gemini-1.5-flash", 1),
            triple("gemini2", "gemini-1.5-flash", 2)
        ]
    );
    assert_eq!(
        candidates(&c, "gemini-flash"),
        [
            triple("gemini1", "gemini-1.5-flash", 1),
            triple("gemini2-w3", "gemini-1.5-flash", 3)
        ]
    );
    assert_eq!(c.routing.default_model.as_deref(), Some("glm-4-flash"));
    // tokens: `all` = every model; globs and names kept.
    let scopes: Vec<(String, Vec<String>)> = toml_clients(&toml);
    assert_eq!(
        scopes,
        [
            ("sk-111111".to_owned(), vec![]),
            ("sk-222222".to_owned(), vec!["gpt-3.5-turbo".to_owned()])
        ]
    );
    // What rotor cannot take is said, never dropped quietly.
    for said in ["db_cache", "admin password is shorter", "Vertex region set to us-east5"] {
        assert!(notes.contains(said), "{said}: {notes}");
    }
    for provider in ["vertexai_claude", "cloudflare"] {
        let listed = toml.contains(&format!("name = \"{provider}\""));
        assert!(
            listed,
            "{provider} is in the output (served, or commented with the reason)"
        );
        if !c.providers.iter().any(|p| p.name == provider) {
            assert!(notes.contains(&format!("provider {provider} left out")), "{notes}");
        }
    }
    assert!(
        toml.contains("refresh_token = \"vertex-refresh-token\""),
        "secrets kept as given"
    );

    // Live: token-2 may use gpt-3.5-turbo only, which SiliconFlow serves as Qwen2-7B.
    let h = start_imported(&toml, &["https://api.siliconflow.cn"], start_mock());
    let r = chat_as(&h, "sk-222222", "gpt-3.5-turbo");
    assert_eq!(r.status, 200, "{}", r.text());
    let (key, model) = last_upstream(&h);
    assert!(key.starts_with("sf-key-000"), "{key}");
    assert_eq!(model, "Qwen/Qwen2-7B-Instruct");
    assert_eq!(chat_as(&h, "sk-222222", "qwen2-72b").status, 403);
}

/// (key, models) of each `[[clients]]` table in the imported text.
fn toml_clients(toml: &str) -> Vec<(String, Vec<String>)> {
    let v: toml::Value = toml::from_str(toml).unwrap();
    v["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let models = c
                .get("models")
                .and_then(|m| m.as_array())
                .map(|m| m.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default();
            (c["key"].as_str().unwrap().to_owned(), models)
        })
        .collect()
}

#[test]
fn uni_api_yaml() {
    let (ok, toml, notes) = import(&fixture("uni-api.yaml"));
    assert!(ok, "{notes}");
    check(&toml);
    assert!(notes.contains("as uni-api api.yaml"), "{notes}");
    let c = parse(&toml);
    let openai = c.providers.iter().find(|p| p.name == "openai").unwrap();
    assert_eq!(openai.base_url.path, "/v1", "the endpoint path is cut to the base URL");
    assert_eq!(
        candidates(&c, "claude-3-7-sonnet"),
        [triple("anthropic", "claude-3-7-sonnet-20250219", 1)]
    );
    // No model list: served by name through the wildcard route.
    assert!(c.routes.wildcard.is_some());
    assert!(toml.contains("rpm = 15") && toml.contains("rpd = 500") && toml.contains("key_strategy = \"random\""));
    // api_keys: `gemini/*` expands to the gemini provider's names; `<x>` is the literal name.
    assert_eq!(
        toml_clients(&toml),
        [
            (
                "sk-uni-client-admin".to_owned(),
                [
                    "gpt-4o",
                    "claude-3-5-sonnet",
                    "gemini-2.5-flash-preview-04-17",
                    "gemini-2.5-flash"
                ]
                .map(str::to_owned)
                .to_vec()
            ),
            (
                "sk-uni-client-two".to_owned(),
                ["claude-3-7-sonnet", "anthropic/claude-3-5-sonnet"]
                    .map(str::to_owned)
                    .to_vec()
            ),
            ("sk-uni-client-all".to_owned(), vec![]),
        ]
    );
    for said in [
        "provider \"azure\"",
        "preferences.api_key_cooldown_period is not carried over",
        "from every provider serving it",
    ] {
        assert!(notes.contains(said), "{said}: {notes}");
    }
    assert!(
        !notes.contains("sk-uni") && !notes.contains("AIzaSy"),
        "no secret in the notes: {notes}"
    );
}

#[test]
fn ondemand_proxy_config_json() {
    let (ok, toml, notes) = import(&fixture("ondemand-config.json"));
    assert!(notes.contains("as on-demand proxy config.json"), "{notes}");
    assert!(
        notes.contains("1 account(s) sign in with e-mail and password"),
        "{notes}"
    );
    // The provider is printed with the account's API key, the model table and the session
    // time; served when this build has the ondemand kind, else commented with the reason.
    let block: String = toml
        .lines()
        .map(|l| l.trim_start_matches("# "))
        .collect::<Vec<_>>()
        .join("\n");
    for want in [
        "kind = \"ondemand\"",
        "keys = [\"od-key-0002\"]",
        "session_timeout_ms = 600000",
        "gpt-4o = \"predefined-openai-gpt4o\"",
        "\"claude-3.7-sonnet\" = \"predefined-claude-3.7-sonnet\"",
    ] {
        assert!(block.contains(want), "{want}:\n{toml}");
    }
    if ok {
        check(&toml);
        let c = parse(&toml);
        assert_eq!(
            candidates(&c, "gpt-4o"),
            [triple("ondemand", "predefined-openai-gpt4o", 1)]
        );
    } else {
        assert!(notes.contains("provider ondemand left out"), "{notes}");
    }
}

#[test]
fn unknown_or_broken_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text, want) in [
        ("other.json", r#"{"foo":1}"#, "not a format rotor imports"),
        ("bad.json", "{", "not valid JSON"),
        ("bad.yaml", "providers: [", "not valid YAML"),
        ("empty.yaml", "server: {}", "`providers` must be a list"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let (ok, out, err) = import(&path);
        assert!(!ok && out.is_empty(), "{name}");
        assert!(err.contains(want), "{name}: {err}");
    }
    let (ok, _, err) = import(&dir.path().join("missing.json"));
    assert!(!ok && err.contains("cannot read"), "{err}");
}
