//! Account-scoped objects (issue 16 item 3), over real sockets against the mock, whose files
//! and batches answer 404 to any key but the one that created them: with two pool keys in
//! round-robin, every read, cancel, download and batch create naming an object reaches its
//! creating key, also after a restart with a file database; model-less multipart uploads and
//! empty-body POSTs pass; the pin bound prunes the oldest and counts it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use rotor::mock::MockServer;
use rotor::runtime;
use sonic_rs::JsonValueTrait;

const KEY_A: &str = "sk-pool-pin-aaaa-0001";
const KEY_B: &str = "sk-pool-pin-bbbb-0002";
const BOUNDARY: &str = "rotorpinboundary";

fn conf(keys: &[&str], storage: &str) -> Conf {
    Conf {
        storage: storage.to_owned(),
        ..Conf::with_body(&pool_body(keys))
    }
}

fn upload(h: &Harness, content: &str) -> String {
    let body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\nContent-Type: application/octet-stream\r\n\r\n{content}\r\n--{BOUNDARY}--\r\n"
    );
    let (name, value) = auth();
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let r = h.client().request(
        "POST",
        "/v1/files",
        &[(name, &value), ("content-type", &content_type)],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "multipart upload without a model passes: {}", r.text());
    r.json()["id"].as_str().expect("file id").to_owned()
}

fn call(h: &Harness, method: &str, path: &str, body: &str) -> Response {
    let (name, value) = auth();
    let mut headers = vec![(name, value.as_str())];
    if !body.is_empty() {
        headers.push(("content-type", "application/json"));
    }
    h.client().request(method, path, &headers, body.as_bytes())
}

/// The pool key that made the mock request whose target is `target` (the first one).
fn creator(h: &Harness, target: &str) -> String {
    let rec = h.recorded();
    let seen = rec
        .iter()
        .find(|r| r.target == target)
        .expect("request reached the mock");
    seen.bearer().expect("bearer").to_owned()
}

fn metrics(h: &Harness) -> String {
    h.client().request("GET", "/metrics", &[], b"").text()
}

#[test]
fn files_and_batches_reach_their_creating_key() {
    let h = Harness::start(conf(&[KEY_A, KEY_B], ""));
    let first = upload(&h, "{\"custom_id\":\"1\"}");
    let second = upload(&h, "{\"custom_id\":\"2\"}");
    let rec = h.recorded();
    assert_ne!(
        rec[0].bearer(),
        rec[1].bearer(),
        "round-robin spreads creates over both keys, so a wrong key is possible"
    );
    for id in [&first, &second] {
        for _ in 0..4 {
            let r = call(&h, "GET", &format!("/v1/files/{id}"), "");
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }
    let content = call(&h, "GET", &format!("/v1/files/{first}/content"), "");
    assert_eq!(content.status, 200);
    assert_eq!(content.text(), "{\"custom_id\":\"1\"}");

    let body = format!(r#"{{"input_file_id":"{first}","endpoint":"/v1/chat/completions","completion_window":"24h"}}"#);
    let mut batches = Vec::new();
    for _ in 0..3 {
        let r = call(&h, "POST", "/v1/batches", &body);
        assert_eq!(
            r.status,
            200,
            "a batch naming the file reaches the file's key: {}",
            r.text()
        );
        batches.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    for batch in &batches {
        for _ in 0..3 {
            let r = call(&h, "GET", &format!("/v1/batches/{batch}"), "");
            assert_eq!(r.status, 200, "{}", r.text());
        }
        // The SDK's cancel: a POST without a body.
        let r = call(&h, "POST", &format!("/v1/batches/{batch}/cancel"), "");
        assert_eq!(r.status, 200, "empty-body cancel passes: {}", r.text());
        assert_eq!(r.json()["status"].as_str(), Some("cancelling"));
    }
    let owner = creator(&h, "/v1/files");
    for r in h
        .recorded()
        .iter()
        .filter(|r| r.target.contains(first.as_str()) || r.target.starts_with("/v1/batches"))
    {
        assert_eq!(r.bearer(), Some(owner.as_str()), "{} went to another key", r.target);
    }
    let deleted = call(&h, "DELETE", &format!("/v1/files/{second}"), "");
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert!(metrics(&h).contains("rotor_object_pins 5"), "{}", metrics(&h));
}

#[test]
fn pins_survive_a_restart_and_a_removed_key_is_a_clear_404() {
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("path = {:?}", dir.path().join("rotor.db").to_string_lossy());
    let mut h = Harness::start(conf(&[KEY_A, KEY_B], &storage));
    let file = upload(&h, "line");
    let owner = creator(&h, "/v1/files");
    let body = format!(r#"{{"input_file_id":"{file}","endpoint":"/v1/chat/completions","completion_window":"24h"}}"#);
    let batch = call(&h, "POST", "/v1/batches", &body).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let restart = |h: &mut Harness, keys: &[&str]| {
        let running = h.running.take().unwrap();
        running.stop();
        running.wait();
        let mock: MockServer = h.mock.take().unwrap();
        let config = conf(keys, &storage).parse(&mock.base_url());
        let running = runtime::start(config, None).expect("gateway restarts");
        h.addr = running.addr;
        h.running = Some(running);
        h.mock = Some(mock);
    };
    restart(&mut h, &[KEY_A, KEY_B]);
    for _ in 0..4 {
        let r = call(&h, "GET", &format!("/v1/files/{file}"), "");
        assert_eq!(r.status, 200, "pinned after a restart: {}", r.text());
        let r = call(&h, "GET", &format!("/v1/batches/{batch}"), "");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = call(&h, "POST", &format!("/v1/batches/{batch}/cancel"), "");
    assert_eq!(r.status, 200, "{}", r.text());

    let other = if owner == KEY_A { KEY_B } else { KEY_A };
    restart(&mut h, &[other]);
    let before = h.recorded().len();
    let r = call(&h, "GET", &format!("/v1/files/{file}"), "");
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(
        r.json()["error"]["code"].as_str(),
        Some("object_key_gone"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("no longer configured"), "{}", r.text());
    assert_eq!(h.recorded().len(), before, "no other key is asked");
}

#[test]
fn a_cooling_creator_key_still_serves_its_objects() {
    let h = Harness::start(conf(&[KEY_A, KEY_B], ""));
    let file = upload(&h, "x");
    let owner = creator(&h, "/v1/files");
    let fault = rotor::mock::KeyFault {
        status: Some(429),
        retry_after_s: Some(60),
        times: 1,
        ..Default::default()
    };
    h.mock().faults.set(&owner, fault);
    let hit = |h: &Harness| {
        h.recorded()
            .iter()
            .any(|r| r.target == "/v1/chat/completions" && r.bearer() == Some(owner.as_str()))
    };
    for _ in 0..4 {
        if hit(&h) {
            break;
        }
        assert_eq!(h.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    }
    assert!(hit(&h), "the owner key answered 429 once and cools for 60 s");
    for _ in 0..3 {
        let r = call(&h, "GET", &format!("/v1/files/{file}"), "");
        assert_eq!(r.status, 200, "the cooling creator key is still asked: {}", r.text());
        assert_eq!(h.recorded().last().unwrap().bearer(), Some(owner.as_str()));
    }
}

#[test]
fn the_pin_bound_prunes_the_oldest_and_counts_it() {
    let h = Harness::start(conf(&[KEY_A, KEY_B], "max_pins = 2"));
    let ids: Vec<String> = (0..3).map(|i| upload(&h, &format!("f{i}"))).collect();
    let text = metrics(&h);
    assert!(text.contains("rotor_object_pins 2"), "{text}");
    assert!(
        text.contains("rotor_object_pins_pruned_total{reason=\"bound\"} 1"),
        "{text}"
    );
    // The newest two are still pinned.
    for id in &ids[1..] {
        for _ in 0..4 {
            assert_eq!(call(&h, "GET", &format!("/v1/files/{id}"), "").status, 200);
        }
    }
}

#[test]
fn bad_pin_settings_are_refused_with_their_path() {
    for (line, path) in [
        ("max_pins = 0", "storage.max_pins"),
        ("pin_retention_days = 0", "storage.pin_retention_days"),
    ] {
        let text = conf(&[KEY_A], &format!("path = \"\"\n{line}")).render("http://127.0.0.1:1/v1");
        let err = rotor::config::parse_str(&text, rotor::config::ConfigSource::Environment).unwrap_err();
        assert!(err.to_string().contains(path), "{err}");
    }
}
