//! Server-sent events framing: splits a byte stream into whole events however the bytes were
//! cut into pieces (TCP reads, TLS records, HTTP chunks), with LF or CRLF line ends.
//! Invariant: the buffer holds at most one incomplete event, bounded by `max_event_bytes`;
//! past that the partial event is dropped and counted, never grown without limit.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

pub struct SseSplitter {
    buf: BytesMut,
    max_event_bytes: usize,
    /// Partial events thrown away because they outgrew the limit.
    pub dropped: u64,
}

impl SseSplitter {
    pub fn new(max_event_bytes: usize) -> Self {
        SseSplitter {
            buf: BytesMut::new(),
            max_event_bytes,
            dropped: 0,
        }
    }

    pub fn push(&mut self, piece: &[u8]) {
        self.buf.extend_from_slice(piece);
    }

    /// The next complete event, blank-line terminator included (bytes exactly as received).
    pub fn next_event(&mut self) -> Option<Bytes> {
        match event_end(&self.buf) {
            Some(end) => Some(self.buf.split_to(end).freeze()),
            None => {
                if self.buf.len() > self.max_event_bytes {
                    self.buf.clear();
                    self.dropped += 1;
                }
                None
            }
        }
    }

    /// Whatever is left after the stream ended (an event without its blank line).
    pub fn take_rest(&mut self) -> Bytes {
        self.buf.split().freeze()
    }
}

/// Index just past the first blank line (`\n\n`, `\r\n\r\n`, or mixed), if any.
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(offset) = memchr::memchr(b'\n', buf.get(from..)?) {
        let nl = from + offset;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => from = nl + 1,
        }
    }
    None
}

/// The event's data: its `data:` lines joined with `\n` (one leading space after the colon
/// removed, per the SSE rules). `None` for comment-only or data-less events.
pub fn event_data(event: &[u8]) -> Option<Cow<'_, [u8]>> {
    let mut lines = event
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter_map(|line| line.strip_prefix(b"data:"))
        .map(|value| value.strip_prefix(b" ").unwrap_or(value));
    let first = lines.next()?;
    match lines.next() {
        None => Some(Cow::Borrowed(first)),
        Some(second) => {
            let mut joined = first.to_vec();
            joined.push(b'\n');
            joined.extend_from_slice(second);
            for more in lines {
                joined.push(b'\n');
                joined.extend_from_slice(more);
            }
            Some(Cow::Owned(joined))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b"data: {\"a\":1}\n\n: comment\n\ndata: {\"b\":\r\ndata: 2}\r\n\r\ndata: [DONE]\n\n";

    fn events_of(pieces: &[&[u8]]) -> Vec<Bytes> {
        let mut s = SseSplitter::new(1 << 20);
        let mut out = Vec::new();
        for p in pieces {
            s.push(p);
            while let Some(e) = s.next_event() {
                out.push(e);
            }
        }
        out
    }

    #[test]
    fn any_split_gives_the_same_events() {
        let whole = events_of(&[STREAM]);
        assert_eq!(whole.len(), 4);
        for cut in 0..STREAM.len() {
            let (a, b) = STREAM.split_at(cut);
            assert_eq!(events_of(&[a, b]), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(events_of(&bytes), whole);
    }

    #[test]
    fn data_lines_join_and_comments_have_none() {
        let events = events_of(&[STREAM]);
        assert_eq!(event_data(&events[0]).as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(event_data(&events[1]), None);
        assert_eq!(event_data(&events[2]).as_deref(), Some(&b"{\"b\":\n2}"[..]));
        assert_eq!(event_data(&events[3]).as_deref(), Some(&b"[DONE]"[..]));
    }

    #[test]
    fn an_endless_event_is_dropped_not_grown() {
        let mut s = SseSplitter::new(16);
        s.push(&[b'x'; 40]);
        assert!(s.next_event().is_none());
        assert_eq!(s.dropped, 1);
        s.push(b"data: ok\n\n");
        assert_eq!(s.next_event().as_deref(), Some(&b"data: ok\n\n"[..]));
    }
}
