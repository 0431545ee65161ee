//! One view of the fleet (`/admin/stats?scope=cluster`): every instance adds its per-minute
//! stats rollups (`usage::rollup`, the same cells `/admin/stats` answers from) to fleet-wide
//! hashes in Redis, `{prefix}:stats:m:{minute ms}` and `{prefix}:stats:h:{hour ms}` (field =
//! the label set as JSON, value = the cell's counts), and a cluster-scope query reads and
//! merges them. Minutes are kept `MINUTE_KEEP` (for minute-precise edges of recent ranges),
//! hours `cluster.stats_ttl_hours`; older parts of a range are answered hour-precise, as the
//! local stats are once folded.
//! Invariant: a batch of cells is added once (a per-process sequence number makes a retried
//! batch a no-op in Redis); each hash holds at most `cluster.stats_max_cells` label sets, the
//! rest counted under one `(other)` label and in `rotor_cluster_stats_cells_folded_total`.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::{Connection, Script};

use crate::storage::rollups::{overview_of, stats_row, GroupBy, Period, StatsRow, HOUR_MS};
use crate::usage::rollup::{Cell, RollupKey, LATENCY_BUCKETS, MINUTE_MS};

/// Minute hashes live this long (capped by the stats TTL).
pub const MINUTE_KEEP: Duration = Duration::from_secs(3 * 3_600);
/// Keys read per pipeline.
const READ_CHUNK: usize = 256;
const OTHER: &str = r#"["(other)","(other)","(other)","(other)",0]"#;

const ADD: &str = r#"
local seq = tonumber(ARGV[1])
if seq <= tonumber(redis.call('GET', KEYS[1]) or '0') then return -1 end
local mttl, httl, max = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('SET', KEYS[1], seq, 'PX', httl)
local folded = 0
local function add(key, label, counts, count_fold)
  local old = redis.call('HGET', key, label)
  if not old and redis.call('HLEN', key) >= max then
    label = ARGV[5]
    old = redis.call('HGET', key, label)
    if count_fold then folded = folded + 1 end
  end
  if old then
    local sums, i = {}, 1
    for n in string.gmatch(old, '%d+') do sums[i] = tonumber(n); i = i + 1 end
    local out, j = {}, 1
    for n in string.gmatch(counts, '%d+') do
      out[j] = string.format('%.0f', (sums[j] or 0) + tonumber(n)); j = j + 1
    end
    counts = table.concat(out, ',')
  end
  redis.call('HSET', key, label, counts)
end
local a = 7
local nb = tonumber(ARGV[6])
for b = 1, nb do
  local mk, hk = KEYS[2 * b], KEYS[2 * b + 1]
  local n = tonumber(ARGV[a]); a = a + 1
  for i = 1, n do
    add(mk, ARGV[a], ARGV[a + 1], true)
    add(hk, ARGV[a], ARGV[a + 1], false)
    a = a + 2
  end
  redis.call('PEXPIRE', mk, mttl)
  redis.call('PEXPIRE', hk, httl)
end
return folded
"#;

/// The publishing side (data thread).
pub struct Publisher {
    script: Script,
    seq_key: String,
    seq: u64,
    /// The batch last sent without a clear answer: sent again, alone, under its number.
    inflight: Option<Vec<(RollupKey, Cell)>>,
}

impl Publisher {
    pub fn new(prefix: &str, origin: &str) -> Self {
        Publisher {
            script: Script::new(ADD),
            seq_key: format!("{prefix}:stats:seq:{origin}"),
            seq: 0,
            inflight: None,
        }
    }

    /// Cells waiting to be sent again.
    pub fn waiting(&self) -> bool {
        self.inflight.is_some()
    }

    /// Sends the batch that failed last (then `cells` must be empty), or else `cells`.
    /// Returns the cells sent and the label sets folded into `(other)`.
    pub fn publish(
        &mut self,
        conn: &mut Connection,
        prefix: &str,
        cells: Vec<(RollupKey, Cell)>,
        ttl: Duration,
        max_cells: u64,
    ) -> redis::RedisResult<(u64, u64)> {
        let batch = match self.inflight.take() {
            Some(batch) => batch,
            None if cells.is_empty() => return Ok((0, 0)),
            None => {
                self.seq += 1;
                cells
            }
        };
        let mut by_minute: BTreeMap<i64, Vec<&(RollupKey, Cell)>> = BTreeMap::new();
        for cell in &batch {
            by_minute.entry(cell.0.bucket_ms).or_default().push(cell);
        }
        let minute_ttl = ttl.min(MINUTE_KEEP).as_millis() as u64;
        let mut call = self.script.prepare_invoke();
        call.key(&self.seq_key)
            .arg(self.seq)
            .arg(minute_ttl.max(1))
            .arg(ttl.as_millis() as u64)
            .arg(max_cells)
            .arg(OTHER)
            .arg(by_minute.len());
        for (minute, cells) in &by_minute {
            let hour = minute - minute.rem_euclid(HOUR_MS);
            call.key(format!("{prefix}:stats:m:{minute}"))
                .key(format!("{prefix}:stats:h:{hour}"))
                .arg(cells.len());
            for (key, cell) in cells {
                call.arg(label(key)).arg(counts(cell));
            }
        }
        match call.invoke::<i64>(conn) {
            Ok(folded) => Ok((batch.len() as u64, folded.max(0) as u64)),
            Err(e) => {
                self.inflight = Some(batch);
                Err(e)
            }
        }
    }
}

fn label(k: &RollupKey) -> String {
    sonic_rs::to_string(&(&k.model, &k.provider, &k.key, &k.client, k.status)).unwrap_or_else(|_| OTHER.to_owned())
}

fn counts(c: &Cell) -> String {
    let mut all = vec![
        c.requests,
        c.errors,
        c.prompt_tokens,
        c.completion_tokens,
        c.cached_tokens,
        c.reasoning_tokens,
        c.latency_ms_sum,
        c.overhead_us_sum,
    ];
    all.extend(c.latency);
    all.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn parse(bucket_ms: i64, label: &str, counts: &str) -> Option<(RollupKey, Cell)> {
    let (model, provider, key, client, status): (String, String, String, String, u16) =
        sonic_rs::from_str(label).ok()?;
    let n: Vec<u64> = counts.split(',').map(|v| v.parse().unwrap_or(0)).collect();
    let at = |i: usize| n.get(i).copied().unwrap_or(0);
    let mut latency = [0u64; LATENCY_BUCKETS];
    for (i, slot) in latency.iter_mut().enumerate() {
        *slot = at(8 + i);
    }
    let cell = Cell {
        requests: at(0),
        errors: at(1),
        prompt_tokens: at(2),
        completion_tokens: at(3),
        cached_tokens: at(4),
        reasoning_tokens: at(5),
        latency_ms_sum: at(6),
        overhead_us_sum: at(7),
        latency,
    };
    Some((
        RollupKey {
            bucket_ms,
            model,
            provider,
            key,
            client,
            status,
        },
        cell,
    ))
}

/// The hashes a range needs: `(bucket ms, key)`. Whole hours (and hours whose minutes are
/// gone) from hour hashes, the partial hours at the edges from minute hashes while they live.
fn keys_for(prefix: &str, since: Option<i64>, until: Option<i64>, now: i64, ttl: Duration) -> Vec<(i64, String)> {
    let oldest = now - ttl.as_millis() as i64;
    let lower = since.unwrap_or(oldest).max(oldest);
    let upper = until.unwrap_or(now + MINUTE_MS).min(now + MINUTE_MS);
    let minutes_from = now - MINUTE_KEEP.min(ttl).as_millis() as i64 + HOUR_MS;
    let mut keys = Vec::new();
    let mut hour = lower - lower.rem_euclid(HOUR_MS);
    while hour < upper {
        let whole = since.is_none_or(|s| s <= hour) && until.is_none_or(|u| hour + HOUR_MS <= u);
        if whole || hour < minutes_from {
            keys.push((hour, format!("{prefix}:stats:h:{hour}")));
        } else {
            let mut minute = hour;
            while minute < hour + HOUR_MS {
                let overlaps = since.is_none_or(|s| minute > s - MINUTE_MS) && until.is_none_or(|u| minute < u);
                if overlaps {
                    keys.push((minute, format!("{prefix}:stats:m:{minute}")));
                }
                minute += MINUTE_MS;
            }
        }
        hour += HOUR_MS;
    }
    keys
}

/// The fleet's cells overlapping [since, until).
pub fn read(
    conn: &mut Connection,
    prefix: &str,
    since: Option<i64>,
    until: Option<i64>,
    ttl: Duration,
) -> redis::RedisResult<Vec<(RollupKey, Cell)>> {
    let now = crate::keys::care::unix_ms() as i64;
    let keys = keys_for(prefix, since, until, now, ttl);
    let mut cells = Vec::new();
    for chunk in keys.chunks(READ_CHUNK) {
        let mut pipe = redis::pipe();
        for (_, key) in chunk {
            pipe.cmd("HGETALL").arg(key);
        }
        let hashes: Vec<Vec<(String, String)>> = pipe.query(conn)?;
        for ((bucket, _), hash) in chunk.iter().zip(hashes) {
            cells.extend(hash.iter().filter_map(|(l, c)| parse(*bucket, l, c)));
        }
    }
    Ok(cells)
}

/// `/admin/stats` over the fleet's cells: the same rows as the local answer.
pub fn stats(cells: &[(RollupKey, Cell)], period: Period, group: GroupBy) -> Vec<StatsRow> {
    let mut rows: BTreeMap<(String, String), Cell> = BTreeMap::new();
    for (k, c) in cells {
        let name = match group {
            GroupBy::Model => &k.model,
            GroupBy::Provider => &k.provider,
            GroupBy::Key => &k.key,
            GroupBy::Client => &k.client,
        };
        rows.entry((bucket_name(k.bucket_ms, period), name.clone()))
            .or_default()
            .merge(c);
    }
    rows.into_iter().map(|((b, g), c)| stats_row(b, g, &c)).collect()
}

/// `/admin/stats/overview` over the fleet's cells.
pub fn overview(cells: &[(RollupKey, Cell)]) -> crate::storage::rollups::Overview {
    let mut all = Cell::default();
    for (_, c) in cells {
        all.merge(c);
    }
    overview_of(&all)
}

/// A bucket's name as SQLite's `strftime` gives it for the local stats (UTC).
fn bucket_name(ms: i64, period: Period) -> String {
    let days = ms.div_euclid(86_400_000);
    let hour = ms.rem_euclid(86_400_000) / 3_600_000;
    let (y, m, d) = civil_from_days(days);
    match period {
        Period::Hour => format!("{y:04}-{m:02}-{d:02}T{hour:02}:00"),
        Period::Day => format!("{y:04}-{m:02}-{d:02}"),
        Period::Month => format!("{y:04}-{m:02}"),
    }
}

/// (year, month, day) of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_match_strftime() {
        // 2026-01-31T12:34:56Z
        let ms = 1_769_862_896_000;
        assert_eq!(bucket_name(ms, Period::Hour), "2026-01-31T12:00");
        assert_eq!(bucket_name(ms, Period::Day), "2026-01-31");
        assert_eq!(bucket_name(ms, Period::Month), "2026-01");
        assert_eq!(bucket_name(0, Period::Hour), "1970-01-01T00:00");
        assert_eq!(bucket_name(951_782_400_000, Period::Day), "2000-02-29");
    }

    #[test]
    fn cells_round_trip_through_their_redis_form() {
        let key = RollupKey {
            bucket_ms: 60_000,
            model: "m\"odel,\u{1f}".into(),
            provider: "p".into(),
            key: "…abcd".into(),
            client: "c".into(),
            status: 429,
        };
        let mut cell = Cell {
            requests: 3,
            errors: 1,
            prompt_tokens: 1 << 40,
            ..Default::default()
        };
        cell.latency[9] = 2;
        let (k, c) = parse(60_000, &label(&key), &counts(&cell)).unwrap();
        assert_eq!((k, c), (key, cell));
    }

    #[test]
    fn ranges_read_whole_hours_and_minute_edges() {
        let ttl = Duration::from_secs(48 * 3_600);
        let now = 100 * HOUR_MS + 30 * MINUTE_MS;
        // The last 90 minutes: hour 99 from minute 0 (whole) and hour 100 (whole: no until).
        let keys = keys_for("r", Some(99 * HOUR_MS), None, now, ttl);
        assert_eq!(keys.len(), 2, "{keys:?}");
        assert!(keys.iter().all(|(_, k)| k.starts_with("r:stats:h:")));
        // A range starting mid-hour, recent: minutes for the partial hour.
        let keys = keys_for("r", Some(99 * HOUR_MS + 50 * MINUTE_MS), None, now, ttl);
        assert_eq!(keys.len(), 11, "10 minutes of hour 99, then hour 100: {keys:?}");
        // Old partial hours (minutes gone): the whole hour.
        let keys = keys_for("r", Some(60 * HOUR_MS + 50 * MINUTE_MS), Some(61 * HOUR_MS), now, ttl);
        assert_eq!(keys, vec![(60 * HOUR_MS, format!("r:stats:h:{}", 60 * HOUR_MS))]);
        // Nothing older than the TTL is asked for.
        assert_eq!(keys_for("r", None, None, now, ttl).len(), 49);
    }
}
