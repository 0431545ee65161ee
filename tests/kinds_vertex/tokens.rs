//! Vertex access tokens (a submodule of `kinds_vertex`, split to keep files small, sharing its
//! helpers): refreshed ahead of expiry and once after a 401, probes of a quarantined
//! credential, tokens across a reload, minting over TLS, the service-account JWT grant, and
//! refused grants that name no secret.

use super::*;

#[test]
fn tokens_are_refreshed_ahead_of_expiry() {
    // Two-second tokens: the control thread mints the next one a quarter-life early.
    let h = start(
        "?expires_in=2",
        &format!("google_oauth = {}", oauth("short.apps.googleusercontent.com")),
    );
    assert_eq!(h.post("/v1/chat/completions", &chat(GEMINI), &[]).status, 200);
    let first = model_calls(&h)[0].bearer().unwrap().to_owned();
    assert!(
        eventually(Duration::from_secs(10), || h.mock().vertex.grants().0 >= 3),
        "tokens are refreshed again and again: {:?}",
        h.mock().vertex.grants()
    );
    let r = h.post("/v1/chat/completions", &chat(GEMINI), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let calls = model_calls(&h);
    assert_eq!(calls.len(), 2, "no request met an expired token (no 401 and resend)");
    assert_ne!(calls[1].bearer().unwrap(), first);
}

#[test]
fn a_401_forces_one_refresh_and_one_resend() {
    let h = one_oauth();
    assert_eq!(h.post("/v1/chat/completions", &chat(CLAUDE), &[]).status, 200);
    assert_eq!(h.mock().vertex.grants().0, 1);
    h.mock().vertex.revoke_all();
    let r = h.post("/v1/chat/completions", &chat(CLAUDE), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-rotor-attempts"),
        Some("1"),
        "the resend is not another attempt"
    );
    assert_eq!(h.mock().vertex.grants().0, 2, "one refresh");
    let calls = model_calls(&h);
    assert_eq!(calls.len(), 3, "ok, 401, resent ok");
    assert_eq!(calls[1].bearer(), calls[0].bearer(), "the revoked token was sent once");
    assert_ne!(calls[2].bearer(), calls[1].bearer(), "the resend carries the new token");

    // Still refused after the refresh: the client gets the 401's error, no loop.
    h.mock().vertex.revoke_all();
    h.mock().vertex.reject(true);
    let r = h.post("/v1/chat/completions", &chat(GEMINI), &[]);
    assert!(r.status == 502 && r.text().contains("answered 401"), "{}", r.text());
    assert_eq!(
        model_calls(&h).len(),
        4,
        "one more call: the refused token is not sent again"
    );
}

#[test]
fn a_quarantined_credential_is_probed_with_its_next_token_and_restored() {
    let mock = start_mock();
    let body = vertex_body(
        &mock,
        "",
        &format!("google_oauth = {}", oauth("lone.apps.googleusercontent.com")),
    );
    let conf = Conf {
        retry: "quarantine_ms = 300".to_owned(),
        ..Conf::with_body(&body)
    };
    let h = Harness::with_mock(mock, conf);
    assert_eq!(h.post("/v1/chat/completions", &chat(GEMINI), &[]).status, 200);
    // The token is revoked and no new one can be had: the 401 stands, the key is quarantined.
    h.mock().vertex.revoke_all();
    h.mock().vertex.reject(true);
    let r = h.post("/v1/chat/completions", &chat(GEMINI), &[]);
    assert!(r.status == 502 && r.text().contains("answered 401"), "{}", r.text());
    let refused = h.post("/v1/chat/completions", &chat(GEMINI), &[]);
    assert_ne!(refused.status, 200, "the quarantined key is not used");
    // Grants work again: the control thread mints a token, the probe uses it, the key returns.
    h.mock().vertex.reject(false);
    let back = eventually(Duration::from_secs(10), || {
        h.post("/v1/chat/completions", &chat(GEMINI), &[]).status == 200
    });
    assert!(back, "the credential is restored by its probe");
    let probes = h
        .recorded()
        .into_iter()
        .filter(|r| r.method == "GET" && r.target.ends_with("/locations/us-east5/models"));
    assert!(probes.count() >= 1, "restored by a probe, not by chance");
}

#[test]
fn tokens_survive_a_reload_that_keeps_the_credential() {
    let mock = start_mock();
    let body = vertex_body(
        &mock,
        "",
        &format!("google_oauth = {}", oauth("kept.apps.googleusercontent.com")),
    );
    let conf = Conf::with_body(&body);
    let again = conf.parse(&mock.base_url());
    let h = Harness::with_mock(mock, conf);
    assert_eq!(h.post("/v1/chat/completions", &chat(GEMINI), &[]).status, 200);
    h.running().gateway.install(again).unwrap();
    assert_eq!(h.post("/v1/chat/completions", &chat(CLAUDE), &[]).status, 200);
    assert_eq!(
        h.mock().vertex.grants(),
        (1, 0),
        "the reloaded generation reuses the token"
    );
    let calls = model_calls(&h);
    assert_eq!(calls[0].bearer(), calls[1].bearer());
}

#[test]
fn tokens_are_minted_over_tls_with_the_upstream_ca() {
    let mock = start_mock();
    let tls = tls::start(mock.addr);
    let port = tls.addr.port();
    let body = format!(
        r#"
[[clients]]
name = "tester"
key = "{CLIENT_KEY}"

[[providers]]
name = "vertex"
kind = "vertex"
base_url = "https://localhost:{port}/v1"
project = "rotor-test"
region = "us-east5"
token_url = "https://localhost:{port}/token"
models = ["{GEMINI}"]
google_oauth = {}
"#,
        oauth("tls.apps.googleusercontent.com")
    );
    let conf = Conf {
        upstream: format!("ca_file = \"{}\"", tls.ca_path()),
        ..Conf::with_body(&body)
    };
    let h = Harness::with_mock(mock, conf);
    let r = h.post("/v1/chat/completions", &chat(GEMINI), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.mock().vertex.grants(), (1, 0));
    let token_call = h.recorded().into_iter().find(|c| c.target == "/token").unwrap();
    assert_eq!(token_call.header("host"), Some(format!("localhost:{port}").as_str()));
    let form = String::from_utf8_lossy(&token_call.body).into_owned();
    assert!(
        form.contains("grant_type=refresh_token") && form.contains("client_id=tls.apps"),
        "{form}"
    );
}

#[test]
fn service_account_keys_use_the_signed_jwt_grant() {
    let mock = start_mock();
    let json = std::fs::read_to_string(SA_FIXTURE).unwrap();
    let pem = sonic_rs::get(json.as_str(), ["private_key"])
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    let key = rotor::config::vertex::signing_key(&pem).unwrap();
    use ring::signature::KeyPair;
    mock.vertex.trust_key(key.0.public_key().as_ref());
    let body = vertex_body(&mock, "", &format!("service_account = \"file:{SA_FIXTURE}\""));
    let h = Harness::with_mock(mock, Conf::with_body(&body));
    let r = h.post("/v1/chat/completions", &chat(GEMINI), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.mock().vertex.grants(), (0, 1));
    let calls = model_calls(&h);
    assert!(calls[0]
        .bearer()
        .unwrap()
        .starts_with("ya29.mock-rotor-test@rotor-test.iam.gserviceaccount.com"));
}

#[test]
fn a_jwt_signed_with_another_key_is_refused() {
    let mock = start_mock();
    let json = std::fs::read_to_string(SA_FIXTURE).unwrap();
    let pem = sonic_rs::get(json.as_str(), ["private_key"])
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    let key = rotor::config::vertex::signing_key(&pem).unwrap();
    use ring::signature::KeyPair;
    // The same key with its modulus changed: not the key the JWT was signed with.
    let mut other = key.0.public_key().as_ref().to_vec();
    let i = other.len() / 2;
    other[i] ^= 0x55;
    mock.vertex.trust_key(&other);
    let body = vertex_body(&mock, "", &format!("service_account = \"file:{SA_FIXTURE}\""));
    let h = Harness::with_mock(mock, Conf::with_body(&body));
    let r = h.post("/v1/chat/completions", &chat(GEMINI), &[]);
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("Invalid JWT Signature"), "{}", r.text());
    assert_eq!(h.mock().vertex.grants(), (0, 0));
    assert!(model_calls(&h).is_empty());
}

#[test]
fn a_refused_grant_is_a_clean_error_that_names_no_secret() {
    let h = one_oauth();
    h.mock().vertex.reject(true);
    let r = h.post("/v1/chat/completions", &chat(GEMINI), &[]);
    assert_eq!(r.status, 502, "{}", r.text());
    let text = r.text();
    assert!(
        text.contains("invalid_grant") || text.contains("access token"),
        "{text}"
    );
    assert!(!text.contains(SECRET) && !text.contains(REFRESH), "{text}");
    // The grant secrets went to the token endpoint only.
    for call in h.recorded() {
        let seen = format!("{:?} {}", call.headers, String::from_utf8_lossy(&call.body));
        let to_token = call.target.starts_with("/token");
        assert!(
            to_token || (!seen.contains("do-not-leak") && !seen.contains("GOCSPX")),
            "{seen}"
        );
    }
    h.mock().vertex.reject(false);
    let ok = eventually(Duration::from_secs(10), || {
        h.post("/v1/chat/completions", &chat(GEMINI), &[]).status == 200
    });
    assert!(ok, "the credential recovers once the endpoint grants again");
    let metrics = h.client().get("/metrics", &[]).text();
    let value = |series: &str| -> u64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(series))
            .unwrap_or_else(|| panic!("{series}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value("rotor_token_grants_total{outcome=\"failed\"}") >= 1);
    assert!(value("rotor_token_grants_total{outcome=\"ok\"}") >= 1);
    assert_eq!(value("rotor_token_credentials{state=\"usable\"}"), 1);
}
