//! Per-core balancing state: smooth weighted round-robin over a route's candidates and a
//! rotation cursor per provider. Smooth WRR (nginx's algorithm) interleaves picks: weights 1 and
//! 2 give A B B A B B ... rather than A B B in bursts, which keeps per-key rate windows even.

use smallvec::SmallVec;

use crate::config::{Config, KeyStrategy, Provider, Route};

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

    /// Candidate indices of `route` in the order to try them, each handed to `push`: the
    /// smooth-WRR pick first, then the others by descending weight (fallback order for
    /// retries). Handed over rather than returned: the request's plan is then the one list
    /// built per request (an order list copied into the plan cost about 140 instructions per
    /// chat request, callgrind, issue 18).
    pub fn order(&mut self, config: &Config, route: &Route, mut push: impl FnMut(usize)) {
        let n = route.candidates.len();
        if n <= 1 {
            // One candidate (the common route): nothing to weigh.
            (0..n).for_each(push);
            return;
        }
        let weight = |i: usize| {
            route
                .candidates
                .get(i)
                .and_then(|c| config.providers.get(c.provider))
                .map_or(1, |p| i64::from(p.weight))
        };
        let Some(current) = self.current.get_mut(route.index) else {
            (0..n).for_each(push);
            return;
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
        push(best);
        let mut rest: SmallVec<[usize; 4]> = (0..n).filter(|&i| i != best).collect();
        rest.sort_by_key(|&i| std::cmp::Reverse(weight(i)));
        rest.into_iter().for_each(push);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::CoreBalance;
    use crate::config::{parse_str, Config, ConfigSource};

    /// Providers `a`, `b`, `c` of weights 1, 3, 2 serving model `m`, and `solo` alone serving `s`.
    fn config() -> Config {
        let provider = |name: &str, weight: u32, model: &str| {
            format!(
                "[[providers]]\nname = \"{name}\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nkeys = [\"sk-{name}-0001\"]\nweight = {weight}\nmodels = [\"{model}\"]\n"
            )
        };
        let text = [
            provider("a", 1, "m"),
            provider("b", 3, "m"),
            provider("c", 2, "m"),
            provider("solo", 1, "s"),
        ]
        .concat();
        parse_str(&text, ConfigSource::Environment).unwrap()
    }

    fn order(balance: &mut CoreBalance, config: &Config, model: &str) -> Vec<&'static str> {
        let route = &config.routes.by_model[model];
        let mut names = Vec::new();
        balance.order(config, route, |i| {
            let provider = route.candidates[i].provider;
            names.push(["a", "b", "c", "solo"][provider]);
        });
        names
    }

    /// Each order hands every candidate over once: the smooth-WRR pick first (weights 1:3:2
    /// give b c a b c b per six), then the rest by descending weight.
    #[test]
    fn order_hands_over_the_pick_then_the_rest_by_weight() {
        let config = config();
        let mut balance = CoreBalance::new(0);
        balance.sync(1, &config);
        let orders: Vec<Vec<&str>> = (0..6).map(|_| order(&mut balance, &config, "m")).collect();
        let firsts: Vec<&str> = orders.iter().map(|o| o[0]).collect();
        assert_eq!(firsts, ["b", "c", "a", "b", "c", "b"]);
        assert_eq!(orders[0], ["b", "c", "a"]);
        assert_eq!(orders[1], ["c", "b", "a"]);
        assert_eq!(orders[2], ["a", "b", "c"]);
        assert_eq!(order(&mut balance, &config, "s"), ["solo"]);
    }
}
