//! `rotor check` for Vertex AI providers: what is refused (with the key path, never a secret),
//! the default hosts per region, the pool key of a credential, and the shipped example block.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rotor::config::{self, ConfigSource};

const GEMINI: &str = "gemini-2.0-flash";
const SECRET: &str = "GOCSPX-client-secret-do-not-leak";
const REFRESH: &str = "1//refresh-token-do-not-leak";

fn oauth(client_id: &str) -> String {
    format!(r#"{{ client_id = "{client_id}", client_secret = "{SECRET}", refresh_token = "{REFRESH}" }}"#)
}

fn check(body: &str) -> String {
    let text = format!("[[providers]]\nname = \"v\"\nkind = \"vertex\"\nmodels = [\"{GEMINI}\"]\n{body}\n");
    match config::parse_str(&text, ConfigSource::Environment) {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn check_refuses_incomplete_vertex_providers_with_the_key_path() {
    let cred = format!("google_oauth = {}", oauth("c"));
    let full = format!("project = \"p\"\nregion = \"us-east5\"\n{cred}");
    assert_eq!(check(&full), "ok");
    let cases = [
        (format!("region = \"us-east5\"\n{cred}"), "providers[0].project"),
        (format!("project = \"p\"\n{cred}"), "providers[0].region"),
        ("project = \"p\"\nregion = \"r\"".to_owned(), "providers[0].google_oauth"),
        (format!("{full}\nkeys = [\"k\"]"), "providers[0].keys"),
        (format!("project = \"p/../x\"\nregion = \"r\"\n{cred}"), "providers[0].project"),
        (
            "project = \"p\"\nregion = \"r\"\nservice_account = '{\"type\":\"service_account\",\"client_email\":\"a@b\",\"private_key\":\"nope\"}'".to_owned(),
            "providers[0].service_account",
        ),
        (
            "project = \"p\"\nregion = \"r\"\ngoogle_oauth = { client_id = \"c\", client_secret = \"env:ROTOR_TEST_UNSET_SECRET\", refresh_token = \"r\" }".to_owned(),
            "providers[0].google_oauth.client_secret",
        ),
    ];
    for (body, path) in cases {
        let message = check(&body);
        assert!(message.contains(path), "{body}\n=> {message}");
        assert!(!message.contains(SECRET) && !message.contains(REFRESH), "{message}");
    }
    let other =
        "[[providers]]\nname = \"o\"\nkind = \"openai\"\nbase_url = \"http://x\"\nkeys = [\"k\"]\nproject = \"p\"\n";
    let message = config::parse_str(other, ConfigSource::Environment)
        .unwrap_err()
        .to_string();
    assert!(message.contains("providers[0].project"), "{message}");
}

#[test]
fn global_region_and_default_hosts() {
    let text = format!(
        "[[providers]]\nname = \"v\"\nkind = \"vertex\"\nproject = \"p\"\nregion = \"global\"\n{}\n[[providers]]\nname = \"w\"\nkind = \"vertex\"\nproject = \"p\"\nregion = \"europe-west1\"\n{}\n",
        format_args!("google_oauth = {}", oauth("c")),
        format_args!("google_oauth = {}", oauth("d"))
    );
    let c = config::parse_str(&text, ConfigSource::Environment).unwrap();
    assert_eq!(c.providers[0].base_url.host, "aiplatform.googleapis.com");
    assert_eq!(c.providers[0].base_url.path, "/v1/projects/p/locations/global");
    assert_eq!(c.providers[1].base_url.host, "europe-west1-aiplatform.googleapis.com");
    let eu = text.replace("europe-west1", "eu");
    let c2 = config::parse_str(&eu, ConfigSource::Environment).unwrap();
    assert_eq!(c2.providers[1].base_url.host, "aiplatform.eu.rep.googleapis.com");
    let key = &c.providers[0].keys[0];
    assert!(
        !key.secret.expose().contains(REFRESH),
        "the pool key is a descriptor, not the refresh token"
    );
    assert_eq!(c.providers[0].keys.len(), 1);
    let vertex = c.providers[0].vertex.as_ref().unwrap();
    assert_eq!(vertex.grants.len(), 1);
    assert_eq!(vertex.grants[0].token_url.raw, "https://oauth2.googleapis.com/token");
    assert!(c.providers[1].keys[0].secret.expose().starts_with("oauth:d:"));
}

#[test]
fn the_example_vertex_block_parses() {
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/rotor.example.toml")).unwrap();
    let block = example
        .split("# --- vertex example begin ---\n")
        .nth(1)
        .and_then(|rest| rest.split("# --- vertex example end ---").next())
        .expect("the example has a Vertex block");
    let text: String = block
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .filter(|l| !l.trim_start().starts_with('#') && !l.starts_with("service_account"))
        .map(|l| {
            format!(
                "{}\n",
                l.replace("env:G_SECRET", "s3cret").replace("env:G_REFRESH", "r3fresh")
            )
        })
        .collect();
    let c = config::parse_str(&text, ConfigSource::Environment).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(c.providers[0].base_url.host, "us-east5-aiplatform.googleapis.com");
    assert_eq!(c.providers[0].keys.len(), 1);
}
