//! The SSE splitter every stream translator reads through: bytes in as they arrive (events split
//! anywhere, even inside a CRLF), whole events out. Follows the WHATWG rules: lines end in `\n`,
//! `\r\n` or `\r`; a blank line ends an event; `:` lines are comments; one space after the colon
//! is stripped; several `data:` lines join with `\n`; a last event without its blank line is
//! still delivered by `finish`.
//! Invariant: memory is bounded by `MAX_EVENT_BYTES` per splitter whatever the input; an event
//! that outgrows it is dropped whole (and counted), never truncated into something else.

/// Largest event (name + data) kept; Gemini chunks with inline images stay well below this.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// One dispatched event. `event` is empty when the stream sent no `event:` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    pub event: &'a [u8],
    pub data: &'a [u8],
}

#[derive(Debug, Default)]
pub struct SseSplitter {
    /// The current, unfinished line.
    line: Vec<u8>,
    event: Vec<u8>,
    data: Vec<u8>,
    /// `data` has at least one `data:` line (an empty one counts).
    has_data: bool,
    /// The last byte seen was `\r`: a `\n` right after it belongs to the same line end.
    after_cr: bool,
    /// The current event grew past the limit: skip to its end (the blank line).
    overflow: bool,
    /// While skipping: the current line has bytes (so its end is not the blank line).
    skipped_line: bool,
    /// Events dropped for size.
    pub dropped: u64,
}

impl SseSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; calls `on_event` for every event they complete.
    pub fn feed(&mut self, mut input: &[u8], on_event: &mut dyn FnMut(Event<'_>)) {
        while !input.is_empty() {
            if self.idle() {
                input = fast_events(input, on_event);
                if input.is_empty() {
                    return;
                }
            }
            input = self.feed_line(input, on_event);
        }
    }

    /// Feeds the first line of `input` (all of it when it holds no line end), calling
    /// `on_event` if it completes an event; returns the rest. `feed` is this in a loop, with
    /// plain events read in place whenever the splitter is `idle`; a caller that reads them its
    /// own way (`usage::openai_stream`) feeds lines until the splitter is idle again.
    pub fn feed_line<'a>(&mut self, mut input: &'a [u8], on_event: &mut dyn FnMut(Event<'_>)) -> &'a [u8] {
        // An empty piece says nothing about whether a `\n` follows the last `\r`.
        if self.after_cr && !input.is_empty() {
            self.after_cr = false;
            if let Some(rest) = input.strip_prefix(b"\n") {
                return rest;
            }
        }
        match memchr::memchr2(b'\n', b'\r', input) {
            None => {
                self.extend_line(input);
                &[]
            }
            Some(at) => {
                let (head, rest) = input.split_at(at);
                self.extend_line(head);
                let cr = rest.first() == Some(&b'\r');
                input = rest.get(1..).unwrap_or(&[]);
                if cr {
                    match input.first() {
                        Some(b'\n') => input = input.get(1..).unwrap_or(&[]),
                        Some(_) => {}
                        None => self.after_cr = true,
                    }
                }
                self.end_line(on_event);
                input
            }
        }
    }

    /// The input ended: a pending line and event are delivered as if a blank line followed.
    pub fn finish(&mut self, on_event: &mut dyn FnMut(Event<'_>)) {
        if !self.line.is_empty() {
            self.end_line(on_event);
        }
        self.dispatch(on_event);
        self.after_cr = false;
        self.overflow = false;
        self.skipped_line = false;
    }

    /// Bytes held right now (for the bounded-memory checks).
    pub fn buffered(&self) -> usize {
        self.line.len() + self.event.len() + self.data.len()
    }

    /// Between events with nothing held: the next bytes start a fresh line of a fresh event.
    pub fn idle(&self) -> bool {
        !self.has_data
            && !self.after_cr
            && !self.overflow
            && self.line.is_empty()
            && self.event.is_empty()
            && self.data.is_empty()
    }

    fn extend_line(&mut self, bytes: &[u8]) {
        if self.overflow {
            self.skipped_line |= !bytes.is_empty();
            return;
        }
        if self.buffered() + bytes.len() > MAX_EVENT_BYTES {
            self.overflow_now();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn overflow_now(&mut self) {
        self.overflow = true;
        self.skipped_line = true;
        self.dropped += 1;
        self.line = Vec::new();
        self.event = Vec::new();
        self.data = Vec::new();
        self.has_data = false;
    }

    fn end_line(&mut self, on_event: &mut dyn FnMut(Event<'_>)) {
        if self.overflow {
            // An over-long event ends at the next blank line.
            if !self.skipped_line {
                self.overflow = false;
            }
            self.skipped_line = false;
            return;
        }
        if self.line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        let line = std::mem::take(&mut self.line);
        let (field, value) = match memchr::memchr(b':', &line) {
            Some(0) => {
                self.line = line;
                self.line.clear();
                return;
            }
            Some(at) => {
                let value = line.get(at + 1..).unwrap_or(&[]);
                (line.get(..at).unwrap_or(&[]), value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line.as_slice(), &[][..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            _ => {}
        }
        // Reuse the line's allocation.
        self.line = line;
        self.line.clear();
    }

    fn dispatch(&mut self, on_event: &mut dyn FnMut(Event<'_>)) {
        if self.has_data || !self.event.is_empty() {
            on_event(Event {
                event: &self.event,
                data: &self.data,
            });
        }
        self.event.clear();
        self.data.clear();
        self.has_data = false;
    }
}

/// The common events read in place, without copying a byte: whole in `input`, `\n` line ends,
/// an optional `event:` line, one `data:` line, the blank line. Returns the input from the first
/// event that is anything else (split, CRs, comments, several data lines, other fields), which
/// the line-by-line path then reads; the events are the ones it would give (sizes included: an
/// event here is at most `MAX_EVENT_BYTES` long, which that path keeps too).
/// Issue 18: copying every line into the splitter's buffers and each event out of them again
/// cost about 500 instructions per streamed event (callgrind).
fn fast_events<'a>(mut input: &'a [u8], on_event: &mut dyn FnMut(Event<'_>)) -> &'a [u8] {
    loop {
        let Some((first, rest)) = lf_line(input) else {
            return input;
        };
        let (event, data_line, rest) = match first.strip_prefix(b"event:") {
            Some(name) => match lf_line(rest) {
                Some((line, rest)) => (strip_space(name), line, rest),
                None => return input,
            },
            None => (&[][..], first, rest),
        };
        let Some(data) = data_line.strip_prefix(b"data:") else {
            return input;
        };
        let Some(after) = rest.strip_prefix(b"\n") else {
            return input;
        };
        if input.len() - after.len() > MAX_EVENT_BYTES {
            return input;
        }
        on_event(Event {
            event,
            data: strip_space(data),
        });
        input = after;
    }
}

/// The line at the front of `input` when it ends in a lone `\n` (no `\r` before it), and what
/// follows.
fn lf_line(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = memchr::memchr2(b'\n', b'\r', input)?;
    match input.get(at) {
        Some(b'\n') => Some((input.get(..at)?, input.get(at + 1..)?)),
        _ => None,
    }
}

fn strip_space(value: &[u8]) -> &[u8] {
    value.strip_prefix(b" ").unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(pieces: &[&[u8]]) -> Vec<(String, String)> {
        let mut s = SseSplitter::new();
        let mut out = Vec::new();
        let mut push = |e: Event<'_>| {
            out.push((
                String::from_utf8_lossy(e.event).into_owned(),
                String::from_utf8_lossy(e.data).into_owned(),
            ))
        };
        for p in pieces {
            s.feed(p, &mut push);
        }
        s.finish(&mut push);
        out
    }

    const STREAM: &[u8] = b": comment\r\nevent: message_start\r\ndata: {\"a\":1}\r\n\r\nevent: ping\ndata: {}\n\ndata:  two\ndata:x\r\r: keep\n\ndata: last";

    fn expected() -> Vec<(String, String)> {
        vec![
            ("message_start".into(), "{\"a\":1}".into()),
            ("ping".into(), "{}".into()),
            ("".into(), " two\nx".into()),
            ("".into(), "last".into()),
        ]
    }

    #[test]
    fn every_split_position_gives_the_same_events() {
        assert_eq!(split_all(&[STREAM]), expected());
        for at in 0..=STREAM.len() {
            let (a, b) = STREAM.split_at(at);
            assert_eq!(split_all(&[a, b]), expected(), "split at {at}");
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(split_all(&bytes), expected());
    }

    #[test]
    fn crlf_split_between_cr_and_lf_is_one_line_end() {
        let out = split_all(&[b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n"]);
        assert_eq!(out, vec![("".into(), "a".into()), ("".into(), "b".into())]);
    }

    /// Fuzz regression (`sse_split/regress_empty_piece_after_cr`): an empty piece between `\r`
    /// and `\n` used to forget the pending CR, turning CRLF into two line ends.
    #[test]
    fn empty_piece_between_cr_and_lf_keeps_one_line_end() {
        let out = split_all(&[b"data: a\r", b"", b"\ndata: b\n\n"]);
        assert_eq!(out, vec![("".into(), "a\nb".into())]);
    }

    /// The in-place path (whole events in one piece) gives what the line-by-line path gives
    /// (the same bytes one at a time never hold a whole event).
    #[test]
    fn events_read_in_place_equal_events_read_line_by_line() {
        let streams: [&[u8]; 6] = [
            b"data: {\"a\":1}\n\ndata:{}\n\nevent: ping\ndata: {}\n\nevent:x\ndata:\n\ndata: [DONE]\n\n",
            b"event: a\nevent: b\ndata: 1\n\nevent: only\n\ndata: 1\ndata: 2\n\ndata\n\n: c\ndata: 3\n\n",
            b"data: a\r\n\r\ndata: b\n\ndata: c\n\r\ndata: d\n\nid: 1\ndata: e\n\nevent: e\r\ndata: f\n\n",
            b"data:  two spaces\n\n\n\ndata: after blanks\n\nevent: \ndata: x\n\ndata: tail",
            b"\n\ndata: x\n\nretry: 5\n\ndata: y\n\n",
            STREAM,
        ];
        for stream in streams {
            let bytes: Vec<&[u8]> = stream.chunks(1).collect();
            assert_eq!(
                split_all(&[stream]),
                split_all(&bytes),
                "{}",
                String::from_utf8_lossy(stream)
            );
        }
        let whole = split_all(&[streams[0]]);
        assert_eq!(whole.len(), 5);
        assert_eq!(whole[2], ("ping".into(), "{}".into()));
    }

    #[test]
    fn oversized_event_is_dropped_and_the_next_survives() {
        let mut s = SseSplitter::new();
        let mut seen = Vec::new();
        let big = vec![b'x'; MAX_EVENT_BYTES + 10];
        let mut push = |e: Event<'_>| seen.push(e.data.len());
        s.feed(b"data: ", &mut push);
        s.feed(&big, &mut push);
        assert!(s.buffered() <= MAX_EVENT_BYTES);
        s.feed(b"\n\ndata: ok\n\n", &mut push);
        assert_eq!(seen, vec![2]);
        assert_eq!(s.dropped, 1);
        // Whole in one piece (the in-place path) it is dropped too.
        let mut whole = b"data: ".to_vec();
        whole.extend_from_slice(&big);
        whole.extend_from_slice(b"\n\ndata: ok\n\n");
        let mut again = Vec::new();
        s.feed(&whole, &mut |e| again.push(e.data.len()));
        assert_eq!(again, vec![2]);
        assert_eq!(s.dropped, 2);
    }
}
