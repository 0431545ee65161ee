//! How label values that clients choose stay bounded. Model names reach labels through
//! wildcard routes (any name is served), so a client could otherwise mint one series per
//! request, each as long as the request body allows (200 requests with 1 MiB names once held
//! 460 MB and rendered a 1 GB `/metrics` body).
//! Invariants: every label value is at most `MAX_LABEL_BYTES` long; at most
//! `server.metrics_max_series` series with a client-chosen value exist over all families and
//! cores (the rest count under model `(other)`); no family of a shard holds more than
//! `hard_cap` series whatever the labels. Whatever does not get its own series is counted in
//! `rotor_metrics_series_dropped_total`, never silently lost.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};

use ahash::AHashMap;

/// Longest label value kept; longer values are cut at a character boundary and end in `…`.
pub const MAX_LABEL_BYTES: usize = 128;
const CUT_MARKER: &str = "…";
/// The model label of observations past the series budget.
pub const OVERFLOW_MODEL: &str = "(other)";

/// `value` when it fits in `max` bytes, else its longest prefix that fits with `…` appended.
pub fn cap(value: &str, max: usize) -> Cow<'_, str> {
    if value.len() <= max {
        return Cow::Borrowed(value);
    }
    let mut end = max.saturating_sub(CUT_MARKER.len());
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{CUT_MARKER}", &value[..end]))
}

/// The series budget shared by the registry and every shard (set at start and on reload).
#[derive(Debug)]
pub struct Budget {
    max: AtomicUsize,
    used: AtomicUsize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max: AtomicUsize::new(4096),
            used: AtomicUsize::new(0),
        }
    }
}

impl Budget {
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// Takes one series from the budget, if any is left. Only a new label set asks (a few times
    /// per model and shard), never a request that counts into an existing series.
    fn take(&self) -> bool {
        let max = self.max.load(Ordering::Relaxed);
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1))
            .is_ok()
    }

    /// Series any one family of one shard may hold, `(other)` variants included: the budget
    /// bounds client-chosen values; this bounds everything else (statuses an upstream invents).
    fn hard_cap(&self) -> usize {
        self.max.load(Ordering::Relaxed).saturating_mul(2).max(1024)
    }
}

/// Series the per-family memo of recently counted label sets holds.
const RECENT: usize = 4;

/// Label sets of one family in one shard, by hash, with a memo of the series counted last: a
/// request counts into the series of the one before it almost always, and a memo hit compares
/// a few short strings instead of capping, collecting and hashing every label.
pub struct Family<V> {
    by_hash: AHashMap<u64, usize>,
    series: Vec<(Vec<String>, V)>,
    /// Indices into `series`, most recent first (`usize::MAX` = empty).
    recent: [usize; RECENT],
}

impl<V> Default for Family<V> {
    fn default() -> Self {
        Family {
            by_hash: AHashMap::default(),
            series: Vec::new(),
            recent: [usize::MAX; RECENT],
        }
    }
}

impl<V> Family<V> {
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Every series: its labels and value.
    pub fn values(&self) -> impl Iterator<Item = &(Vec<String>, V)> {
        self.series.iter()
    }

    /// Every series with its label hash (for summing shards).
    pub fn entries(&self) -> impl Iterator<Item = (u64, &(Vec<String>, V))> {
        self.by_hash
            .iter()
            .filter_map(|(h, &i)| Some((*h, self.series.get(i)?)))
    }

    pub fn get_mut(&mut self, hash: &u64) -> Option<&mut (Vec<String>, V)> {
        let i = *self.by_hash.get(hash)?;
        self.note(i);
        self.series.get_mut(i)
    }

    /// The stored (capped) labels of series `i`.
    pub fn labels(&self, i: usize) -> Option<&[String]> {
        self.series.get(i).map(|(labels, _)| labels.as_slice())
    }

    /// The value of series `i` (an index `bump` returned: series are never removed).
    pub fn value_mut(&mut self, i: usize) -> Option<&mut V> {
        self.series.get_mut(i).map(|(_, v)| v)
    }

    /// Series `i` now, counted through its hash (the memo learns it).
    fn counted(&mut self, hash: u64) -> Option<usize> {
        let i = *self.by_hash.get(&hash)?;
        self.note(i);
        Some(i)
    }

    /// The index the series of `hash` has (a new one at the end).
    pub fn insert(&mut self, hash: u64, series: (Vec<String>, V)) -> usize {
        if let Some(&i) = self.by_hash.get(&hash) {
            if let Some(slot) = self.series.get_mut(i) {
                *slot = series;
            }
            return i;
        }
        let i = self.series.len();
        self.by_hash.insert(hash, i);
        self.note(i);
        self.series.push(series);
        i
    }

    /// The series whose stored labels are exactly `labels`, from the memo.
    fn recent_index(&mut self, labels: &[&str]) -> Option<usize> {
        let same = |stored: &[String]| stored.len() == labels.len() && stored.iter().zip(labels).all(|(a, b)| a == b);
        let at = self
            .recent
            .iter()
            .position(|&i| self.series.get(i).is_some_and(|(stored, _)| same(stored)))?;
        let i = self.recent[at];
        self.recent.copy_within(0..at, 1);
        self.recent[0] = i;
        Some(i)
    }

    fn note(&mut self, i: usize) {
        let at = self.recent.iter().position(|&r| r == i).unwrap_or(RECENT - 1);
        self.recent.copy_within(0..at, 1);
        self.recent[0] = i;
    }
}

/// Fixed seeds: label hashes only need to be stable within the process.
fn label_hash(parts: &[&str]) -> u64 {
    ahash::RandomState::with_seeds(7, 11, 13, 17).hash_one(parts)
}

/// Adds to the series of `labels`. `client_named` is the index of the one label whose values
/// clients choose (the model): a new value there needs a slot of `budget`, else it counts under
/// `(other)`. Returns the index of the series counted into when it is the observation's own
/// (stable: series are never removed), `None` when it got no series of its own (folded or
/// dropped).
pub fn bump<V>(
    map: &mut Family<V>,
    budget: &Budget,
    labels: &[&str],
    client_named: Option<usize>,
    default: V,
    f: impl FnOnce(&mut V),
) -> Option<usize> {
    // A label set met just before is its own series (stored labels are capped, so a value
    // that needed capping never matches here and takes the full path).
    if let Some(i) = map.recent_index(labels) {
        f(map.value_mut(i)?);
        return Some(i);
    }
    let mut labels: smallvec::SmallVec<[Cow<'_, str>; 4]> = labels.iter().map(|l| cap(l, MAX_LABEL_BYTES)).collect();
    let mut hash = hash_of(&labels);
    if let Some(i) = map.counted(hash) {
        f(map.value_mut(i)?);
        return Some(i);
    }
    let full = map.len() >= budget.hard_cap();
    let mut own = true;
    if let Some(slot) = client_named.and_then(|i| labels.get_mut(i)) {
        // `""` (no model: unrouted, or an endpoint without one) and `(other)` are one value each.
        let free = slot.is_empty() || slot.as_ref() == OVERFLOW_MODEL;
        if !free && (full || !budget.take()) {
            *slot = Cow::Borrowed(OVERFLOW_MODEL);
            hash = hash_of(&labels);
            own = false;
            if let Some(i) = map.counted(hash) {
                if let Some(value) = map.value_mut(i) {
                    f(value);
                }
                return None;
            }
        }
    }
    if full {
        return None;
    }
    let mut value = default;
    f(&mut value);
    let i = map.insert(hash, (labels.iter().map(|s| s.as_ref().to_owned()).collect(), value));
    own.then_some(i)
}

fn hash_of(labels: &[Cow<'_, str>]) -> u64 {
    let parts: smallvec::SmallVec<[&str; 4]> = labels.iter().map(|l| l.as_ref()).collect();
    label_hash(&parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_at_a_character_boundary_with_a_marker() {
        assert_eq!(cap("short", 16), "short");
        let long = "é".repeat(100);
        let cut = cap(&long, 16);
        assert!(cut.len() <= 16 && cut.ends_with('…'), "{cut}");
        assert!(cut.starts_with("ééé"));
    }

    /// The memo of recent series counts exactly like the full path: same series, same values,
    /// same answers (own series or folded), with long values, folds and more label sets than
    /// the memo holds.
    #[test]
    fn recent_series_memo_counts_like_the_full_path() {
        let long = "x".repeat(MAX_LABEL_BYTES + 10);
        let models = [long.as_str(), "m0", "m1", "m2", "m3", "m4", "m5", "(other)", ""];
        let (memo_budget, full_budget) = (Budget::default(), Budget::default());
        memo_budget.set_max(4);
        full_budget.set_max(4);
        let (mut memo, mut full): (Family<u64>, Family<u64>) = Default::default();
        for i in 0..500usize {
            let model = models[(i * 7 + i / 3) % models.len()];
            let status = if i % 5 == 0 { "500" } else { "200" };
            let labels = ["chat", model, "p", status];
            let a = bump(&mut memo, &memo_budget, &labels, Some(1), 0, |n| *n += 1);
            full.recent = [usize::MAX; RECENT];
            let b = bump(&mut full, &full_budget, &labels, Some(1), 0, |n| *n += 1);
            if let Some(i) = a {
                assert_eq!(memo.labels(i), full.labels(i), "the index names the series counted");
            }
            assert_eq!(a, b, "observation {i} ({labels:?})");
        }
        let rows = |f: &Family<u64>| {
            let mut rows: Vec<_> = f.values().cloned().collect();
            rows.sort();
            rows
        };
        assert_eq!(rows(&memo), rows(&full));
        assert!(memo.values().any(|(l, _)| l[1] == OVERFLOW_MODEL), "some folded");
        assert!(memo.values().any(|(l, _)| l[1].ends_with('…')), "one capped");
    }

    #[test]
    fn budget_is_shared_and_the_rest_folds_into_other() {
        let budget = Budget::default();
        budget.set_max(2);
        let (mut a, mut b): (Family<u64>, Family<u64>) = Default::default();
        assert_eq!(bump(&mut a, &budget, &["m1", "p"], Some(0), 0, |n| *n += 1), Some(0));
        assert_eq!(bump(&mut b, &budget, &["m2", "p"], Some(0), 0, |n| *n += 1), Some(0));
        // Existing series keep counting; a third model anywhere folds.
        assert_eq!(bump(&mut a, &budget, &["m1", "p"], Some(0), 0, |n| *n += 1), Some(0));
        assert_eq!(bump(&mut a, &budget, &["m3", "p"], Some(0), 0, |n| *n += 1), None);
        assert_eq!(bump(&mut b, &budget, &["m4", "p"], Some(0), 0, |n| *n += 1), None);
        let other = a.values().find(|(l, _)| l[0] == OVERFLOW_MODEL).map(|(_, n)| *n);
        assert_eq!(other, Some(1));
        assert_eq!(a.len() + b.len(), 4, "m1, m2 and one (other) in each");
    }
}
