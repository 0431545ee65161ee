//! Many instances, one gateway (DESIGN 1.4, issue 17): rotor instances sharing a real
//! `redis-server` on a loopback port. Exact shared windows, shared key cooling, a key added on
//! one instance serving on another (and on one started later), and Redis going away and
//! coming back (fallback shown in `/health`, limits refused with `on_redis_down = "refuse"`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::redis::RedisServer;
use common::{chat, eventually, pool_body, start_mock, Conf, Harness, Response, POOL_KEY};
use rotor::mock::{KeyFault, MockServer};
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

const ADMIN: &str = "admin-secret-cluster-01";
const FLAKY: &str = "sk-cluster-flaky-0001";
const GOOD: &str = "sk-cluster-good-00002";
const ADDED: &str = "sk-cluster-added-0003";

fn cluster_conf(redis: &RedisServer, body: &str, extra: &str) -> Conf {
    Conf {
        workers: 2,
        server: format!("admin_key = \"{ADMIN}\""),
        ..Conf::with_body(&format!(
            // A generous lease wait: a loaded CI machine must not turn a slow draw into a 429.
            "{body}\n[cluster]\nredis_url = \"{}\"\nsync_ms = 20\nheartbeat_ms = 200\nlease_wait_ms = 2000\n{extra}\n",
            redis.url()
        ))
    }
}

fn instances(n: usize, mock: &MockServer, conf: impl Fn() -> Conf) -> Vec<Harness> {
    (0..n)
        .map(|_| Harness::gateway_only(conf(), &mock.base_url()))
        .collect()
}

fn hits(mock: &MockServer, key: &str) -> usize {
    mock.recorder
        .requests()
        .iter()
        .filter(|r| r.bearer() == Some(key) && r.target.ends_with("/chat/completions"))
        .count()
}

fn get(h: &Harness, path: &str) -> Response {
    h.client()
        .get(path, &[("authorization", &format!("Bearer {}", common::CLIENT_KEY))])
}

fn cluster_field(h: &Harness, field: &str) -> String {
    let r = get(h, "/health");
    r.json()["cluster"][field].as_str().unwrap_or("").to_owned()
}

fn key_state(h: &Harness, masked_tail: &str) -> Option<String> {
    let v = get(h, "/v1/status").json();
    v["providers"][0]["keys"]
        .as_array()?
        .iter()
        .find(|k| k["key"].as_str().is_some_and(|m| m.ends_with(masked_tail)))
        .map(|k| k["state"].as_str().unwrap_or("").to_owned())
}

fn limited_body(keys: &[&str], limits: &str) -> String {
    pool_body(keys).replace(
        "models = [\"gpt-4o-mini\"]",
        &format!("models = [\"gpt-4o-mini\"]\n{limits}"),
    )
}

#[test]
fn rpm_10_across_three_instances_admits_exactly_10_of_40() {
    let redis = RedisServer::start();
    let mock = start_mock();
    let gateways = instances(3, &mock, || {
        cluster_conf(&redis, &limited_body(&[POOL_KEY], "rpm = 10"), "")
    });
    let addrs: Vec<_> = gateways.iter().map(|g| g.addr).collect();
    // 4 clients at once, each spreading its 10 requests over the instances.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let addrs = addrs.clone();
            std::thread::spawn(move || {
                (0..10)
                    .map(|i| {
                        let addr = addrs[(t + i) % addrs.len()];
                        let r = common::Client::connect(addr).post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
                        (r.status, r.header("retry-after").map(str::to_owned), r.text())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let answers: Vec<_> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let limited: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert_eq!(ok, 10, "exactly the shared limit is admitted: {answers:?}");
    assert_eq!(limited.len(), 30, "{answers:?}");
    for (_, retry_after, text) in &limited {
        let seconds: u64 = retry_after
            .as_deref()
            .unwrap_or_else(|| panic!("429 without Retry-After: {text}"))
            .parse()
            .unwrap();
        // A leased slot frees a window after its lease's end (lease_ms 2 s, 1 s buckets).
        assert!((1..=64).contains(&seconds), "{seconds}");
    }
    assert_eq!(hits(&mock, POOL_KEY), 10, "the upstream saw only the admitted requests");
    // Every instance ended up refusing: the limit is the fleet's, not each instance's.
    for g in &gateways {
        let r = g.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
        assert_eq!(r.status, 429, "{}", r.text());
    }
}

#[test]
fn a_429_with_retry_after_on_one_instance_makes_the_other_skip_the_key() {
    let redis = RedisServer::start();
    let mock = start_mock();
    mock.faults.set(
        FLAKY,
        KeyFault {
            status: Some(429),
            retry_after_s: Some(30),
            ..Default::default()
        },
    );
    let gateways = instances(2, &mock, || cluster_conf(&redis, &pool_body(&[FLAKY, GOOD]), ""));
    let (a, b) = (&gateways[0], &gateways[1]);
    for _ in 0..2 {
        assert_eq!(a.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    }
    assert_eq!(hits(&mock, FLAKY), 1, "instance A met the 429 once");
    assert!(
        eventually(Duration::from_secs(3), || key_state(b, &FLAKY[FLAKY.len() - 4..])
            .as_deref()
            == Some("cooling")),
        "instance B learned the cooldown: {:?}",
        key_state(b, &FLAKY[FLAKY.len() - 4..])
    );
    for _ in 0..6 {
        let r = b.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(hits(&mock, FLAKY), 1, "instance B never sent to the cooling key");
}

#[test]
fn a_key_added_on_one_instance_serves_on_the_others_and_outlives_restarts() {
    let redis = RedisServer::start();
    let mock = start_mock();
    let conf = || cluster_conf(&redis, &pool_body(&[POOL_KEY]), "");
    let mut gateways = instances(2, &mock, conf);
    let r = gateways[0].client().request(
        "POST",
        "/admin/keys",
        &[
            ("authorization", &format!("Bearer {ADMIN}")),
            ("content-type", "application/json"),
        ],
        format!(r#"{{"provider":"mock","keys":["{ADDED}"]}}"#).as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let tail = &ADDED[ADDED.len() - 4..];
    assert!(
        eventually(Duration::from_secs(3), || key_state(&gateways[1], tail).is_some()),
        "instance B has the key added on A"
    );
    for _ in 0..4 {
        assert_eq!(
            gateways[1]
                .post("/v1/chat/completions", &chat("gpt-4o-mini"), &[])
                .status,
            200
        );
    }
    assert!(hits(&mock, ADDED) >= 1, "instance B sent traffic with the added key");
    // Every instance restarts (in-memory storage: the pool can only come from Redis).
    for g in &mut gateways {
        g.stop();
    }
    let later = Harness::gateway_only(conf(), &mock.base_url());
    assert!(
        eventually(Duration::from_secs(3), || key_state(&later, tail).is_some()),
        "an instance started later has the key"
    );
}

#[test]
fn redis_down_keeps_both_answering_in_fallback_and_they_come_back() {
    let mut redis = RedisServer::start();
    let mock = start_mock();
    let body = limited_body(&[POOL_KEY], "rpm = 1000");
    let gateways = instances(2, &mock, || cluster_conf(&redis, &body, "redis_timeout_ms = 100"));
    for g in &gateways {
        assert_eq!(cluster_field(g, "redis"), "up");
        assert_eq!(g.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    }
    assert!(eventually(Duration::from_secs(3), || gateways.iter().all(|g| get(
        g,
        "/v1/status"
    )
    .json()["cluster"]["live_instances"]
        .as_u64()
        == Some(2))));
    redis.stop();
    for g in &gateways {
        assert!(
            eventually(Duration::from_secs(5), || cluster_field(g, "state") == "fallback_local"),
            "{}",
            get(g, "/health").text()
        );
        assert_eq!(get(g, "/health").json()["status"].as_str(), Some("degraded"));
        for _ in 0..3 {
            let r = g.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }
    let metrics = get(&gateways[0], "/metrics").text();
    assert!(
        metrics.contains("rotor_cluster_state{state=\"fallback_local\"} 1"),
        "{metrics}"
    );
    let decided = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rotor_cluster_decisions_without_redis_total "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(decided >= Some(3), "admissions without Redis are counted: {decided:?}");
    redis.restart();
    for g in &gateways {
        assert!(
            eventually(Duration::from_secs(10), || cluster_field(g, "state") == "shared"),
            "{}",
            get(g, "/health").text()
        );
        assert_eq!(g.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    }
}

#[test]
fn refuse_mode_answers_limited_requests_503_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let mock = start_mock();
    let g = Harness::gateway_only(
        cluster_conf(
            &redis,
            &limited_body(&[POOL_KEY], "rpm = 1000"),
            "on_redis_down = \"refuse\"\nredis_timeout_ms = 100",
        ),
        &mock.base_url(),
    );
    assert_eq!(g.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    redis.stop();
    assert!(eventually(Duration::from_secs(5), || cluster_field(&g, "state") == "refusing"));
    let r = g.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("cluster"), "{}", r.text());
    assert!(r.header("retry-after").is_some());
}

#[test]
fn a_limit_learned_from_headers_on_one_instance_is_honoured_by_the_other() {
    let redis = RedisServer::start();
    let mock = start_mock();
    let gateways = instances(2, &mock, || cluster_conf(&redis, &pool_body(&[FLAKY, GOOD]), ""));
    let (a, b) = (&gateways[0], &gateways[1]);
    let spent = a.post(
        "/v1/chat/completions",
        &chat("gpt-4o-mini"),
        &[("x-mock-ratelimit-remaining", "0"), ("x-mock-ratelimit-reset", "30s")],
    );
    assert_eq!(spent.status, 200, "{}", spent.text());
    let spent_key = mock.recorder.requests()[0].bearer().unwrap().to_owned();
    let tail = &spent_key[spent_key.len() - 4..];
    assert!(
        eventually(Duration::from_secs(3), || key_state(b, tail).as_deref()
            == Some("cooling")),
        "instance B learned the spent key: {:?}",
        key_state(b, tail)
    );
    for _ in 0..4 {
        assert_eq!(b.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    }
    assert_eq!(hits(&mock, &spent_key), 1, "instance B never chose the spent key");
}

#[test]
fn tpm_is_settled_to_real_usage_across_instances() {
    let redis = RedisServer::start();
    let mock = start_mock();
    // A request reserves its estimate (bytes / 4 + max_tokens = about 1000) and settles to the
    // mock's real usage (a few tokens): without settling, 2 requests would fill tpm = 2000.
    let gateways = instances(2, &mock, || {
        cluster_conf(&redis, &limited_body(&[POOL_KEY], "tpm = 2000"), "")
    });
    let body = r#"{"model":"gpt-4o-mini","max_tokens":990,"messages":[{"role":"user","content":"hello"}]}"#;
    // Without settling, the third request could not pass for a minute; with it, each passes
    // as soon as the previous one's unused estimate is back in Redis (well under a second).
    for i in 0..6 {
        let g = &gateways[i % 2];
        assert!(
            eventually(Duration::from_secs(4), || g
                .post("/v1/chat/completions", body, &[])
                .status
                == 200),
            "request {i} was never admitted"
        );
    }
}

#[test]
fn a_quarantine_and_its_restore_on_one_instance_reach_the_other() {
    let redis = RedisServer::start();
    let mock = start_mock();
    mock.faults.set(
        FLAKY,
        KeyFault {
            status: Some(401),
            ..Default::default()
        },
    );
    // A probes its quarantined key after 200 ms; B would wait 10 minutes on its own, so a
    // restore on B can only come from A.
    let with_quarantine = |ms: u64| {
        let mut conf = cluster_conf(&redis, &pool_body(&[FLAKY, GOOD]), "");
        conf.retry = format!("quarantine_ms = {ms}");
        Harness::gateway_only(conf, &mock.base_url())
    };
    let (a, b) = (with_quarantine(200), with_quarantine(600_000));
    for _ in 0..2 {
        assert_eq!(a.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    }
    let tail = &FLAKY[FLAKY.len() - 4..];
    assert!(
        eventually(Duration::from_secs(3), || key_state(&b, tail).as_deref()
            == Some("quarantined")),
        "instance B learned the quarantine: {:?}",
        key_state(&b, tail)
    );
    mock.faults.clear(FLAKY);
    assert!(
        eventually(Duration::from_secs(5), || key_state(&b, tail).as_deref()
            == Some("active")),
        "instance B learned the restore from A's probe: {:?}",
        key_state(&b, tail)
    );
}
