//! Many instances, one gateway, the fleet's data (issue 17 items 4 and 5): two rotor processes
//! sharing a real `redis-server` on a loopback port. Stats of both instances answered by either
//! with `scope=cluster`, the live instances in `/v1/status`, and an answer cached on one
//! instance served from the shared cache by the other.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)]

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::time::Duration;

use common::redis::RedisServer;
use common::{chat, eventually, pool_body, start_mock, Conf, Harness, Response, POOL_KEY};
use rotor::mock::MockServer;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

const ADMIN: &str = "admin-secret-fleet-001";

fn conf(redis: &RedisServer, extra_body: &str, cluster: &str) -> Conf {
    Conf {
        workers: 2,
        server: format!("admin_key = \"{ADMIN}\""),
        ..Conf::with_body(&format!(
            "{extra_body}\n{}\n[cluster]\nredis_url = \"{}\"\nsync_ms = 20\nheartbeat_ms = 200\nlease_wait_ms = 2000\n{cluster}\n",
            pool_body(&[POOL_KEY]),
            redis.url()
        ))
    }
}

fn two(redis: &RedisServer, mock: &MockServer, extra_body: &str, cluster: &str) -> (Harness, Harness) {
    let a = Harness::gateway_only(conf(redis, extra_body, cluster), &mock.base_url());
    let b = Harness::gateway_only(conf(redis, extra_body, cluster), &mock.base_url());
    (a, b)
}

fn admin(h: &Harness, path: &str) -> Response {
    h.client()
        .request("GET", path, &[("authorization", &format!("Bearer {ADMIN}"))], b"")
}

fn requests(h: &Harness, path: &str) -> Option<u64> {
    let r = admin(h, path);
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()["requests"].as_u64()
}

fn metric(h: &Harness, series: &str) -> u64 {
    let text = h.client().get("/metrics", &[]).text();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
}

#[test]
fn cluster_scope_stats_count_the_requests_of_every_instance() {
    let redis = RedisServer::start();
    let mock = start_mock();
    let (a, b) = two(&redis, &mock, "", "");
    for _ in 0..3 {
        assert_eq!(a.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    }
    for _ in 0..2 {
        assert_eq!(b.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    }
    // A request is recorded just after its answer is written, so the stats may lag the answer.
    assert!(
        eventually(Duration::from_secs(5), || requests(&a, "/admin/stats/overview")
            == Some(3)),
        "scope=instance stays this instance's: {:?}",
        requests(&a, "/admin/stats/overview")
    );
    assert!(
        eventually(Duration::from_secs(5), || requests(
            &b,
            "/admin/stats/overview?scope=instance"
        ) == Some(2)),
        "{:?}",
        requests(&b, "/admin/stats/overview?scope=instance")
    );
    for h in [&a, &b] {
        assert!(
            eventually(Duration::from_secs(5), || requests(
                h,
                "/admin/stats/overview?scope=cluster"
            ) == Some(5)),
            "the fleet's overview counts both instances: {}",
            admin(h, "/admin/stats/overview?scope=cluster").text()
        );
    }
    let stats = admin(&b, "/admin/stats?scope=cluster&period=hour&group_by=model").json();
    let rows = stats["data"].as_array().unwrap();
    let total: u64 = rows.iter().map(|r| r["requests"].as_u64().unwrap()).sum();
    assert_eq!(total, 5, "{rows:?}");
    assert!(
        rows.iter().all(|r| r["group"].as_str() == Some("gpt-4o-mini")),
        "{rows:?}"
    );
    let by_client = admin(&a, "/admin/stats?scope=cluster&period=day&group_by=client").json();
    assert_eq!(by_client["data"].as_array().unwrap().len(), 1, "{by_client:?}");
    // A range that ends before the requests: nothing.
    let old = requests(&a, "/admin/stats/overview?scope=cluster&until=2020-01-01");
    assert_eq!(old, Some(0));
    assert!(metric(&a, "rotor_cluster_stats_cells_published_total") >= 1);
    let bad = admin(&a, "/admin/stats/overview?scope=planet");
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("scope"), "{}", bad.text());
}

#[test]
fn status_lists_the_live_instances_of_the_fleet() {
    let redis = RedisServer::start();
    let mock = start_mock();
    let (a, mut b) = two(&redis, &mock, "", "");
    let ids = |h: &Harness| -> Vec<String> {
        let v = h
            .client()
            .get(
                "/v1/status",
                &[("authorization", &format!("Bearer {}", common::CLIENT_KEY))],
            )
            .json();
        v["cluster"]["instances"]
            .as_array()
            .map(|a| a.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let a_id = format!(":{}", a.addr.port());
    let b_id = format!(":{}", b.addr.port());
    assert!(
        eventually(Duration::from_secs(3), || {
            let seen = ids(&a);
            seen.len() == 2 && seen.iter().any(|i| i.ends_with(&a_id)) && seen.iter().any(|i| i.ends_with(&b_id))
        }),
        "A lists both instances: {:?}",
        ids(&a)
    );
    let admin_status = admin(&a, "/admin/status").json();
    assert_eq!(
        admin_status["cluster"]["instances"].as_array().map(|a| a.len()),
        Some(2)
    );
    b.stop();
    assert!(
        eventually(Duration::from_secs(5), || ids(&a).len() == 1),
        "a stopped instance leaves the list: {:?}",
        ids(&a)
    );
}

#[test]
fn scope_cluster_without_cluster_is_a_clear_400() {
    let h = Harness::start(Conf {
        server: format!("admin_key = \"{ADMIN}\""),
        ..Default::default()
    });
    let r = admin(&h, "/admin/stats?scope=cluster");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("[cluster]"), "{}", r.text());
}

fn chat_about(topic: &str) -> String {
    format!(r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{topic}"}}]}}"#)
}

fn upstream_calls(mock: &MockServer) -> usize {
    mock.recorder
        .requests()
        .iter()
        .filter(|r| r.target.ends_with("/chat/completions"))
        .count()
}

fn shared_cache(h: &Harness, outcome: &str) -> u64 {
    metric(h, &format!("rotor_cluster_cache_total{{outcome=\"{outcome}\"}}"))
}

const CACHE: &str = "[cache]\nenabled = true";

#[test]
fn an_answer_cached_on_one_instance_is_served_from_cache_on_the_other() {
    let redis = RedisServer::start();
    let mock = start_mock();
    let (a, b) = two(&redis, &mock, CACHE, "");
    for stream in [false, true] {
        let body = if stream {
            common::chat_stream("gpt-4o-mini")
        } else {
            chat_about("shared")
        };
        let calls = upstream_calls(&mock);
        let first = a.post("/v1/chat/completions", &body, &[]);
        assert_eq!((first.status, first.header("x-rotor-cache")), (200, Some("miss")));
        let stored = shared_cache(&a, "store");
        assert!(
            eventually(Duration::from_secs(3), || shared_cache(&a, "store") >= stored.max(1)),
            "A published its answer"
        );
        let hits = shared_cache(&b, "hit");
        let second = b.post("/v1/chat/completions", &body, &[]);
        assert_eq!(second.status, 200, "{}", second.text());
        assert_eq!(second.header("x-rotor-cache"), Some("hit"), "stream {stream}");
        assert_eq!(first.text(), second.text(), "the same bytes");
        assert_eq!(upstream_calls(&mock), calls + 1, "B never asked the upstream");
        assert_eq!(shared_cache(&b, "hit"), hits + 1);
        // B keeps it locally now: a third ask does not go to Redis.
        let third = b.post("/v1/chat/completions", &body, &[]);
        assert_eq!(third.header("x-rotor-cache"), Some("hit"));
        assert_eq!(shared_cache(&b, "hit"), hits + 1, "served from B's local cache");
    }
    // A different request is a miss everywhere.
    let other = b.post("/v1/chat/completions", &chat_about("not cached"), &[]);
    assert_eq!(other.header("x-rotor-cache"), Some("miss"));
    assert!(shared_cache(&b, "miss") >= 1);
}

#[test]
fn a_slow_redis_costs_a_lookup_its_deadline_and_the_request_goes_upstream() {
    let redis = RedisServer::start();
    let mock = start_mock();
    let (a, b) = two(&redis, &mock, CACHE, "cache_wait_ms = 50\nredis_timeout_ms = 2000");
    assert_eq!(a.post("/v1/chat/completions", &chat_about("slow"), &[]).status, 200);
    assert!(eventually(Duration::from_secs(3), || shared_cache(&a, "store") >= 1));
    redis.pause();
    let started = std::time::Instant::now();
    let r = b.post("/v1/chat/completions", &chat_about("slow"), &[]);
    let took = started.elapsed();
    redis.resume();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-rotor-cache"), Some("miss"), "answered by the upstream");
    assert!(
        took < Duration::from_millis(1500),
        "the lookup gave up at its deadline: {took:?}"
    );
    assert_eq!(shared_cache(&b, "timeout"), 1);
    assert_eq!(upstream_calls(&mock), 2);
}

#[test]
fn the_fleet_cache_keeps_to_its_entry_bound_and_counts_what_it_sheds() {
    let redis = RedisServer::start();
    let mock = start_mock();
    let a = Harness::gateway_only(
        conf(&redis, CACHE, "cache_max_entries = 2\ncache_max_entry_bytes = 1024"),
        &mock.base_url(),
    );
    for topic in ["one", "two", "three", "four"] {
        assert_eq!(a.post("/v1/chat/completions", &chat_about(topic), &[]).status, 200);
    }
    assert!(
        eventually(Duration::from_secs(3), || shared_cache(&a, "store") == 4),
        "{}",
        shared_cache(&a, "store")
    );
    assert_eq!(shared_cache(&a, "evict"), 2, "the two oldest went");
    assert_eq!(redis.command("ZCARD rotor:c:index").trim(), ":2");
    let ttl: i64 = redis
        .command("PTTL rotor:c:index")
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap();
    assert!(ttl > 0 && ttl <= 300_000, "Redis keeps the TTL: {ttl}");
    // An answer over cache_max_entry_bytes stays local only.
    let r = a.post(
        "/v1/chat/completions",
        &common::chat_stream("gpt-4o-mini"),
        &[("x-mock-chunks", "64")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().len() > 1024, "{}", r.text().len());
    assert_eq!(shared_cache(&a, "shed"), 1, "an answer over the entry bound is shed");
    assert_eq!(shared_cache(&a, "store"), 4);
}

fn sign_in(browser: &webdriver::Browser, h: &Harness) {
    browser.goto(&format!("http://{}/admin/", h.addr));
    browser.wait_until("the login form", "return !document.getElementById('login').hidden");
    browser.type_into("#login-key", ADMIN);
    browser.click("#login-submit");
    browser.wait_until("the app", "return !document.getElementById('app').hidden");
}

#[test]
fn the_overview_switches_between_this_instance_and_the_whole_fleet() {
    let redis = RedisServer::start();
    let mock = start_mock();
    let (a, b) = two(&redis, &mock, "", "");
    assert_eq!(a.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    for _ in 0..2 {
        assert_eq!(b.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    }
    assert!(eventually(Duration::from_secs(5), || requests(
        &a,
        "/admin/stats/overview?scope=cluster"
    ) == Some(3)));
    let browser = webdriver::Browser::start();
    sign_in(&browser, &a);
    let tile = |n: u64| {
        format!("const t = document.querySelector('#tile-requests .value'); return !!t && t.innerText === '{n}'")
    };
    browser.wait_until("this instance's requests", &tile(1));
    browser.wait_until("the scope switch", "return !!document.getElementById('f-scope')");
    browser.script(
        "const s = document.getElementById('f-scope'); s.value = 'cluster'; \
         s.dispatchEvent(new Event('change', {bubbles: true})); return true",
    );
    browser.wait_until("the fleet's requests", &tile(3));
    let shots = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
    browser.screenshot(&shots, "overview-fleet");

    // Without [cluster] there is nothing to switch to.
    let alone = Harness::start(Conf {
        server: format!("admin_key = \"{ADMIN}\""),
        ..Default::default()
    });
    sign_in(&browser, &alone);
    browser.wait_until("the overview", &tile(0));
    assert!(browser.find("#f-scope").is_none(), "no scope switch without [cluster]");
}

#[test]
fn stats_ttl_0_publishes_nothing_and_scope_cluster_says_so() {
    let redis = RedisServer::start();
    let mock = start_mock();
    let a = Harness::gateway_only(conf(&redis, "", "stats_ttl_hours = 0"), &mock.base_url());
    assert_eq!(a.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    assert!(
        eventually(Duration::from_secs(5), || requests(&a, "/admin/stats/overview")
            == Some(1)),
        "{:?}",
        requests(&a, "/admin/stats/overview")
    );
    let r = admin(&a, "/admin/stats/overview?scope=cluster");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("stats_ttl_hours"), "{}", r.text());
    std::thread::sleep(Duration::from_millis(1500)); // a publish period would have passed
    assert_eq!(redis.command("KEYS rotor:stats:*").trim(), "*0", "nothing published");
}

#[test]
fn the_shared_cache_and_the_fleet_stats_come_back_after_a_redis_restart() {
    let mut redis = RedisServer::start();
    let mock = start_mock();
    let (a, b) = two(&redis, &mock, CACHE, "redis_timeout_ms = 200");
    assert_eq!(a.post("/v1/chat/completions", &chat_about("before"), &[]).status, 200);
    redis.stop();
    let r = a.post("/v1/chat/completions", &chat_about("during"), &[]);
    assert_eq!(r.status, 200, "answered without Redis: {}", r.text());
    let during = admin(&a, "/admin/stats/overview?scope=cluster");
    assert_eq!(during.status, 503, "{}", during.text());
    redis.restart();
    // A's idle connections to the old server are dead; each answer offered after the restart
    // is stored once A has noticed.
    let mut n = 0;
    assert!(
        eventually(Duration::from_secs(10), || {
            n += 1;
            let topic = format!("after {n}");
            let stored = shared_cache(&a, "store");
            a.post("/v1/chat/completions", &chat_about(&topic), &[]);
            eventually(Duration::from_secs(2), || shared_cache(&a, "store") > stored);
            b.post("/v1/chat/completions", &chat_about(&topic), &[])
                .header("x-rotor-cache")
                == Some("hit")
        }),
        "B never found an answer A cached after the restart"
    );
    assert!(
        n <= 3,
        "at most the answers offered while the dead connection was found are lost: {n}"
    );
    // The request made during the outage reaches the fleet's stats once Redis is back.
    assert!(
        eventually(Duration::from_secs(5), || requests(
            &a,
            "/admin/stats/overview?scope=cluster"
        )
        .is_some_and(|n| n >= 2)),
        "{}",
        admin(&a, "/admin/stats/overview?scope=cluster").text()
    );
}
