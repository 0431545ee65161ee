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
    // Sizes that use every statement (64 down to 1) and a full chunk plus remainders.
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
    // The row stamped 70 in the next batch fails inside the second statement (64 + 8 + 4 + 2 rows):
    // `OR FAIL` keeps the rows before it in that statement, the transaction must not.
    s.conn()
        .execute_batch(
            "CREATE TRIGGER no_70 BEFORE INSERT ON request_rows WHEN NEW.ts_ms = 70 \
             BEGIN SELECT RAISE(FAIL, 'row 70'); END;",
        )
        .unwrap();
    let batch: Vec<_> = (2..80).map(|ts| record(ts, "new-model", 200, 1)).collect();
    assert!(insert(&mut s, &batch).is_err());
    assert_eq!(row_count(&mut s).unwrap(), 1, "no row of the failed batch");
    s.conn().execute_batch("DROP TRIGGER no_70;").unwrap();
    // The label the failed batch added was rolled back with it: the next batch adds it again.
    insert(&mut s, &batch).unwrap();
    let page = logs(&mut s, &LogFilter::default(), 1000, 0).unwrap();
    assert_eq!(page.total, 79);
    assert!(page.data.iter().take(78).all(|r| r.model == "new-model"));
}
