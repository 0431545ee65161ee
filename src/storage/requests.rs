//! Request rows in SQLite: batched inserts from the control thread, oldest-first pruning, and
//! the query behind `/admin/logs` (stats come from `rollups`, never from these rows). A row is
//! its id, time, a label id (`labels`: its text fields and status) and its other numbers and
//! request id in one blob (`packed`); since migration 10 a writer batch's rows share one table
//! row (`batches`), and this module reads them back row by row.
//! Invariant: every query's filters and grouping come from fixed lists or bound parameters,
//! never from text spliced into SQL; row ids are handed out in order and rows deleted oldest
//! first only, so the log holds exactly the ids from its oldest to its newest.

use ahash::AHashSet;
use rusqlite::{params_from_iter, types::Value, OptionalExtension};
use serde::Serialize;

use super::labels::LabelCache;
use super::{batches, packed, Storage, StorageError};
use crate::usage::record::RequestRecord;

/// Writes `records` in one transaction, as one table row (`batches`).
pub fn insert(storage: &mut Storage, records: &[RequestRecord]) -> Result<(), StorageError> {
    if records.is_empty() {
        return Ok(());
    }
    let (conn, labels) = storage.conn_and_labels();
    let result = insert_in(conn, labels, records);
    if result.is_err() {
        // Label ids added by the rolled-back transaction are gone.
        labels.clear();
    }
    result
}

fn insert_in(
    conn: &mut rusqlite::Connection,
    labels: &mut LabelCache,
    records: &[RequestRecord],
) -> Result<(), StorageError> {
    let tx = conn.transaction()?;
    let mut numbers = [0u8; packed::MAX_BYTES];
    let mut labels = labels.batch();
    let mut batch = batches::Builder::with_capacity(records.len());
    for r in records {
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
            r.text.request_id_bytes(),
            &mut numbers,
        );
        batch.push(r.ts_ms, label, numbers.get(..len).unwrap_or(&[]));
    }
    // Ids go on from the newest row (from 1 in an empty log, as SQLite's row ids did).
    let newest: Option<i64> = tx
        .prepare_cached("SELECT MAX(id) FROM request_batches")?
        .query_row([], |r| r.get(0))?;
    let first = newest.unwrap_or(0) + 1;
    let last = first + batch.len() as i64 - 1;
    tx.prepare_cached("INSERT INTO request_batches (id, first, rows) VALUES (?1, ?2, ?3)")?
        .execute(rusqlite::params![last, first, batch.blob()])?;
    tx.commit()?;
    Ok(())
}

/// (oldest id, newest id) of the log; `None` when it is empty. Rows are only ever deleted
/// oldest first (a prefix of ids) and ids are handed out in order, so the log holds exactly
/// `newest - oldest + 1` rows: counting them costs two index lookups, not a scan. (Two
/// subqueries: SQLite answers a lone `MIN` or `MAX` from the index, but `SELECT MIN(id),
/// MAX(id)` scans the whole table.) The oldest batch's `first` is the oldest id.
pub fn id_span(storage: &mut Storage) -> Result<Option<(i64, i64)>, StorageError> {
    let span: (Option<i64>, Option<i64>) = storage
        .conn()
        .prepare_cached(
            "SELECT (SELECT first FROM request_batches ORDER BY id LIMIT 1), (SELECT MAX(id) FROM request_batches)",
        )?
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

/// Deletes the `n` oldest rows; returns how many went. Whole batches go; the batch that
/// holds the new oldest row keeps it and those after it (its `first` moves up).
pub fn prune_oldest(storage: &mut Storage, n: u64) -> Result<usize, StorageError> {
    let Some((oldest, newest)) = id_span(storage)? else {
        return Ok(0);
    };
    let n = i64::try_from(n).unwrap_or(i64::MAX).min(newest - oldest + 1);
    if n <= 0 {
        return Ok(0);
    }
    delete_before(storage, oldest + n)?;
    Ok(n as usize)
}

/// Deletes every row whose id is below `keep` (the oldest rows; `keep` is at most the newest
/// id + 1). Whole batches go; the batch left holding rows on both sides of `keep` is written
/// again without the older ones, so their bytes go too (at most one batch per prune).
fn delete_before(storage: &mut Storage, keep: i64) -> Result<(), StorageError> {
    let tx = storage.conn().transaction()?;
    tx.prepare_cached("DELETE FROM request_batches WHERE id < ?1")?
        .execute([keep])?;
    let split: Option<(i64, i64, Vec<u8>)> = tx
        .prepare_cached("SELECT id, first, rows FROM request_batches ORDER BY id LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?
        .filter(|(_, first, _)| *first < keep);
    if let Some((last, _, blob)) = split {
        let kept = batches::records(last, keep, &blob);
        let mut rest = batches::Builder::with_capacity(kept.len());
        for r in &kept {
            rest.push(r.ts_ms, r.label, r.numbers);
        }
        tx.prepare_cached("UPDATE request_batches SET first = ?1, rows = ?2 WHERE id = ?3")?
            .execute(rusqlite::params![keep, rest.blob(), last])?;
    }
    tx.commit()?;
    Ok(())
}

/// Deletes, oldest first, the rows that arrived before `cutoff_ms`: the oldest rows up to the
/// first one that did not, looking at no more than the `step` oldest rows (one small step; call
/// again while it deletes). So `id_span` stays exact, and the in-memory ring (`memlog`) prunes
/// by the same rule. A row written after a newer one (a long request ends after a short one
/// that arrived later) goes when the rows before it have gone: minutes late on a scale of days.
/// The batches are read lazily, oldest first, so with nothing expired the step reads one.
pub fn prune_before(storage: &mut Storage, cutoff_ms: i64, step: u64) -> Result<usize, StorageError> {
    let mut left = step;
    let mut newest_expired = None;
    {
        let mut oldest = storage
            .conn()
            .prepare_cached("SELECT id, first, rows FROM request_batches ORDER BY id")?;
        let mut rows = oldest.query([])?;
        'batches: while let Some(row) = rows.next()? {
            let blob = row.get_ref(2)?.as_blob().unwrap_or(&[]);
            for record in batches::records(row.get(0)?, row.get(1)?, blob) {
                if left == 0 || record.ts_ms >= cutoff_ms {
                    break 'batches;
                }
                left -= 1;
                newest_expired = Some(record.id);
            }
        }
    }
    let Some(newest_expired) = newest_expired else {
        return Ok(0);
    };
    let oldest = id_span(storage)?.map_or(newest_expired, |(a, _)| a);
    delete_before(storage, newest_expired + 1)?;
    Ok((newest_expired - oldest + 1).max(0) as usize)
}

/// Deletes every row (and the labels with them); returns how many rows went.
pub fn clear(storage: &mut Storage) -> Result<usize, StorageError> {
    let n = row_count(storage)?;
    let (conn, labels) = storage.conn_and_labels();
    labels.clear();
    let tx = conn.transaction()?;
    tx.execute("DELETE FROM request_batches", [])?;
    tx.execute("DELETE FROM log_labels", [])?;
    tx.commit()?;
    Ok(n as usize)
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
    let tx = conn.transaction()?;
    let mut used = AHashSet::new();
    {
        let mut stmt = tx.prepare("SELECT id, first, rows FROM request_batches")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let blob = row.get_ref(2)?.as_blob().unwrap_or(&[]);
            used.extend(batches::records(row.get(0)?, row.get(1)?, blob).iter().map(|r| r.label));
        }
    }
    let unused: Vec<i64> = tx
        .prepare("SELECT id FROM log_labels")?
        .query_map([], |r| r.get(0))?
        .filter(|id| id.as_ref().map_or(true, |id| !used.contains(id)))
        .collect::<Result<_, _>>()?;
    {
        let mut delete = tx.prepare("DELETE FROM log_labels WHERE id = ?1")?;
        for id in &unused {
            delete.execute([id])?;
        }
    }
    tx.commit()?;
    Ok(unused.len())
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
    /// The `WHERE` clause on the label table (`l`) and its values.
    fn label_clause(&self) -> (String, Vec<Value>) {
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
        let clause = if parts.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", parts.join(" AND "))
        };
        (clause, values)
    }

    fn any(&self) -> bool {
        self.model.is_some()
            || self.client.is_some()
            || self.provider.is_some()
            || self.status.is_some()
            || self.since_ms.is_some()
            || self.until_ms.is_some()
    }

    fn admits_time(&self, ts_ms: i64) -> bool {
        self.since_ms.is_none_or(|t| ts_ms >= t) && self.until_ms.is_none_or(|t| ts_ms < t)
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

/// Newest first. A row shows when its label exists and passes the label filters (the set of
/// such label ids comes from `log_labels`) and its time passes the time filters; a row whose
/// label is missing stays out, as the join of old did. With no filter the total is the id
/// span and the scan stops at the page's end; with one, every row is read to count them.
pub fn logs(storage: &mut Storage, filter: &LogFilter, limit: i64, offset: i64) -> Result<LogPage, StorageError> {
    let (clause, values) = filter.label_clause();
    let shown: AHashSet<i64> = storage
        .conn()
        .prepare(&format!("SELECT l.id FROM log_labels l{clause}"))?
        .query_map(params_from_iter(values.iter()), |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let limit = usize::try_from(limit.clamp(1, 1000)).unwrap_or(1);
    let offset = usize::try_from(offset.max(0)).unwrap_or(usize::MAX);
    let counted = filter.any();
    let mut matched = 0usize;
    let mut page = Vec::new();
    {
        let mut stmt = storage
            .conn()
            .prepare_cached("SELECT id, first, rows FROM request_batches ORDER BY id DESC")?;
        let mut rows = stmt.query([])?;
        'batches: while let Some(row) = rows.next()? {
            let blob = row.get_ref(2)?.as_blob().unwrap_or(&[]);
            for record in batches::records(row.get(0)?, row.get(1)?, blob).iter().rev() {
                if !shown.contains(&record.label) || !filter.admits_time(record.ts_ms) {
                    continue;
                }
                if matched >= offset && page.len() < limit {
                    page.push((record.id, record.ts_ms, record.label, record.numbers.to_vec()));
                }
                matched += 1;
                if !counted && page.len() >= limit {
                    break 'batches;
                }
            }
        }
    }
    let total = if counted {
        i64::try_from(matched).unwrap_or(i64::MAX)
    } else {
        i64::try_from(row_count(storage)?).unwrap_or(i64::MAX)
    };
    let conn = storage.conn();
    let mut label = conn.prepare_cached(
        "SELECT client, endpoint, model, provider, upstream_model, key, status, error FROM log_labels WHERE id = ?1",
    )?;
    let mut data = Vec::with_capacity(page.len());
    for (id, ts, label_id, numbers) in page {
        // Since migration 9 every row's request id is in its blob (`packed`).
        let (numbers, request_id) = packed::decode(&numbers);
        let [attempts, stream, latency_ms, ttfb_ms, overhead_us, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, usage_partial, bytes_in, bytes_out] =
            numbers;
        let row = label.query_row([label_id], |l| {
            Ok(LogRow {
                id,
                ts,
                request_id: String::from_utf8_lossy(request_id.unwrap_or(&[])).into_owned(),
                client: l.get(0)?,
                endpoint: l.get(1)?,
                model: l.get(2)?,
                provider: l.get(3)?,
                upstream_model: l.get(4)?,
                key: l.get(5)?,
                status: l.get(6)?,
                error: l.get(7)?,
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
        data.push(row);
    }
    Ok(LogPage { total, data })
}

#[cfg(test)]
#[path = "requests_tests.rs"]
mod tests;
