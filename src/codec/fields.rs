//! Field-level helpers shared by the request and response head parsers: token lists, number
//! syntax, httparse error mapping, and turning httparse's borrowed slices into spans and `Bytes`.
//!
//! Invariant: nothing here indexes untrusted input directly; every slice goes through `get`.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};

use super::head::HeadError;

/// 1..=19 ASCII digits, nothing else (no sign, no spaces inside, no list): 19 digits always fit
/// in a u64, and anything longer is no body we would accept anyway.
pub(crate) fn parse_content_length(value: &[u8]) -> Option<u64> {
    let v = trim_ows(value);
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Strip optional whitespace (SP / HTAB) at both ends.
pub(crate) fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    v.get(start..end).unwrap_or(&[])
}

/// Whether the comma-separated list `value` holds `token` (ASCII case-insensitive).
pub(crate) fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| trim_ows(t).eq_ignore_ascii_case(token))
}

/// Header slots kept on the stack; a `max_headers` above this spills to the heap.
pub(crate) const INLINE_SLOTS: usize = 128;

/// The first `n` of `inline`, or `n` slots in `spill` when `n` does not fit.
pub(crate) fn header_slots<'s, 'b>(
    inline: &'s mut [MaybeUninit<httparse::Header<'b>>; INLINE_SLOTS],
    spill: &'s mut Vec<MaybeUninit<httparse::Header<'b>>>,
    n: usize,
) -> &'s mut [MaybeUninit<httparse::Header<'b>>] {
    if n <= INLINE_SLOTS {
        inline.get_mut(..n).unwrap_or_default()
    } else {
        spill.resize_with(n, MaybeUninit::uninit);
        spill
    }
}

/// Drop empty lines (CRLF only) before a start line.
pub(crate) fn skip_leading_empty_lines(buf: &mut BytesMut) {
    let n = buf.chunks(2).take_while(|c| *c == b"\r\n").count() * 2;
    if n > 0 {
        let _ = buf.split_to(n);
    }
}

/// Whether any LF in `head` is not preceded by CR.
pub(crate) fn has_bare_lf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head.get(i - 1) != Some(&b'\r'))
}

/// Map an httparse error to a status: 431 for too many headers, 505 for a version that is not
/// HTTP/1.0 or 1.1, `other` (400 downstream, 502 upstream) for the rest.
pub(crate) fn map_httparse_error(e: httparse::Error, other: u16) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders if other == 400 => HeadError::new(431, "too many headers"),
        httparse::Error::TooManyHeaders => HeadError::new(other, "too many headers"),
        httparse::Error::Version if other == 400 => HeadError::new(505, "HTTP version not supported"),
        httparse::Error::Version => HeadError::new(other, "unsupported HTTP version"),
        httparse::Error::HeaderName => HeadError::new(other, "invalid header name"),
        httparse::Error::HeaderValue => HeadError::new(other, "invalid header value"),
        httparse::Error::NewLine => HeadError::new(other, "invalid line ending"),
        httparse::Error::Status => HeadError::new(other, "invalid status line"),
        httparse::Error::Token => HeadError::new(other, "invalid token in start line"),
    }
}

/// Byte range of `part` inside the buffer starting at `base` (`part` borrows from it).
pub(crate) fn range_in(base: usize, part: &[u8]) -> std::ops::Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(base);
    start..start.saturating_add(part.len())
}

/// `head.slice(r)` that cannot panic: an out-of-range span (impossible when it came from
/// [`range_in`] on the same buffer) yields an empty `Bytes`.
pub(crate) fn sub(head: &Bytes, r: std::ops::Range<usize>) -> Bytes {
    if r.start <= r.end && r.end <= head.len() {
        head.slice(r)
    } else {
        Bytes::new()
    }
}
