//! Prometheus metrics. Each worker counts into its own shard (a mutex only its own core takes
//! on the request path, so it is never contended there); `/metrics` sums the shards at scrape
//! time. Invariant: no counter shared between cores is written per request, and no label value
//! is a secret (keys appear masked to their last 4 characters). Label values clients choose
//! are bounded in length and number (`bound`), and the rendered body in size (`fit`).

mod bound;
pub mod cluster;
mod fit;

pub use fit::fit;
pub mod health;
mod histogram;
mod recent;
mod render;

use std::sync::Arc;

use parking_lot::Mutex;

pub use bound::cap;
use bound::{bump, Budget, Family};
use histogram::Histogram;
use recent::{Entry, Recent};

/// Seconds: from a millisecond to two minutes (LLM answers are slow).
const DURATION_BOUNDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Seconds: rotor's own time, from 10 µs to 50 ms.
const OVERHEAD_BOUNDS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05,
];

/// One finished request, as metrics see it.
pub struct Observation<'a> {
    pub endpoint: &'static str,
    pub model: &'a str,
    pub provider: &'a str,
    pub status: u16,
    pub duration_s: f64,
    /// `None` when the request never reached an upstream.
    pub overhead_s: Option<f64>,
    /// prompt, completion, cached, reasoning.
    pub tokens: [u64; 4],
    /// The outcome of the attempt that delivered the answer, counted in `attempts` under
    /// `provider` as by `Shard::attempt` (`None`: no attempt delivered it). Counted here, the
    /// request's memo entry finds its series: one lock and one memo walk for both.
    pub attempt: Option<&'static str>,
}

pub struct Shard {
    requests: Family<u64>,
    tokens: Family<[u64; 4]>,
    attempts: Family<u64>,
    limit_rejections: Family<u64>,
    cancels: Family<u64>,
    duration: Histogram,
    overhead: Histogram,
    /// Observations that got no series of their own (counted under `(other)`, or dropped).
    series_dropped: u64,
    /// The `requests` (and `tokens`) series of recent requests, by endpoint and status.
    recent_requests: Recent,
    /// The `attempts` series of recent attempts, by outcome.
    recent_attempts: Recent,
    /// Shared with the registry and every other shard.
    budget: Arc<Budget>,
}

impl Shard {
    fn new(budget: Arc<Budget>) -> Self {
        Shard {
            requests: Family::default(),
            tokens: Family::default(),
            attempts: Family::default(),
            limit_rejections: Family::default(),
            cancels: Family::default(),
            duration: Histogram::new(DURATION_BOUNDS),
            overhead: Histogram::new(OVERHEAD_BOUNDS),
            series_dropped: 0,
            recent_requests: Recent::default(),
            recent_attempts: Recent::default(),
            budget,
        }
    }

    pub fn observe(&mut self, o: &Observation<'_>) {
        let same = same_request(&self.requests, o.model, o.provider);
        let known = self.recent_requests.find(o.endpoint, o.status, same).copied();
        let tokens = match known {
            Some(entry) => {
                if let Some(n) = self.requests.value_mut(entry.series) {
                    *n += 1;
                }
                entry.tokens
            }
            None => self.count_request(o),
        };
        if o.tokens.iter().any(|&t| t > 0) {
            match tokens.and_then(|i| self.tokens.value_mut(i)) {
                Some(counts) => add_tokens(counts, o.tokens),
                None => self.count_tokens(o),
            }
        }
        if let Some(outcome) = o.attempt {
            self.count_attempt(o, outcome, known.and_then(|e| e.attempt));
        }
        self.duration.observe(o.duration_s);
        if let Some(overhead) = o.overhead_s {
            self.overhead.observe(overhead);
        }
    }

    /// `observe`'s request count through `bump`; its series is remembered when it is its
    /// own. The tokens series the memo knows for it (none yet).
    fn count_request(&mut self, o: &Observation<'_>) -> Option<usize> {
        let mut digits = itoa::Buffer::new();
        let status = digits.format(o.status);
        let labels = [o.endpoint, o.model, o.provider, status];
        match bump(&mut self.requests, &self.budget, &labels, Some(1), 0, |n| *n += 1) {
            Some(series) => self.recent_requests.note(Entry::new(o.endpoint, o.status, series)),
            None => self.series_dropped += 1,
        }
        None
    }

    /// `observe`'s token count through `bump`; its series is remembered with the request's
    /// when both are their own.
    fn count_tokens(&mut self, o: &Observation<'_>) {
        let labels = [o.model, o.provider];
        match bump(&mut self.tokens, &self.budget, &labels, Some(0), [0; 4], |t| {
            add_tokens(t, o.tokens)
        }) {
            Some(series) => {
                let same = same_request(&self.requests, o.model, o.provider);
                if let Some(entry) = self.recent_requests.find(o.endpoint, o.status, same) {
                    entry.tokens = Some(series);
                }
            }
            None => self.series_dropped += 1,
        }
    }

    /// `observe`'s attempt count: through the series its request's memo entry knows, else
    /// through `attempt`, whose series the entry then remembers.
    fn count_attempt(&mut self, o: &Observation<'_>, outcome: &'static str, known: Option<(&'static str, usize)>) {
        let memo = known.filter(|&(name, _)| Recent::same_name(name, outcome));
        if let Some(n) = memo.and_then(|(_, i)| self.attempts.value_mut(i)) {
            *n += 1;
            return;
        }
        let Some(series) = self.attempt(o.provider, outcome) else {
            return;
        };
        let same = same_request(&self.requests, o.model, o.provider);
        if let Some(entry) = self.recent_requests.find(o.endpoint, o.status, same) {
            entry.attempt = Some((outcome, series));
        }
    }

    /// One upstream attempt and how it went (`ok`, `retried`, `error`). Returns its series
    /// when it has its own.
    pub fn attempt(&mut self, provider: &str, outcome: &'static str) -> Option<usize> {
        let attempts = &self.attempts;
        let same = |i: usize| {
            attempts
                .labels(i)
                .and_then(|l| l.first())
                .is_some_and(|p| p == provider)
        };
        if let Some(entry) = self.recent_attempts.find(outcome, 0, same) {
            let series = entry.series;
            if let Some(n) = self.attempts.value_mut(series) {
                *n += 1;
                return Some(series);
            }
        }
        match bump(&mut self.attempts, &self.budget, &[provider, outcome], None, 0, |n| {
            *n += 1
        }) {
            Some(series) => {
                self.recent_attempts.note(Entry::new(outcome, 0, series));
                Some(series)
            }
            None => {
                self.series_dropped += 1;
                None
            }
        }
    }

    /// A request refused by a limit (`scope`: client, key, provider).
    pub fn limit_rejection(&mut self, scope: &str) {
        if bump(&mut self.limit_rejections, &self.budget, &[scope], None, 0, |n| *n += 1).is_none() {
            self.series_dropped += 1;
        }
    }

    /// An upstream job canceled because nobody waits for it any more (a Replicate prediction),
    /// and how the cancel went (`ok`, `failed`, `shed`).
    pub fn upstream_cancel(&mut self, provider: &str, outcome: &str) {
        if bump(&mut self.cancels, &self.budget, &[provider, outcome], None, 0, |n| {
            *n += 1
        })
        .is_none()
        {
            self.series_dropped += 1;
        }
    }

    fn merge(&mut self, other: &Shard) {
        fn add<V: Clone>(into: &mut Family<V>, from: &Family<V>, plus: impl Fn(&mut V, &V)) {
            for (k, (labels, v)) in from.entries() {
                match into.get_mut(&k) {
                    Some(existing) => plus(&mut existing.1, v),
                    None => {
                        into.insert(k, (labels.clone(), v.clone()));
                    }
                }
            }
        }
        add(&mut self.requests, &other.requests, |a, b| *a += b);
        add(&mut self.attempts, &other.attempts, |a, b| *a += b);
        add(&mut self.limit_rejections, &other.limit_rejections, |a, b| *a += b);
        add(&mut self.cancels, &other.cancels, |a, b| *a += b);
        add(&mut self.tokens, &other.tokens, |a, b| {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        });
        self.duration.merge(&other.duration);
        self.overhead.merge(&other.overhead);
        self.series_dropped += other.series_dropped;
    }
}

/// Whether series `i` of `requests` has `model` and `provider` (its stored labels are
/// endpoint, model, provider and status; `Recent` compares the first and last itself).
fn same_request<'s>(requests: &'s Family<u64>, model: &'s str, provider: &'s str) -> impl Fn(usize) -> bool + 's {
    move |i| {
        requests
            .labels(i)
            .is_some_and(|l| l.get(1).is_some_and(|m| m == model) && l.get(2).is_some_and(|p| p == provider))
    }
}

/// Adds one observation's tokens (prompt, completion, cached, reasoning) to a series.
fn add_tokens(counts: &mut [u64; 4], tokens: [u64; 4]) {
    for (a, b) in counts.iter_mut().zip(tokens) {
        *a += b;
    }
}

/// Every core's shard, registered once at worker start.
#[derive(Default)]
pub struct Registry {
    shards: Mutex<Vec<Arc<Mutex<Shard>>>>,
    budget: Arc<Budget>,
}

/// Gauges and counters owned elsewhere, read at scrape time.
pub struct Extra<'a> {
    /// (provider, masked key, state)
    pub key_states: Vec<(&'a str, &'a str, &'static str)>,
    pub log_dropped: u64,
    pub open_connections: usize,
}

impl Registry {
    pub fn shard(&self) -> Arc<Mutex<Shard>> {
        let shard = Arc::new(Mutex::new(Shard::new(self.budget.clone())));
        self.shards.lock().push(shard.clone());
        shard
    }

    /// Applies `server.metrics_max_series` (at start and on every reload). Series that exist
    /// stay; a lower limit only stops new ones.
    pub fn set_max_series(&self, max: usize) {
        self.budget.set_max(max);
    }
}

#[cfg(test)]
#[path = "shard_tests.rs"]
mod shard_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_chosen_model_names_cannot_grow_series_without_bound() {
        let registry = Registry::default();
        registry.set_max_series(100);
        let (a, b) = (registry.shard(), registry.shard());
        for i in 0..600 {
            let model = format!("random-{i}-{}", "x".repeat(1 << 20));
            let shard = if i % 2 == 0 { &a } else { &b };
            shard.lock().observe(&Observation {
                endpoint: "chat",
                model: &model,
                provider: "p",
                status: 200,
                duration_s: 0.1,
                overhead_s: None,
                tokens: [1, 1, 0, 0],
                attempt: None,
            });
        }
        let series = |s: &Arc<Mutex<Shard>>| {
            let s = s.lock();
            s.requests.len() + s.tokens.len()
        };
        assert!(
            series(&a) + series(&b) <= 100 + 4,
            "the budget is shared by families and shards"
        );
        let text = registry.render(&Extra {
            key_states: vec![],
            log_dropped: 0,
            open_connections: 0,
        });
        assert!(text.len() < 100 * 1024, "labels are capped: {} bytes", text.len());
        assert!(text.lines().all(|l| l.len() < 512), "no label longer than the cap");
        // 50 models got both series; the other 550 observations folded into (other), twice.
        assert!(
            text.contains(r#"model="(other)",provider="p",status="200"} 550"#),
            "overflow counted, not lost"
        );
        assert!(text.contains("rotor_metrics_series_dropped_total 1100"), "{text}");
    }

    #[test]
    fn shards_sum_and_render_as_prometheus_text() {
        let registry = Registry::default();
        let a = registry.shard();
        let b = registry.shard();
        let o = Observation {
            endpoint: "chat",
            model: "m\"x",
            provider: "p",
            status: 200,
            duration_s: 0.2,
            overhead_s: Some(0.00003),
            tokens: [3, 5, 0, 0],
            attempt: None,
        };
        a.lock().observe(&o);
        b.lock().observe(&o);
        b.lock().attempt("p", "ok");
        let text = registry.render(&Extra {
            key_states: vec![("p", "…abcd", "active")],
            log_dropped: 2,
            open_connections: 1,
        });
        assert!(
            text.contains(r#"rotor_requests_total{endpoint="chat",model="m\"x",provider="p",status="200"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"rotor_tokens_total{model="m\"x",provider="p",kind="completion"} 10"#));
        assert!(text.contains("rotor_request_duration_seconds_count 2"));
        assert!(text.contains(r#"rotor_overhead_seconds_bucket{le="0.00005"} 2"#));
        assert!(text.contains(r#"rotor_key_state{provider="p",key="…abcd",state="active"} 1"#));
        assert!(text.contains("rotor_log_dropped_total 2"));
    }
}
