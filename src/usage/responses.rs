//! Usage from Responses API answers relayed untouched (`/v1/responses` to an upstream that
//! serves it): the body's `usage`, or in a stream the `response.usage` of the terminal event
//! (`response.completed`, `response.incomplete`, `response.failed`), the only place a Responses
//! stream reports tokens. `input_tokens` already includes the cached ones, as chat's
//! `prompt_tokens` does, so the counts map one to one.
//! Invariant: the bytes the client receives are exactly the upstream's; JSON nesting deeper
//! than `server.max_json_depth` passes with its usage unread.

use bytes::Bytes;
use serde::Deserialize;

use super::needle::USAGE;
use super::Usage;
use crate::codec::depth::check_depth;
use crate::codec::sse::SseSplitter;
use crate::providers::transform::{Emit, ResponseTransform};
use crate::providers::write;

#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<InputDetails>,
    #[serde(default)]
    output_tokens_details: Option<OutputDetails>,
}

#[derive(Deserialize, Default)]
struct InputDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct OutputDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

/// The terminal events, each carrying the whole `response` with its usage.
const TERMINAL: [&[u8]; 3] = [b"response.completed", b"response.incomplete", b"response.failed"];

pub struct ResponsesUsageTap {
    events: SseSplitter,
    usage: Usage,
    max_depth: usize,
}

impl ResponsesUsageTap {
    /// `max_depth`: `server.max_json_depth`.
    pub fn new(max_depth: usize) -> Self {
        ResponsesUsageTap {
            events: SseSplitter::new(),
            usage: Usage::default(),
            max_depth,
        }
    }

    fn read(&mut self, json: &[u8], path: &[&str]) {
        if USAGE.find(json).is_none() || check_depth(json, self.max_depth).is_err() {
            return;
        }
        let Ok(raw) = sonic_rs::get(json, path) else { return };
        if let Ok(wire) = sonic_rs::from_str::<WireUsage>(raw.as_raw_str()) {
            self.usage = Usage {
                prompt_tokens: wire.input_tokens,
                completion_tokens: wire.output_tokens,
                cached_tokens: wire.input_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0),
                reasoning_tokens: wire.output_tokens_details.and_then(|d| d.reasoning_tokens).unwrap_or(0),
                reported: true,
                partial: false,
            };
        }
    }
}

/// The event's type: its `event:` line, else the `type` member of its data.
fn is_terminal(name: &[u8], data: &[u8]) -> bool {
    if !name.is_empty() {
        return TERMINAL.contains(&name);
    }
    let head = data.get(..data.len().min(96)).unwrap_or(data);
    TERMINAL.iter().any(|t| memchr::memmem::find(head, t).is_some())
}

impl ResponseTransform for ResponsesUsageTap {
    fn full(&mut self, status: u16, body: Bytes) -> Bytes {
        if (200..300).contains(&status) {
            self.read(&body, &["usage"]);
        }
        body
    }

    fn piece(&mut self, piece: Bytes) -> Emit {
        let mut found: smallvec::SmallVec<[Vec<u8>; 1]> = smallvec::SmallVec::new();
        self.events.feed(&piece, &mut |event| {
            if is_terminal(event.event, event.data) {
                found.push(event.data.to_vec());
            }
        });
        for data in found {
            self.read(&data, &["response", "usage"]);
        }
        let mut out = Emit::new();
        out.push(piece);
        out
    }

    /// A Responses `error` event, which the OpenAI SDKs hand to the caller mid-stream.
    fn fail(&mut self, message: &str) -> Emit {
        let mut event = String::from("event: error\ndata: {\"type\":\"error\",\"code\":\"stream_interrupted\",");
        write::field_str(&mut event, "message", message);
        event.push_str(",\"param\":null}\n\n");
        let mut out = Emit::new();
        out.push(Bytes::from(event));
        out
    }

    fn usage(&self) -> Usage {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b"event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"usage\":null}}\n\n\
event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"delta\":\"hi \\\"usage\\\"\"}\n\n\
event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"usage\":{\"input_tokens\":12,\"input_tokens_details\":{\"cached_tokens\":4},\"output_tokens\":7,\"output_tokens_details\":{\"reasoning_tokens\":2},\"total_tokens\":19}}}\n\n";

    #[test]
    fn stream_usage_is_read_from_the_terminal_event_and_bytes_pass_untouched() {
        for cut in 0..STREAM.len() {
            let mut tap = ResponsesUsageTap::new(crate::codec::DEFAULT_MAX_DEPTH);
            let mut out = Vec::new();
            for part in [&STREAM[..cut], &STREAM[cut..]] {
                for b in tap.piece(Bytes::copy_from_slice(part)) {
                    out.extend_from_slice(&b);
                }
            }
            assert_eq!(out, STREAM);
            let u = tap.usage();
            assert_eq!(
                (
                    u.prompt_tokens,
                    u.completion_tokens,
                    u.cached_tokens,
                    u.reasoning_tokens
                ),
                (12, 7, 4, 2),
                "cut {cut}"
            );
            assert!(u.reported);
        }
    }

    #[test]
    fn whole_body_usage_and_the_failure_event() {
        let mut tap = ResponsesUsageTap::new(crate::codec::DEFAULT_MAX_DEPTH);
        let body = br#"{"id":"resp_1","object":"response","output":[],"usage":{"input_tokens":5,"output_tokens":3,"total_tokens":8}}"#;
        assert_eq!(tap.full(200, Bytes::from_static(body)).as_ref(), body);
        assert_eq!((tap.usage().prompt_tokens, tap.usage().completion_tokens), (5, 3));
        let failed = tap.fail("cut");
        let text = String::from_utf8_lossy(&failed[0]).into_owned();
        assert!(text.starts_with("event: error\ndata: {\"type\":\"error\""), "{text}");
        let data = text.lines().nth(1).unwrap().strip_prefix("data: ").unwrap();
        let _: sonic_rs::Value = sonic_rs::from_str(data).unwrap();
    }
}
