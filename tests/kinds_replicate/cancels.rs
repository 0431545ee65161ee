//! Replicate prediction cancels and throttled polls (a submodule of `kinds_replicate`, split
//! to keep files small, sharing its helpers): predictions past `poll_max_wait_ms` or left by
//! their client are canceled with their key, finished ones are not, a 429 on a poll cools the
//! key, and cancels keep to their bounds.

use super::*;

/// The predictions the mock was asked to cancel, as (id, key), once `n` arrived (or panics).
fn cancels_eventually(h: &Harness, n: usize) -> Vec<(String, String)> {
    let mock = h.mock();
    assert!(
        eventually(Duration::from_secs(5), || mock.replicate_cancels.list().len() >= n),
        "expected {n} cancels, got {:?}",
        mock.replicate_cancels.list()
    );
    mock.replicate_cancels.list()
}

fn cancel_metric(h: &Harness, outcome: &str) -> Option<u64> {
    let text = h.client().get("/metrics", &[]).text();
    let series = format!(r#"rotor_upstream_cancels_total{{provider="rep",outcome="{outcome}"}} "#);
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|n| n.trim().parse().ok())
}

/// The id of every prediction created so far (from the polls and streams that named it).
fn created_ids(h: &Harness) -> Vec<String> {
    let mut ids: Vec<String> = h
        .recorded()
        .iter()
        .filter_map(|r| {
            let id = r
                .target
                .strip_prefix("/v1/predictions/")
                .or(r.target.strip_prefix("/v1/streams/"))?;
            Some(id.trim_end_matches("/cancel").to_owned())
        })
        .collect();
    ids.dedup();
    ids
}

#[test]
fn a_prediction_past_poll_max_wait_ms_is_canceled_with_its_key() {
    let h = harness(&[KEY_A], "poll_max_wait_ms = 1000");
    let r = h.post("/v1/chat/completions", &chat(MODEL), &[("x-mock-pending-ms", "60000")]);
    assert_eq!(r.status, 504, "{}", r.text());
    let cancels = cancels_eventually(&h, 1);
    assert_eq!(cancels.len(), 1, "{cancels:?}");
    assert_eq!(cancels[0].1, KEY_A, "canceled with the key that created it");
    assert_eq!(created_ids(&h)[0], cancels[0].0);
    let cancel = h
        .recorded()
        .into_iter()
        .find(|r| r.target.ends_with("/cancel"))
        .unwrap();
    assert_eq!(cancel.method, "POST");
    assert!(eventually(Duration::from_secs(5), || cancel_metric(&h, "ok") == Some(1)));
}

#[test]
fn a_finished_prediction_is_not_canceled() {
    let h = harness(&[KEY_A], "");
    let r = h.post("/v1/chat/completions", &chat(MODEL), &[("x-mock-pending-ms", "200")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let (status, _, done) = h.client().stream_chat(&chat_stream(MODEL), &[]);
    assert!(status == 200 && done);
    // The usage read at a stream's end is the last request: nothing after it.
    sleep_ms(300);
    assert!(h.mock().replicate_cancels.list().is_empty());
    assert_eq!(cancel_metric(&h, "ok"), None);
}

#[test]
fn a_client_that_leaves_while_polled_gets_its_prediction_canceled() {
    let h = harness(&[KEY_A], "");
    let mut c = h.client();
    let (name, value) = auth();
    c.send_request(
        "POST",
        "/v1/chat/completions",
        &[
            (name, value.as_str()),
            ("content-type", "application/json"),
            ("x-mock-pending-ms", "60000"),
        ],
        chat(MODEL).as_bytes(),
    );
    let polled = || h.recorded().iter().filter(|r| r.method == "GET").count();
    assert!(eventually(Duration::from_secs(5), || polled() >= 1), "polling");
    drop(c);
    let cancels = cancels_eventually(&h, 1);
    assert_eq!(cancels[0].1, KEY_A);
    // Polling stopped with the cancel.
    let after = polled();
    sleep_ms(300);
    assert_eq!(polled(), after, "no poll after the client left");
    assert!(eventually(Duration::from_secs(5), || cancel_metric(&h, "ok") == Some(1)));
}

#[test]
fn a_client_that_leaves_a_stream_gets_its_prediction_canceled() {
    let h = harness(&[KEY_A], "");
    let mut c = h.client();
    let (name, value) = auth();
    c.send_request(
        "POST",
        "/v1/chat/completions",
        &[
            (name, value.as_str()),
            ("content-type", "application/json"),
            ("x-mock-chunks", "200"),
            ("x-mock-interval-ms", "50"),
        ],
        chat_stream(MODEL).as_bytes(),
    );
    let head = c.read_head();
    assert_eq!(head.0, 200);
    assert!(matches!(c.next_chunk(), Some(Some(_))), "the stream started");
    drop(c);
    let cancels = cancels_eventually(&h, 1);
    assert_eq!(cancels[0].1, KEY_A);
    assert_eq!(created_ids(&h)[0], cancels[0].0);
}

#[test]
fn a_429_on_a_poll_cools_the_key_for_its_retry_after() {
    let h = harness(&[KEY_A, KEY_B], "");
    let knobs = [
        ("x-mock-pending-ms", "60000"),
        ("x-mock-poll-status", "429"),
        ("x-mock-retry-after", "30"),
    ];
    let r = h.post("/v1/chat/completions", &chat(MODEL), &knobs);
    // Both keys' polls were throttled: each cools, and the client hears when to come back.
    assert_eq!(r.status, 429, "{}", r.text());
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((25..=30).contains(&retry), "Retry-After {retry}");
    let keys: Vec<String> = creates(&h).iter().map(|r| r.bearer().unwrap().to_owned()).collect();
    assert_eq!(keys.len(), 2, "one prediction per key: {keys:?}");
    let status = h.client().get("/v1/status", &[auth_header()]).json();
    for k in status["providers"][0]["keys"].as_array().unwrap().iter() {
        assert_eq!(k["state"].as_str(), Some("cooling"), "{k:?}");
    }
    // The throttled predictions are not left running.
    let mut canceled: Vec<String> = cancels_eventually(&h, 2).into_iter().map(|(_, k)| k).collect();
    canceled.sort();
    assert_eq!(canceled, [KEY_A, KEY_B]);
    // Cooling for the Retry-After, not the default cooldown: the next request is refused at once.
    let before = creates(&h).len();
    let r = h.post("/v1/chat/completions", &chat(MODEL), &[]);
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(creates(&h).len(), before);
}

#[test]
fn out_of_attempts_a_throttled_poll_reaches_the_client_and_its_prediction_is_canceled() {
    let h = Harness::start(Conf {
        workers: 1,
        retry: "max_attempts = 1".into(),
        ..Conf::with_body(&body(&[KEY_A], ""))
    });
    let knobs = [
        ("x-mock-pending-ms", "60000"),
        ("x-mock-poll-status", "429"),
        ("x-mock-retry-after", "30"),
    ];
    let r = h.post("/v1/chat/completions", &chat(MODEL), &knobs);
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.openai_error().0.contains("Request was throttled"), "{}", r.text());
    let cancels = cancels_eventually(&h, 1);
    assert_eq!(cancels[0].1, KEY_A);
}

#[test]
fn cancels_keep_to_upstream_max_cancels_in_flight_and_cancel_timeout_ms() {
    // Every answer for the key is 1.5 s late, its cancel included: past `cancel_timeout_ms`.
    let h = Harness::start(Conf {
        workers: 1,
        upstream: "max_cancels_in_flight = 1\ncancel_timeout_ms = 400".into(),
        ..Conf::with_body(&body(&[KEY_A], "poll_max_wait_ms = 1000"))
    });
    h.mock().faults.set(
        KEY_A,
        KeyFault {
            latency_ms: 1500,
            ..Default::default()
        },
    );
    // Two predictions given up at the same moment: one cancel runs (and times out), one is shed.
    let requests: Vec<_> = (0..2)
        .map(|_| {
            let mut c = h.client();
            std::thread::spawn(move || {
                let pending = [("x-mock-pending-ms", "60000")];
                c.post("/v1/chat/completions", &chat(MODEL), &pending).status
            })
        })
        .collect();
    for r in requests {
        assert_eq!(r.join().unwrap(), 504);
    }
    assert!(
        eventually(Duration::from_secs(5), || cancel_metric(&h, "failed") == Some(1)),
        "the cancel gave up after cancel_timeout_ms: {:?}",
        cancel_metric(&h, "failed")
    );
    assert_eq!(
        cancel_metric(&h, "shed"),
        Some(1),
        "the second cancel was over the bound"
    );
    // The late cancel answer would have counted as `ok` under the default 10 s.
    sleep_ms(1500);
    assert_eq!(cancel_metric(&h, "ok"), None);
}
