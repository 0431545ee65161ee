//! The request-target check of `head`: an origin-form target (`/path?query`) holds RFC 3986
//! characters only (pchar, `/`, `?`, well-formed `%XX`), and where its path ends.
//!
//! Invariant: `path_end` answers as the byte table `ORIGIN_FORM` read a byte at a time (a test
//! holds the word steps to it for every byte at every place). httparse lets through more (`"`,
//! `{`, `|`, backtick, ...); routing and logging should never meet those raw, and a front proxy
//! may normalise them differently.

use super::fields::alphanumeric_and;

/// Where the path of `target` ends (its first `?`, else its length) when every byte of it is
/// allowed in an origin-form target; `None` otherwise. Sixteen bytes a step while they are path
/// letters ([`plain16`]: nearly every path is, and a last step overlapping the one before takes
/// the rest), then one table look-up a byte; only `%` and `?` are looked at further, so the
/// path's end comes with the check instead of a `memchr` of its own. A byte at a time, a
/// 20-byte chat path cost ~190 instructions (callgrind, issue 18).
pub(super) fn path_end(target: &[u8]) -> Option<usize> {
    let mut i = 0;
    let mut plain = true;
    while let Some(block) = target.get(i..).and_then(<[u8]>::first_chunk::<16>) {
        plain = plain16(block);
        if !plain {
            break;
        }
        i += 16;
    }
    // Every step so far was plain, and fewer than 16 bytes are left: the last 16 cover them.
    if plain && i > 0 && target.last_chunk::<16>().is_some_and(plain16) {
        i = target.len();
    }
    let mut query = None;
    while let Some(&b) = target.get(i) {
        if ORIGIN_FORM[usize::from(b)] {
            i += 1;
            continue;
        }
        if b == b'?' {
            query = query.or(Some(i));
            i += 1;
            continue;
        }
        let hex = |j: usize| target.get(j).is_some_and(|h| h.is_ascii_hexdigit());
        if b != b'%' || !hex(i + 1) || !hex(i + 2) {
            return None;
        }
        i += 3;
    }
    Some(query.unwrap_or(target.len()))
}

/// Whether `target` is an origin-form target's bytes (see [`path_end`]).
#[cfg(test)]
pub(super) fn valid(target: &[u8]) -> bool {
    path_end(target).is_some()
}

/// Whether each of sixteen bytes is a letter, a digit, `-`, `.`, `/` or `_` (all allowed raw
/// in a path): SSE2 on x86-64 (its baseline), else [`plain_word`] twice.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[inline]
fn plain16(block: &[u8; 16]) -> bool {
    // SAFETY: every x86-64 CPU has SSE2 (the target's baseline, enabled in every build).
    unsafe { plain16_sse2(block) }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn plain16(block: &[u8; 16]) -> bool {
    let (low, high) = block.split_at(8);
    let word = |half: &[u8]| half.first_chunk::<8>().is_some_and(|w| plain_word(*w));
    word(low) && word(high)
}

/// [`plain16`] with SSE2. Signed lanes: a byte of 0x80 or more is negative, so above no bound.
/// With the case bit set (`| 0x20`) the bytes above SP land letters in `a`..=`z`, `-./` and
/// digits in `-`..=`9`, and `_` and DEL on 0x7F (DEL is then ruled out by itself).
///
/// # Safety
/// The CPU has SSE2 (every x86-64 CPU does).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
#[allow(unsafe_code)]
unsafe fn plain16_sse2(block: &[u8; 16]) -> bool {
    use std::arch::x86_64::{
        _mm_and_si128 as and, _mm_andnot_si128 as and_not, _mm_cmpeq_epi8 as eq, _mm_cmpgt_epi8 as gt, _mm_loadu_si128,
        _mm_movemask_epi8 as bits, _mm_or_si128 as or, _mm_set1_epi8 as splat,
    };
    // SAFETY: `block` is 16 readable bytes, exactly one `__m128i`; `loadu` allows any alignment.
    let v = unsafe { _mm_loadu_si128(block.as_ptr().cast()) };
    let f = or(v, splat(0x20));
    let within = |lo: u8, hi: u8| and(gt(f, splat(lo as i8 - 1)), gt(splat(hi as i8 + 1), f));
    let path = or(or(within(b'a', b'z'), within(b'-', b'9')), eq(f, splat(0x7F)));
    let visible = and_not(eq(v, splat(0x7F)), gt(v, splat(b' ' as i8)));
    bits(and(path, visible)) == 0xFFFF
}

const ONES: u64 = u64::from_le_bytes([1; 8]);
const HIGH: u64 = ONES * 0x80;

/// Whether each of eight bytes is a letter, a digit, `-`, `.`, `/` or `_` (all allowed raw in
/// a path). Each byte below 0x80 (else no), with the case bit set (`| 0x20`) each is still below
/// 0x80, so adding `0x80 - lo` sets its top bit exactly when it is at least `lo` and adding
/// `0x7F - hi` exactly when it is above `hi`, with no carry into the next byte. Of the visible
/// bytes (`!`..=`~`, checked on the bytes as they are), the set bit lands exactly letters in
/// `a`..=`z`, `-`..=`9` (`-./` and digits) and `_` on 0x7F: the check is exact.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline]
fn plain_word(word: [u8; 8]) -> bool {
    let w = u64::from_le_bytes(word);
    let f = w | (ONES * 0x20);
    let at_least = |x: u64, lo: u8| x.wrapping_add(ONES * u64::from(0x80 - lo));
    let above = |x: u64, hi: u8| x.wrapping_add(ONES * u64::from(0x7F - hi));
    let visible = at_least(w, b'!') & !above(w, b'~');
    let letter = at_least(f, b'a') & !above(f, b'z');
    let punctuation_or_digit = at_least(f, b'-') & !above(f, b'9');
    let underscore = at_least(f, 0x7F);
    w & HIGH == 0 && (letter | punctuation_or_digit | underscore) & visible & HIGH == HIGH
}

/// The bytes allowed raw in an origin-form target but `?` (allowed too, and looked at by
/// `path_end`): unreserved, sub-delims, `:`, `@`, `/`.
pub(super) static ORIGIN_FORM: [bool; 256] = alphanumeric_and(b"-._~!$&'()*+,;=:@/");

#[cfg(test)]
mod tests {
    use super::*;

    /// `path_end` a byte at a time: the table alone (the reference for the word steps).
    fn path_end_bytes(target: &[u8]) -> Option<usize> {
        let mut query = None;
        let mut i = 0;
        while let Some(&b) = target.get(i) {
            if ORIGIN_FORM[usize::from(b)] {
                i += 1;
            } else if b == b'?' {
                query = query.or(Some(i));
                i += 1;
            } else if b == b'%'
                && target
                    .get(i + 1..i + 3)
                    .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
            {
                i += 3;
            } else {
                return None;
            }
        }
        Some(query.unwrap_or(target.len()))
    }

    /// The target check by table answers as the RFC 3986 character classes, for every byte
    /// alone, after a `/`, and as the first or second digit of a `%XX`.
    #[test]
    fn origin_form_table_matches_the_character_classes() {
        let raw_ok = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?".contains(&b);
        for b in 0..=255u8 {
            assert_eq!(valid(&[b'/', b]), raw_ok(b), "{b:#x}");
            assert_eq!(valid(&[b]), raw_ok(b), "{b:#x}");
            let hex = b.is_ascii_hexdigit();
            assert_eq!(valid(&[b'/', b'%', b, b'0']), hex, "{b:#x}");
            assert_eq!(valid(&[b'/', b'%', b'0', b, b'x']), hex, "{b:#x}");
        }
        assert!(!valid(b"/%4"));
        assert!(!valid(b"/%"));
        assert!(valid(b"/a%20b?c=%7E"));
    }

    /// The SSE2 step answers as the word steps and as the table, for every byte at every place.
    #[test]
    fn sixteen_byte_steps_answer_as_the_words_and_the_table() {
        let path = *b"/v1/chat/complet";
        for at in 0..16 {
            for byte in 0..=255u8 {
                let mut near = path;
                near[at] = byte;
                let table = near
                    .iter()
                    .all(|&b| b == b'_' || b.is_ascii_alphanumeric() || b"-./".contains(&b));
                assert_eq!(plain16(&near), table, "{near:?}");
                let (low, high) = near.split_at(8);
                let words = plain_word(low.try_into().unwrap()) && plain_word(high.try_into().unwrap());
                assert_eq!(words, table, "{near:?}");
            }
        }
    }

    /// Every byte value at every place of paths a word step reads (and of shorter ones), and
    /// random targets: the steps answer as the table.
    #[test]
    fn word_steps_answer_as_the_table() {
        let paths: &[&[u8]] = &[
            b"/v1/chat/completions",
            b"/v1beta/models/gemini-1.5-pro_x:generateContent",
            b"/ab",
        ];
        for path in paths {
            assert_eq!(path_end(path), Some(path.len()));
            for at in 0..path.len() {
                for byte in 0..=255u8 {
                    let mut near = path.to_vec();
                    near[at] = byte;
                    assert_eq!(path_end(&near), path_end_bytes(&near), "{near:?}");
                }
            }
        }
        let mut rng = fastrand::Rng::with_seed(3986);
        let alphabet = b"/azAZ09-._~?%=&:@\"{|}#^`[]\\<> \x7f\x80\xff\x00\x1f";
        for _ in 0..100_000 {
            let target: Vec<u8> = (0..rng.usize(0..40))
                .map(|_| {
                    if rng.bool() {
                        b'a'
                    } else {
                        alphabet[rng.usize(..alphabet.len())]
                    }
                })
                .collect();
            assert_eq!(path_end(&target), path_end_bytes(&target), "{target:?}");
        }
    }
}
