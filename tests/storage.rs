//! Storage health and the bounded request log (issue 12 item 9, issue 13), over real sockets:
//! `/health` stays `failing` while records are dropped, storage that cannot open at start is
//! retried, a deleted database file is created again, and the log stays bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::records::log_directly;
use common::*;
use rotor::usage::record::RequestRecord;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

const ADMIN: &str = "adm-key-0000-0001";

fn conf(storage: &str) -> Conf {
    Conf {
        server: format!("admin_key = \"{ADMIN}\""),
        storage: storage.to_owned(),
        ..Default::default()
    }
}

fn path_line(path: &Path) -> String {
    format!("path = {:?}", path.display().to_string())
}

fn admin_json(h: &Harness, path: &str) -> sonic_rs::Value {
    let auth = format!("Bearer {ADMIN}");
    let r = h.client().request("GET", path, &[("authorization", &auth)], b"");
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()
}

fn health(h: &Harness) -> sonic_rs::Value {
    h.client().request("GET", "/health", &[], b"").json()
}

fn storage_state(h: &Harness) -> String {
    health(h)["storage"].as_str().unwrap().to_owned()
}

/// The value of an unlabelled series (or of the first line starting with `series`).
fn metric(h: &Harness, series: &str) -> u64 {
    let text = h.client().request("GET", "/metrics", &[], b"").text();
    let line = text
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .to_owned();
    line.rsplit_once(' ').unwrap().1.parse().unwrap()
}

fn chat_ok(h: &Harness) {
    assert_eq!(h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
}

/// Rows in the file at `path` (None while it is still being created).
fn rows_in_file(path: &Path) -> Option<i64> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    let conn = rusqlite::Connection::open_with_flags(path, flags).ok()?;
    conn.query_row("SELECT ifnull(SUM(id - first + 1), 0) FROM request_batches", [], |r| {
        r.get(0)
    })
    .ok()
}

/// Queue overflow with every write succeeding: the old `/health` flipped back to `ok` after
/// each clean batch. Now it stays `failing` for as long as records keep being dropped, and
/// turns `ok` only once none was dropped for the whole window.
#[test]
fn health_stays_failing_while_records_are_dropped_and_recovers_after_the_window() {
    let h = Harness::start(conf("health_window_ms = 1500"));
    chat_ok(&h);
    assert!(eventually(Duration::from_secs(3), || storage_state(&h) == "ok"));
    let gateway = &h.running().gateway;
    let overflow = || {
        let before = gateway.records.dropped();
        // Far more than the queue holds, faster than the writer drains it.
        for _ in 0..200_000 {
            let _dropped_when_full = gateway.records.push(RequestRecord::default());
        }
        assert!(gateway.records.dropped() > before, "the burst overflowed the queue");
    };
    let until = Instant::now() + Duration::from_secs(2);
    let mut last_drop = Instant::now();
    while Instant::now() < until {
        overflow();
        last_drop = Instant::now();
        chat_ok(&h);
        let body = health(&h);
        assert_eq!(body["storage"].as_str(), Some("failing"), "{body}");
        assert!(body["storage_error"].as_str().unwrap().contains("dropped"), "{body}");
        sleep_ms(100);
    }
    chat_ok(&h);
    // Writes succeed meanwhile; health turns ok only after a whole quiet window.
    assert!(eventually(Duration::from_secs(10), || storage_state(&h) == "ok"));
    assert!(
        last_drop.elapsed() >= Duration::from_millis(1400),
        "ok after {:?}, inside the 1.5 s window",
        last_drop.elapsed()
    );
    assert!(metric(&h, "rotor_log_dropped_total") > 0);
}

/// The database cannot be created at start (its directory is a regular file): rotor serves,
/// `/health` says failing, and once the obstacle is gone the database is opened by a retry
/// and requests are logged again.
#[test]
fn storage_unavailable_at_start_is_opened_by_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("data");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let path = blocker.join("rotor.db");
    let h = Harness::start(conf(&format!("{}\nhealth_window_ms = 500", path_line(&path))));
    chat_ok(&h);
    let body = health(&h);
    assert_eq!(body["storage"].as_str(), Some("failing"), "{body}");
    assert!(
        body["storage_error"].as_str().unwrap().contains("unavailable"),
        "{body}"
    );
    std::fs::remove_file(&blocker).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || path.exists()),
        "the database was never opened again"
    );
    chat_ok(&h);
    assert!(eventually(Duration::from_secs(5), || {
        admin_json(&h, "/admin/logs")["total"].as_u64() == Some(1)
    }));
    assert!(eventually(Duration::from_secs(5), || storage_state(&h) == "ok"));
    assert_eq!(
        metric(&h, "rotor_storage_reopened_total"),
        0,
        "a first open, not a reopen"
    );
}

/// The database file is deleted while rotor runs (with its WAL): rotor notices, creates it
/// again, and the requests that follow land in the new file, not in the unlinked inode.
#[test]
fn a_deleted_database_file_is_created_again_and_records_land_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rotor.db");
    let h = Harness::start(conf(&format!("{}\nhealth_window_ms = 60000", path_line(&path))));
    for _ in 0..3 {
        chat_ok(&h);
    }
    assert!(eventually(Duration::from_secs(5), || {
        admin_json(&h, "/admin/logs")["total"].as_u64() == Some(3)
    }));
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    for _ in 0..2 {
        chat_ok(&h);
    }
    assert!(
        eventually(Duration::from_secs(5), || rows_in_file(&path) == Some(2)),
        "the two requests after the deletion are in the new file"
    );
    assert_eq!(metric(&h, "rotor_storage_reopened_total"), 1);
    let body = health(&h);
    assert_eq!(body["storage"].as_str(), Some("failing"), "inside the window: {body}");
    assert!(body["storage_error"].as_str().unwrap().contains("vanished"), "{body}");
    assert_eq!(metric(&h, "rotor_log_dropped_total"), 0, "nothing was lost");
}

/// The writer skips measuring the file on a tick with nothing written; a deletion through the
/// admin API still shows in the row gauge at once, with no request after it.
#[test]
fn the_row_gauge_follows_a_deletion_without_new_requests() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(conf(&path_line(&dir.path().join("rotor.db"))));
    for _ in 0..3 {
        chat_ok(&h);
    }
    assert!(eventually(Duration::from_secs(5), || health(&h)["log_rows"].as_u64() == Some(3)));
    let auth = format!("Bearer {ADMIN}");
    let cleared = h
        .client()
        .request("DELETE", "/admin/logs", &[("authorization", &auth)], b"");
    assert_eq!(cleared.status, 200);
    assert!(
        eventually(Duration::from_secs(5), || health(&h)["log_rows"].as_u64() == Some(0)),
        "{}",
        health(&h)
    );
    assert_eq!(metric(&h, "rotor_log_rows"), 0);
}

/// The in-memory log keeps `max_records` rows, pruned oldest first and counted.
#[test]
fn the_in_memory_log_keeps_at_most_max_records() {
    let h = Harness::start(conf("max_records = 50"));
    let mut client = h.client();
    for _ in 0..120 {
        assert_eq!(
            client.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status,
            200
        );
    }
    assert!(eventually(Duration::from_secs(5), || {
        admin_json(&h, "/admin/logs")["total"].as_u64() == Some(50)
    }));
    assert!(eventually(Duration::from_secs(5), || {
        metric(&h, "rotor_log_pruned_total{reason=\"max_records\"}") == 70
    }));
    assert_eq!(health(&h)["log_rows"].as_u64(), Some(50));
}

/// Stats come from rollups: rows pruned by `max_records` or thinned by `sample_rate` leave
/// every total intact.
#[test]
fn stats_count_every_request_while_rows_are_pruned_or_sampled() {
    let h = Harness::start(conf("max_records = 1000\nsample_rate = 0.5"));
    let mut client = h.client();
    for _ in 0..200 {
        assert_eq!(
            client.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status,
            200
        );
    }
    // A request's record is taken after its answer is sent: the last one may come a moment later.
    let mut overview = sonic_rs::Value::default();
    let counted_all = eventually(Duration::from_secs(5), || {
        overview = admin_json(&h, "/admin/stats/overview");
        overview["requests"].as_u64() == Some(200)
    });
    assert!(counted_all, "{overview}");
    assert!(overview["prompt_tokens"].as_u64().unwrap() > 0, "{overview}");
    let rows = admin_json(&h, "/admin/logs")["total"].as_u64().unwrap();
    assert!((40..=160).contains(&rows), "about half the requests got a row: {rows}");
    let stats = admin_json(&h, "/admin/stats?period=hour&group_by=client");
    let counted: u64 = stats["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 200, "{stats}");

    let h = Harness::start(conf("max_records = 20"));
    let mut client = h.client();
    for _ in 0..60 {
        assert_eq!(
            client.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status,
            200
        );
    }
    assert!(eventually(Duration::from_secs(5), || {
        admin_json(&h, "/admin/stats/overview")["requests"].as_u64() == Some(60)
    }));
    assert!(eventually(Duration::from_secs(5), || {
        admin_json(&h, "/admin/logs")["total"].as_u64() == Some(20)
    }));
    let auth = format!("Bearer {ADMIN}");
    let cleared = h
        .client()
        .request("DELETE", "/admin/logs", &[("authorization", &auth)], b"");
    assert_eq!(cleared.status, 200);
    assert_eq!(
        admin_json(&h, "/admin/stats/overview")["requests"].as_u64(),
        Some(60),
        "clearing the rows leaves the stats"
    );
}

/// (file, WAL) sizes.
fn file_bytes(path: &Path) -> (u64, u64) {
    let size = |suffix: &str| {
        let mut p = path.to_owned().into_os_string();
        p.push(suffix);
        std::fs::metadata(p).map_or(0, |m| m.len())
    };
    (size(""), size("-wal"))
}

/// A small `max_db_bytes` keeps the file and its WAL under about 1.2x of it, while the stats
/// still count every request.
#[test]
fn max_db_bytes_bounds_the_file_and_its_wal_while_stats_count_everything() {
    const MAX: u64 = 2 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rotor.db");
    let h = Harness::start(conf(&format!("{}\nmax_db_bytes = {MAX}", path_line(&path))));
    let mut client = h.client();
    for _ in 0..500 {
        assert_eq!(
            client.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status,
            200
        );
    }
    let mut biggest = (0, 0);
    let mut sample = || {
        let (file, wal) = file_bytes(&path);
        if file + wal > biggest.0 + biggest.1 {
            biggest = (file, wal);
        }
    };
    for _ in 0..10 {
        log_directly(&h, 10_000);
        sample();
        assert!(eventually(Duration::from_secs(20), || {
            sample();
            h.running().gateway.records.is_empty()
        }));
    }
    // Everything written, then pruned to the bound.
    let overview = admin_json(&h, "/admin/stats/overview");
    assert_eq!(overview["requests"].as_u64(), Some(100_500), "{overview}");
    assert!(eventually(Duration::from_secs(10), || {
        metric(&h, "rotor_log_pruned_total{reason=\"max_db_bytes\"}") > 0
    }));
    sample();
    assert!(
        (biggest.0 + biggest.1) as f64 <= MAX as f64 * 1.2,
        "file + WAL reached {biggest:?} bytes, over 1.2 x {MAX}"
    );
    println!("max_db_bytes {MAX}: largest (file, WAL) seen {biggest:?}");
    let rows = admin_json(&h, "/admin/logs")["total"].as_u64().unwrap();
    assert!(rows > 1_000 && rows < 100_500, "rows kept: {rows}");
    assert_eq!(metric(&h, "rotor_log_dropped_total"), 0);
}

/// Rollups that cannot be written (another process holds the write lock) wait in memory and
/// are written exactly once when the lock goes: the totals neither lose nor double-count.
#[test]
fn rollups_wait_out_a_locked_database_and_count_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rotor.db");
    let h = Harness::start(conf(&format!("{}\nhealth_window_ms = 60000", path_line(&path))));
    for _ in 0..3 {
        chat_ok(&h);
    }
    // A request is counted as it finishes, which may be just after its answer reached us.
    let requests = |h: &Harness| admin_json(h, "/admin/stats/overview")["requests"].as_u64();
    assert!(
        eventually(Duration::from_secs(5), || requests(&h) == Some(3)),
        "{:?}",
        requests(&h)
    );
    let lock = rusqlite::Connection::open(&path).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE; DELETE FROM rollups WHERE 0;")
        .unwrap();
    for _ in 0..5 {
        chat_ok(&h);
    }
    assert!(
        eventually(Duration::from_secs(10), || {
            health(&h)["storage_error"]
                .as_str()
                .is_some_and(|e| e.contains("rollup"))
        }),
        "a rollup flush failed on the lock: {}",
        health(&h)
    );
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    assert!(
        eventually(Duration::from_secs(5), || requests(&h) == Some(8)),
        "{:?}",
        requests(&h)
    );
    sleep_ms(1_200); // another flush period: nothing is written twice
    assert_eq!(admin_json(&h, "/admin/stats/overview")["requests"].as_u64(), Some(8));
    assert_eq!(metric(&h, "rotor_rollups_dropped_total"), 0);
}

/// `storage.writer_class`: with "auto" the log's writes use the idle scheduling class exactly
/// where this process may leave it again (CI runs as root, where it may), with "normal" never;
/// rows land either way.
#[test]
fn the_writer_uses_the_idle_class_where_it_may_and_rows_land_either_way() {
    let usable = u64::from(rotor::storage::idle_class::may_leave_idle_class());
    for (class, expected) in [("auto", usable), ("normal", 0)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rotor.db");
        let h = Harness::start(conf(&format!("{}\nwriter_class = {class:?}", path_line(&path))));
        for _ in 0..3 {
            chat_ok(&h);
        }
        assert!(
            eventually(Duration::from_secs(5), || rows_in_file(&path) == Some(3)),
            "{class}: rows written"
        );
        assert!(
            eventually(Duration::from_secs(2), || metric(&h, "rotor_storage_idle_class")
                == expected),
            "{class}: rotor_storage_idle_class {expected}"
        );
    }
}
