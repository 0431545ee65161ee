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
//! took ~2,700 instructions, this one ~1,800 (callgrind, issue 18).

use std::ops::Range;

use super::field_index::Field;
use super::fields::alphanumeric_and;
use super::headers::Spans;

/// Where a request line's parts lie in the buffer it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestLine {
    pub method: Range<usize>,
    pub target: Range<usize>,
    pub http10: bool,
    /// Just past the line's CRLF: where the fields start.
    pub end: usize,
}

/// A status line as rotor reads it (the reason phrase is not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatusLine {
    pub status: u16,
    pub http10: bool,
    pub end: usize,
}

/// `method SP target SP HTTP/1.x CRLF` at the start of `buf`: a method of token bytes and a
/// target of visible ASCII (httparse takes those and more; whether the target is origin-form is
/// the caller's check, the same whichever parser read it).
pub(crate) fn request_line(buf: &[u8]) -> Option<RequestLine> {
    let method_end = word_end(buf, 0, false);
    if !buf.get(..method_end)?.iter().all(|&b| TOKEN[usize::from(b)]) {
        return None;
    }
    let target_start = single_space_after(buf, 0, method_end)?;
    let target_end = word_end(buf, target_start, false);
    let version = single_space_after(buf, target_start, target_end)?;
    let http10 = match buf.get(version..version + 10)? {
        b"HTTP/1.1\r\n" => false,
        b"HTTP/1.0\r\n" => true,
        _ => return None,
    };
    Some(RequestLine {
        method: 0..method_end,
        target: target_start..target_end,
        http10,
        end: version + 10,
    })
}

/// `HTTP/1.x SP 3DIGIT [SP reason] CRLF` at the start of `buf`, the reason of HTAB, SP and
/// visible ASCII.
pub(crate) fn status_line(buf: &[u8]) -> Option<StatusLine> {
    let http10 = match buf.get(..9)? {
        b"HTTP/1.1 " => false,
        b"HTTP/1.0 " => true,
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
    let line_end = match buf.get(12)? {
        b'\r' => 12,
        b' ' => visible_run(buf, 13),
        _ => return None,
    };
    (buf.get(line_end..line_end + 2)? == b"\r\n").then_some(StatusLine {
        status,
        http10,
        end: line_end + 2,
    })
}

/// The fields from `at` to the blank line, at most `max` of them: the head's length and its
/// spans. A field is `token ":" OWS value CRLF`, the value of HTAB, SP and visible ASCII,
/// taken as httparse takes it: without its leading and trailing SP and HTAB, and an empty one
/// placed where its line's CR is.
pub(crate) fn fields(buf: &[u8], mut at: usize, max: usize) -> Option<(usize, Spans)> {
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
        let name_end = word_end(buf, at, true);
        if name_end == at || buf.get(name_end) != Some(&b':') {
            return None;
        }
        let name = buf.get(at..name_end)?;
        // A name `Field::of` knows is that field's name but for the case of its letters: a
        // token (most of a request's names, and of a chat answer's), looked at no further.
        let field = Field::of(name);
        if field.is_none() && !is_token(name) {
            return None;
        }
        let mut value_start = name_end + 1;
        while matches!(buf.get(value_start), Some(b' ' | b'\t')) {
            value_start += 1;
        }
        let line_end = value_end(buf, value_start)?;
        let mut end = line_end;
        while end > value_start && matches!(buf.get(end - 1), Some(b' ' | b'\t')) {
            end -= 1;
        }
        spans.push_scanned(name, field, at..name_end, value_start..end);
        at = line_end + 2;
    }
}

/// Where the first byte at or after `at` outside `!`..=`~` lies (a space, a control byte,
/// DEL or obs-text), or with `colon` the first `:` if that comes first; the end of `buf` when
/// none does. Eight bytes a step, as [`visible_run`] (names are the next largest part of a
/// head; a byte at a time cost ~9 instructions a byte).
#[inline]
fn word_end(buf: &[u8], mut at: usize, colon: bool) -> usize {
    let colons = if colon { ONES * u64::from(b':') } else { 0 };
    while let Some(chunk) = buf.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        let w = u64::from_le_bytes(*chunk);
        let x = w ^ colons;
        // With `colon` off, `x` is `w`, and a zero byte in it is a NUL: below `!` anyway.
        let zero = x.wrapping_sub(ONES) & !x;
        let special = ((w.wrapping_sub(ONES * 0x21) & !w) | w.wrapping_add(ONES) | w | zero) & HIGH;
        if special != 0 {
            return at + (special.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while buf
        .get(at)
        .is_some_and(|&b| (b'!'..=b'~').contains(&b) && !(colon && b == b':'))
    {
        at += 1;
    }
    at
}

/// After a non-empty part `start..end`, one SP: where the next part starts.
#[inline]
fn single_space_after(buf: &[u8], start: usize, end: usize) -> Option<usize> {
    (end > start && buf.get(end) == Some(&b' ')).then_some(end + 1)
}

/// Where the CR of the line a value starting at `at` is on lies, when every byte before it is
/// HTAB, SP or visible ASCII and an LF follows it.
#[inline]
fn value_end(buf: &[u8], at: usize) -> Option<usize> {
    let at = visible_run(buf, at);
    (buf.get(at..at + 2)? == b"\r\n").then_some(at)
}

const ONES: u64 = u64::from_le_bytes([1; 8]);
const HIGH: u64 = ONES * 0x80;

/// Where the first byte at or after `at` that is neither HTAB nor SP..=`~` lies (or the end
/// of `buf`): eight bytes a step (values are most of a head's bytes). In a word, a byte below
/// SP sets its top bit in `w - 0x20..` while its own is clear, and one above `~` in
/// `w + 0x01..` or in itself; a borrow or carry can flag a byte only above the first flagged
/// one, which is the one read. An HTAB (rare) is stepped over and the scan goes on.
#[inline]
fn visible_run(buf: &[u8], mut at: usize) -> usize {
    loop {
        while let Some(chunk) = buf.get(at..).and_then(<[u8]>::first_chunk::<8>) {
            let w = u64::from_le_bytes(*chunk);
            let special = ((w.wrapping_sub(ONES * 0x20) & !w) | w.wrapping_add(ONES) | w) & HIGH;
            if special != 0 {
                at += (special.trailing_zeros() / 8) as usize;
                break;
            }
            at += 8;
        }
        while buf.get(at).is_some_and(|b| (b' '..=b'~').contains(b)) {
            at += 1;
        }
        if buf.get(at) != Some(&b'\t') {
            return at;
        }
        at += 1;
    }
}

/// Whether `name`, of bytes in `!`..=`~` but `:` (as [`word_end`] leaves a name), is a token:
/// eight bytes a step while they are letters, digits and `-` (nearly every name), the rest
/// looked up in [`TOKEN`] a byte at a time (~6 instructions a byte; an SDK's request head has
/// ~220 bytes of names no `Field` is).
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
