//! The seam between an upstream's answer and the client's: a `ResponseTransform` sees the
//! whole body or each streamed piece and says what the client receives. The same-protocol path
//! is `Passthrough` (bytes untouched); protocol adapters and usage taps implement the same
//! trait. Invariant: a transform never blocks and never fails the relay; what it cannot parse
//! it passes on or drops, and says so in `usage().partial`.

use bytes::Bytes;
use smallvec::SmallVec;

use crate::usage::Usage;

/// What one input piece becomes: usually one piece, sometimes none or several.
pub type Emit = SmallVec<[Bytes; 2]>;

pub trait ResponseTransform {
    /// Replacement `content-type` for the client, when the transform changes the format.
    fn content_type(&self) -> Option<&'static [u8]> {
        None
    }

    /// A whole (non-streamed) body, any status.
    fn full(&mut self, status: u16, body: Bytes) -> Bytes;

    /// The status the client gets for the body `full` returned: the upstream's, unless the
    /// transform could not use the answer (one nesting deeper than `server.max_json_depth`
    /// becomes a 502).
    fn status(&self, upstream: u16) -> u16 {
        upstream
    }

    /// One piece of a streamed body as it arrived (SSE events may be split across pieces).
    fn piece(&mut self, piece: Bytes) -> Emit;

    /// The upstream body ended normally: anything still owed to the client.
    fn end(&mut self) -> Emit {
        Emit::new()
    }

    /// The upstream failed mid-stream: a final error event in the client's protocol, so the
    /// client sees a failure, never a clean-looking end.
    fn fail(&mut self, message: &str) -> Emit;

    /// Usage seen so far.
    fn usage(&self) -> Usage {
        Usage::default()
    }

    /// After the upstream body ended, before `end`: a URL the transform needs read (with the
    /// attempt's key) to finish the answer. Replicate's stream carries no usage; its
    /// prediction does. The relay asks once.
    fn fetch_at_end(&self) -> Option<String> {
        None
    }

    /// The body that URL answered with (`None`: it failed or was not a success).
    fn fetched(&mut self, _body: Option<&[u8]>) {}
}

/// Same protocol on both sides: bytes pass untouched.
#[derive(Default)]
pub struct Passthrough;

impl ResponseTransform for Passthrough {
    fn full(&mut self, _status: u16, body: Bytes) -> Bytes {
        body
    }

    fn piece(&mut self, piece: Bytes) -> Emit {
        let mut out = Emit::new();
        out.push(piece);
        out
    }

    fn fail(&mut self, message: &str) -> Emit {
        let mut out = Emit::new();
        out.push(openai_error_event(message));
        out
    }
}

/// `data: {"error":{...}}` followed by a blank line: the OpenAI SDKs raise this as an APIError
/// mid-stream.
pub fn openai_error_event(message: &str) -> Bytes {
    let mut out = String::with_capacity(112 + message.len());
    push_openai_error_event(&mut out, message);
    Bytes::from(out)
}

/// `openai_error_event` written onto the end of `out`.
pub fn push_openai_error_event(out: &mut String, message: &str) {
    out.push_str("data: {\"error\":{");
    super::write::field_str(out, "message", message);
    out.push_str(",\"type\":\"upstream_error\",\"param\":null,\"code\":\"stream_interrupted\"}}\n\n");
}
