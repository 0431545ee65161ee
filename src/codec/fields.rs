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
    v.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
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

/// Whether any LF in `head` is not preceded by CR. Sixteen bytes at a time with no branch per
/// line: a byte is a bare LF when it is LF and the byte before (the previous block's last one
/// at a block's start) is not CR; the last partial block is padded with NUL, neither CR nor LF.
/// It replaced a `memchr` per line (issue 18).
pub(crate) fn has_bare_lf(head: &[u8]) -> bool {
    let mut blocks = head.chunks_exact(16);
    // Bit 0: the byte before the block is CR (nothing precedes the head: not CR).
    let mut cr_before = 0u32;
    let mut bare = 0u32;
    for block in blocks.by_ref() {
        let (lf, cr) = lf_cr16(block.try_into().unwrap_or(&[0; 16]));
        bare |= lf & !(cr << 1 | cr_before);
        cr_before = cr >> 15;
    }
    let rest = blocks.remainder();
    if !rest.is_empty() {
        let mut block = [0u8; 16];
        if let Some(front) = block.get_mut(..rest.len()) {
            front.copy_from_slice(rest);
        }
        let (lf, cr) = lf_cr16(&block);
        bare |= lf & !(cr << 1 | cr_before);
    }
    bare != 0
}

/// Bit `i` of the first answer: byte `i` is LF; of the second: byte `i` is CR. SSE2 (x86-64
/// baseline) through sonic-simd, as `scan::special16`.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn lf_cr16(block: &[u8; 16]) -> (u32, u32) {
    use sonic_simd::{i8x16, Mask, Simd};
    // SAFETY: `block` is 16 readable bytes, exactly one `i8x16`; `loadu` allows any alignment.
    // No safe way: std's portable SIMD is unstable, and the word-at-a-time `lf_cr16_swar` below
    // takes ~3x the instructions.
    let v = unsafe { i8x16::loadu(block.as_ptr()) };
    let lf = u32::from(v.eq(&i8x16::splat(b'\n' as i8)).bitmask());
    let cr = u32::from(v.eq(&i8x16::splat(b'\r' as i8)).bitmask());
    (lf, cr)
}

#[cfg(not(target_arch = "x86_64"))]
fn lf_cr16(block: &[u8; 16]) -> (u32, u32) {
    lf_cr16_swar(block)
}

/// `lf_cr16` eight bytes at a time in a `u64` (portable; tested against the SSE2 one).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn lf_cr16_swar(block: &[u8; 16]) -> (u32, u32) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    // The high bit of each lane whose byte is zero, exactly (no borrow between lanes).
    let zero = |x: u64| !(((x & LOW7) + LOW7) | x) & !LOW7;
    let pack = |flags: u64| {
        (0..8).fold(0u32, |bits, lane| {
            bits | (((flags >> (lane * 8 + 7)) & 1) as u32) << lane
        })
    };
    let half = |x: u64| (pack(zero(x ^ (ONES * 0x0a))), pack(zero(x ^ (ONES * 0x0d))));
    let (lo, hi) = block.split_at(8);
    let word = |h: &[u8]| u64::from_le_bytes(h.try_into().unwrap_or([0; 8]));
    let (lf_lo, cr_lo) = half(word(lo));
    let (lf_hi, cr_hi) = half(word(hi));
    (lf_lo | lf_hi << 8, cr_lo | cr_hi << 8)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: a byte-by-byte walk.
    fn bare_lf_bytewise(head: &[u8]) -> bool {
        (0..head.len()).any(|i| head[i] == b'\n' && (i == 0 || head[i - 1] != b'\r'))
    }

    #[test]
    fn bare_lf_agrees_with_a_byte_walk_at_every_position() {
        // Every length up to three blocks, with the LF (bare, after CR) at every offset, so the
        // block edges and the padded tail are all crossed; bytes near CR and LF as filler.
        for len in 0..48 {
            for at in 0..len {
                for filler in [b'a', 0x8a, 0x8d, 0x0b, 0x0c, 0x2d, 0x00] {
                    let mut head = vec![filler; len];
                    head[at] = b'\n';
                    assert_eq!(has_bare_lf(&head), bare_lf_bytewise(&head), "{head:?}");
                    if at > 0 {
                        head[at - 1] = b'\r';
                        assert_eq!(has_bare_lf(&head), bare_lf_bytewise(&head), "{head:?}");
                        assert!(!has_bare_lf(&head), "{head:?}");
                    }
                }
            }
        }
        assert!(!has_bare_lf(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(has_bare_lf(b"GET / HTTP/1.1\r\nHost: a\n\r\n"));
        assert!(has_bare_lf(b"\n"));
        assert!(!has_bare_lf(b"\r"));
    }

    #[test]
    fn the_word_at_a_time_masks_match_the_sse2_ones() {
        let mut block = [0u8; 16];
        for seed in 0u32..4096 {
            for (i, b) in block.iter_mut().enumerate() {
                let pick = (seed.wrapping_mul(2_654_435_761) >> (i % 13)) as usize % 6;
                *b = [b'\n', b'\r', b'a', 0x8a, 0x8d, 0x0c][pick];
            }
            let want = (0..16).fold((0u32, 0u32), |(lf, cr), i| {
                (
                    lf | u32::from(block[i] == b'\n') << i,
                    cr | u32::from(block[i] == b'\r') << i,
                )
            });
            assert_eq!(lf_cr16_swar(&block), want, "{block:?}");
            assert_eq!(lf_cr16(&block), want, "{block:?}");
        }
    }
}
