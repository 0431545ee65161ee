//! Answers that fail after their status went out (issue 12, item 8): an upstream cut, an idle
//! upstream and a client that hangs up are each recorded as what they are, in `/admin/logs`
//! (`error`) and in `rotor_relay_failures_total`, while the status stays the one sent (200).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

const ADMIN: &str = "adm-key-0000-0002";

fn start(upstream: &str) -> Harness {
    Harness::start(Conf {
        server: format!("admin_key = \"{ADMIN}\""),
        upstream: upstream.to_owned(),
        ..Default::default()
    })
}

/// The newest request log row, once `n` rows are written.
fn newest_row(h: &Harness, n: u64) -> sonic_rs::Value {
    let auth = format!("Bearer {ADMIN}");
    let mut last = sonic_rs::Value::default();
    let written = eventually(Duration::from_secs(5), || {
        let r = h
            .client()
            .request("GET", "/admin/logs?limit=1", &[("authorization", &auth)], b"");
        last = r.json();
        last["total"].as_u64() == Some(n)
    });
    assert!(written, "{n} rows expected: {last}");
    last["data"][0].clone()
}

fn metric(h: &Harness, series: &str) -> u64 {
    let text = h.client().get("/metrics", &[]).text();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
}

fn failures(h: &Harness, reason: &str) -> u64 {
    metric(
        h,
        &format!(r#"rotor_relay_failures_total{{provider="mock",reason="{reason}"}}"#),
    )
}

fn streamed_200s(h: &Harness) -> u64 {
    metric(
        h,
        r#"rotor_requests_total{endpoint="chat/completions",model="gpt-4o-mini",provider="mock",status="200"}"#,
    )
}

#[test]
fn a_clean_stream_has_no_error() {
    let h = start("");
    let (status, text, terminated) = h.client().stream_chat(&chat_stream("gpt-4o-mini"), &[]);
    assert!(status == 200 && terminated && text.contains("[DONE]"));
    let row = newest_row(&h, 1);
    assert_eq!((row["status"].as_u64(), row["error"].as_str()), (Some(200), Some("")));
    for reason in ["upstream_cut", "stream_idle_timeout", "client_abort", "request_timeout"] {
        assert_eq!(failures(&h, reason), 0, "{reason}");
    }
}

#[test]
fn a_stream_cut_by_the_upstream_is_recorded_as_upstream_cut() {
    let h = start("");
    let (status, text, terminated) = h.client().stream_chat(
        &chat_stream("gpt-4o-mini"),
        &[("x-mock-chunks", "5"), ("x-mock-cut-after", "2")],
    );
    assert!(
        status == 200 && terminated && text.contains("stream_interrupted"),
        "{text}"
    );
    let row = newest_row(&h, 1);
    assert_eq!(row["status"].as_u64(), Some(200), "the status sent: {row}");
    assert_eq!(row["error"].as_str(), Some("upstream_cut"), "{row}");
    assert_eq!(failures(&h, "upstream_cut"), 1);
    assert_eq!(failures(&h, "client_abort"), 0);
    assert_eq!(streamed_200s(&h), 1, "requests_total keeps the status sent");
}

#[test]
fn a_silent_stream_is_recorded_as_stream_idle_timeout() {
    let h = start("stream_idle_timeout_ms = 300");
    let (status, text, terminated) = h.client().stream_chat(
        &chat_stream("gpt-4o-mini"),
        &[("x-mock-chunks", "3"), ("x-mock-interval-ms", "2000")],
    );
    assert!(status == 200 && terminated && !text.contains("[DONE]"), "{text}");
    let row = newest_row(&h, 1);
    assert_eq!(row["status"].as_u64(), Some(200));
    assert_eq!(row["error"].as_str(), Some("stream_idle_timeout"), "{row}");
    assert_eq!(failures(&h, "stream_idle_timeout"), 1);
    assert_eq!(failures(&h, "upstream_cut"), 0);
}

#[test]
fn a_client_that_hangs_up_mid_stream_is_recorded_as_client_abort() {
    let h = start("");
    let mut c = h.client();
    let (name, value) = auth();
    c.send_request(
        "POST",
        "/v1/chat/completions",
        &[
            (name, &value),
            ("content-type", "application/json"),
            ("x-mock-chunks", "40"),
            ("x-mock-interval-ms", "50"),
        ],
        chat_stream("gpt-4o-mini").as_bytes(),
    );
    assert_eq!(c.read_head().0, 200);
    assert!(matches!(c.next_chunk(), Some(Some(_))));
    drop(c);
    let row = newest_row(&h, 1);
    assert_eq!(row["status"].as_u64(), Some(200));
    assert_eq!(row["error"].as_str(), Some("client_abort"), "{row}");
    assert_eq!(failures(&h, "client_abort"), 1);
    assert_eq!(failures(&h, "upstream_cut"), 0);
    assert_eq!(streamed_200s(&h), 1);
    let logs = h
        .client()
        .request(
            "GET",
            "/admin/logs",
            &[("authorization", &format!("Bearer {ADMIN}"))],
            b"",
        )
        .json();
    assert_eq!(logs["data"].as_array().unwrap().len(), 1);
}
