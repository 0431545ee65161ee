//! Issue 13's memory check, alone in its binary so no other test moves this process's RSS:
//! 300k requests through the in-memory log leave RSS within a few MB of its value after the
//! first 20k, the rows at `max_records`, the database pages flat, and the stats counting every
//! request. The first few thousand go through real sockets; the rest through the library (the
//! real queue, writer and rollups) to keep the test fast.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::records::log_directly;
use common::*;
use sonic_rs::JsonValueTrait;

const ADMIN: &str = "adm-key-0000-0001";
const MAX_RECORDS: u64 = 10_000;

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn metric(h: &Harness, series: &str) -> u64 {
    let text = h.client().request("GET", "/metrics", &[], b"").text();
    let line = text
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no {series}"))
        .to_owned();
    line.rsplit_once(' ').unwrap().1.parse().unwrap()
}

fn overview_requests(h: &Harness) -> u64 {
    let auth = format!("Bearer {ADMIN}");
    let r = h
        .client()
        .request("GET", "/admin/stats/overview", &[("authorization", &auth)], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["requests"].as_u64().unwrap()
}

/// Waits until the writer took everything queued and pruned to the bound.
fn settled(h: &Harness) {
    assert!(eventually(Duration::from_secs(30), || {
        h.running().gateway.records.is_empty() && metric(h, "rotor_log_rows") == MAX_RECORDS
    }));
}

#[test]
fn three_hundred_thousand_requests_leave_the_in_memory_log_flat() {
    let h = Harness::start(Conf {
        server: format!("admin_key = \"{ADMIN}\""),
        storage: format!("max_records = {MAX_RECORDS}"),
        ..Default::default()
    });
    let mut client = h.client();
    const OVER_SOCKETS: u64 = 3_000;
    for _ in 0..OVER_SOCKETS {
        assert_eq!(
            client.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status,
            200
        );
    }
    log_directly(&h, 17_000);
    settled(&h);
    let (rss_20k, bytes_20k) = (rss_kb(), metric(&h, "rotor_storage_bytes"));
    for _ in 0..28 {
        log_directly(&h, 10_000);
    }
    settled(&h);
    let (rss_300k, bytes_300k) = (rss_kb(), metric(&h, "rotor_storage_bytes"));
    println!(
        "after 20k: RSS {rss_20k} kB, database {bytes_20k} B; after 300k: RSS {rss_300k} kB, database {bytes_300k} B"
    );
    assert_eq!(overview_requests(&h), 300_000, "the stats count every request");
    assert_eq!(
        metric(&h, "rotor_log_pruned_total{reason=\"max_records\"}"),
        300_000 - MAX_RECORDS
    );
    assert_eq!(metric(&h, "rotor_log_dropped_total"), 0);
    assert!(
        bytes_300k <= bytes_20k + bytes_20k / 20,
        "the in-memory database grew from {bytes_20k} to {bytes_300k} bytes"
    );
    assert!(
        rss_300k <= rss_20k + 8 * 1024,
        "RSS grew from {rss_20k} kB to {rss_300k} kB"
    );
}
