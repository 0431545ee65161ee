//! Integration-test harness: the built-in mock provider plus a gateway started from a TOML
//! template, and a small blocking HTTP/1.1 client on `std::net::TcpStream` that can also send
//! raw bytes (framing attacks) and read streamed bodies piece by piece with timestamps.
//!
//! Every socket has a read timeout, so a hang fails the test instead of hanging the suite.
//! Everything binds port 0; nothing is serialized.
#![allow(dead_code)]
// Test code: a panic is a failed assertion (the crate lints deny these for src/ only).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Tests may block: they are not worker threads.
#![allow(clippy::disallowed_methods)]

pub mod child;
mod client;
pub mod kinds;
pub mod records;
pub mod redis;
pub mod tls;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rotor::config::{self, Config, ConfigSource};
use rotor::mock::{self, MockOptions, MockServer};
use rotor::runtime::{self, Running};

pub use client::*;

/// How long any single read may block before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The client key every default config accepts.
pub const CLIENT_KEY: &str = "sk-client-test-0001";
/// The pool key of the default provider.
pub const POOL_KEY: &str = "sk-pool-key-aaaa-0001";

pub fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

pub fn start_mock() -> MockServer {
    mock::start(MockOptions {
        workers: 1,
        ..Default::default()
    })
    .expect("mock starts")
}

/// The pieces of a gateway config. `{MOCK}` anywhere is replaced by the mock's base URL.
pub struct Conf {
    pub workers: usize,
    /// Extra `[server]` lines.
    pub server: String,
    /// Extra `[upstream]` lines.
    pub upstream: String,
    /// Extra `[routing]` lines.
    pub routing: String,
    /// Extra `[retry]` lines.
    pub retry: String,
    /// Extra `[storage]` lines (default: `path = ""`, in memory).
    pub storage: String,
    /// `[[clients]]` and `[[providers]]` tables (and anything else after the sections).
    pub body: String,
}

impl Default for Conf {
    fn default() -> Self {
        Conf {
            workers: 2,
            server: String::new(),
            upstream: String::new(),
            routing: String::new(),
            retry: String::new(),
            storage: String::new(),
            body: default_body(),
        }
    }
}

/// One client (`CLIENT_KEY`, all models) and one provider `mock` with `POOL_KEY` serving
/// gpt-4o-mini, text-embedding-3-small and whisper-1, with the alias gpt-3.5 -> gpt-4o-mini.
pub fn default_body() -> String {
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
models = ["gpt-4o-mini", "text-embedding-3-small", "whisper-1", "omni-moderation-latest"]
aliases = {{ "gpt-3.5" = "gpt-4o-mini" }}
"#
    )
}

/// One client (`CLIENT_KEY`) and one provider `mock` serving gpt-4o-mini with these pool keys.
pub fn pool_body(keys: &[&str]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    format!(
        r#"
[[clients]]
name = "tester"
key = "{CLIENT_KEY}"

[[providers]]
name = "mock"
kind = "openai"
base_url = "{{MOCK}}"
keys = [{}]
models = ["gpt-4o-mini"]
"#,
        keys.join(", ")
    )
}

impl Conf {
    pub fn with_body(body: &str) -> Self {
        Conf {
            body: body.to_owned(),
            ..Default::default()
        }
    }

    pub fn render(&self, mock_url: &str) -> String {
        let server = with_defaults(&self.server, &["shutdown_grace_ms = 2000"]);
        let retry = with_defaults(&self.retry, &["backoff_ms = 1"]);
        let storage = with_defaults(&self.storage, &["path = \"\""]);
        let upstream = with_defaults(
            &self.upstream,
            &[
                "connect_timeout_ms = 1000",
                "first_byte_timeout_ms = 5000",
                "stream_idle_timeout_ms = 5000",
            ],
        );
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
workers = {workers}
{server}

[upstream]
{upstream}

[retry]
{retry}

[storage]
{storage}

[routing]
{routing}

{body}
"#,
            workers = self.workers,
            routing = self.routing,
            body = self.body,
        )
        .replace("{MOCK}", mock_url)
    }

    pub fn parse(&self, mock_url: &str) -> Config {
        let text = self.render(mock_url);
        config::parse_str(&text, ConfigSource::Environment).unwrap_or_else(|e| panic!("{e}\n--- config ---\n{text}"))
    }
}

/// `extra` plus each default line whose key `extra` does not set itself.
fn with_defaults(extra: &str, defaults: &[&str]) -> String {
    let mut out = extra.to_owned();
    for line in defaults {
        let key = line.split('=').next().unwrap_or("").trim();
        let overridden = extra.lines().any(|l| l.split('=').next().unwrap_or("").trim() == key);
        if !overridden {
            out.push('\n');
            out.push_str(line);
        }
    }
    out
}

/// A mock and a gateway in front of it; both stop on drop.
pub struct Harness {
    pub mock: Option<MockServer>,
    pub running: Option<Running>,
    pub addr: SocketAddr,
}

impl Harness {
    pub fn start(conf: Conf) -> Self {
        let mock = start_mock();
        Self::with_mock(mock, conf)
    }

    pub fn with_mock(mock: MockServer, conf: Conf) -> Self {
        let config = conf.parse(&mock.base_url());
        let running = runtime::start(config, None).expect("gateway starts");
        let addr = running.addr;
        Harness {
            mock: Some(mock),
            running: Some(running),
            addr,
        }
    }

    /// Starts a gateway only (the provider URL is whatever `conf` says).
    pub fn gateway_only(conf: Conf, provider_url: &str) -> Self {
        let config = conf.parse(provider_url);
        let running = runtime::start(config, None).expect("gateway starts");
        let addr = running.addr;
        Harness {
            mock: None,
            running: Some(running),
            addr,
        }
    }

    pub fn mock(&self) -> &MockServer {
        self.mock.as_ref().expect("harness has a mock")
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("gateway running")
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// A POST of a JSON body with the default client key, on a fresh connection.
    pub fn post(&self, path: &str, body: &str, extra: &[(&str, &str)]) -> Response {
        self.client().post(path, body, extra)
    }

    pub fn recorded(&self) -> Vec<rotor::mock::Recorded> {
        self.mock().recorder.requests()
    }

    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop();
            running.wait();
        }
        if let Some(mock) = self.mock.take() {
            mock.stop();
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A chat request body.
pub fn chat(model: &str) -> String {
    format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hello"}}]}}"#)
}

pub fn chat_stream(model: &str) -> String {
    format!(r#"{{"model":"{model}","stream":true,"messages":[{{"role":"user","content":"hello"}}]}}"#)
}

pub fn auth() -> (&'static str, String) {
    ("authorization", format!("Bearer {CLIENT_KEY}"))
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep_ms(20);
    }
}

/// A bound-then-closed local port: connecting to it is refused.
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// A client and one provider of each wire protocol (openai, anthropic, gemini) on the mock.
pub fn one_provider_per_protocol() -> String {
    format!(
        r#"
[[clients]]
name = "tester"
key = "{CLIENT_KEY}"

[[providers]]
name = "oai"
kind = "openai"
base_url = "{{MOCK}}"
keys = ["{POOL_KEY}"]
models = ["gpt-4o-mini"]

[[providers]]
name = "claude"
kind = "anthropic"
base_url = "{{MOCK}}"
keys = ["sk-ant-pool-0001"]
models = ["claude-x"]

[[providers]]
name = "gem"
kind = "gemini"
base_url = "{{MOCK}}beta"
keys = ["goog-pool-0001"]
models = ["gemini-x"]
"#
    )
}
