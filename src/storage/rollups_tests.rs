use super::*;
use crate::usage::rollup::{RollupRegistry, Sample};
use crate::usage::Usage;

fn cells(samples: &[(i64, &str, u16, u64)]) -> Vec<(RollupKey, Cell)> {
    let registry = RollupRegistry::default();
    let shard = registry.shard();
    for &(ts_ms, model, status, prompt) in samples {
        shard.lock().add(&Sample {
            ts_ms,
            model,
            provider: "p",
            key: "…abcd",
            client: "c",
            status,
            latency_ms: 100,
            overhead_us: 20,
            usage: Usage {
                prompt_tokens: prompt,
                completion_tokens: 1,
                reported: true,
                ..Default::default()
            },
        });
    }
    registry.collect()
}

// 2026-01-01T00:30Z, 2026-01-01T01:10Z, 2026-01-02T05:00Z, 2026-02-01T00:00Z
const A: i64 = 1_767_227_400_000;
const B: i64 = 1_767_229_800_000;
const C: i64 = 1_767_330_000_000;
const D: i64 = 1_769_904_000_000;

#[test]
fn stats_group_by_period_and_model_over_injected_timestamps() {
    let mut s = Storage::open(None).unwrap();
    add(
        &mut s,
        &cells(&[
            (A, "m1", 200, 10),
            (B, "m1", 500, 20),
            (C, "m2", 200, 5),
            (D, "m1", 200, 1),
        ]),
    )
    .unwrap();
    let days = stats(&mut s, Period::Day, GroupBy::Model, None, None).unwrap();
    let summary: Vec<(&str, &str, i64, i64, i64)> = days
        .iter()
        .map(|r| {
            (
                r.bucket.as_str(),
                r.group.as_str(),
                r.requests,
                r.errors,
                r.prompt_tokens,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("2026-01-01", "m1", 2, 1, 30),
            ("2026-01-02", "m2", 1, 0, 5),
            ("2026-02-01", "m1", 1, 0, 1)
        ]
    );
    assert_eq!((days[0].avg_latency_ms, days[0].avg_overhead_us), (100.0, 20.0));
    assert_eq!(days[0].p50_latency_ms, 50.0, "interpolated in the <= 100 ms bucket");
    let hours = stats(&mut s, Period::Hour, GroupBy::Model, Some(A), Some(C)).unwrap();
    assert_eq!(
        hours.iter().map(|r| r.bucket.as_str()).collect::<Vec<_>>(),
        vec!["2026-01-01T00:00", "2026-01-01T01:00"]
    );
    let months = stats(&mut s, Period::Month, GroupBy::Provider, None, None).unwrap();
    assert_eq!(
        months
            .iter()
            .map(|r| (r.bucket.as_str(), r.requests))
            .collect::<Vec<_>>(),
        vec![("2026-01", 3), ("2026-02", 1)]
    );
    let o = overview(&mut s, None, None).unwrap();
    assert_eq!((o.requests, o.errors, o.prompt_tokens), (4, 1, 36));
    assert!((o.success_rate - 0.75).abs() < 1e-9);
    // A range starting mid-minute still counts the minute it starts in.
    assert_eq!(
        overview(&mut s, Some(A + 30_000), Some(A + 60_000)).unwrap().requests,
        1
    );
    assert_eq!(overview(&mut s, Some(A + 60_000), Some(B)).unwrap().requests, 0);
}

#[test]
fn adding_twice_adds_and_folding_keeps_every_total() {
    let mut s = Storage::open(None).unwrap();
    let batch = cells(&[
        (A, "m1", 200, 10),
        (A + 60_000, "m1", 200, 10),
        (B, "m1", 500, 20),
        (C, "m2", 200, 5),
    ]);
    add(&mut s, &batch).unwrap();
    add(&mut s, &batch).unwrap();
    let before = overview(&mut s, None, None).unwrap();
    assert_eq!(before.requests, 8);
    let minute_cells = |s: &mut Storage, span: i64| -> i64 {
        s.conn()
            .query_row("SELECT COUNT(*) FROM rollups WHERE span_ms = ?1", [span], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(minute_cells(&mut s, MINUTE_MS), 4);
    // Fold everything that ended before C's hour.
    let mut folded = 0;
    while fold_oldest_hour(&mut s, C - C.rem_euclid(HOUR_MS)).unwrap() {
        folded += 1;
    }
    assert_eq!(folded, 2, "00:00 and 01:00 of 2026-01-01");
    assert_eq!(minute_cells(&mut s, MINUTE_MS), 1, "C's minute is too recent");
    assert_eq!(minute_cells(&mut s, HOUR_MS), 2);
    assert_eq!(
        overview(&mut s, None, None).unwrap(),
        before,
        "folding changes no total"
    );
    let days = stats(&mut s, Period::Day, GroupBy::Model, None, None).unwrap();
    assert_eq!(days[0].requests, 6);
    // A range inside a folded hour counts the whole hour (hour-precise there).
    assert_eq!(
        overview(&mut s, Some(A + 120_000), Some(A + 180_000)).unwrap().requests,
        4
    );
    // Expiry goes a day per step, oldest first.
    assert_eq!(expire(&mut s, C).unwrap(), 2);
    assert_eq!(expire(&mut s, C).unwrap(), 0);
    assert_eq!(overview(&mut s, None, None).unwrap().requests, 2);
}

#[test]
fn the_migration_seeds_rollups_from_stored_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    // A database at schema 2 (request rows only), as released before rollups.
    let old = Storage::open_with(Some(&path), &crate::storage::MIGRATIONS[..2]).unwrap();
    drop(old);
    let conn = rusqlite::Connection::open(&path).unwrap();
    for (ts, status, latency) in [(A, 200, 90), (A + 1, 503, 400), (B, 200, 70_000)] {
        conn.execute(
            "INSERT INTO requests (ts_ms, request_id, client, endpoint, model, provider, upstream_model, key, \
             status, error, attempts, stream, latency_ms, ttfb_ms, overhead_us, prompt_tokens, completion_tokens, \
             cached_tokens, reasoning_tokens, usage_partial, bytes_in, bytes_out) \
             VALUES (?1, 'r', 'c', 'chat', 'm', 'p', 'm', 'k', ?2, '', 1, 0, ?3, 0, 5, 7, 3, 0, 0, 0, 0, 0)",
            params![ts, status, latency],
        )
        .unwrap();
    }
    drop(conn);
    let mut s = Storage::open(Some(&path)).unwrap();
    let o = overview(&mut s, None, None).unwrap();
    assert_eq!(
        (o.requests, o.errors, o.prompt_tokens, o.completion_tokens),
        (3, 1, 21, 9)
    );
    let hist: (i64, i64, i64) = s
        .conn()
        .query_row(
            "SELECT SUM(lat_100ms), SUM(lat_500ms), SUM(lat_over) FROM rollups",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(hist, (1, 1, 1));
}

#[test]
fn compacting_the_rows_keeps_them_in_order_with_their_labels() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let old = Storage::open_with(Some(&path), &crate::storage::MIGRATIONS[..3]).unwrap();
    drop(old);
    let conn = rusqlite::Connection::open(&path).unwrap();
    // Ids with a gap (old retention deleted by time), two label sets.
    for (id, model, status) in [(5, "m1", 200), (9, "m2", 429), (10, "m1", 200)] {
        conn.execute(
            "INSERT INTO requests (id, ts_ms, request_id, client, endpoint, model, provider, upstream_model, key, \
             status, error, attempts, stream, latency_ms, ttfb_ms, overhead_us, prompt_tokens, completion_tokens, \
             cached_tokens, reasoning_tokens, usage_partial, bytes_in, bytes_out) \
             VALUES (?1, ?1, 'r', 'c', 'chat', ?2, 'p', ?2, 'k', ?3, '', 1, 0, 9, 0, 5, 7, 3, 0, 0, 0, 0, 0)",
            params![id, model, status],
        )
        .unwrap();
    }
    drop(conn);
    let mut s = Storage::open(Some(&path)).unwrap();
    let page = crate::storage::requests::logs(&mut s, &Default::default(), 10, 0).unwrap();
    assert_eq!(page.total, 3);
    let rows: Vec<(i64, i64, &str, i64)> = page
        .data
        .iter()
        .map(|r| (r.id, r.ts, r.model.as_str(), r.status))
        .collect();
    assert_eq!(
        rows,
        vec![(3, 10, "m1", 200), (2, 9, "m2", 429), (1, 5, "m1", 200)],
        "renumbered, newest first"
    );
    let labels: i64 = s
        .conn()
        .query_row("SELECT COUNT(*) FROM log_labels", [], |r| r.get(0))
        .unwrap();
    assert_eq!(labels, 2);
}

/// A cell of `n` requests all in latency bucket `bucket`, taking `sum_ms` together.
fn cell_of(n: u64, bucket: usize, sum_ms: u64) -> Cell {
    let mut c = Cell {
        requests: n,
        latency_ms_sum: sum_ms,
        ..Cell::default()
    };
    c.latency[bucket] = n;
    c
}

#[test]
fn quantiles_stay_within_what_the_mean_allows() {
    // One sub-millisecond answer (recorded as 0 ms): interpolation alone said p50 50, p95 95.
    let fast = stats_row(String::new(), String::new(), &cell_of(1, 0, 0));
    assert_eq!((fast.p50_latency_ms, fast.p95_latency_ms), (0.0, 0.0));
    // 99 answers of 0 ms and one of 200 ms: the mean (2 ms) bounds p50 by 4 and p95 by 40.
    let mut mixed = cell_of(99, 0, 0);
    mixed.requests += 1;
    mixed.latency[1] += 1;
    mixed.latency_ms_sum = 200;
    let mixed = stats_row(String::new(), String::new(), &mixed);
    assert!((mixed.p50_latency_ms - 4.0).abs() < 1e-9, "{}", mixed.p50_latency_ms);
    assert!((mixed.p95_latency_ms - 40.0).abs() < 1e-9, "{}", mixed.p95_latency_ms);
    // Where the mean allows it, the interpolation stands: ten 2 s answers (bucket 1-2.5 s).
    let slow = stats_row(String::new(), String::new(), &cell_of(10, 4, 20_000));
    assert_eq!(slow.p50_latency_ms, 1_750.0);
    assert_eq!(slow.p95_latency_ms, 2_425.0);
}
