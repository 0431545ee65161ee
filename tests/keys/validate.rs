//! The key pool's health (issue 15): `/admin/keys/validate` and its interval, `remove_invalid`,
//! `highest-balance`, keys addressed by their listed id, and health across a reload. A
//! submodule of `keys` (split to keep files small), sharing its helpers.

use super::*;

const GOOD: &str = "sk-keys-good-0000g1";
const BAD: &str = "sk-keys-fail401-00b1";
const FLAKY: &str = "sk-keys-flaky-000f1";

fn fault_401() -> KeyFault {
    KeyFault {
        status: Some(401),
        ..Default::default()
    }
}

fn with_provider_lines(keys: &[&str], lines: &str) -> Conf {
    let body = pool_body(keys).replace(
        "models = [\"gpt-4o-mini\"]",
        &format!("models = [\"gpt-4o-mini\"]\n{lines}"),
    );
    Conf {
        server: format!("admin_key = \"{ADMIN}\""),
        ..Conf::with_body(&body)
    }
}

/// The listed entry of `key` (masked match).
fn entry(h: &Harness, key: &str) -> Option<sonic_rs::Value> {
    let v = admin(h, "GET", "/admin/keys", "").json();
    let m = masked(key);
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"].as_str() == Some(m.as_str()))
        .cloned()
}

fn state(h: &Harness, key: &str) -> String {
    entry(h, key)
        .map(|e| e["state"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn verdicts(r: &Response) -> Vec<(String, Option<bool>)> {
    r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["key"].as_str().unwrap().to_owned(), k["valid"].as_bool()))
        .collect()
}

#[test]
fn validate_disables_refused_keys_and_restores_them_when_they_pass() {
    let h = Harness::start(with_provider_lines(&[GOOD, BAD, FLAKY], ""));
    h.mock().faults.set(FLAKY, fault_401());
    let r = admin(&h, "POST", "/admin/keys/validate", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        verdicts(&r),
        [
            (masked(GOOD), Some(true)),
            (masked(BAD), Some(false)),
            (masked(FLAKY), Some(false))
        ]
    );
    assert!(!r.text().contains(BAD), "no secret in the answer");
    assert_eq!(
        (state(&h, GOOD), state(&h, BAD), state(&h, FLAKY)),
        ("active".into(), "invalid".into(), "invalid".into())
    );
    let bad = entry(&h, BAD).unwrap();
    assert_eq!(bad["last_status"].as_u64(), Some(401));
    assert!(bad["last_validated"].as_u64().is_some());
    assert!(bad["last_error"].as_str().unwrap().contains("401"));
    // Disabled keys get no traffic.
    for _ in 0..4 {
        assert_eq!(h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    }
    assert_eq!((hits(&h, BAD), hits(&h, FLAKY)), (0, 0));
    // The flaky key passes again: validating just it (one provider, given keys) restores it.
    h.mock().faults.clear(FLAKY);
    let r = admin(
        &h,
        "POST",
        "/admin/keys/validate",
        &format!(r#"{{"provider":"mock","keys":["{FLAKY}"]}}"#),
    );
    assert_eq!(verdicts(&r), [(masked(FLAKY), Some(true))]);
    assert_eq!(state(&h, FLAKY), "active");
    let r = admin(&h, "POST", "/admin/keys/validate", r#"{"provider":"mock"}"#);
    assert_eq!(verdicts(&r).len(), 3);
    // Bad selections: clear errors.
    assert_eq!(
        admin(&h, "POST", "/admin/keys/validate", r#"{"provider":"nope"}"#).status,
        404
    );
    assert_eq!(
        admin(&h, "POST", "/admin/keys/validate", r#"{"keys":["x"]}"#).status,
        400
    );
    assert_eq!(admin(&h, "POST", "/admin/keys/validate", "[1]").status, 400);
    let r = admin(
        &h,
        "POST",
        "/admin/keys/validate",
        r#"{"provider":"mock","keys":["sk-not-in-the-pool"]}"#,
    );
    assert_eq!(r.status, 404);
}

#[test]
fn validate_interval_disables_a_key_that_starts_failing_without_client_traffic() {
    let h = Harness::start(with_provider_lines(&[GOOD, FLAKY], "validate_interval_ms = 1000"));
    assert!(
        eventually(Duration::from_secs(5), || entry(&h, FLAKY)
            .is_some_and(|e| e["last_validated"].as_u64().is_some())),
        "validated in the background at start"
    );
    assert_eq!(state(&h, FLAKY), "active");
    h.mock().faults.set(FLAKY, fault_401());
    assert!(
        eventually(Duration::from_secs(5), || state(&h, FLAKY) == "invalid"),
        "disabled by background validation"
    );
    assert_eq!(state(&h, GOOD), "active");
    h.mock().faults.clear(FLAKY);
    assert!(
        eventually(Duration::from_secs(5), || state(&h, FLAKY) == "active"),
        "restored when it validates again"
    );
    let chats = h
        .recorded()
        .iter()
        .filter(|r| r.target.ends_with("/chat/completions"))
        .count();
    assert_eq!(chats, 0, "no client traffic was needed");
}

#[test]
fn remove_invalid_deletes_runtime_keys_that_stay_invalid_but_never_config_keys() {
    let h = Harness::start(with_provider_lines(
        &[GOOD, BAD],
        "validate_interval_ms = 1000\nremove_invalid = true",
    ));
    let r = admin(
        &h,
        "POST",
        "/admin/keys",
        &format!(r#"{{"provider":"mock","key":"{FLAKY}"}}"#),
    );
    assert_eq!(r.status, 200);
    h.mock().faults.set(FLAKY, fault_401());
    assert!(
        eventually(Duration::from_secs(8), || entry(&h, FLAKY).is_none()),
        "the invalid runtime key is deleted"
    );
    assert_eq!(state(&h, BAD), "invalid", "a config key is disabled, never deleted");
    assert_eq!(state(&h, GOOD), "active");
}

#[test]
fn highest_balance_spends_the_richest_key_first_and_skips_broke_ones() {
    const POOR: &str = "sk-keys-poor-0000p1";
    const RICH: &str = "sk-keys-rich-0000r1";
    const BROKE: &str = "sk-keys-broke-000z1";
    let mock = start_mock();
    for (key, balance) in [(POOR, 5.0), (RICH, 50.0), (BROKE, 0.0)] {
        mock.faults.set(
            key,
            KeyFault {
                balance: Some(balance),
                ..Default::default()
            },
        );
    }
    let lines =
        "key_strategy = \"highest-balance\"\nbalance = { path = \"/user/info\", field = \"/data/totalBalance\" }";
    let h = Harness::with_mock(mock, with_provider_lines(&[BROKE, POOR, RICH], lines));
    let balance = |h: &Harness, key| entry(h, key).and_then(|e| e["balance"].as_f64());
    assert!(
        eventually(Duration::from_secs(5), || [POOR, RICH, BROKE]
            .iter()
            .all(|k| balance(&h, k).is_some())),
        "balances fetched at start"
    );
    assert_eq!(balance(&h, RICH), Some(50.0));
    for _ in 0..4 {
        assert_eq!(h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    }
    assert_eq!((hits(&h, RICH), hits(&h, POOR), hits(&h, BROKE)), (4, 0, 0));
    // The rich key is spent: after a validation (which fetches balances) the poor one leads.
    h.mock().faults.set(
        RICH,
        KeyFault {
            balance: Some(1.0),
            ..Default::default()
        },
    );
    let r = admin(&h, "POST", "/admin/keys/validate", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(balance(&h, RICH), Some(1.0));
    for _ in 0..3 {
        assert_eq!(h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    }
    assert_eq!(
        (hits(&h, RICH), hits(&h, POOR), hits(&h, BROKE)),
        (4, 3, 0),
        "the broke key is never used"
    );
}

/// The listed `id` of `key` (masked match).
fn id_of(h: &Harness, key: &str) -> String {
    entry(h, key).unwrap()["id"].as_str().unwrap().to_owned()
}

#[test]
fn keys_are_validated_removed_and_enabled_by_their_listed_id() {
    let h = Harness::start(with_provider_lines(&[GOOD, FLAKY], ""));
    admin(
        &h,
        "POST",
        "/admin/keys",
        &format!(r#"{{"provider":"mock","key":"{RT1}"}}"#),
    );
    h.mock().faults.set(FLAKY, fault_401());
    // Validate one key by id: only it is checked, and it turns invalid.
    let body = format!(r#"{{"provider":"mock","ids":["{}"]}}"#, id_of(&h, FLAKY));
    let r = admin(&h, "POST", "/admin/keys/validate", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(verdicts(&r), [(masked(FLAKY), Some(false))]);
    assert_eq!(state(&h, FLAKY), "invalid");
    assert!(entry(&h, GOOD).unwrap()["last_validated"].as_u64().is_none());
    // Remove a runtime key by id (body), disable a config key by id (query).
    let r = admin(
        &h,
        "DELETE",
        "/admin/keys",
        &format!(r#"{{"provider":"mock","id":"{}"}}"#, id_of(&h, RT1)),
    );
    assert_eq!(
        r.json()["removed"][0].as_str(),
        Some(masked(RT1).as_str()),
        "{}",
        r.text()
    );
    let good = id_of(&h, GOOD);
    let r = admin(&h, "DELETE", &format!("/admin/keys?provider=mock&id={good}"), "");
    assert_eq!(
        r.json()["disabled"][0].as_str(),
        Some(masked(GOOD).as_str()),
        "{}",
        r.text()
    );
    assert_eq!(
        listed(&h),
        [row(FLAKY, "config", "invalid"), row(GOOD, "config", "disabled")]
    );
    // The disabled key keeps its id and is enabled again by it.
    assert_eq!(id_of(&h, GOOD), good);
    let r = admin(
        &h,
        "POST",
        "/admin/keys",
        &format!(r#"{{"provider":"mock","ids":["{good}"]}}"#),
    );
    assert_eq!(
        r.json()["added"][0].as_str(),
        Some(masked(GOOD).as_str()),
        "{}",
        r.text()
    );
    assert_eq!(state(&h, GOOD), "active");
    // Unknown or malformed ids: 404, nothing changed; ids need their provider.
    for (method, path, body, status) in [
        (
            "POST",
            "/admin/keys/validate",
            r#"{"provider":"mock","ids":["00000000000000ff"]}"#,
            404,
        ),
        ("POST", "/admin/keys/validate", r#"{"ids":["00000000000000ff"]}"#, 400),
        ("POST", "/admin/keys/validate", r#"{"provider":"mock","ids":[7]}"#, 400),
        ("DELETE", "/admin/keys", r#"{"provider":"mock","id":"not-hex"}"#, 404),
        (
            "POST",
            "/admin/keys",
            r#"{"provider":"mock","ids":["00000000000000ff"]}"#,
            404,
        ),
    ] {
        let r = admin(&h, method, path, body);
        assert_eq!(r.status, status, "{method} {path} {body}: {}", r.text());
    }
    assert_eq!(listed(&h).len(), 2);
}

#[test]
fn a_keys_health_and_validation_survive_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rotor.toml");
    let h = start_from_file(start_mock(), &path, &with_provider_lines(&[GOOD, FLAKY], ""));
    h.mock().faults.set(FLAKY, fault_401());
    assert_eq!(admin(&h, "POST", "/admin/keys/validate", "").status, 200);
    assert_eq!(state(&h, FLAKY), "invalid");
    let validated = entry(&h, FLAKY).unwrap()["last_validated"].as_u64();
    // An edited file (so a new generation from a new file) keeps the verdict and its time.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}\n# edited\n")).unwrap();
    let r = admin(&h, "POST", "/admin/reload", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(state(&h, FLAKY), "invalid", "a reload keeps the key disabled");
    assert_eq!(entry(&h, FLAKY).unwrap()["last_validated"].as_u64(), validated);
    for _ in 0..3 {
        assert_eq!(h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    }
    assert_eq!(hits(&h, FLAKY), 0, "the invalid key still gets no traffic");
}
