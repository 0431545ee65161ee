//! Request rows as SQLite holds them since migration 10: one table row per writer batch, its
//! records back to back in one blob. A record keeps the id it always had (the ids of a batch
//! are consecutive and end at the table row's `id`), so paging, counting and pruning by id stay
//! exact; the table row's `first` is its oldest id (a prune of part of a batch writes it again
//! without the pruned records and moves `first` up).
//! Why: a table row costs SQLite about 1,400 instructions to step and 600 to bind whatever it
//! holds (callgrind, SQLite 3.40, issue 18); one per batch costs a few instructions a record.
//! Invariant: `records` reads every blob `encode` or the migration ever wrote and never fails
//! (a short blob ends early), numbering its records back from the table row's `id`.

/// Migration 10: every request row becomes a batch of one record, keeping its id, time, label
/// id (0 when it had none: no label has that id, so the row stays out of `logs` as before) and
/// blob. `||` joins the bytes as text, the cast takes them back as a blob (as in migration 9).
pub const MIGRATION: &str = "CREATE TABLE request_batches (id INTEGER PRIMARY KEY, first, rows);
    INSERT INTO request_batches (id, first, rows)
        SELECT id, id, CAST(X'01' || unhex(printf('%016x%016x%04x', ts_ms, ifnull(labels, 0),
                length(CAST(ifnull(numbers, X'') AS BLOB)))) || CAST(ifnull(numbers, X'') AS BLOB) AS BLOB)
        FROM request_rows ORDER BY id;
    DROP TABLE request_rows;";

/// The one blob format: this byte, then each record as its time (8 bytes, big-endian), label id
/// (8 bytes), the length of its `packed` blob (2 bytes) and that blob. Fixed widths, so the
/// migration can write them with `printf`.
const FORMAT: u8 = 1;
const HEADER: usize = 8 + 8 + 2;

/// One record of a batch, borrowed from its blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub id: i64,
    pub ts_ms: i64,
    pub label: i64,
    /// The `packed` numbers and request id.
    pub numbers: &'a [u8],
}

/// A batch's blob being built by the writer.
pub struct Builder {
    blob: Vec<u8>,
    records: usize,
}

impl Builder {
    pub fn with_capacity(records: usize) -> Builder {
        let mut blob = Vec::with_capacity(1 + records * 64);
        blob.push(FORMAT);
        Builder { blob, records: 0 }
    }

    /// Appends a record (`numbers` as `packed::encode` or a migration wrote it: at most
    /// `packed::MAX_BYTES`, far below the two-byte length's bound, which cuts anything longer).
    pub fn push(&mut self, ts_ms: i64, label: i64, numbers: &[u8]) {
        let numbers = numbers.get(..usize::from(u16::MAX)).unwrap_or(numbers);
        self.blob.extend_from_slice(&ts_ms.to_be_bytes());
        self.blob.extend_from_slice(&label.to_be_bytes());
        self.blob.extend_from_slice(&(numbers.len() as u16).to_be_bytes());
        self.blob.extend_from_slice(numbers);
        self.records += 1;
    }

    pub fn len(&self) -> usize {
        self.records
    }

    pub fn blob(&self) -> &[u8] {
        &self.blob
    }
}

/// The records of a batch whose last id is `last`, oldest first, from id `first` on. The ids
/// count back from `last` over the records the blob holds.
pub fn records(last: i64, first: i64, blob: &[u8]) -> Vec<Record<'_>> {
    let mut out = Vec::new();
    let mut rest = match blob.split_first() {
        Some((&FORMAT, rest)) => rest,
        _ => return out,
    };
    while rest.len() >= HEADER {
        let (head, tail) = rest.split_at(HEADER);
        let ts_ms = head
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, i64::from_be_bytes);
        let label = head
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .map_or(0, i64::from_be_bytes);
        let len = head
            .get(16..)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u16::from_be_bytes);
        let (numbers, tail) = tail.split_at(usize::from(len).min(tail.len()));
        out.push(Record {
            id: 0,
            ts_ms,
            label,
            numbers,
        });
        rest = tail;
    }
    let start = last - out.len() as i64 + 1;
    for (record, id) in out.iter_mut().zip(start..) {
        record.id = id;
    }
    out.retain(|r| r.id >= first);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::packed;

    #[test]
    fn records_read_back_with_their_ids_and_pruned_ones_skipped() {
        let mut b = Builder::with_capacity(3);
        b.push(5, 1, b"\x02abc");
        b.push(-7, i64::MAX, b"");
        b.push(i64::MAX, 3, &[0; packed::MAX_BYTES]);
        assert_eq!(b.len(), 3);
        let all = records(12, 10, b.blob());
        assert_eq!(
            all.iter().map(|r| (r.id, r.ts_ms, r.label)).collect::<Vec<_>>(),
            [(10, 5, 1), (11, -7, i64::MAX), (12, i64::MAX, 3)]
        );
        assert_eq!(all[0].numbers, b"\x02abc");
        assert_eq!(all[2].numbers.len(), packed::MAX_BYTES);
        let pruned = records(12, 12, b.blob());
        assert_eq!(pruned.iter().map(|r| r.id).collect::<Vec<_>>(), [12]);
        assert!(records(12, 13, b.blob()).is_empty());
        let short = &b.blob()[..b.blob().len() - 10];
        assert_eq!(records(12, 0, short).len(), 3, "a short blob ends early, never fails");
        assert!(records(1, 0, &[9, 1, 2]).is_empty(), "unknown format");
        assert!(records(1, 0, &[]).is_empty());
    }

    /// A file at schema 9 (the one before this migration) with a pruned prefix, rows of both
    /// blob formats `packed` still reads, a row whose label is gone and one with none: every
    /// row keeps its id, time, label, numbers and request id; the span counts them all and
    /// `logs` shows the ones with a label, as before; new rows take the next ids.
    #[test]
    fn rows_of_schema_9_read_the_same_after_migration_10() {
        use crate::storage::requests::{self, LogFilter};
        use crate::storage::{Storage, MIGRATIONS};
        use crate::usage::record::{RecordText, RequestRecord, Texts};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v9.db");
        let at = MIGRATIONS.iter().position(|m| *m == MIGRATION).unwrap();
        assert_eq!(at, 9);
        let mut old = Storage::open_with(Some(&path), &MIGRATIONS[..at]).unwrap();
        let numbers = [2, 1, 850, 120, 35, 10, 20, 3, 4, 1, 900, 9_000_000_000];
        let mut varint_id = [0u8; packed::MAX_BYTES];
        let len = packed::encode(&numbers, "new-ü".as_bytes(), &mut varint_id);
        let mut fixed_id = vec![3u8];
        for n in numbers {
            fixed_id.extend_from_slice(&(n as i64).to_be_bytes());
        }
        fixed_id.extend_from_slice(b"old-1");
        {
            let conn = old.conn();
            conn.execute_batch(
                "INSERT INTO log_labels (client, endpoint, model, provider, upstream_model, key, error, status) \
                 VALUES ('c', 'chat', 'm', 'p', 'm', '…abcd', '', 502), ('d', 'chat', 'n', 'p', 'n2', '…wxyz', 'e', 200);",
            )
            .unwrap();
            let insert = "INSERT INTO request_rows (id, ts_ms, labels, numbers) VALUES (?1, ?2, ?3, ?4)";
            conn.execute(insert, rusqlite::params![5, 1_000, 1, fixed_id]).unwrap();
            conn.execute(insert, rusqlite::params![6, 2_000, 77, &varint_id[..len]])
                .unwrap();
            conn.execute(insert, rusqlite::params![7, 3_000, None::<i64>, &varint_id[..len]])
                .unwrap();
            conn.execute(insert, rusqlite::params![8, 4_000, 2, &varint_id[..len]])
                .unwrap();
        }
        drop(old);
        let mut s = Storage::open(Some(&path)).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len());
        assert_eq!(requests::id_span(&mut s).unwrap(), Some((5, 8)));
        let page = requests::logs(&mut s, &LogFilter::default(), 10, 0).unwrap();
        assert_eq!(page.total, 4, "the span counts every row, as before");
        let shown: Vec<_> = page
            .data
            .iter()
            .map(|r| (r.id, r.ts, r.request_id.as_str(), r.model.as_str(), r.status))
            .collect();
        assert_eq!(
            shown,
            [(8, 4_000, "new-ü", "n", 200), (5, 1_000, "old-1", "m", 502)],
            "rows without a label stay out"
        );
        for r in &page.data {
            crate::storage::packed::tests_support::assert_sample_numbers(r);
        }
        let n = &page.data[0];
        assert_eq!(
            (
                n.client.as_str(),
                n.upstream_model.as_str(),
                n.key.as_str(),
                n.error.as_str()
            ),
            ("d", "n2", "…wxyz", "e")
        );
        let only_502 = LogFilter {
            status: Some(502),
            ..Default::default()
        };
        assert_eq!(requests::logs(&mut s, &only_502, 10, 0).unwrap().total, 1);
        let new = RequestRecord {
            ts_ms: 5_000,
            status: 200,
            text: Texts::new(&RecordText {
                request_id: "next",
                model: "m",
                ..Default::default()
            }),
            ..Default::default()
        };
        requests::insert(&mut s, &[new.clone(), new]).unwrap();
        assert_eq!(requests::id_span(&mut s).unwrap(), Some((5, 10)));
        assert_eq!(requests::prune_oldest(&mut s, 3).unwrap(), 3);
        assert_eq!(requests::id_span(&mut s).unwrap(), Some((8, 10)));
        let ids: Vec<_> = requests::logs(&mut s, &LogFilter::default(), 10, 0)
            .unwrap()
            .data
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, [10, 9, 8]);
    }
}
