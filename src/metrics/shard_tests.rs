//! `Shard`'s memo of recent series (`recent`) against the full path: the same observations
//! through a shard whose memos are forgotten before every call render the same text.

use super::recent::Recent;
use super::{Extra, Observation, Registry};

#[test]
fn memo_of_recent_series_counts_like_the_full_path() {
    let long = "m".repeat(200);
    let models = ["m0", "m1", "m2", "m3", long.as_str(), "(other)", ""];
    let endpoints = ["chat", "embeddings"];
    let providers = ["p", "cache"];
    let statuses = [200, 429];
    let outcomes = ["ok", "retried", "error"];
    let (memo, full) = (Registry::default(), Registry::default());
    memo.set_max_series(5);
    full.set_max_series(5);
    let (a, b) = (memo.shard(), full.shard());
    // Few values per label, drawn at random: label sets that differ in any one label follow
    // each other often, with the memo holding the others.
    let mut rng = fastrand::Rng::with_seed(18);
    for _ in 0..2000 {
        let o = Observation {
            endpoint: endpoints[rng.usize(..endpoints.len())],
            model: models[rng.usize(..models.len())],
            provider: providers[rng.usize(..providers.len())],
            status: statuses[rng.usize(..statuses.len())],
            duration_s: 0.01,
            overhead_s: Some(0.0001),
            tokens: if rng.bool() { [0; 4] } else { [rng.u64(..100), 1, 0, 2] },
            attempt: None,
        };
        let outcome = outcomes[rng.usize(..outcomes.len())];
        let provider = o.provider;
        // The delivering attempt counted with its request (`finish`), or apart (a retry).
        if rng.bool() {
            a.lock().observe(&Observation {
                attempt: Some(outcome),
                ..o
            });
        } else {
            a.lock().observe(&o);
            a.lock().attempt(provider, outcome);
        }
        let mut shard = b.lock();
        shard.recent_requests = Recent::default();
        shard.recent_attempts = Recent::default();
        shard.observe(&o);
        shard.recent_attempts = Recent::default();
        shard.attempt(provider, outcome);
    }
    let extra = Extra {
        key_states: vec![],
        log_dropped: 0,
        open_connections: 0,
    };
    let (with_memo, without) = (memo.render(&extra), full.render(&extra));
    assert_eq!(with_memo, without);
    assert!(with_memo.contains(r#"model="(other)""#), "some folded: {with_memo}");
    assert!(with_memo.contains("rotor_metrics_series_dropped_total "), "{with_memo}");
    assert!(
        !with_memo.contains("rotor_metrics_series_dropped_total 0\n"),
        "folds are counted: {with_memo}"
    );
}
