//! The plain head, read in one pass straight into spans: the start line and fields of a head
//! whose every line ends in CRLF and whose bytes are all plain ASCII (the heads clients and
//! providers send), for `head` and `response` to try before httparse.
//!
//! Invariant: whatever this accepts, httparse accepts with the same result (head length, start
//! line, each field's name and value range; a test holds the two equal on random heads), and
//! anything else (a byte outside the plain sets, a bare LF, obs-text, more fields than allowed,
//! a head not yet whole) is `None`: the caller then parses with httparse exactly as before, so
//! every error, limit and partial read stays httparse's.
//!
//! Why by hand: httparse hands out `&str`/`&[u8]` pairs in a slot array that rotor must walk
//! again to turn into spans and recognise names; no parser fills offsets and the field index in
//! the pass that finds them. For a chat request's two heads (4 and 2 fields) the two passes
//! took ~2,700 instructions, this one ~1,800 (callgrind, issue 18). Each line's parts are found
//! in the head's byte classes (`classes`, 64 bytes a step): a shift and a `trailing_zeros` a
//! part, where loops of eight-byte words and the OWS loops took ~1,910 instructions for both
//! heads' start lines and fields, the classes ~1,750 with their classifying (~80 a block, ~40
//! since each reading is compiled for its classifier: `classes::on_cpu`).

use std::ops::Range;

use super::classes::{on_cpu, Block, Classes, Classify, OnCpu};
use super::field_index::Field;
use super::fields::alphanumeric_and;
use super::headers::Spans;

/// Where a request line's parts lie in the buffer it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestLine {
    pub method: Range<usize>,
    pub target: Range<usize>,
    pub http10: bool,
}

/// A status line as rotor reads it (the reason phrase is not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatusLine {
    pub status: u16,
    pub http10: bool,
}

/// A plain request head at the start of `buf`, at most `max` fields: its request line, its
/// length and its fields' spans. The line is `method SP target SP HTTP/1.x CRLF`, a method of
/// token bytes and a target of visible ASCII (httparse takes those and more; whether the target
/// is origin-form is the caller's check, the same whichever parser read it).
pub(crate) fn request(buf: &[u8], max: usize) -> Option<(RequestLine, usize, Spans)> {
    on_cpu(ReadRequest { buf, max })
}

/// [`request`]'s reading, for [`on_cpu`] to compile once for each classifier.
struct ReadRequest<'a> {
    buf: &'a [u8],
    max: usize,
}

impl OnCpu for ReadRequest<'_> {
    type Out = Option<(RequestLine, usize, Spans)>;

    #[inline(always)]
    fn run<C: Classify>(self, classify: C) -> Self::Out {
        read_request(self.buf, self.max, classify)
    }
}

#[inline(always)]
fn read_request<C: Classify>(buf: &[u8], max: usize, classify: C) -> Option<(RequestLine, usize, Spans)> {
    let mut classes = Classes::at(buf, 0, classify);
    let method_end = classes.next(0, Block::not_visible);
    if !buf.get(..method_end)?.iter().all(|&b| TOKEN[usize::from(b)]) {
        return None;
    }
    let target_start = single_space_after(buf, 0, method_end)?;
    let target_end = classes.next(target_start, Block::not_visible);
    let version = single_space_after(buf, target_start, target_end)?;
    let http10 = match buf.get(version..version + 10)?.split_first_chunk::<8>()? {
        (word, b"\r\n") => http_1x(*word)?,
        _ => return None,
    };
    let (head_len, spans) = fields(buf, &mut classes, version + 10, max)?;
    let line = RequestLine {
        method: 0..method_end,
        target: target_start..target_end,
        http10,
    };
    Some((line, head_len, spans))
}

/// A plain response head at the start of `buf`, at most `max` fields: its status line, its
/// length and its fields' spans. The line is `HTTP/1.x SP 3DIGIT [SP reason] CRLF`, the reason
/// of HTAB, SP and visible ASCII.
pub(crate) fn response(buf: &[u8], max: usize) -> Option<(StatusLine, usize, Spans)> {
    on_cpu(ReadResponse { buf, max })
}

/// [`response`]'s reading, for [`on_cpu`] to compile once for each classifier.
struct ReadResponse<'a> {
    buf: &'a [u8],
    max: usize,
}

impl OnCpu for ReadResponse<'_> {
    type Out = Option<(StatusLine, usize, Spans)>;

    #[inline(always)]
    fn run<C: Classify>(self, classify: C) -> Self::Out {
        read_response(self.buf, self.max, classify)
    }
}

#[inline(always)]
fn read_response<C: Classify>(buf: &[u8], max: usize, classify: C) -> Option<(StatusLine, usize, Spans)> {
    let http10 = match buf.split_first_chunk::<8>()? {
        (word, [b' ', ..]) => http_1x(*word)?,
        _ => return None,
    };
    let mut status = 0u16;
    for &b in buf.get(9..12)? {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        status = status * 10 + u16::from(digit);
    }
    let mut classes = Classes::at(buf, 12, classify);
    let line_end = match buf.get(12)? {
        b'\r' => 12,
        b' ' => classes.next(13, Block::stop),
        _ => return None,
    };
    if buf.get(line_end..line_end + 2)? != b"\r\n" {
        return None;
    }
    let (head_len, spans) = fields(buf, &mut classes, line_end + 2, max)?;
    Some((StatusLine { status, http10 }, head_len, spans))
}

/// The fields from `at` to the blank line, at most `max` of them: the head's length and its
/// spans. A field is `token ":" OWS value CRLF`, the value of HTAB, SP and visible ASCII,
/// taken as httparse takes it: without its leading and trailing SP and HTAB, and an empty one
/// placed where its line's CR is. `classes` is `buf`'s, at or before `at`.
#[inline(always)]
fn fields<C: Classify>(buf: &[u8], classes: &mut Classes<'_, C>, mut at: usize, max: usize) -> Option<(usize, Spans)> {
    // Spans hold `u32` bounds: a larger buffer (never a head's) is httparse's to read.
    if u32::try_from(buf.len()).is_err() {
        return None;
    }
    let mut spans = Spans::for_scan();
    loop {
        if buf.get(at..at + 2)? == b"\r\n" {
            return Some((at + 2, spans));
        }
        if spans.len() >= max {
            return None;
        }
        let name_end = classes.next(at, Block::name_end);
        if name_end == at || !classes.holds(name_end, Block::colon) {
            return None;
        }
        let name = buf.get(at..name_end)?;
        // A name `Field::of` knows is that field's name but for the case of its letters: a
        // token (most of a request's names, and of a chat answer's), looked at no further.
        let field = Field::of_inlined(name);
        if field.is_none() && !is_token(name) {
            return None;
        }
        let value_start = classes.next(name_end + 1, Block::not_ows);
        let line_end = classes.next(value_start, Block::stop);
        if buf.get(line_end..line_end + 2)? != b"\r\n" {
            return None;
        }
        let mut end = line_end;
        // Most values end without OWS: the class of their last byte says so (the loop reads
        // bytes, as the last one may lie in the block before).
        if end > value_start && !classes.holds(end - 1, Block::not_ows) {
            while end > value_start && matches!(buf.get(end - 1), Some(b' ' | b'\t')) {
                end -= 1;
            }
        }
        spans.push_scanned(name, field, at..name_end, value_start..end);
        at = line_end + 2;
    }
}

/// Whether `word` is `HTTP/1.0` (or `HTTP/1.1`, else `None`): one compare each, where matching
/// the bytes as a string took ~25 instructions a head.
#[inline]
fn http_1x(word: [u8; 8]) -> Option<bool> {
    const HTTP11: u64 = u64::from_le_bytes(*b"HTTP/1.1");
    const HTTP10: u64 = u64::from_le_bytes(*b"HTTP/1.0");
    match u64::from_le_bytes(word) {
        HTTP11 => Some(false),
        HTTP10 => Some(true),
        _ => None,
    }
}

/// After a non-empty part `start..end`, one SP: where the next part starts.
#[inline]
fn single_space_after(buf: &[u8], start: usize, end: usize) -> Option<usize> {
    (end > start && buf.get(end) == Some(&b' ')).then_some(end + 1)
}

const ONES: u64 = u64::from_le_bytes([1; 8]);
const HIGH: u64 = ONES * 0x80;

/// Whether `name`, of bytes in `!`..=`~` but `:` (as [`fields`] leaves a name), is a token:
/// eight bytes a step while they are letters, digits and `-` (nearly every name), the rest
/// looked up in [`TOKEN`] a byte at a time (~6 instructions a byte; an SDK's request head has
/// ~220 bytes of names no `Field` is).
#[inline(always)]
fn is_token(name: &[u8]) -> bool {
    let by_table = |part: &[u8]| part.iter().all(|&b| TOKEN[usize::from(b)]);
    let Some(last) = name.last_chunk::<8>() else {
        return by_table(name);
    };
    let mut rest = name;
    while let Some((word, tail)) = rest.split_first_chunk::<8>() {
        if !plain_word(*word) {
            return by_table(rest);
        }
        rest = tail;
    }
    // The last word overlaps the words read: it covers the bytes left over.
    plain_word(*last) || by_table(rest)
}

/// Whether each of eight bytes in `!`..=`~` is a letter, a digit or `-`. With the case bit
/// set (`| 0x20`), each byte is below 0x80, so adding `0x80 - lo` sets its top bit exactly
/// when it is at least `lo`, and adding `0x7F - hi` exactly when it is above `hi`, with no
/// carry into the next byte. The set bit leaves only letters' other case (`A`..`Z`) and the
/// bytes below `!` (not in a name) landing in a range: the check is exact.
#[inline]
fn plain_word(word: [u8; 8]) -> bool {
    let f = u64::from_le_bytes(word) | (ONES * 0x20);
    let at_least = |lo: u8| f.wrapping_add(ONES * u64::from(0x80 - lo));
    let above = |hi: u8| f.wrapping_add(ONES * u64::from(0x7F - hi));
    let letter = at_least(b'a') & !above(b'z');
    let digit = at_least(b'0') & !above(b'9');
    let dash = at_least(b'-') & !above(b'-');
    (letter | digit | dash) & HIGH == HIGH
}

/// httparse's token bytes (names and methods): RFC 9110 §5.6.2 tchar.
static TOKEN: [bool; 256] = alphanumeric_and(b"!#$%&'*+-.^_`|~");

#[cfg(test)]
#[path = "quick_tests.rs"]
mod tests;
