//! The built-in mock provider: OpenAI- (chat, completions, embeddings and the Responses API
//! `/v1/responses`), Anthropic- (`/v1/messages`), Gemini-shaped
//! (`/v1beta/models/{m}:generateContent`, `:streamGenerateContent`), on-demand.io-shaped
//! (`.../sessions`, `.../sessions/{id}/query`, see `ondemand`), Replicate-shaped
//! (predictions, polls, stream URLs; see `replicate`), Cohere v2 (`/v2/chat`) and Cloudflare
//! Workers AI (OpenAI shapes under `/client/v4/accounts/{id}/ai/v1`) answers, files and batches owned by
//! the key that created them (see `files`); OpenAI ones (chat, streamed chat with usage,
//! completions, embeddings, models) with knobs for latency, stream length and pacing, status
//! codes with Retry-After, slow first byte and mid-stream cuts. Used by `rotor demo`, the tests
//! and the benchmarks, so nobody needs a real key to see rotor work.
//!
//! Knobs, per request as headers (rotor forwards them) or as defaults in `MockOptions`:
//! `x-mock-status` (answer this status with an error body), `x-mock-retry-after` (seconds),
//! `x-mock-latency-ms` (wait before the response head: a slow first byte),
//! `x-mock-chunks` (content chunks in a stream), `x-mock-interval-ms` (gap between chunks),
//! `x-mock-cut-after` (close the connection after this many chunks, without a terminator; a
//! whole answer is cut halfway through its body),
//! `x-mock-spaced: 1` (OpenAI stream chunks spaced as Python's `json.dumps` writes them, `usage`
//! first), `x-mock-chaos` (random faults drawn per request, in percent, e.g.
//! `5xx=5,cut=1,slow=1,429=0.2,slow_ms=3000`: a 500/502/503, a cut answer, a first byte
//! `slow_ms` late, a 429 with `Retry-After: 1`; `MockOptions::chaos` / `rotor mock --chaos`
//! draw the same for every request; each retry draws anew).
//! Keys select faults too, so a pool can mix bad keys in: a bearer key containing `fail401`,
//! `fail403`, `fail429` or `fail500` gets that status; `MockServer::faults` sets a key's fault
//! at run time, for every request or for the next N, and a key's balance
//! (`KeyFault::balance`, served at `GET .../user/info` and `.../user/balance`).
//! Vertex AI (`/token` and `/v1/projects/{p}/locations/{r}/publishers/...`): see `vertex.rs`.
//! Invariant: the mock records requests only when asked and keeps at most `record_limit`.

mod anthropic;
mod chaos;
mod cohere;
mod files;
mod gemini;
mod ondemand;
mod openai;
mod replicate;
mod responses;
mod service;
mod vertex;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

pub use chaos::{Chaos, Fault};
pub use files::MockObjects;
pub use ondemand::OnDemandSessions;
pub use replicate::ReplicateCancels;
pub use vertex::VertexMock;

use crate::config::Driver;
use crate::runtime::{bind_listeners, spawn_workers, Shutdown, WorkerSpec};
use crate::server::{ConnectionGate, WorkerServer};

#[derive(Debug, Clone)]
pub struct MockOptions {
    pub listen: SocketAddr,
    pub workers: usize,
    pub driver: Driver,
    /// Default wait before the response head.
    pub latency: Duration,
    /// Default number of content chunks in a stream.
    pub chunks: usize,
    /// Default gap between stream chunks.
    pub interval: Duration,
    /// Keep the last N requests for inspection (0 = do not record).
    pub record_limit: usize,
    /// Random faults per request (soak runs); off by default.
    pub chaos: Chaos,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: 1,
            driver: Driver::Auto,
            latency: Duration::ZERO,
            chunks: 5,
            interval: Duration::ZERO,
            record_limit: 10_000,
            chaos: Chaos::default(),
        }
    }
}

/// A request as the mock received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    /// Header names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Which mock worker (and so which connection set) served it.
    pub worker: usize,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The bearer key the request carried.
    pub fn bearer(&self) -> Option<&str> {
        self.header("authorization").and_then(|v| v.strip_prefix("Bearer "))
    }
}

#[derive(Default)]
pub struct Recorder {
    limit: usize,
    requests: Mutex<Vec<Recorded>>,
}

impl Recorder {
    fn push(&self, r: Recorded) {
        if self.limit == 0 {
            return;
        }
        let mut requests = self.requests.lock();
        if requests.len() >= self.limit {
            requests.remove(0);
        }
        requests.push(r);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().clone()
    }

    pub fn clear(&self) {
        self.requests.lock().clear();
    }
}

/// A fault injected for one pool key at run time (tests flip keys bad and good again).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KeyFault {
    /// Answer this status with an error body.
    pub status: Option<u16>,
    /// `Retry-After` seconds sent with the status.
    pub retry_after_s: Option<u64>,
    /// Wait this long before the response head.
    pub latency_ms: u64,
    /// Cut the answer (see `x-mock-cut-after`).
    pub cut_after: Option<usize>,
    /// Apply to this many requests, then clear; 0 = until cleared.
    pub times: u32,
    /// The key's balance at the balance endpoints (`GET .../user/info`, SiliconFlow-shaped,
    /// and `GET .../user/balance`, DeepSeek-shaped); unset = 100.
    pub balance: Option<f64>,
}

/// Faults by pool key (the bearer token or `x-api-key`/`x-goog-api-key` value).
#[derive(Default)]
pub struct KeyFaults {
    any: std::sync::atomic::AtomicBool,
    table: Mutex<ahash::AHashMap<String, KeyFault>>,
}

impl KeyFaults {
    pub fn set(&self, key: &str, fault: KeyFault) {
        let mut table = self.table.lock();
        table.insert(key.to_owned(), fault);
        self.any.store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn clear(&self, key: &str) {
        let mut table = self.table.lock();
        table.remove(key);
        self.any.store(!table.is_empty(), std::sync::atomic::Ordering::Release);
    }

    /// The key's fault for this request (counting it against `times`).
    pub(crate) fn get(&self, key: &[u8]) -> Option<KeyFault> {
        if !self.any.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let key = std::str::from_utf8(key).ok()?;
        let mut table = self.table.lock();
        let fault = table.get_mut(key)?;
        let found = *fault;
        if fault.times > 0 {
            fault.times -= 1;
            if fault.times == 0 {
                table.remove(key);
                self.any.store(!table.is_empty(), std::sync::atomic::Ordering::Release);
            }
        }
        Some(found)
    }
}

/// A running mock.
pub struct MockServer {
    pub addr: SocketAddr,
    pub recorder: Arc<Recorder>,
    /// Per-key faults, changeable while the mock runs.
    pub faults: Arc<KeyFaults>,
    /// Connection counts (accepted in total, open now): keep-alive tests read these.
    pub gate: Arc<ConnectionGate>,
    /// Vertex AI token state (issued tokens, grant counts, rejection), changeable at run time.
    pub vertex: Arc<VertexMock>,
    /// The on-demand sessions it created (tests forget them to play an upstream expiry).
    pub ondemand: Arc<OnDemandSessions>,
    /// The Replicate predictions it was asked to cancel (id, key).
    pub replicate_cancels: Arc<ReplicateCancels>,
    shutdown: Arc<Shutdown>,
    workers: Vec<JoinHandle<()>>,
}

impl MockServer {
    /// Base URL for a provider entry, e.g. `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn stop(mut self) {
        self.shutdown.trigger();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }

    /// Blocks until the mock stops (for `rotor mock`).
    pub fn wait(mut self) {
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }

    pub fn shutdown_handle(&self) -> Arc<Shutdown> {
        self.shutdown.clone()
    }
}

pub fn start(options: MockOptions) -> io::Result<MockServer> {
    let spec = WorkerSpec {
        count: options.workers.max(1),
        driver: options.driver,
        pin: false,
        name: "rotor-mock",
    };
    let (addr, listeners) = bind_listeners(options.listen, spec.count)?;
    let faults = Arc::new(KeyFaults::default());
    let vertex = Arc::new(VertexMock::default());
    let recorder = Arc::new(Recorder {
        limit: options.record_limit,
        ..Recorder::default()
    });
    let shutdown = Arc::new(Shutdown::default());
    let gate = Arc::new(ConnectionGate::default());
    let ondemand = Arc::new(OnDemandSessions::default());
    let objects = Arc::new(MockObjects::default());
    let replicate_cancels = Arc::new(ReplicateCancels::default());
    let workers = {
        let cancels = replicate_cancels.clone();
        let ondemand = ondemand.clone();
        let recorder = recorder.clone();
        let faults = faults.clone();
        let vertex = vertex.clone();
        let shutdown = shutdown.clone();
        let gate = gate.clone();
        spawn_workers(&spec, listeners, move |index, listener| {
            let service = std::rc::Rc::new(service::MockService::new(
                index,
                options.clone(),
                recorder.clone(),
                faults.clone(),
                vertex.clone(),
                ondemand.clone(),
                objects.clone(),
                cancels.clone(),
            ));
            let server = WorkerServer::new(gate.clone(), usize::MAX, Duration::from_millis(100));
            let stop = shutdown.subscribe();
            async move { server.serve(listener, service, stop).await }
        })?
    };
    Ok(MockServer {
        addr,
        recorder,
        faults,
        gate,
        vertex,
        ondemand,
        replicate_cancels,
        shutdown,
        workers,
    })
}
