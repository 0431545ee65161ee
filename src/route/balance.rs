//! Per-core balancing state: smooth weighted round-robin over a route's candidates and a
//! rotation cursor per provider. Smooth WRR (nginx's algorithm) interleaves picks: weights 1 and
//! 2 give A B B A B B ... rather than A B B in bursts, which keeps per-key rate windows even.

use smallvec::SmallVec;

use crate::config::{Config, KeyStrategy, Provider, Route};

pub type TryOrder = SmallVec<[usize; 4]>;

pub struct CoreBalance {
    generation: u64,
    /// Per route: the current weight of each candidate.
    current: Vec<SmallVec<[i64; 4]>>,
    /// Per provider: next key index for round-robin.
    key_cursor: Vec<usize>,
    /// Offsets cursors so cores do not all start on key 0.
    worker: usize,
}

impl CoreBalance {
    pub fn new(worker: usize) -> Self {
        CoreBalance {
            generation: u64::MAX,
            current: Vec::new(),
            key_cursor: Vec::new(),
            worker,
        }
    }

    /// Resets state for a new config generation (cheap; happens once per reload per core).
    pub fn sync(&mut self, generation: u64, config: &Config) {
        if self.generation == generation {
            return;
        }
        self.generation = generation;
        self.current = vec![SmallVec::new(); config.routes.len];
        self.key_cursor = config
            .providers
            .iter()
            .map(|p| self.worker % p.keys.len().max(1))
            .collect();
    }

    /// Candidate indices of `route` in the order to try them: the smooth-WRR pick first, then
    /// the others by descending weight (fallback order for retries).
    pub fn order(&mut self, config: &Config, route: &Route) -> TryOrder {
        let n = route.candidates.len();
        let mut order = TryOrder::new();
        if n <= 1 {
            // One candidate (the common route): nothing to weigh.
            order.extend(0..n);
            return order;
        }
        let weight = |i: usize| {
            route
                .candidates
                .get(i)
                .and_then(|c| config.providers.get(c.provider))
                .map_or(1, |p| i64::from(p.weight))
        };
        let Some(current) = self.current.get_mut(route.index) else {
            order.extend(0..n);
            return order;
        };
        if current.len() != n {
            current.clear();
            current.resize(n, 0);
        }
        let mut total = 0;
        let mut best = 0;
        for i in 0..n {
            let w = weight(i);
            total += w;
            if let Some(c) = current.get_mut(i) {
                *c += w;
            }
            if current.get(i) > current.get(best) {
                best = i;
            }
        }
        if let Some(c) = current.get_mut(best) {
            *c -= total;
        }
        order.push(best);
        let mut rest: TryOrder = (0..n).filter(|&i| i != best).collect();
        rest.sort_by_key(|&i| std::cmp::Reverse(weight(i)));
        order.extend(rest);
        order
    }

    /// Index of the key to use next for `provider`.
    pub fn pick_key(&mut self, provider: &Provider) -> usize {
        let n = provider.keys.len();
        if n <= 1 {
            return 0;
        }
        match provider.key_strategy {
            KeyStrategy::Random => fastrand::usize(..n),
            // least-used and highest-balance pick their own key from the shared counters
            // (`limits::select`); the cursor is their fallback.
            KeyStrategy::RoundRobin | KeyStrategy::LeastUsed | KeyStrategy::HighestBalance => {
                match self.key_cursor.get_mut(provider.index) {
                    Some(cursor) => {
                        let pick = *cursor % n;
                        *cursor = (pick + 1) % n;
                        pick
                    }
                    None => 0,
                }
            }
        }
    }
}
