//! `Tee`: a `ResponseTransform` around the real one that keeps a copy of what the client gets,
//! for the response cache, and stores it the moment the upstream answer is complete (a whole
//! body in `full`, a stream's clean end in `end`), before its last bytes go to the client, so a
//! repeat sent as soon as the answer arrived already finds it. Used only for a cacheable
//! request with `[cache]` on, so the uncached path pays nothing.
//! Invariant: the copy never exceeds its cap (past it the copy is dropped, the answer flows on
//! untouched); only a 2xx answer of the shape asked for (stream or whole) is stored; a stream
//! that fails or is cut never reaches `end`, so it is never stored.

use bytes::{Bytes, BytesMut};

use super::{Answer, Cache, CacheKey};
use crate::providers::transform::{Emit, ResponseTransform};
use crate::usage::Usage;

/// Where and how a complete answer is stored.
pub struct Pending<'a> {
    pub cache: &'a Cache,
    pub key: CacheKey,
    /// The upstream's status (a whole body's may still be changed by the transform).
    pub status: u16,
    /// The client asked for a stream: only a streamed answer is stored, and the reverse.
    pub stream: bool,
    pub now_ms: u64,
    pub ttl_ms: u64,
    pub max_bytes: u64,
    /// `[cluster]` shares the cache: the answer is offered to the fleet too (up to this size).
    pub remote: Option<(&'a crate::cluster::Shared, u64)>,
}

pub struct Tee<'a> {
    inner: &'a mut dyn ResponseTransform,
    copy: Option<BytesMut>,
    cap: usize,
    pending: Option<Pending<'a>>,
}

impl<'a> Tee<'a> {
    pub fn new(inner: &'a mut dyn ResponseTransform, cap: usize, pending: Option<Pending<'a>>) -> Self {
        Tee {
            inner,
            copy: Some(BytesMut::new()),
            cap,
            pending,
        }
    }

    /// The key back when nothing was stored (an answer that broke before the client saw it
    /// leaves it to the next attempt).
    pub fn into_key(self) -> Option<CacheKey> {
        self.pending.map(|p| p.key)
    }

    /// The bytes the client got, when they all fit the cap and nothing failed.
    pub fn take(&mut self) -> Option<Bytes> {
        self.copy.take().map(BytesMut::freeze)
    }

    /// The answer is complete: store it if it qualifies. Once only.
    fn complete(&mut self, status: u16, streamed: bool) {
        let (Some(pending), Some(body)) = (self.pending.take(), self.take()) else {
            return;
        };
        if !(200..300).contains(&status) || pending.stream != streamed {
            return;
        }
        let fallback: &'static [u8] = if streamed {
            b"text/event-stream"
        } else {
            b"application/json"
        };
        let answer = Answer {
            status,
            streamed,
            content_type: self.inner.content_type().unwrap_or(fallback),
            body,
        };
        if let Some((shared, max_entry_bytes)) = pending.remote {
            shared.cache_offer(pending.key.digest(), &answer, pending.ttl_ms, max_entry_bytes);
        }
        pending.cache.put(
            pending.key,
            std::sync::Arc::new(answer),
            pending.now_ms,
            pending.ttl_ms,
            pending.max_bytes,
        );
    }

    fn keep(&mut self, piece: &[u8]) {
        if let Some(copy) = &mut self.copy {
            if copy.len() + piece.len() > self.cap {
                self.copy = None;
            } else {
                copy.extend_from_slice(piece);
            }
        }
    }

    fn keep_all(&mut self, out: &Emit) {
        for piece in out {
            self.keep(piece);
        }
    }
}

impl ResponseTransform for Tee<'_> {
    fn content_type(&self) -> Option<&'static [u8]> {
        self.inner.content_type()
    }

    fn full(&mut self, status: u16, body: Bytes) -> Bytes {
        let out = self.inner.full(status, body);
        self.keep(&out);
        let status = self.inner.status(status);
        self.complete(status, false);
        out
    }

    fn status(&self, upstream: u16) -> u16 {
        self.inner.status(upstream)
    }

    fn piece(&mut self, piece: Bytes) -> Emit {
        let out = self.inner.piece(piece);
        self.keep_all(&out);
        out
    }

    fn end(&mut self) -> Emit {
        let out = self.inner.end();
        self.keep_all(&out);
        let status = self.pending.as_ref().map_or(0, |p| p.status);
        self.complete(status, true);
        out
    }

    fn fail(&mut self, message: &str) -> Emit {
        self.copy = None;
        self.inner.fail(message)
    }

    fn usage(&self) -> Usage {
        self.inner.usage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::transform::Passthrough;

    #[test]
    fn keeps_what_passes_and_drops_a_copy_past_its_cap_or_after_a_failure() {
        let mut inner = Passthrough;
        let mut tee = Tee::new(&mut inner, 8, None);
        tee.piece(Bytes::from_static(b"abc"));
        tee.piece(Bytes::from_static(b"def"));
        assert_eq!(tee.take().as_deref(), Some(&b"abcdef"[..]));
        let mut inner = Passthrough;
        let mut tee = Tee::new(&mut inner, 4, None);
        let out = tee.piece(Bytes::from_static(b"abcdef"));
        assert_eq!(out.len(), 1, "the client still gets the piece");
        assert!(tee.take().is_none());
        let mut inner = Passthrough;
        let mut tee = Tee::new(&mut inner, 64, None);
        tee.piece(Bytes::from_static(b"abc"));
        tee.fail("cut");
        assert!(tee.take().is_none());
    }
}
