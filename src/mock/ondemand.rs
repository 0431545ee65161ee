//! on-demand.io-shaped answers for the mock: `POST .../sessions` (201, `data.id`) and
//! `POST .../sessions/{id}/query` (sync JSON or SSE by `responseMode`), with the usual knobs
//! (status and Retry-After, latency, `x-mock-chunks`, `x-mock-interval-ms`,
//! `x-mock-cut-after`: a stream closes after that many answer events, a sync answer halfway
//! through its body; session creates are never cut) plus `x-mock-session-ttl-ms` (a session idle longer is
//! forgotten: 404), `x-mock-no-metrics: 1` (no `metrics`/`metricsLog`, so rotor estimates) and
//! `x-mock-thinking: 1` (a `fulfillment_thinking` event first). A session answers only the
//! `apikey` that created it (404 otherwise, as on-demand's are per account). The answer names
//! the session and its turn, so tests and users see which session served them.
//! Invariant: at most `MAX_SESSIONS` sessions are kept (the least recently used goes).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::Bytes;
use parking_lot::Mutex;
use sonic_rs::JsonValueTrait;

use super::service::Knobs;
use crate::server::{Request, Responder};

const JSON: (&str, &[u8]) = ("content-type", b"application/json");
const MAX_SESSIONS: usize = 100_000;

/// Whether a path is on-demand's (any base path before it).
pub(super) fn is_ondemand(path: &str) -> bool {
    path.ends_with("/sessions") || (path.contains("/sessions/") && path.ends_with("/query"))
}

pub(super) fn error_body(status: u16) -> Vec<u8> {
    format!(r#"{{"message":"mock on-demand error {status}","errorCode":"mock_{status}"}}"#).into_bytes()
}

struct MockSession {
    key: String,
    turns: u32,
    used: Instant,
}

/// The mock's on-demand sessions, shared by its workers.
#[derive(Default)]
pub struct OnDemandSessions {
    table: Mutex<AHashMap<String, MockSession>>,
    next: AtomicU64,
}

impl OnDemandSessions {
    /// Forgets every session: their next query answers 404 (an upstream expiry).
    pub fn forget_all(&self) {
        self.table.lock().clear();
    }

    /// Sessions created so far.
    pub fn created(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    fn create(&self, key: &str) -> String {
        let id = format!("mock-session-{}", self.next.fetch_add(1, Ordering::Relaxed) + 1);
        let mut table = self.table.lock();
        if table.len() >= MAX_SESSIONS {
            let oldest = table.iter().min_by_key(|(_, s)| s.used).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                table.remove(&oldest);
            }
        }
        table.insert(
            id.clone(),
            MockSession {
                key: key.to_owned(),
                turns: 0,
                used: Instant::now(),
            },
        );
        id
    }

    /// The session's next turn number, or `None` (unknown, another key's, or idle past `ttl`).
    fn turn(&self, id: &str, key: &str, ttl: Option<Duration>) -> Option<u32> {
        let mut table = self.table.lock();
        let session = table.get_mut(id)?;
        if session.key != key {
            return None;
        }
        if ttl.is_some_and(|ttl| session.used.elapsed() > ttl) {
            table.remove(id);
            return None;
        }
        session.turns += 1;
        session.used = Instant::now();
        Some(session.turns)
    }
}

pub(super) async fn answer(
    req: &Request,
    knobs: &Knobs,
    sessions: &OnDemandSessions,
    res: &mut Responder<'_>,
) -> io::Result<()> {
    let path = req.head.path();
    let key = req
        .head
        .header("apikey")
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or("");
    if key.is_empty() {
        let body = br#"{"message":"missing apikey","errorCode":"unauthorized"}"#;
        return res.send(401, &[JSON], Bytes::from_static(body)).await;
    }
    if path.ends_with("/sessions") && req.head.method_raw() == b"GET" {
        let body = br#"{"message":"Chat sessions fetched successfully","data":[]}"#;
        return res.send(200, &[JSON], Bytes::from_static(body)).await;
    }
    if path.ends_with("/sessions") {
        let id = sessions.create(key);
        let body = format!(
            r#"{{"message":"Chat session created successfully","data":{{"id":"{id}","createdAt":"2026-01-01T00:00:00Z","externalUserId":"rotor","pluginIds":[]}}}}"#
        );
        return res.send(201, &[JSON], Bytes::from(body)).await;
    }
    let id = path
        .rsplit_once("/sessions/")
        .map(|(_, rest)| rest.trim_end_matches("/query"))
        .unwrap_or("");
    let number = |name: &str| {
        req.head
            .header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let ttl = number("x-mock-session-ttl-ms").map(Duration::from_millis);
    let Some(turn) = sessions.turn(id, key, ttl) else {
        let body = br#"{"message":"Session not found","errorCode":"session_not_found"}"#;
        return res.send(404, &[JSON], Bytes::from_static(body)).await;
    };
    let body = req.body.to_bytes();
    let body: &[u8] = &body;
    let field = |name: &str| {
        sonic_rs::get(body, &[name])
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
    };
    let query = field("query").unwrap_or_default();
    let stream = field("responseMode").as_deref() == Some("stream");
    let text = format!("Hello from on-demand session {id}, turn {turn}.");
    let input = (query.len() as u64).div_ceil(4).max(1);
    let output = text.split(' ').count() as u64;
    let metrics = format!(
        r#"{{"inputTokens":{input},"outputTokens":{output},"totalTokens":{}}}"#,
        input + output
    );
    let with_metrics = number("x-mock-no-metrics") != Some(1);
    if !stream {
        let metrics = if with_metrics {
            format!(r#","metrics":{metrics}"#)
        } else {
            String::new()
        };
        let out = format!(
            r#"{{"message":"Chat query submitted successfully","data":{{"sessionId":"{id}","messageId":"mock-msg-{turn}","answer":{},"status":"completed"{metrics}}}}}"#,
            quote(&text)
        );
        if knobs.cut_after.is_some() {
            // A whole answer is cut halfway through its body.
            res.start(200, &[JSON], Some(out.len() as u64)).await?;
            res.piece(&out.as_bytes()[..out.len() / 2]).await?;
            res.abort();
            return Ok(());
        }
        return res.send(200, &[JSON], Bytes::from(out)).await;
    }
    let headers: [(&str, &[u8]); 1] = [("content-type", b"text/event-stream")];
    res.start(200, &headers, None).await?;
    let event = |data: String| format!("event:message\ndata:{data}\n\n");
    if number("x-mock-thinking") == Some(1) {
        let data = format!(
            r#"{{"sessionId":"{id}","messageId":"mock-msg-{turn}","eventType":"fulfillment_thinking","thinking":{{"delta":"thinking about it"}}}}"#
        );
        res.piece(event(data).as_bytes()).await?;
    }
    for (i, piece) in pieces(&text, knobs.chunks).iter().enumerate() {
        if knobs.cut_after == Some(i) {
            res.abort();
            return Ok(());
        }
        if !knobs.interval.is_zero() {
            crate::deadline::sleep(knobs.interval).await;
        }
        let data = format!(
            r#"{{"sessionId":"{id}","messageId":"mock-msg-{turn}","eventIndex":{i},"eventType":"fulfillment","answer":{},"status":"processing"}}"#,
            quote(piece)
        );
        res.piece(event(data).as_bytes()).await?;
        if i == 0 {
            res.piece(b"event:heartbeat\ndata:{\"time\":\"2026-01-01T00:00:00Z\"}\n\n")
                .await?;
        }
    }
    let status = format!(
        r#"{{"sessionId":"{id}","eventType":"statusLog","currentStatusLog":{{"statusType":"fulfillment_completed"}},"answer":{}}}"#,
        quote(&text)
    );
    res.piece(event(status).as_bytes()).await?;
    if with_metrics {
        let data = format!(r#"{{"sessionId":"{id}","eventType":"metricsLog","publicMetrics":{metrics}}}"#);
        res.piece(event(data).as_bytes()).await?;
    }
    res.piece(b"event:message\ndata:[DONE]\n\n").await?;
    res.finish().await
}

/// `text` in `n` pieces (at char boundaries, at least one).
fn pieces(text: &str, n: usize) -> Vec<&str> {
    let n = n.clamp(1, text.len().max(1));
    let step = text.len().div_ceil(n);
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + step).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push(&text[start..end]);
        start = end;
    }
    out
}

fn quote(s: &str) -> String {
    sonic_rs::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}
