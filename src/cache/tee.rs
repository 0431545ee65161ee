//! `Tee`: a `ResponseTransform` around the real one that keeps a copy of what the client gets,
//! for the response cache. Used only for a cacheable request with `[cache]` on, so the
//! uncached path pays nothing.
//! Invariant: the copy never exceeds its cap (past it the copy is dropped, the answer flows on
//! untouched), and a failed stream is never offered for storage.

use bytes::{Bytes, BytesMut};

use crate::providers::transform::{Emit, ResponseTransform};
use crate::usage::Usage;

pub struct Tee<'a> {
    inner: &'a mut dyn ResponseTransform,
    copy: Option<BytesMut>,
    cap: usize,
}

impl<'a> Tee<'a> {
    pub fn new(inner: &'a mut dyn ResponseTransform, cap: usize) -> Self {
        Tee {
            inner,
            copy: Some(BytesMut::new()),
            cap,
        }
    }

    /// The bytes the client got, when they all fit the cap and nothing failed.
    pub fn take(&mut self) -> Option<Bytes> {
        self.copy.take().map(BytesMut::freeze)
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
        let mut tee = Tee::new(&mut inner, 8);
        tee.piece(Bytes::from_static(b"abc"));
        tee.piece(Bytes::from_static(b"def"));
        assert_eq!(tee.take().as_deref(), Some(&b"abcdef"[..]));
        let mut inner = Passthrough;
        let mut tee = Tee::new(&mut inner, 4);
        let out = tee.piece(Bytes::from_static(b"abcdef"));
        assert_eq!(out.len(), 1, "the client still gets the piece");
        assert!(tee.take().is_none());
        let mut inner = Passthrough;
        let mut tee = Tee::new(&mut inner, 64);
        tee.piece(Bytes::from_static(b"abc"));
        tee.fail("cut");
        assert!(tee.take().is_none());
    }
}
