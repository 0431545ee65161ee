//! Stats rollups of logged requests, counted by the log writer from the records it drains, so
//! a worker that queues a record does not also add it to its rollup shard (the add, a hash of
//! four names and a map lookup, cost a worker ~370 instructions a request; here a record whose
//! label run, status and minute equal the last one's costs a compare and a few adds).
//! Records add into cells held by label (`record::Label`, finer than a rollup's
//! labels); the held cells are folded into the writer's own shard in the `RollupRegistry`
//! before every collection, and whenever `MAX_HELD` label runs are held.
//! Invariant: every record drained and passed to `count` is counted exactly once, unless its
//! worker counted it already (`RequestRecord::in_rollups`); a record that never reaches the
//! writer (sampled out, the queue full) is counted by its worker. At most `MAX_HELD` cells are
//! held, and the shard bounds its label sets like a worker's.

use std::sync::Arc;

use super::record::{Label, RequestRecord, Texts};
use super::rollup::{bucket_of, Cell, Labels, RollupRegistry, RollupShardHandle, MINUTE_MS};

/// Label runs held between two folds: a gateway's records come from a few routes, keys and
/// models, and a record's run is looked for among these (the last one used first).
const MAX_HELD: usize = 32;

/// Requests of one label, status and minute.
struct Held {
    bucket_ms: i64,
    status: u16,
    /// The label of the first record counted here (records of one route share it).
    label: Arc<Label>,
    cell: Cell,
}

impl Held {
    /// A request at `ts_ms` with this status counts here if its label is this cell's (its
    /// minute compared without a division); `by_address` compares the labels by address
    /// only (records of one route share theirs), else by text.
    fn holds(&self, ts_ms: i64, status: u16, label: &Arc<Label>, by_address: bool) -> bool {
        self.status == status
            && (self.bucket_ms..self.bucket_ms + MINUTE_MS).contains(&ts_ms)
            && (Arc::ptr_eq(&self.label, label) || (!by_address && self.label == *label))
    }
}

#[derive(Default)]
pub struct RecordRollups {
    held: Vec<Held>,
    /// Where the last record was counted in `held`.
    last: usize,
    /// The writer's shard, registered at the first fold.
    shard: Option<RollupShardHandle>,
}

impl RecordRollups {
    /// Counts the requests of `records` that their workers left to the writer.
    pub fn count(&mut self, records: &[RequestRecord], registry: &RollupRegistry) {
        for record in records.iter().filter(|r| !r.in_rollups) {
            self.cell_of(record, registry)
                .count(record.status, record.latency_ms, record.overhead_us, &record.usage);
        }
    }

    fn cell_of(&mut self, record: &RequestRecord, registry: &RollupRegistry) -> &mut Cell {
        let label = record.text.label();
        let (ts_ms, status) = (record.ts_ms, record.status);
        // The last cell, then every cell by the label's address, then by its text: a route's
        // keys take turns, so the label is most often one of the held ones, shared.
        let found = match self.held.get(self.last) {
            Some(last) if last.holds(ts_ms, status, label, true) => Some(self.last),
            _ => (self.held.iter().position(|h| h.holds(ts_ms, status, label, true)))
                .or_else(|| self.held.iter().position(|h| h.holds(ts_ms, status, label, false))),
        };
        self.last = match found {
            Some(at) => at,
            None => {
                if self.held.len() >= MAX_HELD {
                    self.fold(registry);
                }
                self.held.push(Held {
                    bucket_ms: bucket_of(ts_ms),
                    status,
                    label: label.clone(),
                    cell: Cell::default(),
                });
                self.held.len() - 1
            }
        };
        // Found or just pushed: in bounds.
        &mut self.held[self.last].cell
    }

    /// Moves the held cells into the writer's shard (before `registry.collect()`).
    pub fn fold(&mut self, registry: &RollupRegistry) {
        if self.held.is_empty() {
            return;
        }
        let shard = self.shard.get_or_insert_with(|| registry.shard());
        let mut shard = shard.lock();
        for held in self.held.drain(..) {
            let (run, ends) = held.label.key();
            let [client, _endpoint, model, provider, _upstream_model, key, _error] = Texts::split_label(run, &ends);
            let labels = Labels {
                bucket_ms: held.bucket_ms,
                model,
                provider,
                key,
                client,
                status: held.status,
            };
            shard.merge(labels, &held.cell);
        }
        self.last = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::record::RecordText;
    use crate::usage::rollup::{RollupKey, Sample};
    use crate::usage::Usage;

    fn record(ts_ms: i64, model: &str, endpoint: &str, status: u16, latency_ms: u64) -> RequestRecord {
        RequestRecord {
            ts_ms,
            status,
            latency_ms,
            overhead_us: 7,
            usage: Usage {
                prompt_tokens: 3,
                completion_tokens: 2,
                ..Default::default()
            },
            text: Texts::new(&RecordText {
                request_id: "r",
                client: "c",
                endpoint,
                model,
                provider: "p",
                key: "…abcd",
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sorted(mut cells: Vec<(RollupKey, Cell)>) -> Vec<(RollupKey, Cell)> {
        cells.sort_by(|(a, _), (b, _)| (a.bucket_ms, &a.model, a.status).cmp(&(b.bucket_ms, &b.model, b.status)));
        cells
    }

    /// What the writer counts from records equals what the workers counted from the same
    /// requests before: more label runs than are held, revisited out of order, runs that
    /// differ only in a field the stats do not keep (endpoint), minutes and their edges, an
    /// error status, and a record its worker counted already.
    #[test]
    fn records_count_as_their_workers_would_have() {
        let mut records = Vec::new();
        for i in 0..200u64 {
            let model = format!("m{}", (i * 7) % (MAX_HELD as u64 + 9));
            let endpoint = if i % 3 == 0 { "chat" } else { "responses" };
            let status = if i % 11 == 0 { 502 } else { 200 };
            // Both ends of a minute, the next one's start, and one before 1970.
            let ts_ms = [MINUTE_MS, 2 * MINUTE_MS - 1, 2 * MINUTE_MS, -1][(i % 4) as usize];
            records.push(record(ts_ms, &model, endpoint, status, i * 13));
        }
        records.push(RequestRecord {
            in_rollups: true,
            ..record(0, "counted", "chat", 200, 1)
        });
        let by_writer = RollupRegistry::default();
        let mut rollups = RecordRollups::default();
        for batch in records.chunks(17) {
            rollups.count(batch, &by_writer);
        }
        rollups.fold(&by_writer);
        let by_workers = RollupRegistry::default();
        let shard = by_workers.shard();
        for r in records.iter().filter(|r| !r.in_rollups) {
            let t = r.text.get();
            shard.lock().add(&Sample {
                ts_ms: r.ts_ms,
                model: t.model,
                provider: t.provider,
                key: t.key,
                client: t.client,
                status: r.status,
                latency_ms: r.latency_ms,
                overhead_us: r.overhead_us,
                usage: r.usage,
            });
        }
        let (got, wanted) = (sorted(by_writer.collect()), sorted(by_workers.collect()));
        assert!(got.len() > MAX_HELD, "more label sets than are held: {}", got.len());
        assert_eq!(got, wanted);
        assert_eq!(got.iter().map(|(_, c)| c.requests).sum::<u64>(), 200);
        assert!(by_writer.collect().is_empty(), "collected once");
        rollups.fold(&by_writer);
        assert!(by_writer.collect().is_empty(), "a fold of nothing adds nothing");
    }
}
