//! Usage from Anthropic answers relayed untouched (`/v1/messages` to an Anthropic upstream):
//! the body's `usage`, or in a stream `message_start.message.usage` then the cumulative
//! `message_delta.usage`. Invariant: the bytes the client receives are exactly the upstream's;
//! JSON nesting deeper than `server.max_json_depth` passes with its usage unread.

use bytes::Bytes;

use super::needle::{may_name_usage, MESSAGE_START};
use super::Usage;
use crate::codec::depth::check_depth;
use crate::codec::sse::SseSplitter;
use crate::providers::anthropic::{error_body, push_event, Tally, WireUsage};
use crate::providers::transform::{Emit, ResponseTransform};

pub struct AnthropicUsageTap {
    events: SseSplitter,
    tally: Tally,
    max_depth: usize,
}

impl AnthropicUsageTap {
    /// `max_depth`: `server.max_json_depth`.
    pub fn new(max_depth: usize) -> Self {
        AnthropicUsageTap {
            events: SseSplitter::new(),
            tally: Tally::default(),
            max_depth,
        }
    }

    fn read(&mut self, json: &[u8], path: &[&str]) {
        if !may_name_usage(json) || check_depth(json, self.max_depth).is_err() {
            return;
        }
        let Ok(raw) = sonic_rs::get(json, path) else { return };
        if let Ok(wire) = sonic_rs::from_str::<WireUsage>(raw.as_raw_str()) {
            self.tally.apply(&wire);
        }
    }
}

impl ResponseTransform for AnthropicUsageTap {
    fn full(&mut self, status: u16, body: Bytes) -> Bytes {
        if (200..300).contains(&status) {
            self.read(&body, &["usage"]);
        }
        body
    }

    fn piece(&mut self, piece: Bytes) -> Emit {
        let mut found: smallvec::SmallVec<[(Vec<u8>, bool); 2]> = smallvec::SmallVec::new();
        self.events.feed(&piece, &mut |event| {
            if may_name_usage(event.data) {
                let start = event.event == b"message_start" || MESSAGE_START.find(event.data).is_some();
                found.push((event.data.to_vec(), start));
            }
        });
        for (data, start) in found {
            if start {
                self.read(&data, &["message", "usage"]);
            } else {
                self.read(&data, &["usage"]);
            }
        }
        let mut out = Emit::new();
        out.push(piece);
        out
    }

    /// An Anthropic `error` event, which the Anthropic SDKs raise mid-stream.
    fn fail(&mut self, message: &str) -> Emit {
        let mut event = String::new();
        push_event(&mut event, "error", &error_body("api_error", message));
        let mut out = Emit::new();
        out.push(Bytes::from(event));
        out
    }

    fn usage(&self) -> Usage {
        self.tally.usage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":12,\"cache_read_input_tokens\":3,\"output_tokens\":1}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":7}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    #[test]
    fn stream_usage_is_read_and_bytes_pass_untouched() {
        for cut in [1, 40, 100, STREAM.len() - 3] {
            let mut tap = AnthropicUsageTap::new(crate::codec::DEFAULT_MAX_DEPTH);
            let mut out = Vec::new();
            for part in [&STREAM[..cut], &STREAM[cut..]] {
                for b in tap.piece(Bytes::copy_from_slice(part)) {
                    out.extend_from_slice(&b);
                }
            }
            assert_eq!(out, STREAM);
            let u = tap.usage();
            assert_eq!(
                (u.prompt_tokens, u.completion_tokens, u.cached_tokens),
                (15, 7, 3),
                "cut {cut}"
            );
            assert!(u.reported);
        }
    }

    #[test]
    fn whole_body_usage() {
        let mut tap = AnthropicUsageTap::new(crate::codec::DEFAULT_MAX_DEPTH);
        let body = br#"{"id":"m","content":[{"type":"text","text":"x"}],"usage":{"input_tokens":4,"output_tokens":2}}"#;
        assert_eq!(tap.full(200, Bytes::from_static(body)).as_ref(), body);
        assert_eq!((tap.usage().prompt_tokens, tap.usage().completion_tokens), (4, 2));
        let failed = tap.fail("cut");
        assert!(String::from_utf8_lossy(&failed[0]).starts_with("event: error\ndata: {\"type\":\"error\""));
    }
}
