//! The numbers of a request row that no query filters on (attempts, stream, latencies, tokens,
//! bytes), packed into one BLOB column, `numbers`, so a row insert binds few values and SQLite
//! builds a small record (issue 18: the log writer's cost per row was mostly binding and record
//! building, one step per column). Since migration 8 the row's request id (never filtered on)
//! follows the numbers in the same blob; since migration 9
//! (`request_migrations::MIGRATION_LEAN`) every row's does, and the row has no request id
//! column. Filtered columns (`ts_ms`, `labels`) stay columns.
//! Invariant: `decode` reads every format `encode` or a migration ever wrote (the first byte
//! says which), and never fails: a short or unknown blob reads as zeros past its end.

/// The packed numbers in row order: attempts, stream, latency_ms, ttfb_ms, overhead_us,
/// prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, usage_partial, bytes_in,
/// bytes_out.
pub const COUNT: usize = 12;
/// Written by `MIGRATION` from the old columns: each number as 8 bytes, big-endian.
const FIXED: u8 = 0;
/// Written before migration 8: each number as an LEB128 varint (1-2 bytes for most); the
/// request id is in its own column.
const VARINT: u8 = 1;
/// Written by `encode`: the numbers as in `VARINT`, then the request id's bytes to the end.
/// (`request_migrations::MIGRATION_LEAN` turned every `VARINT` row into this by appending its
/// id column.)
const VARINT_ID: u8 = 2;
/// Written by `request_migrations::MIGRATION_LEAN` from `FIXED` rows: the numbers as in
/// `FIXED`, then the request id's bytes to the end.
const FIXED_ID: u8 = 3;
/// The longest blob `encode` writes: a format byte, 10 bytes per number at most and the
/// request id (cut to `MAX_FIELD_BYTES` when the record was built).
pub const MAX_BYTES: usize = 1 + COUNT * 10 + crate::usage::record::MAX_FIELD_BYTES;

/// Migration 8: nothing to rewrite (old rows keep their request id column and read as
/// before), but rows written from now on are `VARINT_ID`, which an older rotor would read as
/// zeros with no request id; the version bump makes it refuse the file instead.
pub const MIGRATION_ID_IN_BLOB: &str = "SELECT 1;";

/// Migration: rows move to a table whose numbers are one blob (same name, same ids, so
/// pruning and the id span stay exact). The old columns become 8-byte big-endian numbers.
pub const MIGRATION: &str = "CREATE TABLE request_rows_packed (
        id INTEGER PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        request_id TEXT NOT NULL,
        labels INTEGER NOT NULL,
        status INTEGER NOT NULL,
        numbers BLOB NOT NULL
    ) STRICT;
    INSERT INTO request_rows_packed (id, ts_ms, request_id, labels, status, numbers)
        SELECT id, ts_ms, request_id, labels, status,
            unhex(printf('00%016x%016x%016x%016x%016x%016x%016x%016x%016x%016x%016x%016x', attempts, stream,
                latency_ms, ttfb_ms, overhead_us, prompt_tokens, completion_tokens, cached_tokens,
                reasoning_tokens, usage_partial, bytes_in, bytes_out))
        FROM request_rows ORDER BY id;
    DROP TABLE request_rows;
    ALTER TABLE request_rows_packed RENAME TO request_rows;";

/// `numbers` and `request_id` packed into `out`; returns the length used (a request id longer
/// than the room left is cut, which `Texts` never lets happen).
pub fn encode(numbers: &[u64; COUNT], request_id: &[u8], out: &mut [u8; MAX_BYTES]) -> usize {
    out[0] = VARINT_ID;
    let mut at = 1;
    for &n in numbers {
        // At most 1 + 10 x COUNT bytes so far: every index below is in bounds.
        if n < 0x80 {
            out[at] = n as u8;
            at += 1;
        } else if n < 0x4000 {
            out[at] = (n as u8) | 0x80;
            out[at + 1] = (n >> 7) as u8;
            at += 2;
        } else {
            at += varint(n, &mut out[at..at + 10]);
        }
    }
    let id = request_id.get(..MAX_BYTES - at).unwrap_or(request_id);
    out[at..at + id.len()].copy_from_slice(id);
    at + id.len()
}

/// `n` as an LEB128 varint at the start of `out` (10 bytes fit any u64); returns its length.
fn varint(mut n: u64, out: &mut [u8]) -> usize {
    let mut at = 0;
    for slot in out.iter_mut() {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        at += 1;
        if n == 0 {
            *slot = byte;
            break;
        }
        *slot = byte | 0x80;
    }
    at
}

/// The numbers of a blob `encode` or a migration wrote (as i64, the way rows report them),
/// and the request id it carries (`None` for formats that keep it in its column).
pub fn decode(blob: &[u8]) -> ([i64; COUNT], Option<&[u8]>) {
    let mut out = [0i64; COUNT];
    match blob.split_first() {
        Some((&FIXED, rest)) => {
            read_fixed(rest, &mut out);
            (out, None)
        }
        Some((&VARINT, rest)) => {
            read_varints(rest, &mut out);
            (out, None)
        }
        Some((&VARINT_ID, rest)) => {
            let used = read_varints(rest, &mut out);
            (out, Some(rest.get(used..).unwrap_or(&[])))
        }
        Some((&FIXED_ID, rest)) => {
            let (fixed, id) = rest.split_at(rest.len().min(COUNT * 8));
            read_fixed(fixed, &mut out);
            (out, Some(id))
        }
        _ => (out, None),
    }
}

/// Fills `out` from the 8-byte big-endian numbers at the start of `bytes`.
fn read_fixed(bytes: &[u8], out: &mut [i64; COUNT]) {
    for (n, bytes) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        *n = bytes.try_into().map_or(0, i64::from_be_bytes);
    }
}

/// Fills `out` from the varints at the start of `bytes`; returns the bytes they took.
fn read_varints(bytes: &[u8], out: &mut [i64; COUNT]) -> usize {
    let mut at = 0;
    for n in out.iter_mut() {
        let mut value: u64 = 0;
        let mut shift = 0;
        while let Some(&b) = bytes.get(at) {
            at += 1;
            if shift < 64 {
                value |= u64::from(b & 0x7f) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        *n = i64::try_from(value).unwrap_or(i64::MAX);
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoder before migration 8 (format `VARINT`, no request id): `decode` still reads
    /// what it wrote, and the fast paths of `encode` write the same varints.
    use super::tests_support::v1_blob as encode_varint_v1;

    #[test]
    fn numbers_round_trip_in_every_format() {
        let numbers = [
            1,
            0,
            850,
            120,
            35,
            0,
            300,
            127,
            128,
            1,
            u64::from(u32::MAX) + 7,
            i64::MAX as u64,
        ];
        let mut buf = [0u8; MAX_BYTES];
        let len = encode(&numbers, b"req-1", &mut buf);
        assert!(len < 45, "{len}");
        assert_eq!(decode(&buf[..len]), (numbers.map(|n| n as i64), Some(&b"req-1"[..])));
        let v1 = encode_varint_v1(&numbers);
        assert_eq!(
            decode(&v1),
            (numbers.map(|n| n as i64), None),
            "rows from before migration 8"
        );
        assert_eq!(&buf[1..len - 5], &v1[1..], "the same varints");
        let mut fixed = vec![FIXED];
        for n in numbers {
            fixed.extend_from_slice(&(n as i64).to_be_bytes());
        }
        assert_eq!(decode(&fixed), (numbers.map(|n| n as i64), None));
        let mut fixed_id = fixed.clone();
        fixed_id[0] = FIXED_ID;
        fixed_id.extend_from_slice(b"req-1");
        assert_eq!(
            decode(&fixed_id),
            (numbers.map(|n| n as i64), Some(&b"req-1"[..])),
            "FIXED rows after migration 9"
        );
        assert_eq!(
            decode(&[FIXED_ID, 0, 0, 0, 0, 0, 0, 0, 5]),
            ([5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], Some(&[][..])),
            "short reads as zeros and no id"
        );
        assert_eq!(decode(&[]), ([0; COUNT], None));
        assert_eq!(
            decode(&[VARINT, 5]),
            ([5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], None),
            "short reads as zeros"
        );
        assert_eq!(
            decode(&[VARINT_ID, 5]),
            ([5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], Some(&[][..])),
            "short reads as zeros and no id"
        );
        assert_eq!(decode(&[9, 5]), ([0; COUNT], None), "unknown format");
        let max = [u64::MAX; COUNT];
        let id = "é".repeat(crate::usage::record::MAX_FIELD_BYTES / 2);
        let len = encode(&max, id.as_bytes(), &mut buf);
        assert_eq!(len, MAX_BYTES);
        assert_eq!(
            decode(&buf[..len]),
            ([i64::MAX; COUNT], Some(id.as_bytes())),
            "clamped like the columns were; the longest id fits"
        );
    }

    #[test]
    fn the_fast_paths_write_the_same_varints_at_every_width() {
        let mut buf = [0u8; MAX_BYTES];
        for shift in 0..64 {
            for n in [1u64 << shift, (1u64 << shift) - 1, (1u64 << shift) + 1] {
                let mut numbers = [0u64; COUNT];
                numbers[3] = n;
                numbers[COUNT - 1] = n;
                let len = encode(&numbers, b"", &mut buf);
                assert_eq!(&buf[1..len], &encode_varint_v1(&numbers)[1..], "{n}");
                assert_eq!(
                    decode(&buf[..len]).0,
                    numbers.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
                );
            }
        }
    }

    #[test]
    fn rows_written_before_the_migration_read_the_same_after_it() {
        use crate::storage::{requests, Storage, MIGRATIONS};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let at = MIGRATIONS.iter().position(|m| *m == MIGRATION).unwrap();
        let mut old = Storage::open_with(Some(&path), &MIGRATIONS[..at]).unwrap();
        old.conn()
            .execute_batch(
                "INSERT INTO log_labels (client, endpoint, model, provider, upstream_model, key, error) \
                 VALUES ('c', 'chat', 'm', 'p', 'm', '…abcd', '');
                 INSERT INTO request_rows (ts_ms, request_id, labels, status, attempts, stream, latency_ms, ttfb_ms, \
                 overhead_us, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, usage_partial, \
                 bytes_in, bytes_out) VALUES (5, 'r1', 1, 502, 2, 1, 850, 120, 35, 10, 20, 3, 4, 1, 900, 9000000000);",
            )
            .unwrap();
        drop(old);
        let mut s = Storage::open(Some(&path)).unwrap();
        let page = requests::logs(&mut s, &Default::default(), 10, 0).unwrap();
        let r = &page.data[0];
        assert_eq!(
            (r.id, r.ts, r.request_id.as_str(), r.status, r.model.as_str()),
            (1, 5, "r1", 502, "m")
        );
        super::tests_support::assert_sample_numbers(r);
        assert_eq!(requests::row_count(&mut s).unwrap(), 1);
    }
}

#[cfg(test)]
mod upgrade_tests {
    use crate::storage::requests::{self, LogFilter};
    use crate::storage::{Storage, MIGRATIONS};
    use crate::usage::record::{RecordText, RequestRecord, Texts};

    /// A file at schema 7 (request ids in their column, numbers as `VARINT`) opens, reads the
    /// same, and takes new rows (ids in the blob) after it with ids that go on counting.
    #[test]
    fn a_file_from_before_migration_8_reads_the_same_and_takes_new_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v7.db");
        let at = MIGRATIONS
            .iter()
            .position(|m| *m == super::MIGRATION_ID_IN_BLOB)
            .unwrap();
        assert_eq!(at, 7);
        let mut old = Storage::open_with(Some(&path), &MIGRATIONS[..at]).unwrap();
        let v1 = super::tests_support::v1_blob(&[2, 1, 850, 120, 35, 10, 20, 3, 4, 1, 900, 9_000_000_000]);
        {
            let conn = old.conn();
            conn.execute(
                "INSERT INTO log_labels (client, endpoint, model, provider, upstream_model, key, error) \
                 VALUES ('c', 'chat', 'm', 'p', 'm', '…abcd', '')",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO request_rows (ts_ms, request_id, labels, status, numbers) VALUES (5, 'old-1', 1, 502, ?1)",
                [&v1],
            )
            .unwrap();
        }
        drop(old);
        let mut s = Storage::open(Some(&path)).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len());
        let new = RequestRecord {
            ts_ms: 6,
            status: 200,
            attempts: 1,
            latency_ms: 7,
            bytes_out: 300,
            text: Texts::new(&RecordText {
                request_id: "new-2",
                client: "c",
                endpoint: "chat",
                model: "m",
                provider: "p",
                key: "…abcd",
                ..Default::default()
            }),
            ..Default::default()
        };
        requests::insert(&mut s, &[new]).unwrap();
        let page = requests::logs(&mut s, &LogFilter::default(), 10, 0).unwrap();
        assert_eq!(page.total, 2);
        let (n, o) = (&page.data[0], &page.data[1]);
        assert_eq!((o.id, o.ts, o.request_id.as_str(), o.status), (1, 5, "old-1", 502));
        super::tests_support::assert_sample_numbers(o);
        assert_eq!((n.id, n.ts, n.request_id.as_str(), n.status), (2, 6, "new-2", 200));
        assert_eq!((n.model.as_str(), n.upstream_model.as_str()), ("m", "m"));
        assert_eq!([n.attempts, n.latency_ms, n.bytes_out], [1, 7, 300]);
        assert!(!n.stream && !n.usage_partial);
        let old_binary = Storage::open_with(Some(&path), &MIGRATIONS[..at]);
        assert!(old_binary.is_err(), "a rotor from before migration 8 refuses the file");
    }
}

#[cfg(test)]
mod lean_tests {
    use crate::storage::requests::{self, LogFilter};
    use crate::storage::{request_migrations, Storage, MIGRATIONS};

    /// Rows of every earlier format (written at schema 8: a `VARINT` row with its id in the
    /// column, a `VARINT_ID` row with '' there) read the same after migration 9, which drops
    /// the column and its checks and moves the status into the label.
    #[test]
    fn rows_of_schema_8_keep_their_request_ids_through_migration_9() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v8.db");
        let at = MIGRATIONS
            .iter()
            .position(|m| *m == request_migrations::MIGRATION_LEAN)
            .unwrap();
        assert_eq!(at, 8);
        let mut old = Storage::open_with(Some(&path), &MIGRATIONS[..at]).unwrap();
        let numbers = [2, 1, 850, 120, 35, 10, 20, 3, 4, 1, 900, 9_000_000_000];
        let v1 = super::tests_support::v1_blob(&numbers);
        let mut buf = [0u8; super::MAX_BYTES];
        let len = super::encode(&numbers, "new-ü".as_bytes(), &mut buf);
        {
            let conn = old.conn();
            conn.execute(
                "INSERT INTO log_labels (client, endpoint, model, provider, upstream_model, key, error) \
                 VALUES ('c', 'chat', 'm', 'p', 'm', '…abcd', '')",
                [],
            )
            .unwrap();
            let insert =
                "INSERT INTO request_rows (ts_ms, request_id, labels, status, numbers) VALUES (?1, ?2, 1, 502, ?3)";
            conn.execute(insert, rusqlite::params![5, "old-1", v1]).unwrap();
            conn.execute(insert, rusqlite::params![6, "", &buf[..len]]).unwrap();
        }
        drop(old);
        // Migration 9's table, before migration 10 moves its rows into batches.
        let mut v9 = Storage::open_with(Some(&path), &MIGRATIONS[..=at]).unwrap();
        let columns: Vec<String> = v9
            .conn()
            .prepare("SELECT name FROM pragma_table_info('request_rows')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(columns, ["id", "ts_ms", "labels", "numbers"]);
        drop(v9);
        let mut s = Storage::open(Some(&path)).unwrap();
        let page = requests::logs(&mut s, &LogFilter::default(), 10, 0).unwrap();
        let ids: Vec<_> = page.data.iter().map(|r| (r.id, r.ts, r.request_id.as_str())).collect();
        assert_eq!(ids, [(2, 6, "new-ü"), (1, 5, "old-1")]);
        for r in &page.data {
            super::tests_support::assert_sample_numbers(r);
            assert_eq!((r.status, r.model.as_str(), r.key.as_str()), (502, "m", "…abcd"));
        }
        assert_eq!(requests::row_count(&mut s).unwrap(), 2);
    }
}

#[cfg(test)]
pub(super) mod tests_support {
    /// The numbers both upgrade tests wrote in their old-schema row, read back.
    pub fn assert_sample_numbers(r: &crate::storage::requests::LogRow) {
        assert_eq!(
            [
                r.attempts,
                r.latency_ms,
                r.ttfb_ms,
                r.overhead_us,
                r.prompt_tokens,
                r.completion_tokens
            ],
            [2, 850, 120, 35, 10, 20]
        );
        assert_eq!(
            [r.cached_tokens, r.reasoning_tokens, r.bytes_in, r.bytes_out],
            [3, 4, 900, 9_000_000_000]
        );
        assert!(r.stream && r.usage_partial);
    }

    /// A `VARINT` blob as rotor wrote it before migration 8.
    pub fn v1_blob(numbers: &[u64; super::COUNT]) -> Vec<u8> {
        let mut out = vec![super::VARINT];
        for &n in numbers {
            let mut n = n;
            loop {
                let byte = (n & 0x7f) as u8;
                n >>= 7;
                out.push(if n == 0 { byte } else { byte | 0x80 });
                if n == 0 {
                    break;
                }
            }
        }
        out
    }
}
