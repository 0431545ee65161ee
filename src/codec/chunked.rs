//! Chunked transfer-coding decoder (RFC 9112 §7.1), for request bodies and upstream responses.
//!
//! Invariant: the output depends only on the bytes, never on how they were split across reads
//! (data is passed on as soon as it is buffered, which SSE relaying needs), and every line is
//! bounded, so a peer can neither smuggle a second message nor make us buffer without limit.

use bytes::{Buf, Bytes, BytesMut};

/// Bounds on the parts of a chunked body that must be buffered whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedLimits {
    /// A chunk-size line including extensions and CRLF.
    pub max_line_bytes: usize,
    /// The whole trailer section (trailers are read and discarded).
    pub max_trailer_bytes: usize,
}

impl Default for ChunkedLimits {
    fn default() -> Self {
        Self {
            max_line_bytes: 4096,
            max_trailer_bytes: 16384,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Body bytes, never empty.
    Data(Bytes),
    /// The last chunk and the trailer section have been read.
    Done,
}

/// Malformed chunked framing; the message says what, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad chunked encoding: {}", self.0)
    }
}

impl std::error::Error for ChunkError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF that ends chunk data.
    DataEnd,
    /// After the last chunk: trailer lines, this many bytes read so far.
    Trailer(usize),
    Done,
}

/// Incremental decoder: call [`ChunkedDecoder::decode`] whenever more bytes arrive.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    limits: ChunkedLimits,
    state: State,
}

impl ChunkedDecoder {
    pub fn new(limits: ChunkedLimits) -> Self {
        Self {
            limits,
            state: State::Size,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decode from the front of `buf`. `Ok(None)` = need more input. `Data` carries as much of
    /// the current chunk as is buffered (partial chunks pass on at once: SSE must not wait for
    /// a whole chunk). `Done` comes after the zero chunk and the trailer section; bytes after
    /// that stay in `buf` (they belong to the next message).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Chunk>, ChunkError> {
        loop {
            match self.state {
                State::Size => {
                    let Some(len) = line_len(buf, self.limits.max_line_bytes)? else {
                        return Ok(None);
                    };
                    let size = parse_size_line(buf.get(..len).unwrap_or_default())?;
                    buf.advance(len);
                    self.state = if size == 0 {
                        State::Trailer(0)
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.state = if left == 0 { State::DataEnd } else { State::Data(left) };
                    return Ok(Some(Chunk::Data(data)));
                }
                State::DataEnd => match buf.get(..2) {
                    None if buf.first().is_none_or(|&b| b == b'\r') => return Ok(None),
                    Some(b"\r\n") => {
                        buf.advance(2);
                        self.state = State::Size;
                    }
                    _ => return Err(ChunkError("missing CRLF after chunk data")),
                },
                State::Trailer(used) => {
                    let room = self.limits.max_trailer_bytes.saturating_sub(used);
                    let Some(len) = line_len(buf, room).map_err(|_| ChunkError("trailer section too large"))? else {
                        return Ok(None);
                    };
                    if len == 2 {
                        self.state = State::Done;
                    } else {
                        check_trailer_line(buf.get(..len).unwrap_or_default())?;
                        self.state = State::Trailer(used + len);
                    }
                    buf.advance(len);
                }
                State::Done => return Ok(Some(Chunk::Done)),
            }
        }
    }
}

impl ChunkedDecoder {
    /// Appends the data of every chunk buffered in `buf` to `out` and consumes its framing, in
    /// one pass with one `advance` (no `Bytes` handle per chunk: an SSE upstream sends a chunk
    /// per event, and splitting each off cost about 300 instructions per streamed event,
    /// issue 18). `Ok(true)`: the body ended (zero chunk and trailers read). On an error the
    /// data before it is in `out` and the bad bytes stay in `buf`. The same bytes and states
    /// as repeated `decode` calls.
    pub fn decode_into(&mut self, buf: &mut BytesMut, out: &mut BytesMut) -> Result<bool, ChunkError> {
        let mut at = 0;
        let scanned = self.scan(buf, &mut at, out);
        buf.advance(at);
        scanned?;
        match self.state {
            State::Trailer(_) | State::Done => Ok(matches!(self.decode(buf)?, Some(Chunk::Done))),
            _ => Ok(false),
        }
    }

    /// Whether the buffered bytes are all data of the current chunk (the next `decode` hands
    /// them on without a copy).
    pub fn inside_chunk(&self, buffered: usize) -> bool {
        matches!(self.state, State::Data(left) if left >= buffered as u64)
    }

    /// Data and size lines from `buf[*at..]` until more input is needed or the last chunk.
    fn scan(&mut self, buf: &[u8], at: &mut usize, out: &mut BytesMut) -> Result<(), ChunkError> {
        loop {
            let rest = buf.get(*at..).unwrap_or_default();
            match self.state {
                State::Size => {
                    let max = self.limits.max_line_bytes;
                    let (size, len) = match plain_size_line(rest, max) {
                        Some(plain) => plain,
                        None => {
                            let Some(len) = line_len(rest, max)? else {
                                return Ok(());
                            };
                            (parse_size_line(rest.get(..len).unwrap_or_default())?, len)
                        }
                    };
                    if let Some(data) = whole_chunk(rest, len, size) {
                        // The usual SSE chunk, buffered whole with its CRLF: copied in one step
                        // and the state stays `Size` (no `Data`/`DataEnd` round per chunk).
                        if out.is_empty() {
                            out.reserve(rest.len());
                        }
                        out.extend_from_slice(data);
                        *at += len + data.len() + 2;
                        continue;
                    }
                    *at += len;
                    self.state = if size == 0 {
                        State::Trailer(0)
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if rest.is_empty() {
                        return Ok(());
                    }
                    let n = usize::try_from(left).map_or(rest.len(), |l| l.min(rest.len()));
                    if out.is_empty() {
                        out.reserve(rest.len());
                    }
                    out.extend_from_slice(rest.get(..n).unwrap_or_default());
                    *at += n;
                    let left = left - n as u64;
                    self.state = if left == 0 { State::DataEnd } else { State::Data(left) };
                }
                State::DataEnd => match rest.get(..2) {
                    None if rest.first().is_none_or(|&b| b == b'\r') => return Ok(()),
                    Some(b"\r\n") => {
                        *at += 2;
                        self.state = State::Size;
                    }
                    _ => return Err(ChunkError("missing CRLF after chunk data")),
                },
                State::Trailer(_) | State::Done => return Ok(()),
            }
        }
    }
}

/// Length of the CRLF-terminated line (terminator included) at the front of `buf`, if it is
/// complete; the caller reads it in place and then advances past it (splitting it off cost a
/// reference-counted handle per line). A line longer than `max` is an error whether
/// complete or not; a bare LF is an error (RFC 9112 lets recipients accept it, but lenient line
/// endings are a classic smuggling vector).
fn line_len(buf: &[u8], max: usize) -> Result<Option<usize>, ChunkError> {
    let window = buf.get(..max.min(buf.len())).unwrap_or(&[]);
    match memchr::memchr(b'\n', window) {
        Some(lf) => {
            if lf == 0 || window.get(lf - 1) != Some(&b'\r') {
                return Err(ChunkError("bare LF"));
            }
            Ok(Some(lf + 1))
        }
        None if buf.len() >= max => Err(ChunkError("chunk line too long")),
        None => Ok(None),
    }
}

/// The data of a non-empty chunk whose size line (`len` bytes, `size`) is at the front of
/// `rest`, when the data and the CRLF after it are buffered too. `None` otherwise (the state
/// machine then reads it in steps, and reports a missing CRLF).
fn whole_chunk(rest: &[u8], len: usize, size: u64) -> Option<&[u8]> {
    let size = usize::try_from(size).ok().filter(|&s| s > 0)?;
    let end = len.checked_add(size)?;
    match rest.get(end..end.checked_add(2)?)? {
        b"\r\n" => rest.get(len..end),
        _ => None,
    }
}

/// Hex digit values, `NOT_HEX` for every other byte: one load per digit instead of three range
/// tests.
const NOT_HEX: u8 = 0xff;
const HEX_VALUE: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// A size line that is only hex digits and CRLF (what SSE upstreams send before every event),
/// read in one short loop: `(size, line length)`. `None` for anything else (extensions,
/// whitespace, more than 16 digits, a bare LF, a line not complete yet, one longer than `max`):
/// `line_len` and `parse_size_line` then decide, and give the same answer as this for every
/// line this accepts. Issue 18: the general pair (a memchr call, then two passes over the
/// digits) cost about 100 instructions per streamed event.
fn plain_size_line(rest: &[u8], max: usize) -> Option<(u64, usize)> {
    let mut size = 0u64;
    for (i, &b) in rest.iter().enumerate().take(17) {
        let digit = HEX_VALUE[usize::from(b)];
        if digit == NOT_HEX {
            let crlf = b == b'\r' && i > 0 && rest.get(i + 1) == Some(&b'\n');
            return (crlf && i + 2 <= max).then_some((size, i + 2));
        }
        size = (size << 4) | u64::from(digit);
    }
    None
}

/// `chunk-size [ BWS ";" chunk-ext ] CRLF`: 1..=16 hex digits (so no overflow), extensions
/// allowed but ignored, no control bytes except HTAB anywhere on the line.
fn parse_size_line(line: &[u8]) -> Result<u64, ChunkError> {
    let body = line.get(..line.len().saturating_sub(2)).unwrap_or(&[]);
    let digits = body.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(ChunkError("bad chunk size"));
    }
    let (hex, rest) = body.split_at(digits);
    let ext = rest
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .map(|i| rest.get(i..));
    match ext {
        None => {
            if !rest.is_empty() {
                return Err(ChunkError("whitespace after chunk size"));
            }
        }
        Some(Some([b';', ext @ ..])) => {
            if ext.iter().any(|&b| is_ctl(b)) {
                return Err(ChunkError("control byte in chunk extension"));
            }
        }
        Some(_) => return Err(ChunkError("bad chunk size")),
    }
    Ok(hex.iter().fold(0u64, |acc, &b| (acc << 4) | u64::from(hex_val(b))))
}

fn check_trailer_line(line: &[u8]) -> Result<(), ChunkError> {
    let body = line.get(..line.len().saturating_sub(2)).unwrap_or(&[]);
    if body.iter().any(|&b| is_ctl(b)) || !body.contains(&b':') {
        return Err(ChunkError("malformed trailer field"));
    }
    Ok(())
}

fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

fn hex_val(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
#[path = "chunked_tests.rs"]
mod tests;
