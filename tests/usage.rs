//! Usage accounting, request logs, stats and metrics (issue 5), over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

const ADMIN: &str = "adm-key-0000-0001";

fn admin_conf() -> Conf {
    Conf {
        server: format!("admin_key = \"{ADMIN}\""),
        ..Default::default()
    }
}

fn admin(h: &Harness, method: &str, path: &str) -> Response {
    let auth = format!("Bearer {ADMIN}");
    h.client().request(method, path, &[("authorization", &auth)], b"")
}

/// The request log, newest first, once the control thread has written what is queued.
fn logs(h: &Harness, query: &str) -> sonic_rs::Value {
    let r = admin(h, "GET", &format!("/admin/logs{query}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn stream_text(h: &Harness, body: &str) -> String {
    let (status, text, terminated) = h.client().stream_chat(body, &[]);
    assert_eq!(status, 200);
    assert!(terminated);
    text
}

#[test]
fn a_stream_without_include_usage_hides_the_usage_chunk_but_logs_the_tokens() {
    let h = Harness::start(admin_conf());
    let body = chat_stream("gpt-4o-mini");
    let text = stream_text(&h, &body);
    assert!(!text.contains("usage"), "the client did not ask for usage: {text}");
    assert!(text.contains("tok4") && text.contains("[DONE]"));
    let sent = h.recorded().pop().unwrap();
    assert!(
        String::from_utf8_lossy(&sent.body).contains(r#""include_usage":true"#),
        "rotor asked upstream"
    );
    assert!(eventually(Duration::from_secs(2), || logs(&h, "")["total"].as_u64() == Some(1)));
    let log = logs(&h, "?limit=1");
    let row = &log["data"][0];
    assert_eq!(row["completion_tokens"].as_u64(), Some(5), "{log}");
    assert!(row["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(row["stream"].as_bool(), Some(true));
    assert_eq!(row["key"].as_str(), Some("…0001"));
    // The body was let go of once the stream started; its length was kept for the row.
    assert_eq!(row["bytes_in"].as_u64(), Some(body.len() as u64), "{log}");
}

/// Issue 16 item 4: a Python-formatted upstream (`"usage": null` with a space, `usage` as the first
/// member) once leaked the usage chunk and every null to a client that did not ask.
#[test]
fn a_spaced_stream_without_include_usage_hides_the_usage_chunk_but_logs_the_tokens() {
    let h = Harness::start(admin_conf());
    let (status, text, terminated) = h
        .client()
        .stream_chat(&chat_stream("gpt-4o-mini"), &[("x-mock-spaced", "1")]);
    assert_eq!((status, terminated), (200, true));
    assert!(!text.contains("usage"), "the client did not ask for usage: {text}");
    assert!(
        text.contains(r#""content": "tok4 ""#),
        "the upstream's spacing is kept: {text}"
    );
    for event in text.split("\n\n").filter(|e| e.starts_with("data: {")) {
        let json: sonic_rs::Value = sonic_rs::from_str(&event["data: ".len()..]).expect(event);
        assert!(json["choices"].as_array().is_some_and(|c| !c.is_empty()), "{event}");
    }
    assert!(eventually(Duration::from_secs(2), || logs(&h, "")["total"].as_u64() == Some(1)));
    let log = logs(&h, "?limit=1");
    assert_eq!(log["data"][0]["completion_tokens"].as_u64(), Some(5), "{log}");
    assert!(log["data"][0]["prompt_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn a_stream_with_include_usage_shows_exactly_one_usage_chunk() {
    let h = Harness::start(admin_conf());
    let body = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    let text = stream_text(&h, body);
    let usage_chunks = text.split("\n\n").filter(|e| e.contains("\"usage\":{")).count();
    assert_eq!(usage_chunks, 1, "{text}");
    assert!(eventually(Duration::from_secs(2), || logs(&h, "")["total"].as_u64() == Some(1)));
    let log = logs(&h, "?limit=1");
    assert_eq!(log["data"][0]["completion_tokens"].as_u64(), Some(5));
}

#[test]
fn non_stream_tokens_are_logged_with_the_request_details() {
    let h = Harness::start(admin_conf());
    let r = h.post("/v1/chat/completions", &chat("gpt-3.5"), &[]);
    assert_eq!(r.status, 200);
    let overhead: u64 = r
        .header("x-rotor-overhead-us")
        .expect("overhead header")
        .parse()
        .unwrap();
    assert!(overhead < 1_000_000);
    let usage = r.json()["usage"].clone();
    // The record is queued right after the answer went out; give the worker that moment.
    assert!(eventually(Duration::from_secs(2), || logs(&h, "")["total"].as_u64() == Some(1)));
    let log = logs(&h, "");
    let row = &log["data"][0];
    assert_eq!(row["model"].as_str(), Some("gpt-3.5"));
    assert_eq!(row["upstream_model"].as_str(), Some("gpt-4o-mini"));
    assert_eq!(row["provider"].as_str(), Some("mock"));
    assert_eq!(row["client"].as_str(), Some("tester"));
    assert_eq!(row["status"].as_u64(), Some(200));
    assert_eq!(row["attempts"].as_u64(), Some(1));
    assert_eq!(row["prompt_tokens"].as_u64(), usage["prompt_tokens"].as_u64());
    assert_eq!(row["completion_tokens"].as_u64(), usage["completion_tokens"].as_u64());
    assert_eq!(row["request_id"].as_str(), r.header("x-request-id"));
    // Filters and overview.
    assert_eq!(logs(&h, "?model=nope")["total"].as_u64(), Some(0));
    let o = admin(&h, "GET", "/admin/stats/overview").json();
    assert_eq!(o["requests"].as_u64(), Some(1));
    let stats = admin(&h, "GET", "/admin/stats?period=hour&group_by=client").json();
    assert_eq!(stats["data"][0]["group"].as_str(), Some("tester"));
    assert_eq!(admin(&h, "GET", "/admin/stats?period=week").status, 400);
    assert_eq!(admin(&h, "DELETE", "/admin/logs").status, 200);
    assert_eq!(logs(&h, "")["total"].as_u64(), Some(0));
}

#[test]
fn admin_is_off_without_a_key_and_refuses_wrong_keys() {
    let off = Harness::start(Conf::default());
    assert_eq!(admin(&off, "GET", "/admin/logs").status, 404);
    let on = Harness::start(admin_conf());
    let wrong = on
        .client()
        .request("GET", "/admin/logs", &[("authorization", "Bearer nope")], b"");
    assert_eq!(wrong.status, 401);
    let client_key = on.client().get("/admin/logs", &[]);
    assert_eq!(client_key.status, 401, "a client key is not an admin key");
}

#[test]
fn admin_reload_reports_the_generation_and_rejects_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rotor.toml");
    let mock = start_mock();
    let text = admin_conf().render(&mock.base_url());
    std::fs::write(&path, &text).unwrap();
    let config = rotor::config::load(&path).unwrap();
    let running = rotor::runtime::start(config, None).unwrap();
    let addr = running.addr;
    let h = Harness {
        mock: Some(mock),
        running: Some(running),
        addr,
    };
    let r = admin(&h, "POST", "/admin/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["reloaded"].as_bool(), Some(true));
    assert_eq!(r.json()["generation"].as_u64(), Some(2));
    std::fs::write(&path, text.replace("[server]", "[server]\nbogus_key = 1")).unwrap();
    let bad = admin(&h, "POST", "/admin/reload");
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("bogus_key"), "{}", bad.text());
    assert_eq!(
        h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status,
        200,
        "old config still serves"
    );
}

#[test]
fn metrics_parse_as_prometheus_text_and_carry_no_secrets() {
    let h = Harness::start(admin_conf());
    assert_eq!(h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    assert_eq!(h.post("/v1/chat/completions", &chat("nope"), &[]).status, 404);
    // Metrics are counted just after each answer goes out, possibly on the other worker.
    let scrape = || h.client().request("GET", "/metrics", &[], b"");
    assert!(eventually(Duration::from_secs(2), || {
        let text = scrape().text();
        text.contains(r#"status="404"} 1"#) && text.contains(r#"status="200"} 1"#)
    }));
    let m = scrape();
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let text = m.text();
    for secret in [POOL_KEY, CLIENT_KEY, ADMIN] {
        assert!(!text.contains(secret), "metrics leak {secret}");
    }
    for line in text.lines().filter(|l| !l.is_empty()) {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        assert!(value.parse::<f64>().is_ok(), "bad value in {line}");
        let name = series.split('{').next().unwrap();
        assert!(
            name.starts_with("rotor_") && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
    }
    assert!(
        text.contains(
            r#"rotor_requests_total{endpoint="chat/completions",model="gpt-4o-mini",provider="mock",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"status="404"} 1"#));
    assert!(text.contains(r#"rotor_tokens_total{model="gpt-4o-mini",provider="mock",kind="completion"} 5"#));
    assert!(text.contains("rotor_overhead_seconds_count 1"));
    assert!(text.contains(r#"rotor_key_state{provider="mock",key="…0001",state="active"} 1"#));
    assert!(text.contains("rotor_log_dropped_total 0"));
}

/// A locked database (another process holding an exclusive lock) fails every write: proxying
/// goes on, the lost records are counted in /metrics and /health says storage is failing
/// until a whole `health_window_ms` passed without a failure.
#[test]
fn a_failing_storage_keeps_proxying_and_counts_drops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rotor.db");
    let h = Harness::start(Conf {
        storage: format!("path = {:?}\nhealth_window_ms = 1000", path.display().to_string()),
        ..admin_conf()
    });
    assert_eq!(h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    assert!(eventually(Duration::from_secs(3), || logs(&h, "")["total"].as_u64() == Some(1)));
    let lock = rusqlite::Connection::open(&path).unwrap();
    lock.busy_timeout(Duration::from_secs(5)).unwrap();
    // Another writer holds the write lock (WAL allows one writer at a time).
    lock.execute_batch("BEGIN IMMEDIATE; DELETE FROM request_batches WHERE 0;")
        .unwrap();
    for _ in 0..5 {
        assert_eq!(
            h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status,
            200,
            "proxying goes on"
        );
    }
    let dropped = || {
        let text = h.client().request("GET", "/metrics", &[], b"").text();
        let line = text
            .lines()
            .find(|l| l.starts_with("rotor_log_dropped_total "))
            .unwrap()
            .to_owned();
        line.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap()
    };
    assert!(
        eventually(Duration::from_secs(5), || dropped() >= 5),
        "dropped = {}",
        dropped()
    );
    let health = h.client().request("GET", "/health", &[], b"").json();
    assert_eq!(health["storage"].as_str(), Some("failing"), "{health}");
    assert!(health["log_dropped"].as_u64().unwrap() >= 5);
    drop(lock);
    assert_eq!(h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    assert!(eventually(Duration::from_secs(5), || {
        h.client().request("GET", "/health", &[], b"").json()["storage"].as_str() == Some("ok")
    }));
}

/// Providers behind CDNs answer whole JSON with chunked encoding: the usage is still read, and
/// the client gets the whole body.
#[test]
fn chunked_json_answers_still_have_their_usage_logged() {
    let h = Harness::start(admin_conf());
    let r = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[("x-mock-chunked", "1")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["usage"]["completion_tokens"].as_u64(), Some(5), "{}", r.text());
    assert!(eventually(Duration::from_secs(2), || logs(&h, "")["total"].as_u64() == Some(1)));
    let row = logs(&h, "")["data"][0].clone();
    assert_eq!(row["completion_tokens"].as_u64(), Some(5), "{row}");
    assert!(row["prompt_tokens"].as_u64().unwrap() > 0);
}

/// The `_sum` of one unlabeled histogram in a /metrics scrape.
fn metric_sum(text: &str, name: &str) -> f64 {
    let prefix = format!("{name}_sum ");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("{text}"));
    line[prefix.len()..].parse().unwrap()
}

/// The one logged request (waiting for it) and its latency, first byte (ms) and overhead (µs).
fn only_row_times(h: &Harness) -> (sonic_rs::Value, u64, u64, u64) {
    assert!(eventually(Duration::from_secs(2), || logs(h, "")["total"].as_u64() == Some(1)));
    let row = logs(h, "")["data"][0].clone();
    let time = |field: &str| row[field].as_u64().unwrap();
    let (latency, ttfb, overhead) = (time("latency_ms"), time("ttfb_ms"), time("overhead_us"));
    (row, latency, ttfb, overhead)
}

/// A request's times come from a few clock readings passed along (received, attempt start,
/// answer ready, head out, end): a whole answer behind a slow upstream logs a latency that
/// covers the wait, a first byte within it, and an overhead (header, row, metric) that leaves
/// the upstream's wait out.
#[test]
fn a_slow_whole_answer_logs_ordered_times_and_an_overhead_without_the_wait() {
    let h = Harness::start(admin_conf());
    let r = h.post(
        "/v1/chat/completions",
        &chat("gpt-4o-mini"),
        &[("x-mock-latency-ms", "200")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let header: u64 = r.header("x-rotor-overhead-us").unwrap().parse().unwrap();
    let (row, latency, ttfb, overhead) = only_row_times(&h);
    assert!(latency >= 200, "{row}");
    assert!(
        (200..=latency).contains(&ttfb),
        "the head left after the wait, by the end: {row}"
    );
    assert!(overhead > 0 && overhead == header, "{row} header {header}");
    assert!(
        overhead < (latency - 200 + 1) * 1000,
        "the upstream's wait is not rotor's: {row}"
    );
    let text = h.client().request("GET", "/metrics", &[], b"").text();
    let (duration, own) = (
        metric_sum(&text, "rotor_request_duration_seconds"),
        metric_sum(&text, "rotor_overhead_seconds"),
    );
    assert!(
        duration >= 0.2 && own > 0.0 && own < duration - 0.199,
        "{duration} {own}"
    );
}

/// A stream's first byte is its head, its end the last event: with 100 ms between its five
/// chunks the two are logged well apart, and the latency covers the whole stream.
#[test]
fn a_spaced_stream_logs_its_first_byte_before_its_end() {
    let h = Harness::start(admin_conf());
    let (status, text, terminated) = h
        .client()
        .stream_chat(&chat_stream("gpt-4o-mini"), &[("x-mock-interval-ms", "100")]);
    assert_eq!((status, terminated), (200, true), "{text}");
    let (row, latency, ttfb, overhead) = only_row_times(&h);
    assert!(latency >= 400, "four gaps of 100 ms: {row}");
    assert!(ttfb + 300 <= latency, "the head went out before the gaps: {row}");
    assert!(overhead > 0 && overhead < latency * 1000, "{row}");
}

/// Stats count every request exactly once, whoever counts it: the log writer for a request
/// with a row, the worker for one sampled out (`sample_rate`) or kept without rows
/// (`max_records = 0`).
#[test]
fn stats_count_each_request_once_with_or_without_its_row() {
    for (storage, rows) in [("", 3), ("sample_rate = 0.0", 0), ("max_records = 0", 0)] {
        let h = Harness::start(Conf {
            storage: storage.into(),
            ..admin_conf()
        });
        let mut client = h.client();
        for model in ["gpt-3.5", "gpt-4o-mini", "gpt-3.5"] {
            assert_eq!(client.post("/v1/chat/completions", &chat(model), &[]).status, 200);
        }
        let requests = || admin(&h, "GET", "/admin/stats/overview").json()["requests"].as_u64();
        assert!(
            eventually(Duration::from_secs(3), || requests() == Some(3)),
            "{storage}"
        );
        let stats = admin(&h, "GET", "/admin/stats?period=hour&group_by=model").json();
        let mut groups: Vec<(String, u64)> = stats["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| (g["group"].as_str().unwrap().to_owned(), g["requests"].as_u64().unwrap()))
            .collect();
        groups.sort();
        assert_eq!(
            groups,
            [("gpt-3.5".to_owned(), 2), ("gpt-4o-mini".to_owned(), 1)],
            "{storage}"
        );
        assert_eq!(logs(&h, "")["total"].as_u64(), Some(rows), "{storage}");
        assert_eq!(requests(), Some(3), "{storage}: counted once");
    }
}

/// A worker shares one label among the records of requests made of the same names and makes
/// a new one when any differs: every row names its own request's model, upstream model,
/// status and client, whether its label was shared or not, across a reload that renames the
/// client (same indices, another generation).
#[test]
fn each_row_keeps_its_own_labels_when_records_share_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rotor.toml");
    let mock = start_mock();
    let text = admin_conf().render(&mock.base_url());
    assert!(text.contains("name = \"tester\""));
    std::fs::write(&path, &text).unwrap();
    let running = rotor::runtime::start(rotor::config::load(&path).unwrap(), None).unwrap();
    let addr = running.addr;
    let h = Harness {
        mock: Some(mock),
        running: Some(running),
        addr,
    };
    let models = ["gpt-3.5", "gpt-4o-mini", "gpt-3.5", "gpt-3.5", "nope", "gpt-4o-mini"];
    let mut wanted = Vec::new();
    let mut client = "tester";
    for (i, model) in models.iter().enumerate() {
        if i == 3 {
            std::fs::write(&path, text.replace("name = \"tester\"", "name = \"renamed\"")).unwrap();
            assert_eq!(admin(&h, "POST", "/admin/reload").status, 200);
            client = "renamed";
        }
        let r = h.post("/v1/chat/completions", &chat(model), &[]);
        // A model with no route is logged without a name (as before labels were shared).
        let logged = if r.status == 200 { *model } else { "" };
        let id = r.header("x-request-id").unwrap().to_owned();
        wanted.push((id, logged.to_owned(), r.status, client));
    }
    let n = models.len() as u64;
    assert!(eventually(Duration::from_secs(2), || logs(&h, "")["total"].as_u64() == Some(n)));
    let log = logs(&h, "");
    let rows = log["data"].as_array().unwrap();
    // Rows are in the order their requests ended, which two workers may see a little apart:
    // each row is matched to its request by id.
    let mut got: Vec<(String, String, u16, &str)> = rows
        .iter()
        .map(|r| {
            let id = r["request_id"].as_str().unwrap().to_owned();
            let model = r["model"].as_str().unwrap().to_owned();
            (
                id,
                model,
                r["status"].as_u64().unwrap() as u16,
                r["client"].as_str().unwrap(),
            )
        })
        .collect();
    got.sort();
    wanted.sort();
    assert_eq!(got, wanted);
    assert!(wanted.iter().any(|w| w.2 != 200), "a failed request among them");
    for row in rows.iter().filter(|r| r["status"].as_u64() == Some(200)) {
        assert_eq!(row["upstream_model"].as_str(), Some("gpt-4o-mini"));
        assert_eq!(row["provider"].as_str(), Some("mock"));
    }
}
