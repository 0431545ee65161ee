//! The Replicate predictions protocol (provider-formats.md section 4): a chat request becomes a
//! prediction (`POST /models/{owner}/{name}/predictions`, `Prefer: wait=N`) whose answer is
//! read whole, polled at `urls.get` while unfinished, or streamed from `urls.stream`; usage is
//! the prediction's `metrics.input_token_count` / `output_token_count`.
//! Invariant: a prediction is only ever followed with the key that created it (`proxy::follow`
//! sends every follow-up with the attempt's key), and polling is bounded by `poll_max_wait_ms`.

pub mod request;
pub mod response;
pub mod stream;

use std::time::Duration;

use serde::Deserialize;
use sonic_rs::Value;

use super::follow::{FollowUp, Step};
use crate::config::Poll;
use crate::usage::Usage;

/// A prediction (section 4.3); unknown fields ignored.
#[derive(Debug, Default, Deserialize)]
pub struct Prediction {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub status: String,
    /// LLMs answer an array of string tokens (joined with ""); some models a plain string.
    #[serde(default)]
    pub output: Option<Value>,
    #[serde(default)]
    pub error: Option<Value>,
    #[serde(default)]
    pub metrics: Option<Metrics>,
    #[serde(default)]
    pub urls: Option<Urls>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub struct Metrics {
    /// Floats in some answers; read as numbers either way.
    #[serde(default)]
    pub input_token_count: Option<f64>,
    #[serde(default)]
    pub output_token_count: Option<f64>,
}

impl Metrics {
    /// `None` when the model reports no token counts.
    pub fn usage(&self) -> Option<Usage> {
        let count = |v: Option<f64>| v.filter(|n| n.is_finite() && *n >= 0.0).map(|n| n as u64);
        let (prompt, completion) = (count(self.input_token_count), count(self.output_token_count));
        if prompt.is_none() && completion.is_none() {
            return None;
        }
        Some(Usage {
            prompt_tokens: prompt.unwrap_or(0),
            completion_tokens: completion.unwrap_or(0),
            reported: true,
            ..Usage::default()
        })
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Urls {
    #[serde(default)]
    pub get: Option<String>,
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub cancel: Option<String>,
}

impl Prediction {
    /// The output text: string tokens joined with "" (or a plain string).
    pub fn text(&self) -> String {
        use sonic_rs::{JsonContainerTrait, JsonValueTrait};
        match &self.output {
            Some(v) if v.is_str() => v.as_str().unwrap_or("").to_owned(),
            Some(v) => v
                .as_array()
                .map(|a| a.iter().filter_map(|t| t.as_str()).collect::<String>())
                .unwrap_or_default(),
            None => String::new(),
        }
    }

    pub fn finished(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed" | "canceled")
    }
}

/// The message of a Replicate error: problem details (`detail`, else `title`), a failed
/// prediction's `error`, or an `error` event's `detail`.
pub fn error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Problem {
        #[serde(default)]
        detail: Option<Value>,
        #[serde(default)]
        title: Option<String>,
        #[serde(default)]
        error: Option<Value>,
        #[serde(default)]
        status: Option<Value>,
    }
    use sonic_rs::JsonValueTrait;
    let p: Problem = sonic_rs::from_slice(body).ok()?;
    let text = |v: &Option<Value>| {
        v.as_ref().and_then(|v| match v.as_str() {
            Some(s) => Some(s.to_owned()),
            None if v.is_null() => None,
            None => sonic_rs::to_string(v).ok(),
        })
    };
    let failed = p.status.as_ref().and_then(|s| s.as_str()).map(str::to_owned);
    text(&p.detail).or(p.title).or_else(|| text(&p.error)).or_else(|| {
        failed
            .filter(|s| s == "canceled")
            .map(|_| "the prediction was canceled".to_owned())
    })
}

/// `Prefer: wait=N` for `wait` (`Poll::prefer_wait`): Replicate holds the request up to 60 s.
pub fn prefer_wait(wait: Duration) -> String {
    let seconds = wait.as_secs().clamp(1, 60);
    format!("wait={seconds}")
}

/// Where a prediction is in its exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the create answer or a poll.
    Waiting,
    /// The stream URL was asked for: its answer is relayed as it comes.
    Streaming,
}

/// The follow-up of one prediction: poll until finished (whole answers) or read the stream URL.
pub struct PredictionFollow {
    stream: bool,
    poll: Poll,
    max_depth: usize,
    phase: Phase,
    record: Option<String>,
    cancel: Option<String>,
}

impl PredictionFollow {
    pub fn new(stream: bool, poll: Poll, max_depth: usize) -> Self {
        PredictionFollow {
            stream,
            poll,
            max_depth,
            phase: Phase::Waiting,
            record: None,
            cancel: None,
        }
    }
}

impl FollowUp for PredictionFollow {
    fn reads(&self, status: u16) -> bool {
        self.phase == Phase::Waiting && (200..300).contains(&status)
    }

    fn next(&mut self, _status: u16, body: &[u8]) -> Step {
        if crate::codec::depth::check_depth(body, self.max_depth).is_err() {
            return Step::Fail(format!("the prediction nests deeper than {} levels", self.max_depth));
        }
        let Ok(p) = sonic_rs::from_slice::<Prediction>(body) else {
            return Step::Fail("the upstream answer was not a Replicate prediction".to_owned());
        };
        let finished = p.finished();
        let urls = p.urls.unwrap_or_default();
        if let Some(get) = urls.get.filter(|u| !u.is_empty()) {
            self.record = Some(get);
        }
        // A finished prediction has nothing left to cancel.
        self.cancel = match urls.cancel.filter(|u| !u.is_empty()) {
            Some(url) if !finished => Some(url),
            Some(_) => None,
            None => self.cancel.take().filter(|_| !finished),
        };
        if self.stream {
            return match urls.stream.filter(|u| !u.is_empty()) {
                Some(url) => {
                    self.phase = Phase::Streaming;
                    Step::Get {
                        url,
                        after: Duration::ZERO,
                        accept: "text/event-stream",
                    }
                }
                None => Step::Fail("the prediction has no stream URL (does this model stream?)".to_owned()),
            };
        }
        match p.status.as_str() {
            "succeeded" => Step::Deliver { status: 200 },
            // A prediction that failed after it was accepted: the client gets the gateway's
            // upstream-failure status with the prediction's own error message.
            "failed" | "canceled" => Step::Deliver { status: 502 },
            _ => match &self.record {
                Some(url) => Step::Get {
                    url: url.clone(),
                    after: self.poll.interval,
                    accept: "application/json",
                },
                None => Step::Fail("the unfinished prediction has no urls.get to poll".to_owned()),
            },
        }
    }

    fn record_url(&self) -> Option<&str> {
        self.record.as_deref()
    }

    fn max_wait(&self) -> Duration {
        self.poll.max_wait
    }

    fn cancel_url(&self) -> Option<&str> {
        self.cancel.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: usize = crate::codec::DEFAULT_MAX_DEPTH;

    #[test]
    fn whole_predictions_are_polled_until_finished() {
        let mut f = PredictionFollow::new(false, Poll::default(), D);
        assert!(f.reads(201) && !f.reads(422));
        let step = f.next(
            201,
            br#"{"id":"p1","status":"starting","urls":{"get":"https://api.replicate.com/v1/predictions/p1"}}"#,
        );
        assert_eq!(
            step,
            Step::Get {
                url: "https://api.replicate.com/v1/predictions/p1".into(),
                after: Duration::from_millis(500),
                accept: "application/json"
            }
        );
        assert_eq!(f.record_url(), Some("https://api.replicate.com/v1/predictions/p1"));
        assert_eq!(f.cancel_url(), None, "this answer named no cancel URL");
        f.next(
            200,
            br#"{"status":"processing","urls":{"get":"https://api.replicate.com/v1/predictions/p1","cancel":"https://api.replicate.com/v1/predictions/p1/cancel"}}"#,
        );
        assert_eq!(
            f.cancel_url(),
            Some("https://api.replicate.com/v1/predictions/p1/cancel")
        );
        assert_eq!(
            f.next(200, br#"{"status":"succeeded","output":["a"]}"#),
            Step::Deliver { status: 200 }
        );
        assert_eq!(f.cancel_url(), None, "a finished prediction is not canceled");
        assert_eq!(
            f.next(200, br#"{"status":"failed","error":"boom"}"#),
            Step::Deliver { status: 502 }
        );
        assert!(matches!(f.next(200, br#"{"status":"processing"}"#), Step::Get { .. }));
        assert!(matches!(f.next(200, b"nope"), Step::Fail(_)));
        let mut g = PredictionFollow::new(false, Poll::default(), D);
        assert!(matches!(g.next(201, br#"{"status":"starting"}"#), Step::Fail(_)));
    }

    #[test]
    fn streams_follow_the_stream_url_once() {
        let mut f = PredictionFollow::new(true, Poll::default(), D);
        let step = f.next(
            201,
            br#"{"status":"starting","urls":{"get":"http://h/p","stream":"http://h/s"}}"#,
        );
        assert!(matches!(step, Step::Get { ref url, accept: "text/event-stream", .. } if url == "http://h/s"));
        assert!(!f.reads(200), "the stream answer is relayed, not read");
        let mut g = PredictionFollow::new(true, Poll::default(), D);
        assert!(matches!(
            g.next(201, br#"{"status":"starting","urls":{"get":"http://h/p"}}"#),
            Step::Fail(_)
        ));
    }

    #[test]
    fn errors_and_usage_are_read() {
        assert_eq!(
            error_message(br#"{"title":"Unauthenticated","detail":"You did not pass a valid token","status":401}"#)
                .as_deref(),
            Some("You did not pass a valid token")
        );
        assert_eq!(error_message(br#"{"title":"Throttled"}"#).as_deref(), Some("Throttled"));
        assert_eq!(
            error_message(br#"{"status":"failed","error":"CUDA OOM"}"#).as_deref(),
            Some("CUDA OOM")
        );
        assert_eq!(error_message(b"<html>"), None);
        let m = Metrics {
            input_token_count: Some(12.0),
            output_token_count: Some(3.0),
        };
        let u = m.usage().unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.reported), (12, 3, true));
        assert!(Metrics::default().usage().is_none());
        assert_eq!(prefer_wait(Duration::from_secs(300)), "wait=60");
        assert_eq!(prefer_wait(Duration::from_millis(1500)), "wait=1");
    }
}
