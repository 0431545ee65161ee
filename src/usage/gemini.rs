//! Usage from Gemini answers relayed untouched (the Gemini front door to a Gemini upstream): the
//! body's `usageMetadata`, or in a stream the last chunk's (cumulative, never summed).
//! Invariant: the bytes the client receives are exactly the upstream's; JSON nesting deeper
//! than `server.max_json_depth` passes with its usage unread.

use bytes::Bytes;
use serde::Deserialize;

use super::needle::{LETTER_ESCAPE, USAGE_METADATA};
use super::Usage;
use crate::codec::depth::check_depth;
use crate::codec::sse::SseSplitter;
use crate::providers::gemini::door::error_event;
use crate::providers::gemini::UsageMetadata;
use crate::providers::transform::{Emit, ResponseTransform};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WithUsage {
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
}

pub struct GeminiUsageTap {
    events: SseSplitter,
    usage: Option<UsageMetadata>,
    max_depth: usize,
}

impl GeminiUsageTap {
    /// `max_depth`: `server.max_json_depth`.
    pub fn new(max_depth: usize) -> Self {
        GeminiUsageTap {
            events: SseSplitter::new(),
            usage: None,
            max_depth,
        }
    }
}

/// The `usageMetadata` of one answer or chunk, if it has one (spelled plainly or with escapes).
fn read(json: &[u8], max_depth: usize) -> Option<UsageMetadata> {
    if USAGE_METADATA.find(json).is_none() && LETTER_ESCAPE.find(json).is_none() {
        return None;
    }
    check_depth(json, max_depth).ok()?;
    sonic_rs::from_slice::<WithUsage>(json).ok()?.usage_metadata
}

impl ResponseTransform for GeminiUsageTap {
    fn full(&mut self, status: u16, body: Bytes) -> Bytes {
        if (200..300).contains(&status) {
            self.usage = read(&body, self.max_depth).or(self.usage);
        }
        body
    }

    fn piece(&mut self, piece: Bytes) -> Emit {
        let (usage, max_depth) = (&mut self.usage, self.max_depth);
        self.events.feed(&piece, &mut |event| {
            if let Some(found) = read(event.data, max_depth) {
                *usage = Some(found);
            }
        });
        let mut out = Emit::new();
        out.push(piece);
        out
    }

    /// Google's error object as an SSE event, which google-genai raises mid-stream.
    fn fail(&mut self, message: &str) -> Emit {
        let mut out = Emit::new();
        out.push(Bytes::from(error_event(503, message)));
        out
    }

    fn usage(&self) -> Usage {
        self.usage.map(|u| u.usage()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::DEFAULT_MAX_DEPTH as D;

    #[test]
    fn the_last_cumulative_usage_wins_and_bytes_pass_untouched() {
        let stream: &[u8] = b"data: {\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":1}}\r\n\r\n\
data: {\"candidates\": [], \"usageMetadata\": {\"promptTokenCount\": 5, \"candidatesTokenCount\": 4, \"thoughtsTokenCount\": 2}}\r\n\r\n";
        for cut in 0..stream.len() {
            let mut tap = GeminiUsageTap::new(D);
            let mut out = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                tap.piece(Bytes::copy_from_slice(part))
                    .iter()
                    .for_each(|b| out.extend_from_slice(b));
            }
            assert_eq!(out, stream);
            let u = tap.usage();
            assert_eq!(
                (u.prompt_tokens, u.completion_tokens, u.reasoning_tokens),
                (5, 6, 2),
                "cut {cut}"
            );
        }
        let mut tap = GeminiUsageTap::new(D);
        let body = br#"{"candidates":[],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2}}"#;
        assert_eq!(tap.full(200, Bytes::from_static(body)).as_ref(), body);
        assert_eq!(tap.usage().completion_tokens, 2);
        assert!(!GeminiUsageTap::new(1).full(200, Bytes::from_static(body)).is_empty());
    }
}
