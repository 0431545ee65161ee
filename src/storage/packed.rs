//! The numbers of a request row that no query filters on (attempts, stream, latencies, tokens,
//! bytes), packed into one BLOB column, `numbers`, so a row insert binds five values instead of
//! sixteen and SQLite builds a five-column record (issue 18: the log writer's cost per row was
//! mostly binding and record building, one step per column). Filtered columns (`ts_ms`,
//! `status`, `labels`) stay columns.
//! Invariant: `decode` reads every format `encode` or `MIGRATION` ever wrote (the first byte
//! says which), and never fails: a short or unknown blob reads as zeros past its end.

/// The packed numbers in row order: attempts, stream, latency_ms, ttfb_ms, overhead_us,
/// prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, usage_partial, bytes_in,
/// bytes_out.
pub const COUNT: usize = 12;
/// Written by `MIGRATION` from the old columns: each number as 8 bytes, big-endian.
const FIXED: u8 = 0;
/// Written by `encode`: each number as an LEB128 varint (1-2 bytes for most).
const VARINT: u8 = 1;
/// The longest blob `encode` writes: a format byte and 10 bytes per number at most.
pub const MAX_BYTES: usize = 1 + COUNT * 10;

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

/// `numbers` packed into `out`; returns the length used.
pub fn encode(numbers: &[u64; COUNT], out: &mut [u8; MAX_BYTES]) -> usize {
    out[0] = VARINT;
    let mut at = 1;
    for &n in numbers {
        let mut n = n;
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if let Some(slot) = out.get_mut(at) {
                *slot = if n == 0 { byte } else { byte | 0x80 };
            }
            at += 1;
            if n == 0 {
                break;
            }
        }
    }
    at
}

/// The numbers of a blob `encode` or `MIGRATION` wrote (as i64, the way rows report them).
pub fn decode(blob: &[u8]) -> [i64; COUNT] {
    let mut out = [0i64; COUNT];
    match blob.split_first() {
        Some((&FIXED, rest)) => {
            for (n, bytes) in out.iter_mut().zip(rest.chunks_exact(8)) {
                *n = bytes.try_into().map_or(0, i64::from_be_bytes);
            }
        }
        Some((&VARINT, rest)) => {
            let mut bytes = rest.iter();
            for n in out.iter_mut() {
                let mut value: u64 = 0;
                let mut shift = 0;
                for &b in bytes.by_ref() {
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
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_in_both_formats() {
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
        let len = encode(&numbers, &mut buf);
        assert!(len < 40, "{len}");
        assert_eq!(decode(&buf[..len]), numbers.map(|n| n as i64));
        let mut fixed = vec![FIXED];
        for n in numbers {
            fixed.extend_from_slice(&(n as i64).to_be_bytes());
        }
        assert_eq!(decode(&fixed), numbers.map(|n| n as i64));
        assert_eq!(decode(&[]), [0; COUNT]);
        assert_eq!(
            decode(&[VARINT, 5]),
            [5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            "short reads as zeros"
        );
        assert_eq!(decode(&[9, 5]), [0; COUNT], "unknown format");
        let max = [u64::MAX; COUNT];
        let len = encode(&max, &mut buf);
        assert_eq!(len, MAX_BYTES);
        assert_eq!(decode(&buf[..len]), [i64::MAX; COUNT], "clamped like the columns were");
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
        assert_eq!(requests::row_count(&mut s).unwrap(), 1);
    }
}
