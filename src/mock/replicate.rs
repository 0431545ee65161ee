//! Replicate-shaped answers for the mock: `POST /v1/models/{owner}/{name}/predictions` (and
//! `/v1/predictions` with a `version`) create a prediction; with `Prefer: wait` a fast one comes
//! back finished, otherwise it is `starting` and `GET /v1/predictions/{id}` polls it;
//! `"stream": true` adds `urls.stream`, served at `GET /v1/streams/{id}` as `output` events
//! (with `id:` lines, as the SDK needs), then `done`. Knobs: the usual ones on the create
//! request, plus `x-mock-pending-ms` (the prediction finishes this long after creation, and
//! `Prefer: wait` does not wait for it) and `x-mock-prediction-fail: 1` (it ends `failed`).
//! `x-mock-poll-status: N` makes every poll of the prediction answer N (with `Retry-After` from
//! `x-mock-retry-after`, default 1). `POST /v1/predictions/{id}/cancel` cancels it: the cancel
//! is recorded (`ReplicateCancels`, with the key that sent it), later polls answer `canceled`
//! and a running stream ends with `done` `{"reason":"canceled"}`.
//! Token counts: input = prompt bytes / 4 (at least 1), output = one per chunk.
//! Invariant: stateless across mock workers but for the cancels (bounded, `MAX_CANCELS`): a
//! prediction's id carries everything later requests need (creation time, pending time,
//! chunks, cut, pacing, tokens, failure, poll status).

use std::io;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use sonic_rs::JsonValueTrait;

use super::service::Knobs;
use crate::server::{Request, Responder};

const JSON: (&str, &[u8]) = ("content-type", b"application/json");

/// Problem details, as Replicate's API answers errors.
pub(super) fn error_body(status: u16) -> Vec<u8> {
    let title = match status {
        401 => "Unauthenticated",
        402 => "Insufficient credit",
        404 => "Not found",
        422 => "Invalid input",
        429 => "Request was throttled",
        _ => "Internal server error",
    };
    format!(r#"{{"title":"{title}","detail":"mock {status}: {title}","status":{status}}}"#).into_bytes()
}

/// Cancels kept for inspection (the oldest go first).
const MAX_CANCELS: usize = 10_000;

/// The cancels the mock received: (prediction id, key that sent it), oldest first.
#[derive(Default)]
pub struct ReplicateCancels {
    list: Mutex<Vec<(String, String)>>,
}

impl ReplicateCancels {
    pub fn list(&self) -> Vec<(String, String)> {
        self.list.lock().clone()
    }

    fn contains(&self, id: &str) -> bool {
        self.list.lock().iter().any(|(i, _)| i == id)
    }

    fn push(&self, id: &str, key: &str) {
        let mut list = self.list.lock();
        if list.len() >= MAX_CANCELS {
            list.remove(0);
        }
        list.push((id.to_owned(), key.to_owned()));
    }
}

/// What a prediction id encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Job {
    created_ms: u64,
    pending_ms: u64,
    chunks: u64,
    /// `u64::MAX` = no cut.
    cut: u64,
    interval_ms: u64,
    prompt_tokens: u64,
    fail: bool,
    /// Polls answer this status (0 = the prediction).
    poll_status: u64,
    poll_retry_after: u64,
}

impl Job {
    fn id(&self) -> String {
        format!(
            "mock{}x{}x{}x{}x{}x{}x{}x{}x{}",
            self.created_ms,
            self.pending_ms,
            self.chunks,
            self.cut,
            self.interval_ms,
            self.prompt_tokens,
            u8::from(self.fail),
            self.poll_status,
            self.poll_retry_after
        )
    }

    fn parse(id: &str) -> Option<Job> {
        let mut n = id.strip_prefix("mock")?.split('x').map(|p| p.parse::<u64>().ok());
        let mut next = || n.next().flatten();
        Some(Job {
            created_ms: next()?,
            pending_ms: next()?,
            chunks: next()?,
            cut: next()?,
            interval_ms: next()?,
            prompt_tokens: next()?,
            fail: next()? == 1,
            poll_status: next()?,
            poll_retry_after: next()?,
        })
    }

    fn ready(&self) -> bool {
        now_ms() >= self.created_ms + self.pending_ms
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether the path is one of the Replicate API's.
pub(super) fn serves(path: &str) -> bool {
    (path.starts_with("/v1/models/") && path.ends_with("/predictions"))
        || path.starts_with("/v1/predictions")
        || path.starts_with("/v1/streams/")
}

pub(super) async fn answer(
    req: &Request,
    knobs: &Knobs,
    cancels: &ReplicateCancels,
    res: &mut Responder<'_>,
) -> io::Result<()> {
    let path = req.head.path();
    let host = req
        .head
        .header("host")
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .unwrap_or_default();
    if let Some(id) = path.strip_prefix("/v1/streams/") {
        return match Job::parse(id) {
            Some(job) => stream(res, &job, id, cancels).await,
            None => not_found(res).await,
        };
    }
    if let Some(id) = path
        .strip_prefix("/v1/predictions/")
        .and_then(|p| p.strip_suffix("/cancel"))
    {
        let Some(job) = Job::parse(id).filter(|_| req.head.method_raw() == b"POST") else {
            return not_found(res).await;
        };
        let key = req
            .head
            .header("authorization")
            .map(|v| String::from_utf8_lossy(v.strip_prefix(b"Bearer ").unwrap_or(v)).into_owned())
            .unwrap_or_default();
        cancels.push(id, &key);
        let body = canceled(&prediction(&job, &host, false, false));
        return res.send(200, &[JSON], Bytes::from(body)).await;
    }
    if let Some(id) = path.strip_prefix("/v1/predictions/") {
        return match Job::parse(id) {
            Some(job) if job.poll_status != 0 => {
                let retry_after = job.poll_retry_after.to_string();
                let headers: [(&str, &[u8]); 2] = [JSON, ("retry-after", retry_after.as_bytes())];
                let status = u16::try_from(job.poll_status).unwrap_or(500);
                res.send(status, &headers, Bytes::from(error_body(status))).await
            }
            Some(job) if cancels.contains(id) => {
                let body = canceled(&prediction(&job, &host, false, false));
                res.send(200, &[JSON], Bytes::from(body)).await
            }
            Some(job) => {
                let body = prediction(&job, &host, false, job.ready());
                res.send(200, &[JSON], Bytes::from(body)).await
            }
            None => not_found(res).await,
        };
    }
    create(req, knobs, res, &host).await
}

async fn create(req: &Request, knobs: &Knobs, res: &mut Responder<'_>, host: &str) -> io::Result<()> {
    let body = req.body.to_bytes();
    let body: &[u8] = &body;
    let Ok(prompt) = sonic_rs::get(body, &["input", "prompt"]) else {
        let problem = r#"{"title":"Invalid input","detail":"input.prompt is required","status":422}"#;
        return res.send(422, &[JSON], Bytes::from_static(problem.as_bytes())).await;
    };
    let prompt_len = prompt.as_str().map_or(0, str::len);
    let streamed = sonic_rs::get(body, &["stream"]).ok().and_then(|v| v.as_bool()) == Some(true);
    let number = |name: &str| {
        req.head
            .header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let job = Job {
        created_ms: now_ms(),
        pending_ms: number("x-mock-pending-ms").unwrap_or(0),
        chunks: knobs.chunks as u64,
        cut: knobs.cut_after.map_or(u64::MAX, |c| c as u64),
        interval_ms: knobs.interval.as_millis() as u64,
        prompt_tokens: (prompt_len / 4).max(1) as u64,
        fail: number("x-mock-prediction-fail") == Some(1),
        poll_status: number("x-mock-poll-status").unwrap_or(0),
        poll_retry_after: knobs.retry_after.as_deref().and_then(|s| s.parse().ok()).unwrap_or(1),
    };
    // `Prefer: wait` returns a fast prediction finished; a slow one (pending) comes back
    // unfinished, as when Replicate's wait runs out.
    let waited = req.head.header("prefer").is_some_and(|p| p.starts_with(b"wait")) && job.pending_ms == 0;
    let out = prediction(&job, host, streamed, waited && !streamed);
    res.send(201, &[JSON], Bytes::from(out)).await
}

/// The prediction object: finished (output, metrics) or `starting`.
fn prediction(job: &Job, host: &str, streamed: bool, finished: bool) -> String {
    let id = job.id();
    let urls = {
        let stream = if streamed {
            format!(r#","stream":"http://{host}/v1/streams/{id}""#)
        } else {
            String::new()
        };
        format!(
            r#"{{"get":"http://{host}/v1/predictions/{id}","cancel":"http://{host}/v1/predictions/{id}/cancel"{stream}}}"#
        )
    };
    let head =
        format!(r#""id":"{id}","model":"mock/model","version":"v1","urls":{urls},"created_at":"2024-07-23T15:04:21Z""#);
    if !finished {
        return format!(r#"{{{head},"status":"starting","output":null,"error":null,"metrics":{{}}}}"#);
    }
    if job.fail {
        return format!(
            r#"{{{head},"status":"failed","output":null,"error":"mock prediction failure","metrics":{{"predict_time":0.1}}}}"#
        );
    }
    let tokens: Vec<String> = (0..job.chunks).map(|i| format!("\"tok{i} \"")).collect();
    format!(
        r#"{{{head},"status":"succeeded","output":[{}],"error":null,"metrics":{{"predict_time":0.1,"input_token_count":{},"output_token_count":{}}}}}"#,
        tokens.join(","),
        job.prompt_tokens,
        job.chunks
    )
}

/// An unfinished prediction's JSON as the cancel left it.
fn canceled(unfinished: &str) -> String {
    unfinished.replacen(r#""status":"starting""#, r#""status":"canceled""#, 1)
}

async fn stream(res: &mut Responder<'_>, job: &Job, job_id: &str, cancels: &ReplicateCancels) -> io::Result<()> {
    let headers: [(&str, &[u8]); 2] = [("content-type", b"text/event-stream"), ("cache-control", b"no-store")];
    res.start(200, &headers, None).await?;
    let id = job.created_ms;
    for i in 0..job.chunks {
        if job.cut == i {
            res.abort();
            return Ok(());
        }
        if cancels.contains(job_id) {
            res.piece(format!("event: done\nid: {id}:d\ndata: {{\"reason\":\"canceled\"}}\n\n").as_bytes())
                .await?;
            return res.finish().await;
        }
        if job.interval_ms > 0 {
            crate::deadline::sleep(Duration::from_millis(job.interval_ms)).await;
        }
        res.piece(format!("event: output\nid: {id}:{i}\ndata: tok{i} \n\n").as_bytes())
            .await?;
    }
    if job.fail {
        res.piece(format!("event: error\nid: {id}:e\ndata: {{\"detail\":\"mock prediction failure\"}}\n\n").as_bytes())
            .await?;
        return res.finish().await;
    }
    res.piece(format!("event: done\nid: {id}:d\ndata: {{}}\n\n").as_bytes())
        .await?;
    res.finish().await
}

async fn not_found(res: &mut Responder<'_>) -> io::Result<()> {
    res.send(404, &[JSON], Bytes::from(error_body(404))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_the_job() {
        let job = Job {
            created_ms: 1_700_000_000_123,
            pending_ms: 300,
            chunks: 4,
            cut: u64::MAX,
            interval_ms: 0,
            prompt_tokens: 7,
            fail: true,
            poll_status: 429,
            poll_retry_after: 30,
        };
        assert_eq!(Job::parse(&job.id()), Some(job));
        assert_eq!(Job::parse("nope"), None);
        assert!(serves("/v1/models/a/b/predictions") && serves("/v1/predictions/x") && !serves("/v1/models"));
    }
}
