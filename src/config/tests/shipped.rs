//! Clients, routing, the env quick start, and the shipped example and demo configs.

use super::super::*;
use super::*;

#[test]
fn client_names_and_keys_unique_without_revealing_the_key() {
    let client = |name: &str, key: &str| format!("[[clients]]\nname = \"{name}\"\nkey = \"{key}\"\n");
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
    let c = ok(&format!(
        "[routing]\ndefault_model = \"gpt-4o-mini\"\nfallbacks = {{ \"gpt-4o\" = [\"gpt-4o-mini\"] }}\n{listed}"
    ));
    assert_eq!(c.routing.default_model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(c.routing.fallbacks["gpt-4o"], ["gpt-4o-mini"]);
    // A wildcard provider serves any name, so any default is routable.
    assert!(parse(&format!("[routing]\ndefault_model = \"whatever\"\n{PROVIDER}")).is_ok());
}

#[test]
fn config_debug_never_contains_secrets() {
    let c = ok(&format!("[server]\nadmin_key = \"env:ROTOR_ADMIN_KEY\"\n[[clients]]\nname = \"c\"\nkey = \"client-secret-value-1\"\n{PROVIDER}"));
    let dbg = format!("{c:?}");
    for secret in ["admin-secret", "client-secret-value", "sk-test-key"] {
        assert!(!dbg.contains(secret), "{secret} leaked");
    }
    let text = c.route_table_text();
    assert!(!text.contains("sk-test-key") && text.contains("…0001"), "{text}");
}

#[test]
fn env_quick_start() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |n: &str| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string())
    };
    assert!(from_env_map(vars(&[])).unwrap().is_none());
    let c = from_env_map(vars(&[
        ("ROTOR_UPSTREAM_URL", "https://api.example.com/v1"),
        ("ROTOR_UPSTREAM_KEYS", " sk-env-key-0001 , ,sk-env-key-0002,"),
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
    let e = from_env_map(vars(&[("ROTOR_UPSTREAM_URL", "h:1"), ("ROTOR_UPSTREAM_KEYS", "k")]))
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
    let c = parse_str_with_env(&text, ConfigSource::File(path), &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.providers[0].keys.len(), 2);
    assert_eq!(c.clients[0].key.expose(), "web-client-key-0000we");
    assert!(c.server.admin_key.is_some());
    assert!(c.clients[0].allows("gpt-4o") && !c.clients[0].allows("gemini-pro"));
    assert_eq!(
        c.routes.get("gpt-3.5").unwrap().candidates[0].upstream_model,
        "gpt-4o-mini"
    );
    let ondemand = c.providers.iter().find(|p| p.kind == ProviderKind::OnDemand).unwrap();
    assert_eq!(ondemand.sessions.map(|s| s.max), Some(10_000));
    // The commented examples of the other kinds parse too, once uncommented.
    let (start, end) = (
        text.find("# --- more kinds").unwrap(),
        text.find("# --- end of more kinds").unwrap(),
    );
    let more: String = text[start..end]
        .lines()
        .skip(1)
        .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
        .collect::<Vec<_>>()
        .join("\n");
    let more_env = |name: &str| {
        let upstream = name.ends_with("_API_KEY") || name == "CLOUDFLARE_API_TOKEN";
        env(name).or_else(|| upstream.then(|| format!("{name}-value")))
    };
    let c = parse_str_with_env(&format!("{text}\n{more}"), ConfigSource::Environment, &more_env)
        .unwrap_or_else(|e| panic!("{e}\n{more}"));
    let kinds: Vec<ProviderKind> = c.providers.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds[1..],
        [
            ProviderKind::OnDemand,
            ProviderKind::Replicate,
            ProviderKind::Cohere,
            ProviderKind::Cloudflare
        ]
    );
    assert_eq!(c.providers[4].base_url.path, "/client/v4/accounts/0123abcd/ai/v1");
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
    assert_eq!(cand("gpt-4o-mini"), [(0, s("gpt-4o-mini")), (1, s("gpt-4o-mini"))]);
    assert_eq!(cand("gpt-4o"), [(0, s("gpt-4o"))]);
    assert_eq!(cand("gpt-3.5-turbo"), [(0, s("gpt-4o-mini"))]);
    assert_eq!(cand("text-embedding-3-small"), [(1, s("text-embedding-3-small"))]);
    assert!(c.routes.wildcard.is_none());
    assert_eq!(c.routes.len, 4);
    let mut idx: Vec<usize> = c.routes.by_model.values().map(|r| r.index).collect();
    idx.sort_unstable();
    assert_eq!(idx, [0, 1, 2, 3], "dense indices");
    assert_eq!((c.providers[0].weight, c.providers[1].weight), (1, 2));
    assert_eq!((c.providers[0].keys.len(), c.providers[1].keys.len()), (3, 2));
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

#[test]
fn replicate_seed_tool_quick_start() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |n: &str| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string())
    };
    // The seed tool's own variables, no URL: a Replicate pool on 0.0.0.0:PORT.
    let c = from_env_map(vars(&[
        ("REPLICATE_API_KEYS", "r8_one_0001,r8_two_0002"),
        ("AUTH_KEY", "secret-client-key"),
        ("PORT", "3000"),
    ]))
    .unwrap()
    .unwrap();
    let p = &c.providers[0];
    assert_eq!((p.kind, p.keys.len()), (ProviderKind::Replicate, 2));
    assert_eq!(p.base_url.host, "api.replicate.com");
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:3000");
    assert!(c.clients.len() == 1 && c.clients[0].key.ct_eq(b"secret-client-key"));
    // ROTOR_UPSTREAM_KIND and ROTOR_UPSTREAM_URL win; ROTOR_LISTEN wins over PORT.
    let c = from_env_map(vars(&[
        ("REPLICATE_API_KEYS", "r8_one_0001"),
        ("ROTOR_UPSTREAM_KIND", "replicate"),
        ("ROTOR_UPSTREAM_URL", "http://127.0.0.1:9/v1"),
        ("ROTOR_LISTEN", "127.0.0.1:7000"),
        ("PORT", "3000"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(c.providers[0].base_url.host_header, "127.0.0.1:9");
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:7000");
    let e = from_env_map(vars(&[("REPLICATE_API_KEYS", "k"), ("PORT", "http")]))
        .unwrap_err()
        .0;
    assert!(e.contains("PORT"), "{e}");
    let e = from_env_map(vars(&[("ROTOR_UPSTREAM_KEYS", "k"), ("ROTOR_UPSTREAM_KIND", "bogus")]))
        .unwrap_err()
        .0;
    assert!(
        e.contains("providers[0].kind") && e.contains("ROTOR_UPSTREAM_KIND"),
        "{e}"
    );
    // openai has no default URL: the message says which key is missing.
    let e = from_env_map(vars(&[("ROTOR_UPSTREAM_KEYS", "k")])).unwrap_err().0;
    assert!(e.contains("base_url"), "{e}");
}
