//! Request rows in SQLite: batched inserts from the control thread, oldest-first pruning, and
//! the query behind `/admin/logs` (stats come from `rollups`, never from these rows). A row is
//! its time, a label id (`labels`: its text fields and status) and its other numbers and
//! request id in one blob (`packed`): about 60 bytes on disk.
//! Invariant: every query's filters and grouping come from fixed lists or bound parameters,
//! never from text spliced into SQL.

use std::sync::LazyLock;

use rusqlite::{params_from_iter, types::Value};
use serde::Serialize;

use super::labels::LabelCache;
use super::{packed, Storage, StorageError};
use crate::usage::record::RequestRecord;

/// Migration that creates the table (appended to `MIGRATIONS`).
pub const MIGRATION: &str = "CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        request_id TEXT NOT NULL,
        client TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        model TEXT NOT NULL,
        provider TEXT NOT NULL,
        upstream_model TEXT NOT NULL,
        key TEXT NOT NULL,
        status INTEGER NOT NULL,
        error TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        stream INTEGER NOT NULL,
        latency_ms INTEGER NOT NULL,
        ttfb_ms INTEGER NOT NULL,
        overhead_us INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        usage_partial INTEGER NOT NULL,
        bytes_in INTEGER NOT NULL,
        bytes_out INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX requests_ts ON requests (ts_ms);
    CREATE INDEX requests_model ON requests (model, ts_ms);
    CREATE INDEX requests_client ON requests (client, ts_ms);";

/// Migration to compact rows: the shared text moves to `log_labels`, a row keeps its label id
/// and numbers, and the row table has no secondary index (each cost an index insert per row;
/// stats no longer read rows). Rows are renumbered in order so ids have no gaps.
pub const MIGRATION_COMPACT: &str = "CREATE TABLE log_labels (
        id INTEGER PRIMARY KEY,
        client TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        model TEXT NOT NULL,
        provider TEXT NOT NULL,
        upstream_model TEXT NOT NULL,
        key TEXT NOT NULL,
        error TEXT NOT NULL,
        UNIQUE (model, client, endpoint, provider, upstream_model, key, error)
    ) STRICT;
    CREATE TABLE request_rows (
        id INTEGER PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        request_id TEXT NOT NULL,
        labels INTEGER NOT NULL,
        status INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        stream INTEGER NOT NULL,
        latency_ms INTEGER NOT NULL,
        ttfb_ms INTEGER NOT NULL,
        overhead_us INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        usage_partial INTEGER NOT NULL,
        bytes_in INTEGER NOT NULL,
        bytes_out INTEGER NOT NULL
    ) STRICT;
    INSERT INTO log_labels (client, endpoint, model, provider, upstream_model, key, error)
        SELECT DISTINCT client, endpoint, model, provider, upstream_model, key, error FROM requests;
    INSERT INTO request_rows (ts_ms, request_id, labels, status, attempts, stream, latency_ms, ttfb_ms,
            overhead_us, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, usage_partial,
            bytes_in, bytes_out)
        SELECT r.ts_ms, r.request_id, l.id, r.status, r.attempts, r.stream, r.latency_ms, r.ttfb_ms,
            r.overhead_us, r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.reasoning_tokens,
            r.usage_partial, r.bytes_in, r.bytes_out
        FROM requests r JOIN log_labels l ON l.model = r.model AND l.client = r.client
            AND l.endpoint = r.endpoint AND l.provider = r.provider AND l.upstream_model = r.upstream_model
            AND l.key = r.key AND l.error = r.error
        ORDER BY r.id;
    DROP TABLE requests;";

/// Migration 9: a row insert was 22 VDBE steps a row, 8 of them checks that can never fail
/// here (five `NOT NULL`s and `STRICT`'s type check on values `insert` always binds as
/// integers and a blob, and the '' request id with its copy), and bound four values. Now a
/// row is its time, its label id and its blob, in columns with no type (no affinity to apply)
/// and no constraint: the status joins the label (a gateway answers a few statuses per
/// label), and the request id moves into the blob of the rows that still had it in its column
/// (`packed`: `VARINT` -> `VARINT_ID`, `FIXED` -> `FIXED_ID`, the format byte changed and the
/// id appended; `||` joins the bytes as text, the cast takes them back as a blob). Rows keep
/// their ids (so pruning and the id span stay exact), including a row whose label is missing,
/// which stays out of `logs` as before.
pub const MIGRATION_LEAN: &str = "CREATE TABLE log_labels_lean (
        id INTEGER PRIMARY KEY,
        client TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        model TEXT NOT NULL,
        provider TEXT NOT NULL,
        upstream_model TEXT NOT NULL,
        key TEXT NOT NULL,
        error TEXT NOT NULL,
        status INTEGER NOT NULL,
        UNIQUE (model, client, endpoint, provider, upstream_model, key, error, status)
    ) STRICT;
    INSERT INTO log_labels_lean (client, endpoint, model, provider, upstream_model, key, error, status)
        SELECT DISTINCT l.client, l.endpoint, l.model, l.provider, l.upstream_model, l.key, l.error, r.status
        FROM request_rows r JOIN log_labels l ON l.id = r.labels;
    CREATE TABLE request_rows_lean (id INTEGER PRIMARY KEY, ts_ms, labels, numbers);
    INSERT INTO request_rows_lean (id, ts_ms, labels, numbers)
        SELECT r.id, r.ts_ms, n.id, CASE substr(r.numbers, 1, 1)
            WHEN X'00' THEN CAST(X'03' || substr(r.numbers, 2) || CAST(r.request_id AS BLOB) AS BLOB)
            WHEN X'01' THEN CAST(X'02' || substr(r.numbers, 2) || CAST(r.request_id AS BLOB) AS BLOB)
            ELSE r.numbers END
        FROM request_rows r LEFT JOIN log_labels l ON l.id = r.labels
            LEFT JOIN log_labels_lean n ON n.model = l.model AND n.client = l.client
                AND n.endpoint = l.endpoint AND n.provider = l.provider
                AND n.upstream_model = l.upstream_model AND n.key = l.key AND n.error = l.error
                AND n.status = r.status
        ORDER BY r.id;
    DROP TABLE request_rows;
    DROP TABLE log_labels;
    ALTER TABLE request_rows_lean RENAME TO request_rows;
    ALTER TABLE log_labels_lean RENAME TO log_labels;";

const COLUMNS: &str = "r.id, r.ts_ms, l.client, l.endpoint, l.model, l.provider, l.upstream_model, \
l.key, l.status, l.error, r.numbers";

/// Writes `records` in one transaction.
pub fn insert(storage: &mut Storage, records: &[RequestRecord]) -> Result<(), StorageError> {
    let (conn, labels) = storage.conn_and_labels();
    let result = insert_in(conn, labels, records);
    if result.is_err() {
        // Label ids added by the rolled-back transaction are gone.
        labels.clear();
    }
    result
}

/// Rows per `INSERT` statement: one statement step per 64 rows instead of per row; the rest of a
/// batch goes in statements of 32, 16, 8, 4, 2 and 1 rows. So at most seven statements are ever
/// prepared and each stays in the connection's cache: a remainder of 1-63 rows used to prepare
/// a statement of its own size, again and again (SQL parsing showed in every batch's cost).
/// Each is taken from the cache once per batch (returning one clears all its bindings).
/// (64 rows against 32: 41 instructions a row less in `sqlite3_step`, callgrind, SQLite 3.40.)
const STATEMENT_ROWS: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];
/// Values bound per row: ts_ms, labels, numbers (the status is part of the label, the request
/// id rides in `numbers`; see `packed`).
const ROW_COLUMNS: usize = 3;

/// The `INSERT` text for each of `STATEMENT_ROWS`, built once (the cache looks statements up by
/// their text).
static INSERT_SQL: LazyLock<[String; 7]> = LazyLock::new(|| STATEMENT_ROWS.map(insert_sql));

/// `INSERT OR FAIL INTO request_rows ... VALUES (?, ...), ...` for `rows` rows. `OR FAIL`, not
/// the default `ABORT`: a multi-row statement that may abort keeps a statement journal, a copy
/// of each page it touches, to undo its own rows (`subjournalPageIfRequired`, 158 instructions a
/// row in `sqlite3_step` under callgrind, SQLite 3.40). Nothing here needs that undo: a failed
/// statement fails `insert`, whose transaction then rolls back the whole batch.
fn insert_sql(rows: usize) -> String {
    let one = "(?, ?, ?)";
    format!(
        "INSERT OR FAIL INTO request_rows (ts_ms, labels, numbers) VALUES {}",
        vec![one; rows].join(", ")
    )
}

fn insert_in(
    conn: &mut rusqlite::Connection,
    labels: &mut LabelCache,
    records: &[RequestRecord],
) -> Result<(), StorageError> {
    let tx = conn.transaction()?;
    let mut rest = records;
    let mut numbers = [0u8; packed::MAX_BYTES];
    let mut labels = labels.batch();
    // Sizes halve, so past the 64-row statement each size fills at most once.
    for (rows, sql) in STATEMENT_ROWS.iter().zip(INSERT_SQL.iter()) {
        if rest.len() < *rows {
            continue;
        }
        let mut stmt = tx.prepare_cached(sql)?;
        while rest.len() >= *rows {
            let (chunk, tail) = rest.split_at(*rows);
            rest = tail;
            let mut at = 1;
            for r in chunk {
                let label = labels.id(&tx, &r.text, r.status)?;
                let len = packed::encode(
                    &[
                        u64::from(r.attempts),
                        u64::from(r.stream),
                        r.latency_ms,
                        r.ttfb_ms,
                        r.overhead_us,
                        r.usage.prompt_tokens,
                        r.usage.completion_tokens,
                        r.usage.cached_tokens,
                        r.usage.reasoning_tokens,
                        u64::from(r.usage.partial),
                        r.bytes_in,
                        r.bytes_out,
                    ],
                    r.text.request_id().as_bytes(),
                    &mut numbers,
                );
                stmt.raw_bind_parameter(at, r.ts_ms)?;
                stmt.raw_bind_parameter(at + 1, label)?;
                stmt.raw_bind_parameter(at + 2, numbers.get(..len).unwrap_or(&[]))?;
                at += ROW_COLUMNS;
            }
            stmt.raw_execute()?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// (oldest id, newest id) of the log; `None` when it is empty. Rows are only ever deleted
/// oldest first (a prefix of ids) and ids are handed out in order, so the log holds exactly
/// `newest - oldest + 1` rows: counting them costs two index lookups, not a scan. (Two
/// subqueries: SQLite answers a lone `MIN` or `MAX` from the index, but `SELECT MIN(id),
/// MAX(id)` scans the whole table, which cost the log writer 47 k instructions per request at
/// a few thousand rows.)
pub fn id_span(storage: &mut Storage) -> Result<Option<(i64, i64)>, StorageError> {
    let span: (Option<i64>, Option<i64>) = storage
        .conn()
        .prepare_cached("SELECT (SELECT MIN(id) FROM request_rows), (SELECT MAX(id) FROM request_rows)")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(match span {
        (Some(a), Some(b)) => Some((a, b)),
        _ => None,
    })
}

/// Rows in the log (see `id_span`).
pub fn row_count(storage: &mut Storage) -> Result<u64, StorageError> {
    Ok(id_span(storage)?.map_or(0, |(a, b)| (b - a + 1).max(0) as u64))
}

/// Deletes the `n` oldest rows; returns how many went.
pub fn prune_oldest(storage: &mut Storage, n: u64) -> Result<usize, StorageError> {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    Ok(storage.conn().execute(
        "DELETE FROM request_rows WHERE id < (SELECT MIN(id) FROM request_rows) + ?1",
        [n],
    )?)
}

/// Deletes, oldest first, the rows that arrived before `cutoff_ms`: the oldest rows up to the
/// first one that did not, looking at no more than the `step` oldest rows (one small step; call
/// again while it deletes). So `id_span` stays exact, and the in-memory ring (`memlog`) prunes
/// by the same rule. A row written after a newer one (a long request ends after a short one
/// that arrived later) goes when the rows before it have gone: minutes late on a scale of days.
/// The rows are read lazily, oldest first, so with nothing expired the step reads one row: it
/// used to read all `step` rows (up to 10,000) once a minute, 1.8 M instructions whenever that
/// minute fell into a callgrind run (the log writer's `Keeper::bound` varied 0.6 M-3.0 M).
pub fn prune_before(storage: &mut Storage, cutoff_ms: i64, step: u64) -> Result<usize, StorageError> {
    let step = i64::try_from(step).unwrap_or(i64::MAX);
    let conn = storage.conn();
    let mut newest_expired = None;
    {
        let mut oldest = conn.prepare_cached("SELECT id, ts_ms FROM request_rows ORDER BY id LIMIT ?1")?;
        let mut rows = oldest.query([step])?;
        while let Some(row) = rows.next()? {
            if row.get::<_, i64>(1)? >= cutoff_ms {
                break;
            }
            newest_expired = Some(row.get::<_, i64>(0)?);
        }
    }
    let Some(newest_expired) = newest_expired else {
        return Ok(0);
    };
    Ok(conn
        .prepare_cached("DELETE FROM request_rows WHERE id <= ?1")?
        .execute([newest_expired])?)
}

/// Deletes every row (and the labels with them); returns how many rows went.
pub fn clear(storage: &mut Storage) -> Result<usize, StorageError> {
    let (conn, labels) = storage.conn_and_labels();
    labels.clear();
    let tx = conn.transaction()?;
    let n = tx.execute("DELETE FROM request_rows", [])?;
    tx.execute("DELETE FROM log_labels", [])?;
    tx.commit()?;
    Ok(n)
}

/// Labels no row refers to any more are deleted once there are more than `max` of them (a
/// scan of the rows, so rare: client-chosen model names are what makes labels many).
pub fn prune_labels(storage: &mut Storage, max: u64) -> Result<usize, StorageError> {
    let count: i64 = storage
        .conn()
        .prepare_cached("SELECT COUNT(*) FROM log_labels")?
        .query_row([], |r| r.get(0))?;
    if u64::try_from(count).unwrap_or(0) <= max {
        return Ok(0);
    }
    let (conn, labels) = storage.conn_and_labels();
    labels.clear();
    Ok(conn.execute(
        "DELETE FROM log_labels WHERE id NOT IN (SELECT DISTINCT labels FROM request_rows)",
        [],
    )?)
}

/// Filters of `GET /admin/logs` (all optional; times in Unix ms).
#[derive(Debug, Default, Clone)]
pub struct LogFilter {
    pub model: Option<String>,
    pub client: Option<String>,
    pub provider: Option<String>,
    pub status: Option<i64>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

impl LogFilter {
    fn clause(&self) -> (String, Vec<Value>) {
        let mut parts = Vec::new();
        let mut values = Vec::new();
        let mut add = |sql: &str, v: Value| {
            parts.push(sql.to_owned());
            values.push(v);
        };
        if let Some(m) = &self.model {
            add("l.model = ?", Value::Text(m.clone()));
        }
        if let Some(c) = &self.client {
            add("l.client = ?", Value::Text(c.clone()));
        }
        if let Some(p) = &self.provider {
            add("l.provider = ?", Value::Text(p.clone()));
        }
        if let Some(s) = self.status {
            add("l.status = ?", Value::Integer(s));
        }
        if let Some(t) = self.since_ms {
            add("r.ts_ms >= ?", Value::Integer(t));
        }
        if let Some(t) = self.until_ms {
            add("r.ts_ms < ?", Value::Integer(t));
        }
        let clause = if parts.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", parts.join(" AND "))
        };
        (clause, values)
    }
}

#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct LogRow {
    pub id: i64,
    pub ts: i64,
    pub request_id: String,
    pub client: String,
    pub endpoint: String,
    pub model: String,
    pub provider: String,
    pub upstream_model: String,
    pub key: String,
    pub status: i64,
    pub error: String,
    pub attempts: i64,
    pub stream: bool,
    pub latency_ms: i64,
    pub ttfb_ms: i64,
    pub overhead_us: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub reasoning_tokens: i64,
    pub usage_partial: bool,
    pub bytes_in: i64,
    pub bytes_out: i64,
}

#[derive(Serialize, Debug)]
pub struct LogPage {
    pub total: i64,
    pub data: Vec<LogRow>,
}

/// Newest first. The rows drive the join (`CROSS JOIN` keeps SQLite from making the small
/// label table the outer loop: rows have no index on their label id).
pub fn logs(storage: &mut Storage, filter: &LogFilter, limit: i64, offset: i64) -> Result<LogPage, StorageError> {
    let (clause, mut values) = filter.clause();
    let total = if clause.is_empty() {
        i64::try_from(row_count(storage)?).unwrap_or(i64::MAX)
    } else {
        storage.conn().query_row(
            &format!("SELECT COUNT(*) FROM request_rows r CROSS JOIN log_labels l ON l.id = r.labels{clause}"),
            params_from_iter(values.iter()),
            |r| r.get(0),
        )?
    };
    values.push(Value::Integer(limit.clamp(1, 1000)));
    values.push(Value::Integer(offset.max(0)));
    let conn = storage.conn();
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM request_rows r CROSS JOIN log_labels l ON l.id = r.labels{clause} \
         ORDER BY r.id DESC LIMIT ? OFFSET ?"
    ))?;
    let rows = stmt.query_map(params_from_iter(values.iter()), |r| {
        // Since migration 9 every row's request id is in its blob (`packed`).
        let (numbers, request_id) = packed::decode(r.get_ref(10)?.as_blob()?);
        let [attempts, stream, latency_ms, ttfb_ms, overhead_us, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, usage_partial, bytes_in, bytes_out] =
            numbers;
        Ok(LogRow {
            id: r.get(0)?,
            ts: r.get(1)?,
            request_id: String::from_utf8_lossy(request_id.unwrap_or(&[])).into_owned(),
            client: r.get(2)?,
            endpoint: r.get(3)?,
            model: r.get(4)?,
            provider: r.get(5)?,
            upstream_model: r.get(6)?,
            key: r.get(7)?,
            status: r.get(8)?,
            error: r.get(9)?,
            attempts,
            stream: stream != 0,
            latency_ms,
            ttfb_ms,
            overhead_us,
            prompt_tokens,
            completion_tokens,
            cached_tokens,
            reasoning_tokens,
            usage_partial: usage_partial != 0,
            bytes_in,
            bytes_out,
        })
    })?;
    let data = rows.collect::<Result<Vec<_>, _>>()?;
    Ok(LogPage { total, data })
}

#[cfg(test)]
#[path = "requests_tests.rs"]
mod tests;
