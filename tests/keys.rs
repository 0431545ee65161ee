//! The key pool (issue 15, items 1-3), over real sockets against the mock: `least-used`
//! steering around a slow key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use rotor::mock::KeyFault;

const SLOW: &str = "sk-keys-slow-0000a1";
const FAST: &str = "sk-keys-fast-0000b2";

fn hits(h: &Harness, key: &str) -> usize {
    h.recorded()
        .iter()
        .filter(|r| r.bearer() == Some(key) && r.target.ends_with("/chat/completions"))
        .count()
}

#[test]
fn least_used_steers_new_requests_around_a_key_with_answers_pending() {
    let body = pool_body(&[SLOW, FAST]).replace(
        "models = [\"gpt-4o-mini\"]",
        "models = [\"gpt-4o-mini\"]\nkey_strategy = \"least-used\"",
    );
    let h = Harness::start(Conf::with_body(&body));
    h.mock().faults.set(
        SLOW,
        KeyFault {
            latency_ms: 1_500,
            ..Default::default()
        },
    );
    // Both idle: the tie goes to the first key, the slow one.
    let addr = h.addr;
    let pending = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.set_read_timeout(Duration::from_secs(10));
        c.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status
    });
    assert!(
        eventually(Duration::from_secs(5), || hits(&h, SLOW) == 1),
        "the slow key got the first request"
    );
    for _ in 0..6 {
        let r = h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(
        hits(&h, FAST),
        6,
        "every request while the slow one is pending goes to the idle key"
    );
    assert_eq!(hits(&h, SLOW), 1);
    assert_eq!(pending.join().unwrap(), 200);
}
