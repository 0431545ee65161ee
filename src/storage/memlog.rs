//! The in-memory request log (`storage.path = ""`): a ring of compact rows on the control
//! thread, the oldest evicted past `storage.max_records` (or `max_db_bytes` of estimated
//! memory). Appending a row and evicting one cost a few hundred nanoseconds, where an
//! in-memory SQLite table paid an insert and a delete (~2 µs) per request at its bound; the
//! stats live in the rollups either way. The text a row shares with others is interned once
//! (`Labels`).
//! Invariant: the ring holds at most `max_records` rows, ids are handed out in order and never
//! reused, every evicted row is counted by the caller, and the interned labels never outnumber
//! `MAX_LABELS` plus one batch (unused ones are dropped when they do).

use std::collections::VecDeque;

use ahash::AHashMap;

use super::requests::{LogFilter, LogPage, LogRow};
use crate::usage::record::{RecordText, RequestRecord};

/// Interned labels kept before unused ones are dropped (a scan of the ring).
const MAX_LABELS: usize = 10_000;

/// One row: ~80 bytes plus its request id.
struct Row {
    ts_ms: i64,
    request_id: Box<str>,
    label: u32,
    status: u16,
    attempts: u16,
    stream: bool,
    partial: bool,
    latency_ms: u32,
    ttfb_ms: u32,
    overhead_us: u32,
    tokens: [u32; 4],
    bytes_in: u64,
    bytes_out: u64,
}

/// client, endpoint, model, provider, upstream model, key, error.
type Label = [Box<str>; 7];

fn label_of<'a>(t: &RecordText<'a>) -> [&'a str; 7] {
    [
        t.client,
        t.endpoint,
        t.model,
        t.provider,
        t.upstream_model,
        t.key,
        t.error,
    ]
}

/// What the ring may hold.
pub struct Bounds {
    pub max_rows: Option<u64>,
    /// Estimated memory (`MemLog::bytes`).
    pub max_bytes: Option<u64>,
    /// Rows that arrived before this (Unix ms) go (`storage.retention_days`).
    pub cutoff_ms: i64,
}

/// Rows evicted by `append`, by reason.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Evicted {
    pub rows: u64,
    pub bytes: u64,
    pub age: u64,
}

#[derive(Default)]
struct Labels {
    all: Vec<Label>,
    /// By hash of the fields; equal hashes share the bucket.
    ids: AHashMap<u64, Vec<u32>>,
    bytes: usize,
}

impl Labels {
    fn hash(fields: &[&str; 7]) -> u64 {
        ahash::RandomState::with_seeds(29, 31, 37, 41).hash_one(fields)
    }

    fn id(&mut self, fields: [&str; 7]) -> u32 {
        let h = Self::hash(&fields);
        let bucket = self.ids.entry(h).or_default();
        for &id in bucket.iter() {
            if let Some(l) = self.all.get(id as usize) {
                if l.iter().map(|f| &**f).eq(fields.iter().copied()) {
                    return id;
                }
            }
        }
        let id = self.all.len() as u32;
        self.bytes += fields.iter().map(|f| f.len() + 16).sum::<usize>();
        self.all.push(fields.map(Box::from));
        bucket.push(id);
        id
    }

    fn get(&self, id: u32) -> [&str; 7] {
        match self.all.get(id as usize) {
            Some(l) => [&*l[0], &*l[1], &*l[2], &*l[3], &*l[4], &*l[5], &*l[6]],
            None => [""; 7],
        }
    }
}

fn u32_of(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

pub struct MemLog {
    rows: VecDeque<Row>,
    /// Id of `rows[0]`.
    first_id: i64,
    labels: Labels,
    /// Heap bytes of the rows' request ids.
    id_bytes: usize,
}

impl Default for MemLog {
    fn default() -> Self {
        MemLog {
            rows: VecDeque::new(),
            // Like SQLite's rowids.
            first_id: 1,
            labels: Labels::default(),
            id_bytes: 0,
        }
    }
}

impl MemLog {
    /// Appends `records` (oldest first), then evicts the oldest rows past `bounds`.
    pub fn append(&mut self, records: &[RequestRecord], bounds: &Bounds) -> Evicted {
        for r in records {
            let mut text = r.text.get();
            if text.upstream_model.is_empty() && !text.provider.is_empty() {
                text.upstream_model = text.model;
            }
            let label = self.labels.id(label_of(&text));
            self.id_bytes += text.request_id.len();
            self.rows.push_back(Row {
                ts_ms: r.ts_ms,
                request_id: Box::from(text.request_id),
                label,
                status: r.status,
                attempts: u16::try_from(r.attempts).unwrap_or(u16::MAX),
                stream: r.stream,
                partial: r.usage.partial,
                latency_ms: u32_of(r.latency_ms),
                ttfb_ms: u32_of(r.ttfb_ms),
                overhead_us: u32_of(r.overhead_us),
                tokens: [
                    u32_of(r.usage.prompt_tokens),
                    u32_of(r.usage.completion_tokens),
                    u32_of(r.usage.cached_tokens),
                    u32_of(r.usage.reasoning_tokens),
                ],
                bytes_in: r.bytes_in,
                bytes_out: r.bytes_out,
            });
        }
        let mut evicted = Evicted::default();
        while bounds.max_rows.is_some_and(|max| self.rows.len() as u64 > max) {
            self.evict();
            evicted.rows += 1;
        }
        while bounds.max_bytes.is_some_and(|max| self.bytes() > max) && !self.rows.is_empty() {
            self.evict();
            evicted.bytes += 1;
        }
        while self.rows.front().is_some_and(|r| r.ts_ms < bounds.cutoff_ms) {
            self.evict();
            evicted.age += 1;
        }
        if self.labels.all.len() > MAX_LABELS {
            self.drop_unused_labels();
        }
        evicted
    }

    fn evict(&mut self) {
        if let Some(row) = self.rows.pop_front() {
            self.id_bytes -= row.request_id.len();
            self.first_id += 1;
        }
    }

    /// Re-interns the labels rows still use (the rest go).
    fn drop_unused_labels(&mut self) {
        let old = std::mem::take(&mut self.labels);
        let mut remap: AHashMap<u32, u32> = AHashMap::new();
        for row in self.rows.iter_mut() {
            let id = *remap
                .entry(row.label)
                .or_insert_with(|| self.labels.id(old.get(row.label)));
            row.label = id;
        }
    }

    pub fn len(&self) -> u64 {
        self.rows.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Estimated memory: the rows, their request ids and the labels.
    pub fn bytes(&self) -> u64 {
        (self.rows.len() * std::mem::size_of::<Row>() + self.id_bytes + self.labels.bytes) as u64
    }

    pub fn clear(&mut self) -> u64 {
        let n = self.len();
        self.first_id += n as i64;
        self.rows.clear();
        self.labels = Labels::default();
        self.id_bytes = 0;
        n
    }

    /// `GET /admin/logs` over the ring, newest first (a scan: ~1 ms per 100k rows).
    pub fn logs(&self, filter: &LogFilter, limit: i64, offset: i64) -> LogPage {
        let wanted = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        // Which labels pass the text filters, decided once per label.
        let labels_ok: Vec<bool> = (0..self.labels.all.len() as u32)
            .map(|id| {
                let [client, _, model, provider, ..] = self.labels.get(id);
                wanted(&filter.model, model) && wanted(&filter.client, client) && wanted(&filter.provider, provider)
            })
            .collect();
        let limit = limit.clamp(1, 1000) as usize;
        let offset = offset.max(0) as usize;
        let mut total = 0usize;
        let mut data = Vec::new();
        for (i, row) in self.rows.iter().enumerate().rev() {
            let pass = labels_ok.get(row.label as usize).copied().unwrap_or(false)
                && filter.status.is_none_or(|s| s == i64::from(row.status))
                && filter.since_ms.is_none_or(|t| row.ts_ms >= t)
                && filter.until_ms.is_none_or(|t| row.ts_ms < t);
            if !pass {
                continue;
            }
            if total >= offset && data.len() < limit {
                data.push(self.log_row(self.first_id + i as i64, row));
            }
            total += 1;
        }
        LogPage {
            total: total as i64,
            data,
        }
    }

    fn log_row(&self, id: i64, row: &Row) -> LogRow {
        let [client, endpoint, model, provider, upstream_model, key, error] = self.labels.get(row.label);
        LogRow {
            id,
            ts: row.ts_ms,
            request_id: row.request_id.to_string(),
            client: client.to_owned(),
            endpoint: endpoint.to_owned(),
            model: model.to_owned(),
            provider: provider.to_owned(),
            upstream_model: upstream_model.to_owned(),
            key: key.to_owned(),
            status: i64::from(row.status),
            error: error.to_owned(),
            attempts: i64::from(row.attempts),
            stream: row.stream,
            latency_ms: i64::from(row.latency_ms),
            ttfb_ms: i64::from(row.ttfb_ms),
            overhead_us: i64::from(row.overhead_us),
            prompt_tokens: i64::from(row.tokens[0]),
            completion_tokens: i64::from(row.tokens[1]),
            cached_tokens: i64::from(row.tokens[2]),
            reasoning_tokens: i64::from(row.tokens[3]),
            usage_partial: row.partial,
            bytes_in: i64::try_from(row.bytes_in).unwrap_or(i64::MAX),
            bytes_out: i64::try_from(row.bytes_out).unwrap_or(i64::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::record::Texts;

    fn record(ts_ms: i64, model: &str, status: u16) -> RequestRecord {
        RequestRecord {
            ts_ms,
            status,
            text: Texts::new(&RecordText {
                request_id: "rid",
                client: "c",
                model,
                provider: "p",
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_rows_and_filters_like_the_table() {
        let mut log = MemLog::default();
        let batch: Vec<_> = (0..10)
            .map(|i| record(i, if i % 2 == 0 { "even" } else { "odd" }, 200 + i as u16))
            .collect();
        let rows = |max_rows| Bounds {
            max_rows: Some(max_rows),
            max_bytes: None,
            cutoff_ms: 0,
        };
        let evicted = log.append(&batch, &rows(6));
        assert_eq!((evicted.rows, evicted.bytes), (4, 0));
        assert_eq!(log.len(), 6);
        let page = log.logs(&LogFilter::default(), 2, 1);
        assert_eq!(page.total, 6);
        assert_eq!(
            page.data.iter().map(|r| (r.id, r.ts)).collect::<Vec<_>>(),
            vec![(9, 8), (8, 7)]
        );
        assert_eq!(page.data[0].upstream_model, "even", "no alias: the model itself");
        let odd = log.logs(
            &LogFilter {
                model: Some("odd".into()),
                since_ms: Some(5),
                ..Default::default()
            },
            10,
            0,
        );
        assert_eq!(odd.data.iter().map(|r| r.ts).collect::<Vec<_>>(), vec![9, 7, 5]);
        let before = log.bytes();
        let by_bytes = Bounds {
            max_rows: None,
            max_bytes: Some(before),
            cutoff_ms: 0,
        };
        // Rows 5 and 6 (ts 4, 5) go; ts 6..9 and the new 0, 1 stay.
        assert_eq!(log.append(&batch[..2], &by_bytes).bytes, 2, "bytes bound the ring too");
        let by_age = Bounds {
            max_rows: None,
            max_bytes: None,
            cutoff_ms: 7,
        };
        // Oldest first: ts 6 goes, ts 7 stops the eviction (later rows are not looked at).
        assert_eq!(log.append(&[], &by_age).age, 1);
        assert_eq!(log.clear(), 5);
        assert!(log.is_empty());
        log.append(&batch[..1], &rows(6));
        assert_eq!(
            log.logs(&LogFilter::default(), 10, 0).data[0].id,
            13,
            "ids are never reused"
        );
    }

    #[test]
    fn labels_no_row_uses_are_dropped_past_the_bound() {
        let mut log = MemLog::default();
        let names: Vec<String> = (0..MAX_LABELS + 10).map(|i| format!("m{i}")).collect();
        let batch: Vec<_> = names.iter().map(|m| record(1, m, 200)).collect();
        log.append(
            &batch,
            &Bounds {
                max_rows: Some(5),
                max_bytes: None,
                cutoff_ms: 0,
            },
        );
        assert_eq!(log.labels.all.len(), 5);
        let models: Vec<String> = log
            .logs(&LogFilter::default(), 10, 0)
            .data
            .into_iter()
            .map(|r| r.model)
            .collect();
        assert_eq!(models, names.iter().rev().take(5).cloned().collect::<Vec<_>>());
    }
}
