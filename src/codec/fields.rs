//! Field-level helpers shared by the request and response head parsers: token lists, number
//! syntax, httparse error mapping, and turning httparse's borrowed slices into spans.
//!
//! Invariant: nothing here indexes untrusted input directly; every slice goes through `get`.

use std::mem::MaybeUninit;

use bytes::BytesMut;

use super::head::HeadError;

/// 1..=19 ASCII digits, nothing else (no sign, no spaces inside, no list): 19 digits always fit
/// in a u64, and anything longer is no body we would accept anyway.
pub(crate) fn parse_content_length(value: &[u8]) -> Option<u64> {
    let v = trim_ows(value);
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    // By hand, without overflow checks (19 digits cannot overflow): the checked fold took ~70
    // instructions for a 3-digit length (callgrind, issue 18).
    let mut n = 0u64;
    for &b in v {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        n = n * 10 + u64::from(digit);
    }
    Some(n)
}

/// Strip optional whitespace (SP / HTAB) at both ends. Most values have none: two compares.
pub(crate) fn trim_ows(v: &[u8]) -> &[u8] {
    let ows = |b: &u8| matches!(b, b' ' | b'\t');
    if v.first().is_some_and(|b| !ows(b)) && v.last().is_some_and(|b| !ows(b)) {
        return v;
    }
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    v.get(start..end).unwrap_or(&[])
}

/// What a head's `Connection` fields say about the connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ConnectionOptions {
    pub close: bool,
    pub keep_alive: bool,
}

/// Whether the comma-separated lists `values` (every `Connection` field of a head) hold
/// `close` and `keep-alive`, ASCII case-insensitively: one pass over the tokens for both (a
/// walk for each, split and trimmed twice, cost ~190 instructions per `Connection:
/// keep-alive`, which SDKs send and providers answer with; callgrind, issue 18).
#[inline]
pub(crate) fn connection_options<'a>(values: impl Iterator<Item = &'a [u8]>) -> ConnectionOptions {
    let mut options = ConnectionOptions::default();
    // Two loops rather than `flat_map` (its set-up cost ~25 instructions a head).
    for value in values {
        // Nearly every value is the one word `keep-alive` (what HTTP clients and SDKs send, and
        // providers answer with) or `close`: compared whole, where the split, the trim and two
        // byte-wise compares took ~240 instructions for `keep-alive` (callgrind, SDK=1).
        match one_option(value) {
            Some(OneOption::KeepAlive) => options.keep_alive = true,
            Some(OneOption::Close) => options.close = true,
            None => options = tokens(value, options),
        }
    }
    options
}

enum OneOption {
    KeepAlive,
    Close,
}

/// Whether `value` is exactly `keep-alive` or `close`, ASCII case-insensitively, in one or two
/// word compares. With the case bit set in every byte (`| 0x20`), only a letter's two cases
/// meet, and `-` (which CR would meet) is compared as it is.
#[inline]
fn one_option(value: &[u8]) -> Option<OneOption> {
    const FOLD: u64 = u64::from_le_bytes([0x20; 8]);
    let word = |bytes: &[u8; 8]| u64::from_le_bytes(*bytes) | FOLD;
    match value.len() {
        10 => {
            let (head, tail) = value.split_first_chunk::<8>()?;
            let tail = u16::from_le_bytes(*tail.first_chunk::<2>()?) | 0x2020;
            let dash = head.get(4) == Some(&b'-');
            (word(head) == u64::from_le_bytes(*b"keep-ali") && tail == u16::from_le_bytes(*b"ve") && dash)
                .then_some(OneOption::KeepAlive)
        }
        5 => {
            let (head, tail) = value.split_first_chunk::<4>()?;
            let head = u32::from_le_bytes(*head) | 0x2020_2020;
            (head == u32::from_le_bytes(*b"clos") && tail.first().map(|b| b | 0x20) == Some(b'e'))
                .then_some(OneOption::Close)
        }
        _ => None,
    }
}

/// [`connection_options`] of one list, token by token, added to `options`.
fn tokens(value: &[u8], mut options: ConnectionOptions) -> ConnectionOptions {
    for token in value.split(|&b| b == b',') {
        let token = trim_ows(token);
        options.close |= token.eq_ignore_ascii_case(b"close");
        options.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
    }
    options
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

/// A byte table true for ASCII letters and digits and for each byte of `extra` (the token and
/// target tables of `quick` and `origin_form`).
pub(super) const fn alphanumeric_and(extra: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    let mut b = 0;
    while b < 256 {
        table[b] |= (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One pass over the lists answers as a walk over every list for each token would, on
    /// lists built at random from the tokens, near misses (a byte that differs in its case bit
    /// only where the case bit may not differ too), separators and whitespace; a list of one
    /// piece is a whole value, which the word compares read.
    #[test]
    fn connection_options_read_every_token_of_every_list() {
        let has_token = |values: &[Vec<u8>], token: &[u8]| {
            values
                .iter()
                .any(|v| v.split(|&b| b == b',').any(|t| trim_ows(t).eq_ignore_ascii_case(token)))
        };
        let pieces: &[&[u8]] = &[
            b"close",
            b"CLOSE",
            b"Keep-Alive",
            b"keep-alive",
            b"keep-alivex",
            b"KEEP-ALIVE",
            b"keep\ralive",
            b"keep\x0dALIVE",
            b"kEEp-alivE",
            b"ClOsE",
            b"clos\xc5",
            b"Close",
            b"clos",
            b"upgrade",
            b",",
            b", ",
            b" ",
            b"\t",
            b"x",
        ];
        let mut rng = fastrand::Rng::with_seed(18);
        for _ in 0..20_000 {
            let values: Vec<Vec<u8>> = (0..rng.usize(0..3))
                .map(|_| {
                    (0..rng.usize(0..5))
                        .flat_map(|_| pieces[rng.usize(..pieces.len())].to_vec())
                        .collect()
                })
                .collect();
            let want = ConnectionOptions {
                close: has_token(&values, b"close"),
                keep_alive: has_token(&values, b"keep-alive"),
            };
            assert_eq!(connection_options(values.iter().map(Vec::as_slice)), want, "{values:?}");
        }
    }

    /// The whole-value compares answer as the token walk for every byte value at every place of
    /// `keep-alive` and `close`.
    #[test]
    fn one_word_values_read_as_the_token_walk() {
        for word in [&b"keep-alive"[..], b"close"] {
            for at in 0..word.len() {
                for byte in 0..=255u8 {
                    let mut near = word.to_vec();
                    near[at] = byte;
                    let want = tokens(&near, ConnectionOptions::default());
                    assert_eq!(connection_options([&near[..]].into_iter()), want, "{near:?}");
                }
            }
        }
    }

    /// The hand-written digit loop reads exactly what `str::parse` reads from 1..=19 digits.
    #[test]
    fn content_length_digits_as_str_parse_reads_them() {
        let want = |v: &str| {
            let t = v.trim_matches([' ', '\t']);
            let digits = !t.is_empty() && t.len() <= 19 && t.bytes().all(|b| b.is_ascii_digit());
            digits.then(|| t.parse::<u64>().unwrap())
        };
        for v in [
            "0",
            "7",
            " 170",
            "170\t",
            "00012",
            "9999999999999999999",
            "18446744073709551615",
            "12a",
            "1 2",
            "+5",
            "-1",
            "",
            " ",
            "0x10",
            "1,1",
            "/",
            ":",
            "\u{663}",
        ] {
            assert_eq!(parse_content_length(v.as_bytes()), want(v), "{v:?}");
        }
    }
}
