//! Stats rollups: counts per minute x model x provider x key x client x status, in shards the
//! control thread collects once a second and writes to the `rollups` table. A worker adds to
//! its own shard the finished requests that queue no request record; the log writer counts the
//! queued ones from their records into its own shard (`record_rollup`).
//! Invariant: every request that `finish` sees is added exactly once, by its worker or by the
//! writer (rows may be sampled or pruned, rollups never are); a shard is only written by its own
//! thread, so its mutex is never contended on the request path; a shard holds at most
//! `MAX_CELLS` label sets between two collections, the rest counted under model `(other)` and in
//! `rotor_rollup_overflow_total`.
//! Over time the collected cells name at most `storage.max_stat_models` distinct models since
//! start (client-chosen names through wildcard routes would otherwise add a stats row each, kept
//! for `rollup_retention_days`); the rest are counted under `(other)` the same way.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use std::collections::hash_map::Entry;

use ahash::{AHashMap, AHashSet};
use parking_lot::Mutex;

use super::Usage;

/// One rollup bucket is one minute.
pub const MINUTE_MS: i64 = 60_000;
/// Upper bounds (ms) of the coarse latency histogram; one more bucket holds the rest.
pub const LATENCY_BOUNDS_MS: [u64; 9] = [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000];
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;
/// Label sets a shard holds between two collections (one second apart).
const MAX_CELLS: usize = 10_000;
const OVERFLOW_MODEL: &str = "(other)";

/// Which cell a request counts in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RollupKey {
    /// Start of the minute the request arrived in, Unix ms.
    pub bucket_ms: i64,
    pub model: String,
    pub provider: String,
    /// Masked to the last 4 characters.
    pub key: String,
    pub client: String,
    pub status: u16,
}

/// What a cell counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cell {
    pub requests: u64,
    pub errors: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
    pub latency_ms_sum: u64,
    pub overhead_us_sum: u64,
    /// Requests per latency bucket (`LATENCY_BOUNDS_MS`).
    pub latency: [u64; LATENCY_BUCKETS],
}

impl Cell {
    pub fn merge(&mut self, o: &Cell) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
        self.cached_tokens += o.cached_tokens;
        self.reasoning_tokens += o.reasoning_tokens;
        self.latency_ms_sum += o.latency_ms_sum;
        self.overhead_us_sum += o.overhead_us_sum;
        for (a, b) in self.latency.iter_mut().zip(o.latency) {
            *a += b;
        }
    }

    /// Counts one request.
    pub fn count(&mut self, status: u16, latency_ms: u64, overhead_us: u64, usage: &Usage) {
        self.requests += 1;
        self.errors += u64::from(status >= 400);
        self.prompt_tokens += usage.prompt_tokens;
        self.completion_tokens += usage.completion_tokens;
        self.cached_tokens += usage.cached_tokens;
        self.reasoning_tokens += usage.reasoning_tokens;
        self.latency_ms_sum += latency_ms;
        self.overhead_us_sum += overhead_us;
        let bucket = LATENCY_BOUNDS_MS
            .iter()
            .position(|&b| latency_ms <= b)
            .unwrap_or(LATENCY_BUCKETS - 1);
        if let Some(n) = self.latency.get_mut(bucket) {
            *n += 1;
        }
    }
}

/// Start of the minute `ts_ms` (Unix ms) falls in.
pub fn bucket_of(ts_ms: i64) -> i64 {
    ts_ms - ts_ms.rem_euclid(MINUTE_MS)
}

/// One finished request, borrowed from `finish` (nothing is allocated unless its label set is
/// new in this shard).
pub struct Sample<'a> {
    /// Arrival, Unix ms.
    pub ts_ms: i64,
    pub model: &'a str,
    pub provider: &'a str,
    pub key: &'a str,
    pub client: &'a str,
    pub status: u16,
    pub latency_ms: u64,
    pub overhead_us: u64,
    pub usage: Usage,
}

impl Sample<'_> {
    fn labels(&self) -> Labels<'_> {
        Labels {
            bucket_ms: bucket_of(self.ts_ms),
            model: self.model,
            provider: self.provider,
            key: self.key,
            client: self.client,
            status: self.status,
        }
    }
}

/// The labels of a cell, borrowed (`RollupKey` owned).
#[derive(Debug, Clone, Copy)]
pub struct Labels<'a> {
    pub bucket_ms: i64,
    pub model: &'a str,
    pub provider: &'a str,
    pub key: &'a str,
    pub client: &'a str,
    pub status: u16,
}

impl Labels<'_> {
    fn hash(&self) -> u64 {
        ahash::RandomState::with_seeds(3, 5, 7, 11).hash_one((
            self.bucket_ms,
            self.status,
            self.model,
            self.provider,
            self.key,
            self.client,
        ))
    }

    fn is(&self, key: &RollupKey) -> bool {
        key.bucket_ms == self.bucket_ms
            && key.status == self.status
            && key.model == self.model
            && key.provider == self.provider
            && key.key == self.key
            && key.client == self.client
    }

    fn key(&self) -> RollupKey {
        RollupKey {
            bucket_ms: self.bucket_ms,
            model: self.model.to_owned(),
            provider: self.provider.to_owned(),
            key: self.key.to_owned(),
            client: self.client.to_owned(),
            status: self.status,
        }
    }
}

/// One core's cells since the last collection.
#[derive(Default)]
pub struct RollupShard {
    /// By label hash; a different label set with the same hash goes to `collided`.
    cells: AHashMap<u64, (RollupKey, Cell)>,
    collided: Vec<(RollupKey, Cell)>,
    overflow: u64,
}

impl RollupShard {
    pub fn add(&mut self, s: &Sample<'_>) {
        self.cell(s.labels(), 1)
            .count(s.status, s.latency_ms, s.overhead_us, &s.usage);
    }

    /// Adds the counts of `cell` (its requests under `labels`).
    pub fn merge(&mut self, labels: Labels<'_>, cell: &Cell) {
        self.cell(labels, cell.requests).merge(cell);
    }

    /// The cell of `labels` (of `(other)` in their place when the shard is full: `requests`
    /// count as overflow then).
    fn cell(&mut self, mut labels: Labels<'_>, requests: u64) -> &mut Cell {
        if self.cells.len() >= MAX_CELLS && !self.cells.contains_key(&labels.hash()) {
            self.overflow += requests;
            labels.model = OVERFLOW_MODEL;
        }
        match self.cells.entry(labels.hash()) {
            Entry::Occupied(held) if labels.is(&held.get().0) => &mut held.into_mut().1,
            Entry::Occupied(_) => {
                let at = match self.collided.iter().position(|(k, _)| labels.is(k)) {
                    Some(at) => at,
                    None => {
                        self.collided.push((labels.key(), Cell::default()));
                        self.collided.len() - 1
                    }
                };
                // Found or just pushed: in bounds.
                &mut self.collided[at].1
            }
            Entry::Vacant(new) => &mut new.insert((labels.key(), Cell::default())).1,
        }
    }
}

/// A core's shard as the registry hands it out.
pub type RollupShardHandle = Arc<Mutex<RollupShard>>;

/// Label sets waiting to be published to the fleet (`cluster::fleet`) while Redis is away.
const MAX_FLEET_CELLS: usize = 50_000;

/// Every core's shard, registered once at worker start.
pub struct RollupRegistry {
    shards: Mutex<Vec<Arc<Mutex<RollupShard>>>>,
    overflow: AtomicU64,
    /// `[cluster]`: a copy of every collected cell, taken by the cluster data thread.
    fleet: Mutex<Option<AHashMap<RollupKey, Cell>>>,
    /// Requests of cells the fleet copy had no room for.
    fleet_shed: AtomicU64,
    /// Model names the collected cells carried since start (only `collect` touches it).
    models: Mutex<AHashSet<String>>,
    /// `storage.max_stat_models`.
    max_models: AtomicUsize,
}

impl Default for RollupRegistry {
    fn default() -> Self {
        RollupRegistry {
            shards: Mutex::default(),
            overflow: AtomicU64::new(0),
            fleet: Mutex::default(),
            fleet_shed: AtomicU64::new(0),
            models: Mutex::default(),
            max_models: AtomicUsize::new(10_000),
        }
    }
}

impl RollupRegistry {
    /// Applies `storage.max_stat_models` (at start and on every reload). Known names stay; a
    /// lower limit only stops new ones.
    pub fn set_max_models(&self, max: usize) {
        self.max_models.store(max, Ordering::Relaxed);
    }

    /// `key`'s model, or `(other)` (its requests counted as overflow) when it is a new name
    /// past `max_models`.
    fn bound_model(&self, models: &mut AHashSet<String>, key: &mut RollupKey, requests: u64) {
        if key.model.is_empty() || key.model == OVERFLOW_MODEL || models.contains(&key.model) {
            return;
        }
        if models.len() < self.max_models.load(Ordering::Relaxed) {
            models.insert(key.model.clone());
            return;
        }
        key.model = OVERFLOW_MODEL.to_owned();
        self.overflow.fetch_add(requests, Ordering::Relaxed);
    }

    pub fn shard(&self) -> RollupShardHandle {
        let shard = Arc::new(Mutex::new(RollupShard::default()));
        self.shards.lock().push(shard.clone());
        shard
    }

    /// Takes every shard's cells (control thread). Each shard is locked only while its maps
    /// are swapped for empty ones, so a worker never waits on the copy.
    pub fn collect(&self) -> Vec<(RollupKey, Cell)> {
        let shards: Vec<_> = self.shards.lock().clone();
        let mut all = Vec::new();
        for shard in shards {
            let mut taken = std::mem::take(&mut *shard.lock());
            self.overflow.fetch_add(taken.overflow, Ordering::Relaxed);
            all.extend(taken.cells.into_values());
            all.append(&mut taken.collided);
        }
        // Cells renamed `(other)` may share a key now: the writer merges equal keys.
        let mut models = self.models.lock();
        for (key, cell) in &mut all {
            self.bound_model(&mut models, key, cell.requests);
        }
        if let Some(fleet) = self.fleet.lock().as_mut() {
            for (key, cell) in &all {
                let room = fleet.len() < MAX_FLEET_CELLS;
                match fleet.get_mut(key) {
                    Some(held) => held.merge(cell),
                    None if room => {
                        fleet.insert(key.clone(), *cell);
                    }
                    None => {
                        self.fleet_shed.fetch_add(cell.requests, Ordering::Relaxed);
                    }
                }
            }
        }
        all
    }

    /// From now on, collected cells are also kept for the fleet (`take_fleet`).
    pub fn share_with_fleet(&self) {
        self.fleet.lock().get_or_insert_with(AHashMap::new);
    }

    /// The cells collected since the last call (cluster data thread).
    pub fn take_fleet(&self) -> Vec<(RollupKey, Cell)> {
        match self.fleet.lock().as_mut() {
            Some(fleet) => fleet.drain().collect(),
            None => Vec::new(),
        }
    }

    /// Requests whose cells could not be kept for the fleet (Redis away too long).
    pub fn fleet_shed(&self) -> u64 {
        self.fleet_shed.load(Ordering::Relaxed)
    }

    /// Requests counted under model `(other)` so far.
    pub fn overflow(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ts_ms: i64, model: &str, status: u16, latency_ms: u64) -> Sample<'_> {
        Sample {
            ts_ms,
            model,
            provider: "p",
            key: "…abcd",
            client: "c",
            status,
            latency_ms,
            overhead_us: 10,
            usage: Usage {
                prompt_tokens: 3,
                completion_tokens: 2,
                ..Default::default()
            },
        }
    }

    #[test]
    fn requests_add_into_their_minute_and_labels() {
        let registry = RollupRegistry::default();
        let shard = registry.shard();
        shard.lock().add(&sample(120_001, "m", 200, 50));
        shard.lock().add(&sample(179_999, "m", 200, 300));
        shard.lock().add(&sample(180_000, "m", 200, 70_000));
        shard.lock().add(&sample(120_500, "m", 500, 1));
        let mut cells = registry.collect();
        cells.sort_by_key(|(k, _)| (k.bucket_ms, k.status));
        let summary: Vec<(i64, u16, u64, u64, u64)> = cells
            .iter()
            .map(|(k, c)| (k.bucket_ms, k.status, c.requests, c.errors, c.prompt_tokens))
            .collect();
        assert_eq!(
            summary,
            vec![
                (120_000, 200, 2, 0, 6),
                (120_000, 500, 1, 1, 3),
                (180_000, 200, 1, 0, 3)
            ]
        );
        assert_eq!(cells[0].1.latency[0], 1, "50 ms <= 100 ms");
        assert_eq!(cells[0].1.latency[2], 1, "300 ms <= 500 ms");
        assert_eq!(cells[2].1.latency[LATENCY_BUCKETS - 1], 1, "over 60 s");
        assert_eq!(cells[0].1.latency_ms_sum, 350);
        assert!(registry.collect().is_empty(), "collected once");
    }

    #[test]
    fn client_chosen_models_cannot_grow_a_shard_without_bound() {
        let registry = RollupRegistry::default();
        let shard = registry.shard();
        let names: Vec<String> = (0..MAX_CELLS + 50).map(|i| format!("m{i}")).collect();
        for name in &names {
            shard.lock().add(&sample(0, name, 200, 1));
        }
        let cells = registry.collect();
        assert_eq!(cells.len(), MAX_CELLS + 1);
        assert_eq!(cells.iter().map(|(_, c)| c.requests).sum::<u64>(), names.len() as u64);
        let other = cells.iter().find(|(k, _)| k.model == OVERFLOW_MODEL).unwrap();
        assert_eq!(other.1.requests, 50);
        assert_eq!(registry.overflow(), 50);
    }

    #[test]
    fn distinct_models_over_time_are_bounded_by_max_stat_models() {
        let registry = RollupRegistry::default();
        registry.set_max_models(3);
        let shard = registry.shard();
        let mut cells = Vec::new();
        // One collection per minute, as the control thread collects every second.
        for (minute, name) in ["a", "b", "a", "c", "d", "e", "b"].iter().enumerate() {
            shard.lock().add(&sample(minute as i64 * MINUTE_MS, name, 200, 1));
            shard.lock().add(&sample(minute as i64 * MINUTE_MS, "", 404, 1));
            cells.extend(registry.collect());
        }
        let mut models: Vec<&str> = cells.iter().map(|(k, _)| k.model.as_str()).collect();
        models.sort_unstable();
        models.dedup();
        assert_eq!(models, vec!["", "(other)", "a", "b", "c"]);
        assert_eq!(
            cells.iter().map(|(_, c)| c.requests).sum::<u64>(),
            14,
            "every request counted"
        );
        assert_eq!(registry.overflow(), 2, "d and e");
        // Known names keep their own cells later; new ones still go to (other).
        shard.lock().add(&sample(0, "c", 200, 1));
        shard.lock().add(&sample(0, "f", 200, 1));
        let later: Vec<String> = registry.collect().into_iter().map(|(k, _)| k.model).collect();
        assert!(
            later.contains(&"c".to_owned()) && later.contains(&"(other)".to_owned()),
            "{later:?}"
        );
        assert_eq!(registry.overflow(), 3);
    }
}
