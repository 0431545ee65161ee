use super::*;
use crate::usage::record::{RecordText, Texts};
use crate::usage::Usage;

fn record(ts_ms: i64, model: &str, status: u16, prompt: u64) -> RequestRecord {
    RequestRecord {
        ts_ms,
        status,
        latency_ms: 100,
        usage: Usage {
            prompt_tokens: prompt,
            completion_tokens: 1,
            reported: true,
            ..Default::default()
        },
        text: Texts::new(&RecordText {
            request_id: "r",
            model,
            provider: "p",
            client: "c",
            key: "…abcd",
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn batches_of_any_size_insert_every_row_in_order_and_the_span_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Storage::open(Some(&dir.path().join("r.db"))).unwrap();
    assert_eq!(id_span(&mut s).unwrap(), None);
    let mut next = 0;
    // Batches of one row, of a few, and of more than one label cache round.
    for size in [1, 2, 3, 31, 32, 33, 63, 64, 65, 127, 200] {
        let batch: Vec<_> = (next..next + size).map(|i| record(i, "m", 200, i as u64)).collect();
        insert(&mut s, &batch).unwrap();
        next += size;
    }
    assert_eq!(row_count(&mut s).unwrap(), next as u64);
    let page = logs(&mut s, &LogFilter::default(), 1000, 0).unwrap();
    let stamps: Vec<i64> = page.data.iter().rev().map(|r| r.ts).collect();
    assert_eq!(stamps, (0..next).collect::<Vec<_>>(), "every row, in insertion order");
    assert_eq!(prune_oldest(&mut s, 10).unwrap(), 10);
    let (oldest, newest) = id_span(&mut s).unwrap().unwrap();
    assert_eq!((newest - oldest + 1) as u64, row_count(&mut s).unwrap());
    assert_eq!(row_count(&mut s).unwrap(), next as u64 - 10);
}

#[test]
fn logs_filter_and_page_newest_first_and_prune_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Storage::open(Some(&dir.path().join("r.db"))).unwrap();
    // 2026-01-01T00:30Z, 2026-01-01T01:10Z, 2026-01-02T05:00Z, 2026-02-01T00:00Z
    let (a, b, c, d) = (
        1_767_227_400_000,
        1_767_229_800_000,
        1_767_330_000_000,
        1_769_904_000_000,
    );
    insert(
        &mut s,
        &[
            record(a, "m1", 200, 10),
            record(b, "m1", 500, 20),
            record(c, "m2", 200, 5),
            record(d, "m1", 200, 1),
        ],
    )
    .unwrap();
    let page = logs(
        &mut s,
        &LogFilter {
            model: Some("m1".into()),
            ..Default::default()
        },
        2,
        0,
    )
    .unwrap();
    assert_eq!(page.total, 3);
    assert_eq!(
        page.data.iter().map(|r| r.ts).collect::<Vec<_>>(),
        vec![d, b],
        "newest first, paged"
    );
    assert_eq!(page.data[1].status, 500);
    assert_eq!(page.data[1].upstream_model, "m1", "no alias: the model itself");
    assert_eq!(
        (page.data[1].client.as_str(), page.data[1].key.as_str()),
        ("c", "…abcd")
    );
    assert_eq!(page.data[1].prompt_tokens, 20);
    let since = logs(
        &mut s,
        &LogFilter {
            since_ms: Some(c),
            ..Default::default()
        },
        10,
        0,
    )
    .unwrap();
    assert_eq!(since.total, 2);
    assert_eq!(row_count(&mut s).unwrap(), 4);
    assert_eq!(prune_before(&mut s, c, 1).unwrap(), 1, "one step looks at one row");
    assert_eq!(prune_before(&mut s, c, 10).unwrap(), 1);
    assert_eq!(prune_before(&mut s, c, 10).unwrap(), 0, "nothing older is left");
    assert_eq!(row_count(&mut s).unwrap(), 2);
    assert_eq!(prune_oldest(&mut s, 1).unwrap(), 1);
    assert_eq!(id_span(&mut s).unwrap(), Some((4, 4)));
    assert_eq!(
        prune_labels(&mut s, 0).unwrap(),
        2,
        "m2's label and m1's with status 500 have no row left"
    );
    insert(&mut s, &[record(d, "m1", 200, 1)]).unwrap();
    assert_eq!(logs(&mut s, &LogFilter::default(), 10, 0).unwrap().total, 2);
    assert_eq!(clear(&mut s).unwrap(), 2);
    assert_eq!(row_count(&mut s).unwrap(), 0);
}

#[test]
fn retention_deletes_the_expired_prefix_and_never_a_younger_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Storage::open(Some(&dir.path().join("r.db"))).unwrap();
    // Written in finish order: a long request that arrived at 1 ends after one that arrived at
    // 50, so row 3 is older than row 2.
    let stamps = [0, 50, 1, 60];
    let batch: Vec<_> = stamps.iter().map(|&ts| record(ts, "m", 200, 1)).collect();
    insert(&mut s, &batch).unwrap();
    assert_eq!(prune_before(&mut s, 10, 100).unwrap(), 1, "the expired prefix: row 1");
    let kept = |s: &mut Storage| -> Vec<i64> {
        let page = logs(s, &LogFilter::default(), 10, 0).unwrap();
        page.data.iter().rev().map(|r| r.ts).collect()
    };
    assert_eq!(
        kept(&mut s),
        vec![50, 1, 60],
        "row 2 is younger than the cutoff: it stays, and row 3 behind it"
    );
    assert_eq!(
        prune_before(&mut s, 55, 100).unwrap(),
        2,
        "rows 2 and 3 once row 2 expired"
    );
    assert_eq!(kept(&mut s), vec![60]);
    assert_eq!(id_span(&mut s).unwrap(), Some((4, 4)), "the span stays exact");
    assert_eq!(prune_before(&mut s, 55, 100).unwrap(), 0);
}

#[test]
fn a_batch_that_fails_part_way_leaves_none_of_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Storage::open(Some(&dir.path().join("r.db"))).unwrap();
    insert(&mut s, &[record(1, "m", 200, 1)]).unwrap();
    // The next batch fails when its rows are written, after it added a label for its new model:
    // the transaction must take the label back with the rows.
    s.conn()
        .execute_batch(
            "CREATE TRIGGER no_batch BEFORE INSERT ON request_batches WHEN NEW.id > 1 \
             BEGIN SELECT RAISE(FAIL, 'no batch'); END;",
        )
        .unwrap();
    let batch: Vec<_> = (2..80).map(|ts| record(ts, "new-model", 200, 1)).collect();
    assert!(insert(&mut s, &batch).is_err());
    assert_eq!(row_count(&mut s).unwrap(), 1, "no row of the failed batch");
    let labels: i64 = s
        .conn()
        .query_row("SELECT COUNT(*) FROM log_labels", [], |r| r.get(0))
        .unwrap();
    assert_eq!(labels, 1, "the failed batch's label went with it");
    s.conn().execute_batch("DROP TRIGGER no_batch;").unwrap();
    // The label the failed batch added was rolled back with it: the next batch adds it again.
    insert(&mut s, &batch).unwrap();
    let page = logs(&mut s, &LogFilter::default(), 1000, 0).unwrap();
    assert_eq!(page.total, 79);
    assert!(page.data.iter().take(78).all(|r| r.model == "new-model"));
    assert_eq!(id_span(&mut s).unwrap(), Some((1, 79)), "ids go on from the newest row");
}

#[test]
fn a_prune_inside_a_batch_keeps_the_exact_rows_and_gives_back_the_bytes_of_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Storage::open(Some(&dir.path().join("r.db"))).unwrap();
    let batch: Vec<_> = (0..5).map(|ts| record(ts, "m", 200, ts as u64)).collect();
    insert(&mut s, &batch).unwrap();
    insert(&mut s, &batch).unwrap();
    let bytes = |s: &mut Storage| -> Vec<i64> {
        s.conn()
            .prepare("SELECT length(rows) FROM request_batches ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let before = bytes(&mut s);
    assert_eq!(prune_oldest(&mut s, 7).unwrap(), 7);
    assert_eq!(id_span(&mut s).unwrap(), Some((8, 10)));
    let after = bytes(&mut s);
    assert_eq!(after.len(), 1, "the first batch went whole");
    assert!(
        after[0] < before[1],
        "{after:?} {before:?}: the pruned rows' bytes went"
    );
    let page = logs(&mut s, &LogFilter::default(), 10, 0).unwrap();
    let rows: Vec<_> = page.data.iter().map(|r| (r.id, r.ts, r.prompt_tokens)).collect();
    assert_eq!(rows, [(10, 4, 4), (9, 3, 3), (8, 2, 2)]);
    assert_eq!(page.total, 3);
    assert_eq!(
        prune_before(&mut s, 4, 100).unwrap(),
        2,
        "the expired rows of the kept batch"
    );
    assert_eq!(id_span(&mut s).unwrap(), Some((10, 10)));
    let paged = logs(&mut s, &LogFilter::default(), 1, 1).unwrap();
    assert_eq!((paged.total, paged.data.len()), (1, 0), "paged past the end");
    assert_eq!(prune_oldest(&mut s, 5).unwrap(), 1, "no more than there are");
    assert_eq!(id_span(&mut s).unwrap(), None);
}

#[test]
fn pages_across_batches_answer_as_a_row_by_row_scan_would() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Storage::open(Some(&dir.path().join("r.db"))).unwrap();
    // (id, ts, model, status) of every row, written in batches of 1 to 7 rows.
    let mut rows = Vec::new();
    let mut id = 0;
    for size in [3, 1, 7, 2, 5, 4, 6] {
        let batch: Vec<_> = (0..size)
            .map(|i| {
                id += 1;
                let (ts, model, status) = (
                    (id * 37) % 50,
                    ["a", "b", "c"][id as usize % 3],
                    [200, 429][id as usize % 2],
                );
                rows.push((id, ts, model, status));
                record(ts, model, status, i)
            })
            .collect();
        insert(&mut s, &batch).unwrap();
    }
    assert_eq!(prune_oldest(&mut s, 2).unwrap(), 2);
    rows.drain(..2);
    let filters = [
        LogFilter::default(),
        LogFilter {
            model: Some("b".into()),
            ..Default::default()
        },
        LogFilter {
            status: Some(429),
            since_ms: Some(10),
            ..Default::default()
        },
        LogFilter {
            until_ms: Some(25),
            model: Some("a".into()),
            ..Default::default()
        },
        LogFilter {
            model: Some("none".into()),
            ..Default::default()
        },
    ];
    for filter in &filters {
        let wanted: Vec<i64> = rows
            .iter()
            .rev()
            .filter(|(_, ts, model, status)| {
                filter.model.as_deref().is_none_or(|m| m == *model)
                    && filter.status.is_none_or(|st| st == i64::from(*status))
                    && filter.since_ms.is_none_or(|t| *ts >= t)
                    && filter.until_ms.is_none_or(|t| *ts < t)
            })
            .map(|r| r.0)
            .collect();
        for (limit, offset) in [(1, 0), (3, 2), (4, 5), (100, 0), (2, 40)] {
            let page = logs(&mut s, filter, limit, offset).unwrap();
            assert_eq!(page.total as usize, wanted.len(), "{filter:?}");
            let ids: Vec<i64> = page.data.iter().map(|r| r.id).collect();
            let expected: Vec<i64> = wanted
                .iter()
                .skip(offset as usize)
                .take(limit as usize)
                .copied()
                .collect();
            assert_eq!(ids, expected, "{filter:?} limit {limit} offset {offset}");
        }
    }
}
