//! The mock's request handling: knobs, faults, recording, then the OpenAI-shaped answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{anthropic, cohere, files, gemini, ondemand, openai, replicate};
use super::{Chaos, Fault, KeyFaults, MockOptions, Recorded, Recorder, VertexMock};
use crate::codec::head::RequestHead;
use crate::server::{Limits, Request, Responder, Service};

const RATELIMITED_ANSWER: &[u8] = br#"{"id":"chatcmpl-mock-rl","object":"chat.completion","created":0,"model":"mock","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;

pub(super) struct MockService {
    worker: usize,
    options: MockOptions,
    recorder: Arc<Recorder>,
    faults: Arc<KeyFaults>,
    vertex: Arc<VertexMock>,
    ondemand: Arc<ondemand::OnDemandSessions>,
    objects: Arc<files::MockObjects>,
    cancels: Arc<replicate::ReplicateCancels>,
}

/// Knob values for one request.
pub(super) struct Knobs {
    pub status: Option<u16>,
    pub retry_after: Option<String>,
    pub latency: Duration,
    pub chunks: usize,
    pub interval: Duration,
    pub cut_after: Option<usize>,
    /// `x-mock-ratelimit-remaining`: answer a small chat completion carrying OpenAI
    /// rate-limit headers with this remaining count (reset from `x-mock-ratelimit-reset`, "1s").
    pub ratelimit: Option<(String, String)>,
    /// Anthropic/Gemini mocks: answer with a tool call.
    pub tool: bool,
    /// Gemini mock: CRLF-framed SSE.
    pub crlf: bool,
    /// Cache-read tokens to report (Anthropic `cache_read_input_tokens`, Gemini
    /// `cachedContentTokenCount`).
    pub cached_tokens: u64,
    /// Reasoning tokens to report (Responses `output_tokens_details.reasoning_tokens`).
    pub reasoning_tokens: u64,
    /// `x-mock-chunked: 1`: send whole JSON answers with chunked encoding, as providers behind
    /// CDNs do.
    pub chunked: bool,
    /// The key's balance (`KeyFault::balance`, default 100).
    pub balance: f64,
    /// `x-mock-spaced: 1`: OpenAI stream chunks formatted as Python's `json.dumps` writes them
    /// (a space after `:` and `,`), with `usage` as the first member.
    pub spaced: bool,
}

impl MockService {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        worker: usize,
        options: MockOptions,
        recorder: Arc<Recorder>,
        faults: Arc<KeyFaults>,
        vertex: Arc<VertexMock>,
        ondemand: Arc<ondemand::OnDemandSessions>,
        objects: Arc<files::MockObjects>,
        cancels: Arc<replicate::ReplicateCancels>,
    ) -> Self {
        MockService {
            worker,
            options,
            recorder,
            faults,
            vertex,
            ondemand,
            objects,
            cancels,
        }
    }

    /// The pool key the request carries, however the provider's protocol sends it.
    fn pool_key(head: &RequestHead) -> &[u8] {
        if let Some(v) = head.header("authorization") {
            return v.strip_prefix(b"Bearer ").unwrap_or(v);
        }
        head.header("x-api-key")
            .or_else(|| head.header("x-goog-api-key"))
            .or_else(|| head.header("apikey"))
            .unwrap_or_default()
    }

    fn knobs(&self, head: &RequestHead) -> Knobs {
        let number = |name: &str| -> Option<u64> {
            head.header(name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse().ok())
        };
        let key = head
            .header("authorization")
            .or_else(|| head.header("x-api-key"))
            .or_else(|| head.header("x-goog-api-key"))
            .or_else(|| head.header("apikey"))
            .unwrap_or(b"");
        let key_status = [
            (b"fail401", 401),
            (b"fail403", 403),
            (b"fail429", 429),
            (b"fail500", 500),
        ]
        .iter()
        .find(|(marker, _)| key.windows(7).any(|w| w == *marker))
        .map(|(_, status)| *status);
        let fault = self.faults.get(Self::pool_key(head)).unwrap_or_default();
        let balance = fault.balance.unwrap_or(100.0);
        let key_status = fault.status.or(key_status);
        let fault_latency = (fault.latency_ms > 0).then(|| Duration::from_millis(fault.latency_ms));
        Knobs {
            status: number("x-mock-status")
                .and_then(|s| u16::try_from(s).ok())
                .or(key_status),
            retry_after: head
                .header("x-mock-retry-after")
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_owned)
                .or_else(|| fault.retry_after_s.map(|s| s.to_string()))
                .or_else(|| (key_status == Some(429)).then(|| "1".to_owned())),
            latency: fault_latency
                .or_else(|| number("x-mock-latency-ms").map(Duration::from_millis))
                .unwrap_or(self.options.latency),
            chunks: number("x-mock-chunks").map_or(self.options.chunks, |n| n as usize),
            interval: number("x-mock-interval-ms").map_or(self.options.interval, Duration::from_millis),
            cut_after: number("x-mock-cut-after").map(|n| n as usize).or(fault.cut_after),
            ratelimit: number("x-mock-ratelimit-remaining").map(|n| {
                let reset = head
                    .header("x-mock-ratelimit-reset")
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .unwrap_or("1s");
                (n.to_string(), reset.to_owned())
            }),
            tool: number("x-mock-tool") == Some(1),
            crlf: number("x-mock-crlf") == Some(1),
            cached_tokens: number("x-mock-cached-tokens").unwrap_or(0),
            reasoning_tokens: number("x-mock-reasoning-tokens").unwrap_or(0),
            chunked: number("x-mock-chunked") == Some(1),
            balance,
            spaced: number("x-mock-spaced") == Some(1),
        }
    }

    /// A random fault for requests that asked for none: from the `x-mock-chaos` header, else
    /// `MockOptions::chaos`. A header that does not parse is ignored (the mock answers normally).
    fn add_chaos(&self, req: &Request, knobs: &mut Knobs) {
        let asked = knobs.status.is_some() || knobs.cut_after.is_some() || knobs.ratelimit.is_some();
        let from_header = req
            .head
            .header("x-mock-chaos")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|spec| Chaos::parse(spec).ok());
        let chaos = from_header.unwrap_or(self.options.chaos);
        if chaos.is_off() || asked {
            return;
        }
        match chaos.draw(fastrand::f64() * 100.0) {
            Some(Fault::Status(status)) => {
                knobs.status = Some(status);
                if status == 429 {
                    knobs.retry_after = Some("1".to_owned());
                }
            }
            Some(Fault::Slow(wait)) => knobs.latency = wait,
            // A stream is cut after its first events; a whole answer halfway through its body.
            Some(Fault::Cut) => knobs.cut_after = Some(1 + fastrand::usize(..knobs.chunks.max(1))),
            None => {}
        }
    }

    fn record(&self, req: &Request) {
        self.recorder.push(Recorded {
            method: String::from_utf8_lossy(req.head.method_raw()).into_owned(),
            target: req.head.target().to_owned(),
            headers: req
                .head
                .headers
                .iter()
                .map(|h| {
                    (
                        String::from_utf8_lossy(h.name).to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
            body: req.body.bytes().clone(),
            worker: self.worker,
        });
    }
}

impl Service for MockService {
    fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: 256 * 1024 * 1024,
            max_body_bytes_in_flight: 1024 * 1024 * 1024,
            ..Limits::default()
        }
    }

    async fn call(&self, req: &Request, res: &mut Responder<'_>) {
        self.record(req);
        // The mock reads bodies with sonic-rs too: bounded like rotor's (at the most any rotor
        // config forwards), so a hand-made nesting attack gets a 400, not an abort.
        if crate::codec::depth::check_depth(&req.body.bytes(), crate::codec::depth::MAX_DEPTH_CEILING).is_err() {
            let headers: [(&str, &[u8]); 1] = [("content-type", b"application/json")];
            let _ = res.send(400, &headers, Bytes::from(openai::error_body(400))).await;
            return;
        }
        if let Some((status, body)) = self.vertex.intercept(req) {
            let headers: [(&str, &[u8]); 1] = [("content-type", b"application/json")];
            let _ = res.send(status, &headers, Bytes::from(body)).await;
            return;
        }
        let mut knobs = self.knobs(&req.head);
        self.add_chaos(req, &mut knobs);
        if !knobs.latency.is_zero() {
            crate::deadline::sleep(knobs.latency).await;
        }
        if let Some(status) = knobs.status {
            let mut headers: Vec<(&str, &[u8])> = vec![("content-type", b"application/json")];
            if let Some(ra) = &knobs.retry_after {
                headers.push(("retry-after", ra.as_bytes()));
            }
            let body = match Shape::of(req.head.path()) {
                Shape::Anthropic => anthropic::error_body(status),
                Shape::Gemini => gemini::error_body(status, knobs.retry_after.as_deref()),
                Shape::OnDemand => ondemand::error_body(status),
                Shape::Replicate => replicate::error_body(status),
                Shape::Cohere => cohere::error_body(status),
                Shape::OpenAi => openai::error_body(status),
            };
            let _ = res.send(status, &headers, Bytes::from(body)).await;
            return;
        }
        if let Some(body) = balance_answer(req.head.path(), knobs.balance) {
            let headers: [(&str, &[u8]); 1] = [("content-type", b"application/json")];
            let _ = res.send(200, &headers, Bytes::from(body)).await;
            return;
        }
        if let Some((remaining, reset)) = &knobs.ratelimit {
            let headers: [(&str, &[u8]); 3] = [
                ("content-type", b"application/json"),
                ("x-ratelimit-remaining-requests", remaining.as_bytes()),
                ("x-ratelimit-reset-requests", reset.as_bytes()),
            ];
            let _ = res.send(200, &headers, Bytes::from_static(RATELIMITED_ANSWER)).await;
            return;
        }
        let key = String::from_utf8_lossy(Self::pool_key(&req.head)).into_owned();
        match files::answer(req, &key, &self.objects, res).await {
            Ok(false) => {}
            _ => return,
        }
        let _ = match Shape::of(req.head.path()) {
            Shape::Anthropic => anthropic::answer(req, &knobs, res).await,
            Shape::Gemini => gemini::answer(req, &knobs, res).await,
            Shape::OnDemand => ondemand::answer(req, &knobs, &self.ondemand, res).await,
            Shape::Replicate => replicate::answer(req, &knobs, &self.cancels, res).await,
            Shape::Cohere => cohere::answer(req, &knobs, res).await,
            Shape::OpenAi => openai::answer(req, &knobs, res).await,
        };
    }
}

/// Balance endpoints: SiliconFlow's `GET /v1/user/info` and DeepSeek's `GET /user/balance`
/// (amounts as strings, as both send them).
fn balance_answer(path: &str, balance: f64) -> Option<String> {
    if path.ends_with("/user/info") {
        Some(format!(
            r#"{{"code":20000,"status":true,"data":{{"balance":"{balance:.2}","totalBalance":"{balance:.2}"}}}}"#
        ))
    } else if path.ends_with("/user/balance") {
        Some(format!(
            r#"{{"is_available":{},"balance_infos":[{{"currency":"CNY","total_balance":"{balance:.2}"}}]}}"#,
            balance > 0.0
        ))
    } else {
        None
    }
}

/// Which provider's API a path belongs to.
enum Shape {
    OpenAi,
    Anthropic,
    Gemini,
    OnDemand,
    Replicate,
    Cohere,
}

impl Shape {
    fn of(path: &str) -> Shape {
        if path == "/v1/messages" || path.contains("/publishers/anthropic/") {
            Shape::Anthropic
        } else if path.starts_with("/v1beta/models/") || path.contains("/publishers/") {
            Shape::Gemini
        } else if ondemand::is_ondemand(path) {
            Shape::OnDemand
        } else if replicate::serves(path) {
            Shape::Replicate
        } else if cohere::serves(path) {
            Shape::Cohere
        } else {
            Shape::OpenAi
        }
    }
}
