//! Stats rollups in SQLite: per-minute cells (model x provider x key x client x status, see
//! `usage::rollup`) that answer `/admin/stats` and `/admin/stats/overview` in O(cells), apart
//! from the request rows, so pruning rows never changes a total. Minute cells older than
//! `FOLD_AFTER_MS` are folded into hour cells; cells older than
//! `storage.rollup_retention_days` are deleted, a day per step.
//! Invariant: a cell is added in one transaction (upsert adds, never overwrites), and a fold
//! moves minutes into their hour in one transaction, so no request is counted twice or lost
//! by either; every query's grouping comes from a fixed list.

use rusqlite::params;
use serde::Serialize;

use super::{Storage, StorageError};
use crate::usage::rollup::{Cell, RollupKey, LATENCY_BOUNDS_MS, LATENCY_BUCKETS, MINUTE_MS};

pub const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// Minute cells are kept this long, then folded into hours.
pub const FOLD_AFTER_MS: i64 = DAY_MS;

/// Migration that creates the table and seeds it from the request rows already stored, so
/// stats carry over an upgrade.
pub const MIGRATION: &str = "CREATE TABLE rollups (
        span_ms INTEGER NOT NULL,
        bucket_ms INTEGER NOT NULL,
        model TEXT NOT NULL,
        provider TEXT NOT NULL,
        key TEXT NOT NULL,
        client TEXT NOT NULL,
        status INTEGER NOT NULL,
        requests INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        latency_ms_sum INTEGER NOT NULL,
        overhead_us_sum INTEGER NOT NULL,
        lat_100ms INTEGER NOT NULL, lat_250ms INTEGER NOT NULL, lat_500ms INTEGER NOT NULL,
        lat_1s INTEGER NOT NULL, lat_2500ms INTEGER NOT NULL, lat_5s INTEGER NOT NULL,
        lat_10s INTEGER NOT NULL, lat_30s INTEGER NOT NULL, lat_60s INTEGER NOT NULL,
        lat_over INTEGER NOT NULL,
        PRIMARY KEY (span_ms, bucket_ms, model, provider, key, client, status)
    ) STRICT, WITHOUT ROWID;
    INSERT INTO rollups SELECT 60000, ts_ms - (ts_ms % 60000), model, provider, key, client, status,
        COUNT(*), SUM(status >= 400), SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens),
        SUM(reasoning_tokens), SUM(latency_ms), SUM(overhead_us),
        SUM(latency_ms <= 100), SUM(latency_ms > 100 AND latency_ms <= 250),
        SUM(latency_ms > 250 AND latency_ms <= 500), SUM(latency_ms > 500 AND latency_ms <= 1000),
        SUM(latency_ms > 1000 AND latency_ms <= 2500), SUM(latency_ms > 2500 AND latency_ms <= 5000),
        SUM(latency_ms > 5000 AND latency_ms <= 10000), SUM(latency_ms > 10000 AND latency_ms <= 30000),
        SUM(latency_ms > 30000 AND latency_ms <= 60000), SUM(latency_ms > 60000)
    FROM requests WHERE ts_ms >= 0 GROUP BY 2, 3, 4, 5, 6, 7;";

const SUMS: &str = "requests, errors, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, \
latency_ms_sum, overhead_us_sum, lat_100ms, lat_250ms, lat_500ms, lat_1s, lat_2500ms, lat_5s, lat_10s, lat_30s, lat_60s, lat_over";

/// `SUM(col)` of every counted column, in `SUMS` order.
fn sum_columns() -> String {
    SUMS.split(", ")
        .map(|c| format!("COALESCE(SUM({c}), 0)"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `col = col + excluded.col` for every counted column.
fn add_excluded() -> String {
    SUMS.split(", ")
        .map(|c| format!("{c} = {c} + excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Adds `cells` to their minute cells, in one transaction.
pub fn add(storage: &mut Storage, cells: &[(RollupKey, Cell)]) -> Result<(), StorageError> {
    let sql = format!(
        "INSERT INTO rollups (span_ms, bucket_ms, model, provider, key, client, status, {SUMS}) \
         VALUES ({MINUTE_MS}, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, \
         ?21, ?22, ?23, ?24) ON CONFLICT (span_ms, bucket_ms, model, provider, key, client, status) DO UPDATE SET {}",
        add_excluded()
    );
    let tx = storage.conn().transaction()?;
    {
        let mut stmt = tx.prepare_cached(&sql)?;
        for (k, c) in cells {
            let h = c.latency.map(clamp);
            stmt.execute(params![
                k.bucket_ms,
                k.model,
                k.provider,
                k.key,
                k.client,
                k.status,
                clamp(c.requests),
                clamp(c.errors),
                clamp(c.prompt_tokens),
                clamp(c.completion_tokens),
                clamp(c.cached_tokens),
                clamp(c.reasoning_tokens),
                clamp(c.latency_ms_sum),
                clamp(c.overhead_us_sum),
                h[0],
                h[1],
                h[2],
                h[3],
                h[4],
                h[5],
                h[6],
                h[7],
                h[8],
                h[9],
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Folds the oldest hour whose minutes all ended before `before_ms` into one hour cell per
/// label set. Returns whether there was such an hour (call again while there is).
pub fn fold_oldest_hour(storage: &mut Storage, before_ms: i64) -> Result<bool, StorageError> {
    // Cached, like `expire`'s: the keeper asks once a minute, and nearly always nothing is due.
    let oldest: Option<i64> = storage
        .conn()
        .prepare_cached("SELECT MIN(bucket_ms) FROM rollups WHERE span_ms = ?1")?
        .query_row([MINUTE_MS], |r| r.get(0))?;
    let Some(oldest) = oldest else { return Ok(false) };
    let hour = oldest - oldest.rem_euclid(HOUR_MS);
    if hour + HOUR_MS > before_ms {
        return Ok(false);
    }
    let tx = storage.conn().transaction()?;
    tx.execute(
        &format!(
            "INSERT INTO rollups (span_ms, bucket_ms, model, provider, key, client, status, {SUMS}) \
             SELECT {HOUR_MS}, ?1, model, provider, key, client, status, {} FROM rollups \
             WHERE span_ms = {MINUTE_MS} AND bucket_ms >= ?1 AND bucket_ms < ?1 + {HOUR_MS} \
             GROUP BY model, provider, key, client, status \
             ON CONFLICT (span_ms, bucket_ms, model, provider, key, client, status) DO UPDATE SET {}",
            sum_columns(),
            add_excluded()
        ),
        [hour],
    )?;
    tx.execute(
        &format!("DELETE FROM rollups WHERE span_ms = {MINUTE_MS} AND bucket_ms >= ?1 AND bucket_ms < ?1 + {HOUR_MS}"),
        [hour],
    )?;
    tx.commit()?;
    Ok(true)
}

/// Deletes cells that started before `cutoff_ms`, at most a day of them; returns how many
/// went (call again while it deletes). The statement is cached: parsing it anew cost 143 k
/// instructions a call under callgrind (the keeper runs it once a minute, nearly always to
/// delete nothing).
pub fn expire(storage: &mut Storage, cutoff_ms: i64) -> Result<usize, StorageError> {
    let mut deleted = 0;
    let mut delete = storage.conn().prepare_cached(
        "DELETE FROM rollups WHERE span_ms = ?1 AND bucket_ms < MIN(?2, \
         (SELECT MIN(bucket_ms) FROM rollups WHERE span_ms = ?1) + ?3)",
    )?;
    for span in [MINUTE_MS, HOUR_MS] {
        deleted += delete.execute(params![span, cutoff_ms, DAY_MS])?;
    }
    Ok(deleted)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Hour,
    Day,
    Month,
}

impl Period {
    pub fn parse(s: &str) -> Option<Period> {
        match s {
            "hour" => Some(Period::Hour),
            "day" => Some(Period::Day),
            "month" => Some(Period::Month),
            _ => None,
        }
    }

    fn format(self) -> &'static str {
        match self {
            Period::Hour => "%Y-%m-%dT%H:00",
            Period::Day => "%Y-%m-%d",
            Period::Month => "%Y-%m",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Model,
    Provider,
    Key,
    Client,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<GroupBy> {
        match s {
            "model" => Some(GroupBy::Model),
            "provider" => Some(GroupBy::Provider),
            "key" => Some(GroupBy::Key),
            "client" => Some(GroupBy::Client),
            _ => None,
        }
    }

    fn column(self) -> &'static str {
        match self {
            GroupBy::Model => "model",
            GroupBy::Provider => "provider",
            GroupBy::Key => "key",
            GroupBy::Client => "client",
        }
    }
}

/// Cells overlapping [since, until): minute-precise, hour-precise where folded.
fn range_clause() -> String {
    format!(
        "((span_ms = {MINUTE_MS} AND bucket_ms > ?1 - {MINUTE_MS} AND bucket_ms < ?2) \
         OR (span_ms = {HOUR_MS} AND bucket_ms > ?1 - {HOUR_MS} AND bucket_ms < ?2))"
    )
}

fn bounds(since_ms: Option<i64>, until_ms: Option<i64>) -> [i64; 2] {
    [since_ms.unwrap_or(i64::MIN / 2), until_ms.unwrap_or(i64::MAX / 2)]
}

/// The counted columns of one result row, starting at column `at`.
fn read_cell(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Cell> {
    let get = |i: usize| -> rusqlite::Result<u64> { Ok(u64::try_from(r.get::<_, i64>(at + i)?).unwrap_or(0)) };
    let mut latency = [0u64; LATENCY_BUCKETS];
    for (i, n) in latency.iter_mut().enumerate() {
        *n = get(8 + i)?;
    }
    Ok(Cell {
        requests: get(0)?,
        errors: get(1)?,
        prompt_tokens: get(2)?,
        completion_tokens: get(3)?,
        cached_tokens: get(4)?,
        reasoning_tokens: get(5)?,
        latency_ms_sum: get(6)?,
        overhead_us_sum: get(7)?,
        latency,
    })
}

/// The latency below which a fraction `q` of requests finished, interpolated in the coarse
/// histogram (past its last bound: that bound), and never above what the mean allows: at least
/// `1 - q` of the requests took the quantile or longer, so it is at most `mean / (1 - q)`
/// (Markov's inequality). Interpolating alone put every quantile of sub-millisecond answers
/// (cached ones, a fast upstream) at tens of milliseconds inside the first bucket (0-100 ms):
/// one 0.3 ms request showed p50 50 ms and p95 95 ms beside a mean of 0.
fn quantile_ms(c: &Cell, q: f64) -> f64 {
    let total = c.latency.iter().sum::<u64>();
    if total == 0 {
        return 0.0;
    }
    let mean_bound = c.latency_ms_sum as f64 / total as f64 / (1.0 - q);
    interpolated_ms(c, q, total).min(mean_bound)
}

/// [`quantile_ms`] by interpolation in the histogram alone, over its `total` requests.
fn interpolated_ms(c: &Cell, q: f64, total: u64) -> f64 {
    let rank = q * total as f64;
    let mut seen = 0.0;
    let mut lower = 0.0;
    for (i, &n) in c.latency.iter().enumerate() {
        let Some(&upper) = LATENCY_BOUNDS_MS.get(i) else { break };
        let upper = upper as f64;
        if n > 0 && seen + n as f64 >= rank {
            return lower + (upper - lower) * ((rank - seen) / n as f64);
        }
        seen += n as f64;
        lower = upper;
    }
    lower
}

fn avg(sum: u64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        sum as f64 / n as f64
    }
}

#[derive(Serialize, Debug, PartialEq)]
pub struct StatsRow {
    pub bucket: String,
    pub group: String,
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub reasoning_tokens: i64,
    pub avg_latency_ms: f64,
    pub avg_overhead_us: f64,
    /// From the coarse latency histogram (interpolated within its bucket).
    pub p50_latency_ms: f64,
    pub p95_latency_ms: f64,
}

pub fn stats_row(bucket: String, group: String, c: &Cell) -> StatsRow {
    StatsRow {
        bucket,
        group,
        requests: clamp(c.requests),
        errors: clamp(c.errors),
        prompt_tokens: clamp(c.prompt_tokens),
        completion_tokens: clamp(c.completion_tokens),
        cached_tokens: clamp(c.cached_tokens),
        reasoning_tokens: clamp(c.reasoning_tokens),
        avg_latency_ms: avg(c.latency_ms_sum, c.requests),
        avg_overhead_us: avg(c.overhead_us_sum, c.requests),
        p50_latency_ms: quantile_ms(c, 0.5),
        p95_latency_ms: quantile_ms(c, 0.95),
    }
}

/// Buckets of `period` (UTC) grouped by `group`, oldest first.
pub fn stats(
    storage: &mut Storage,
    period: Period,
    group: GroupBy,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
) -> Result<Vec<StatsRow>, StorageError> {
    let sql = format!(
        "SELECT strftime('{fmt}', bucket_ms / 1000, 'unixepoch') AS bucket, {col} AS grp, {sums} \
         FROM rollups WHERE {range} GROUP BY bucket, grp ORDER BY bucket, grp",
        fmt = period.format(),
        col = group.column(),
        sums = sum_columns(),
        range = range_clause(),
    );
    let mut stmt = storage.conn().prepare(&sql)?;
    let rows = stmt.query_map(bounds(since_ms, until_ms), |r| {
        Ok(stats_row(r.get(0)?, r.get(1)?, &read_cell(r, 2)?))
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Overview {
    pub requests: i64,
    pub errors: i64,
    pub success_rate: f64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub reasoning_tokens: i64,
    pub avg_latency_ms: f64,
    pub avg_overhead_us: f64,
    pub p50_latency_ms: f64,
    pub p95_latency_ms: f64,
}

pub fn overview(storage: &mut Storage, since_ms: Option<i64>, until_ms: Option<i64>) -> Result<Overview, StorageError> {
    let sql = format!("SELECT {} FROM rollups WHERE {}", sum_columns(), range_clause());
    let c = storage
        .conn()
        .query_row(&sql, bounds(since_ms, until_ms), |r| read_cell(r, 0))?;
    Ok(overview_of(&c))
}

/// The overview of one merged cell (also the fleet's, `cluster::fleet`).
pub fn overview_of(c: &Cell) -> Overview {
    let row = stats_row(String::new(), String::new(), c);
    Overview {
        requests: row.requests,
        errors: row.errors,
        success_rate: if c.requests > 0 {
            (c.requests - c.errors) as f64 / c.requests as f64
        } else {
            1.0
        },
        prompt_tokens: row.prompt_tokens,
        completion_tokens: row.completion_tokens,
        cached_tokens: row.cached_tokens,
        reasoning_tokens: row.reasoning_tokens,
        avg_latency_ms: row.avg_latency_ms,
        avg_overhead_us: row.avg_overhead_us,
        p50_latency_ms: row.p50_latency_ms,
        p95_latency_ms: row.p95_latency_ms,
    }
}

#[cfg(test)]
#[path = "rollups_tests.rs"]
mod tests;
