//! `/metrics` stays bounded whatever clients send (issue 12, item 5), over real sockets: label
//! length, the series budget with its overflow counter, the body size cap, request records'
//! model names, and `server.metrics_key`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

const ADMIN: &str = "adm-key-0000-0001";
const METRICS_KEY: &str = "metrics-key-0000-0042";

/// A wildcard provider (no `models`): it serves any model name a client sends.
fn wildcard_conf(server: &str) -> Conf {
    Conf {
        server: format!("admin_key = \"{ADMIN}\"\n{server}"),
        body: format!(
            r#"
[[clients]]
name = "tester"
key = "{CLIENT_KEY}"

[[providers]]
name = "mock"
kind = "openai"
base_url = "{{MOCK}}"
keys = ["{POOL_KEY}"]
"#
        ),
        ..Default::default()
    }
}

fn scrape(h: &Harness) -> Response {
    h.client().request("GET", "/metrics", &[], b"")
}

fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[test]
fn long_model_names_are_cut_and_cannot_mint_series() {
    let h = Harness::start(wildcard_conf("metrics_max_series = 20"));
    let requests = 30;
    for i in 0..requests {
        // 255 bytes: the longest a client may send (longer names are refused at inspection,
        // tests/upstream_targets.rs), twice the label cap.
        let model = format!("m{i:03}-{}", "x".repeat(250));
        let r = h.post("/v1/chat/completions", &chat(&model), &[]);
        assert_eq!(r.status, 200, "the wildcard provider serves any name");
    }
    let total = |text: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with("rotor_requests_total{endpoint=\"chat/completions\""))
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
            .sum()
    };
    assert!(eventually(Duration::from_secs(3), || total(&scrape(&h).text()) == requests));
    let text = scrape(&h).text();
    assert!(text.len() < 64 * 1024, "30 long names gave a {} byte body", text.len());
    let longest = text.lines().map(str::len).max().unwrap();
    assert!(longest < 400, "a label longer than the cap: {longest} bytes");
    assert!(text.contains(&format!("model=\"m000-{}…\"", "x".repeat(120))), "{text}");
    let series = text
        .lines()
        .filter(|l| l.starts_with("rotor_requests_total{") || l.starts_with("rotor_tokens_total{"))
        .filter(|l| l.contains(r#"provider="mock""#) && !l.contains(r#"model="(other)""#))
        .count();
    // Each routed model takes one requests series and one tokens series (4 lines, one per kind).
    assert_eq!(
        series,
        10 + 10 * 4,
        "20 series of budget: 10 models, each in both families"
    );
    assert!(
        text.contains(r#"model="(other)",provider="mock",status="200"} 20"#),
        "{text}"
    );
    assert_eq!(counter(&text, "rotor_metrics_series_dropped_total"), 40);

    // The request log keeps a bounded name too.
    let auth = format!("Bearer {ADMIN}");
    let logs = || {
        h.client()
            .request("GET", "/admin/logs?limit=100", &[("authorization", &auth)], b"")
    };
    assert!(eventually(Duration::from_secs(3), || logs().json()["total"].as_u64()
        == Some(requests)));
    let log = logs().json();
    for row in log["data"].as_array().unwrap().iter() {
        for field in ["model", "upstream_model"] {
            let name = row[field].as_str().unwrap();
            assert!(
                name.len() <= 256 && name.starts_with('m'),
                "{field} kept {} bytes",
                name.len()
            );
        }
    }
}

#[test]
fn an_unknown_model_served_by_the_default_counts_under_the_default() {
    let h = Harness::start(Conf {
        routing: "default_model = \"gpt-4o-mini\"".into(),
        ..Default::default()
    });
    for i in 0..5 {
        let r = h.post("/v1/chat/completions", &chat(&format!("made-up-{i}")), &[]);
        assert_eq!(r.status, 200);
    }
    let label =
        r#"rotor_requests_total{endpoint="chat/completions",model="gpt-4o-mini",provider="mock",status="200"} 5"#;
    assert!(eventually(Duration::from_secs(3), || scrape(&h).text().contains(label)));
    assert!(
        !scrape(&h).text().contains("made-up"),
        "client-chosen names never label a series"
    );
}

/// A model a request was refused for (no route) labels nothing, neither a series nor the
/// request's record; the model of a routed request labels both (the model is kept once per
/// request, from `forward` to `finish`, issue 18).
#[test]
fn a_model_without_a_route_labels_nothing() {
    let h = Harness::start(Conf {
        server: format!("admin_key = \"{ADMIN}\""),
        ..Default::default()
    });
    assert_eq!(
        h.post("/v1/chat/completions", &chat("no-such-model-77"), &[]).status,
        404
    );
    assert_eq!(h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    let routed =
        r#"rotor_requests_total{endpoint="chat/completions",model="gpt-4o-mini",provider="mock",status="200"} 1"#;
    assert!(eventually(Duration::from_secs(3), || scrape(&h)
        .text()
        .contains(routed)));
    let text = scrape(&h).text();
    let refused = r#"rotor_requests_total{endpoint="chat/completions",model="",provider="",status="404"} 1"#;
    assert!(text.contains(refused), "{text}");
    assert!(!text.contains("no-such-model"), "{text}");

    let auth = format!("Bearer {ADMIN}");
    let logs = || {
        h.client()
            .request("GET", "/admin/logs?limit=10", &[("authorization", &auth)], b"")
    };
    assert!(eventually(Duration::from_secs(3), || logs().json()["total"].as_u64() == Some(2)));
    let log = logs().json();
    let mut models: Vec<(u64, String)> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["status"].as_u64().unwrap(),
                row["model"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    models.sort();
    assert_eq!(models, [(200, "gpt-4o-mini".to_owned()), (404, String::new())]);
}

/// The attempt that delivered an answer is counted with its request (by `finish`, under the
/// request's memo entry), whole or streamed, once per request.
#[test]
fn each_delivered_answer_counts_one_ok_attempt() {
    let h = Harness::start(Conf::default());
    for _ in 0..3 {
        assert_eq!(h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    }
    assert_eq!(
        h.post("/v1/chat/completions", &chat_stream("gpt-4o-mini"), &[]).status,
        200
    );
    let ok = r#"rotor_upstream_attempts_total{provider="mock",outcome="ok"} 4"#;
    assert!(
        eventually(Duration::from_secs(3), || scrape(&h).text().contains(ok)),
        "{}",
        scrape(&h).text()
    );
}

#[test]
fn the_body_is_cut_to_metrics_max_bytes_from_the_largest_family() {
    let h = Harness::start(wildcard_conf("metrics_max_bytes = 65536"));
    let requests = 250;
    let mut client = h.client();
    for i in 0..requests {
        let model = format!("model-{i:04}-{}", "y".repeat(100));
        assert_eq!(client.post("/v1/chat/completions", &chat(&model), &[]).status, 200);
    }
    // 250 models in two families render far past 64 KiB.
    assert!(eventually(Duration::from_secs(3), || {
        counter(&scrape(&h).text(), "rotor_metrics_series_omitted") > 0
    }));
    let r = scrape(&h);
    assert_eq!(r.status, 200);
    assert!(r.body.len() <= 65536, "{} bytes", r.body.len());
    let text = r.text();
    for always in [
        "rotor_request_duration_seconds_count ",
        "rotor_open_connections ",
        "# TYPE rotor_tokens_total counter",
        "rotor_metrics_series_dropped_total 0",
    ] {
        assert!(text.contains(always), "{always} missing");
    }
}

#[test]
fn metrics_key_puts_metrics_behind_a_bearer_key() {
    let h = Harness::start(wildcard_conf(&format!("metrics_key = \"{METRICS_KEY}\"")));
    assert_eq!(h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    let with = |value: &str| h.client().request("GET", "/metrics", &[("authorization", value)], b"");
    let none = scrape(&h);
    assert_eq!(none.status, 401, "{}", none.text());
    let (message, _) = none.openai_error();
    assert!(
        message.contains("metrics_key") && !message.contains(METRICS_KEY),
        "{message}"
    );
    assert_eq!(with("Bearer metrics-key-0000-0043").status, 401);
    assert_eq!(
        with(&format!("Bearer {CLIENT_KEY}")).status,
        401,
        "a client key is not the metrics key"
    );
    let ok = with(&format!("Bearer {METRICS_KEY}"));
    assert_eq!(ok.status, 200);
    assert!(ok.text().contains("rotor_requests_total"));
    assert!(!ok.text().contains(METRICS_KEY));
    // The other endpoints rotor answers itself are unaffected.
    assert_eq!(h.client().request("GET", "/health", &[], b"").status, 200);
    let v = h.client().get("/v1/models", &[]).json();
    assert!(v["data"].as_array().is_some());
}

/// The stats rollups bound client-chosen names too (issue 13 item 1): past
/// `storage.max_stat_models` distinct models, new names count under `(other)`, so a wildcard
/// route cannot add a stats row per request; every request is still counted.
#[test]
fn stats_keep_at_most_max_stat_models_names_and_count_every_request() {
    let h = Harness::start(Conf {
        storage: "max_stat_models = 3".into(),
        ..wildcard_conf("")
    });
    let mut client = h.client();
    for i in 0..8 {
        let model = format!("stat-model-{i}");
        assert_eq!(client.post("/v1/chat/completions", &chat(&model), &[]).status, 200);
    }
    let auth = format!("Bearer {ADMIN}");
    let get = |path: &str| h.client().request("GET", path, &[("authorization", &auth)], b"").json();
    assert!(eventually(Duration::from_secs(5), || {
        get("/admin/stats/overview")["requests"].as_u64() == Some(8)
    }));
    let stats = get("/admin/stats?period=day&group_by=model");
    let groups: Vec<(String, u64)> = stats["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["group"].as_str().unwrap().to_owned(), g["requests"].as_u64().unwrap()))
        .collect();
    let named = groups.iter().filter(|(g, _)| g.starts_with("stat-model-")).count();
    assert_eq!(named, 3, "{groups:?}");
    assert!(groups.contains(&("(other)".to_owned(), 5)), "{groups:?}");
    assert_eq!(counter(&scrape(&h).text(), "rotor_rollup_overflow_total"), 5);
}
