//! Lifecycle: reload (explicit and on file change), graceful stop, the legacy driver, the
//! environment quick start and `rotor check`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use rotor::config::{self, Driver};
use rotor::mock::{self, MockOptions};
use rotor::runtime;
use sonic_rs::JsonValueTrait;

fn providers_with(models: &[&str]) -> String {
    let list = models.iter().map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(", ");
    format!(
        r#"
[[clients]]
name = "tester"
key = "{CLIENT_KEY}"

[[providers]]
name = "mock"
kind = "openai"
base_url = "{{MOCK}}"
keys = ["{POOL_KEY}"]
models = [{list}]
"#
    )
}

fn write_config(path: &Path, mock_url: &str, models: &[&str]) {
    let text = Conf::with_body(&providers_with(models)).render(mock_url);
    std::fs::write(path, text).unwrap();
}

/// A gateway started from a config file (so reload re-reads it).
fn start_from_file(path: &Path, mock: rotor::mock::MockServer) -> Harness {
    let config = config::load(path).unwrap();
    let running = runtime::start(config, None).unwrap();
    let addr = running.addr;
    Harness {
        mock: Some(mock),
        running: Some(running),
        addr,
    }
}

fn status_for(h: &Harness, model: &str) -> u16 {
    h.post("/v1/chat/completions", &chat(model), &[]).status
}

fn generation(h: &Harness) -> u64 {
    let r = h.client().request("GET", "/health", &[], b"");
    assert_eq!(r.status, 200);
    r.json()["generation"].as_u64().unwrap()
}

#[test]
fn reload_from_file_applies_and_a_bad_reload_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rotor.toml");
    let mock = start_mock();
    let url = mock.base_url();
    write_config(&path, &url, &["gpt-4o-mini"]);
    let h = start_from_file(&path, mock);
    assert_eq!(status_for(&h, "gpt-4o-mini"), 200);
    assert_eq!(status_for(&h, "gpt-4o"), 404);
    assert_eq!(generation(&h), 1);

    write_config(&path, &url, &["gpt-4o-mini", "gpt-4o"]);
    let id = h.running().gateway.reload().expect("good config reloads");
    assert!(id >= 2);
    assert_eq!(status_for(&h, "gpt-4o"), 200);
    assert!(generation(&h) >= 2);

    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:0\"\nworkerz = 2\n").unwrap();
    let err = h.running().gateway.reload().expect_err("bad config is rejected");
    assert!(err.contains("server.workerz"), "{err}");
    assert_eq!(status_for(&h, "gpt-4o"), 200, "the old config keeps serving");
    assert_eq!(status_for(&h, "gpt-4o-mini"), 200);
}

#[test]
fn install_swaps_the_config_for_new_requests() {
    let h = Harness::start(Conf::default());
    assert_eq!(status_for(&h, "gpt-4o"), 404);
    let conf = Conf::with_body(&providers_with(&["gpt-4o"]));
    h.running().gateway.install(conf.parse(&h.mock().base_url())).unwrap();
    assert_eq!(status_for(&h, "gpt-4o"), 200);
    assert_eq!(status_for(&h, "gpt-4o-mini"), 404);
}

#[test]
fn file_change_is_picked_up_without_calling_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rotor.toml");
    let mock = start_mock();
    let url = mock.base_url();
    write_config(&path, &url, &["gpt-4o-mini"]);
    let h = start_from_file(&path, mock);
    assert_eq!(status_for(&h, "gpt-4o"), 404);
    // Make sure the modification time differs even on coarse-grained filesystems.
    sleep_ms(20);
    write_config(&path, &url, &["gpt-4o-mini", "gpt-4o"]);
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(3), || status_for(&h, "gpt-4o") == 200),
        "the control thread did not reload the changed file within 3 s"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn graceful_stop_finishes_streams_in_flight_and_refuses_new_connections() {
    let h = Harness::start(Conf {
        workers: 1,
        ..Default::default()
    });
    let mut c = h.client();
    let (name, value) = auth();
    c.send_request(
        "POST",
        "/v1/chat/completions",
        &[
            (name, &value),
            ("content-type", "application/json"),
            ("x-mock-interval-ms", "100"),
            ("x-mock-chunks", "6"),
        ],
        chat_stream("gpt-4o-mini").as_bytes(),
    );
    let (status, _, _) = c.read_head();
    assert_eq!(status, 200);
    h.running().stop();
    assert!(
        eventually(Duration::from_millis(500), || TcpStream::connect_timeout(
            &h.addr,
            Duration::from_millis(200)
        )
        .is_err()),
        "new connections must be refused once stopping"
    );
    let (pieces, terminated) = c.read_chunks_timed();
    assert!(terminated, "the stream in flight must complete");
    let text: String = pieces
        .iter()
        .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
        .collect();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let started = Instant::now();
    let mut h = h;
    h.stop();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "wait() took {:?}",
        started.elapsed()
    );
}

/// Stops the harness's gateway (stop + wait) while one idle keep-alive client connection is
/// open, and returns that connection and the gateway's address.
fn stop_with_an_idle_client(server: &str) -> (Client, std::net::SocketAddr) {
    let mut h = Harness::start(Conf {
        server: server.into(),
        ..Default::default()
    });
    let mut idle = h.client();
    assert_eq!(idle.get("/health", &[]).status, 200);
    let running = h.running.take().unwrap();
    running.stop();
    running.wait();
    (idle, h.addr)
}

#[test]
fn stopped_gateway_refuses_new_connections() {
    for server in ["", "driver = \"legacy\""] {
        let (_idle, addr) = stop_with_an_idle_client(server);
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(),
            "a stopped gateway ({server:?}) must not accept connections"
        );
    }
}

#[test]
fn stopped_gateway_closes_idle_keepalive_connections() {
    for server in ["", "driver = \"legacy\""] {
        let (mut idle, _) = stop_with_an_idle_client(server);
        assert!(
            idle.closed_within(Duration::from_secs(1)),
            "an idle keep-alive connection must be closed when the gateway ({server:?}) stops"
        );
    }
}

#[test]
fn legacy_driver_serves_whole_and_streamed_answers() {
    let mock = mock::start(MockOptions {
        workers: 1,
        driver: Driver::Legacy,
        ..Default::default()
    })
    .unwrap();
    let h = Harness::with_mock(
        mock,
        Conf {
            server: "driver = \"legacy\"".into(),
            ..Default::default()
        },
    );
    assert_eq!(h.running().gateway.current().config.server.driver, Driver::Legacy);
    let mut c = h.client();
    let body = chat("gpt-4o-mini");
    let r = c.post("/v1/chat/completions", &body, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"].as_str(), Some("chat.completion"));
    let r = c.post(
        "/v1/chat/completions",
        &chat_stream("gpt-4o-mini"),
        &[("x-mock-chunks", "4"), ("x-mock-interval-ms", "20")],
    );
    assert_eq!(r.status, 200);
    assert!(r.chunked && r.complete);
    assert_eq!(r.text().matches("\"content\":\"tok").count(), 4);
    assert!(r.text().ends_with("data: [DONE]\n\n"));
    // Keep-alive on both sides with the epoll driver too.
    for _ in 0..5 {
        assert_eq!(c.post("/v1/chat/completions", &body, &[]).status, 200);
    }
    assert!(h.mock().gate.accepted_connections() <= 2);
}

#[test]
fn environment_quick_start_serves() {
    let mock = start_mock();
    let url = mock.base_url();
    let vars = [
        ("ROTOR_UPSTREAM_URL", url.as_str()),
        ("ROTOR_UPSTREAM_KEYS", "sk-env-key-00001, sk-env-key-00002"),
        ("ROTOR_AUTH_KEYS", "sk-env-client-0001"),
        ("ROTOR_LISTEN", "127.0.0.1:0"),
    ];
    let config = config::from_env_map(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
        .unwrap()
        .expect("a config from the environment");
    let running = runtime::start(config, None).unwrap();
    let addr = running.addr;
    let h = Harness {
        mock: Some(mock),
        running: Some(running),
        addr,
    };
    let json = ("content-type", "application/json");
    let r = h.client().request(
        "POST",
        "/v1/chat/completions",
        &[("authorization", "Bearer sk-env-client-0001"), json],
        chat("any-model-name").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-rotor-provider"), Some("default"));
    let r = h
        .client()
        .request("POST", "/v1/chat/completions", &[json], chat("x").as_bytes());
    assert_eq!(r.status, 401);
    let rec = h.recorded();
    assert_eq!(rec.len(), 1);
    assert!(matches!(rec[0].bearer(), Some("sk-env-key-00001" | "sk-env-key-00002")));
    let sent: sonic_rs::Value = sonic_rs::from_slice(&rec[0].body).unwrap();
    assert_eq!(sent["model"].as_str(), Some("any-model-name"));

    // No URL: no quick-start config; URL without keys: an error naming the variable.
    assert!(config::from_env_map(|_| None).unwrap().is_none());
    let err = config::from_env_map(|n| (n == "ROTOR_UPSTREAM_URL").then(|| url.clone())).unwrap_err();
    assert!(err.to_string().contains("ROTOR_UPSTREAM_KEYS"), "{err}");
}

fn rotor_check(path: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rotor"))
        .args(["check", "--config"])
        .arg(path)
        .env_remove("ROTOR_CONFIG")
        .env("ROTOR_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn rotor_check_prints_routes_with_masked_keys() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    let secret = "sk-live-secret-key-987654321";
    let body = format!(
        r#"
[[clients]]
name = "tester"
key = "sk-client-secret-000111222"

[[providers]]
name = "main"
kind = "openai"
base_url = "{{MOCK}}"
keys = ["{secret}"]
weight = 3
models = ["gpt-4o-mini"]
aliases = {{ "gpt-3.5" = "gpt-4o-mini" }}
"#
    );
    std::fs::write(&good, Conf::with_body(&body).render("http://127.0.0.1:9/v1")).unwrap();
    let (ok, stdout, stderr) = rotor_check(&good);
    assert!(ok, "stdout: {stdout}\nstderr: {stderr}");
    for expected in ["gpt-4o-mini", "gpt-3.5", "main", "…4321"] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
    for leaked in [secret, "sk-client-secret-000111222"] {
        assert!(
            !stdout.contains(leaked) && !stderr.contains(leaked),
            "a full key appears in the output:\n{stdout}\n{stderr}"
        );
    }

    let bad = dir.path().join("bad.toml");
    let typo = body.replace("models = [\"gpt-4o-mini\"]", "modelz = [\"gpt-4o-mini\"]");
    std::fs::write(&bad, Conf::with_body(&typo).render("http://127.0.0.1:9/v1")).unwrap();
    let (ok, stdout, stderr) = rotor_check(&bad);
    assert!(!ok, "an unknown key must fail the check:\n{stdout}");
    assert!(stderr.contains("providers[0].modelz"), "stderr: {stderr}");
    assert!(!stderr.contains(secret));
}

/// The `rotor` binary (here `rotor mock`, the same start-up) run with `envs`, asked once it
/// listens: its `THP_enabled` (/proc/PID/status) and `AnonHugePages` in kB (smaps_rollup).
fn huge_pages_of_the_binary(envs: &[(&str, &str)]) -> (String, u64) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_rotor"))
        .args(["mock", "--listen", "127.0.0.1:0", "--workers", "1"])
        .env("ROTOR_LOG", "warn")
        .env_remove("MIMALLOC_ALLOW_THP")
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
    let read = |file: &str, key: &str| {
        let text = std::fs::read_to_string(format!("/proc/{}/{file}", child.id())).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let thp = read("status", "THP_enabled:");
    let huge = read("smaps_rollup", "AnonHugePages:");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(line.contains("listening"), "the mock did not start: {line:?}");
    let huge_kb = huge.trim_end_matches("kB").trim().parse().unwrap();
    (thp, huge_kb)
}

/// Issue 18 item 3: no transparent huge pages for the binary, from before its allocator maps
/// anything (mimalloc starts before `main`; its huge pages cost an idle rotor 4-8 MB of RSS).
/// `THP_enabled` is the kernel's view of the process; no `AnonHugePages` at all means none was
/// taken before the switch either (the old switch in `main` left two). `MIMALLOC_ALLOW_THP=1`
/// still brings them back: the environment overrides rotor's allocator defaults.
#[test]
fn the_binary_runs_without_transparent_huge_pages() {
    assert_eq!(huge_pages_of_the_binary(&[]), ("0".to_owned(), 0));
    let (thp, _) = huge_pages_of_the_binary(&[("MIMALLOC_ALLOW_THP", "1")]);
    assert_eq!(thp, "1", "MIMALLOC_ALLOW_THP=1 keeps huge pages allowed");
}
