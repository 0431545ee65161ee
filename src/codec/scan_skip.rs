//! The block skip of `codec::scan`: an array or object read to its end 64 bytes at a time, the
//! way simdjson's stage 1 does (quote, backslash, control, whitespace and non-ASCII bytes as
//! bitmasks, strings found with the prefix-xor of the unescaped quotes), then one grammar step
//! per structural byte, string and scalar instead of a byte-at-a-time walk (`Cursor::skip`'s
//! byte walk cost ~860 instructions for the bench body's `messages`: callgrind, issue 18).
//! Invariant: this is only a shortcut of the byte walk. It answers `Some` only for a value the
//! byte walk accepts, with the same end position, depth and `non_ascii`; anything it does not
//! decide (a control byte or an escape the byte walk refuses, the nesting limit, any grammar
//! error, the body's end) is `None` with the cursor untouched, and the byte walk reads the value
//! again and gives the answer.

use super::super::depth::{escaped, load, prefix_xor};
use super::Cursor;
use sonic_simd::{u8x64, Mask, Simd};

/// What the grammar allows at the next structural byte, string or scalar.
#[derive(Clone, Copy)]
enum Want {
    Value,
    /// Just after `[`.
    ValueOrClose,
    Key,
    /// Just after `{`.
    KeyOrClose,
    Colon,
    /// After a value: `,` or the closer of the innermost container.
    Next,
}

/// One block's bytes as bitmasks (bit `i` = byte `i`).
#[derive(Default, Debug, PartialEq)]
struct Classes {
    quotes: u64,
    backslashes: u64,
    spaces: u64,
    controls: u64,
    non_ascii: u64,
}

impl<'a> Cursor<'a> {
    /// `skip` for a value at an opening `[` or `{` (whitespace already read): `Some` with the
    /// cursor past its end, or `None` (nothing changed) when the byte walk must decide.
    pub(super) fn skip_blocks(&mut self) -> Option<()> {
        let start = self.at;
        let found = self.walk_blocks();
        if found.is_none() {
            self.at = start;
        }
        found
    }

    fn walk_blocks(&mut self) -> Option<()> {
        let base = self.depth;
        let mut depth = base;
        // The open containers, innermost in bit 0 (1 = object); `depth < limit <= 64`.
        let mut objects: u64 = 0;
        let mut want = Want::Value;
        let (mut in_string, mut escape_carry, mut non_ascii) = (0u64, 0u64, false);
        // Bytes before this were read by a scalar: their bits are not steps.
        let mut resume = self.at;
        // The last key's opening quote, and 1 + the position of the last backslash in the
        // blocks before this one (0: none): the byte walk leaves keys with escapes undecided.
        let (mut key_quote, mut last_backslash) = (0usize, 0usize);
        let mut offset = self.at;
        loop {
            let mut padded = [0u8; 64];
            let block = block_at(self.bytes, offset, &mut padded)?;
            let c = classify(block);
            let escaped = escaped(c.backslashes, &mut escape_carry);
            let quotes = c.quotes & !escaped;
            let inside = prefix_xor(quotes) ^ in_string;
            in_string = ((inside as i64) >> 63) as u64;
            // Whitespace outside strings (tab, LF, CR only when a control byte is there at all).
            let mut blank = c.spaces;
            if c.controls != 0 {
                blank |= c.controls & json_whitespace(block) & !inside;
            }
            // Refused by the byte walk (or the padding past the end): stop before the first.
            let mut bad = c.controls & !blank;
            if escaped != 0 {
                bad |= escaped & !valid_escapes(block);
            }
            let before_bad = match bad {
                0 => u64::MAX,
                _ => (1u64 << bad.trailing_zeros()) - 1,
            };
            // A step per opening quote and per other non-blank byte outside strings.
            let mut steps = ((!inside & !blank & !quotes) | (quotes & inside)) & before_bad;
            steps &= from(resume.saturating_sub(offset));
            while steps != 0 {
                let lane = steps.trailing_zeros() as usize;
                steps &= steps - 1;
                let at = offset + lane;
                let byte = *block.get(lane & 63)?;
                want = match (want, byte) {
                    (Want::Value | Want::ValueOrClose, b'"') => Want::Next,
                    (Want::Value | Want::ValueOrClose, b'{' | b'[') => {
                        depth += 1;
                        if depth >= self.limit {
                            return None;
                        }
                        let object = byte == b'{';
                        objects = objects << 1 | u64::from(object);
                        if object {
                            Want::KeyOrClose
                        } else {
                            Want::ValueOrClose
                        }
                    }
                    (Want::Next | Want::ValueOrClose | Want::KeyOrClose, b']' | b'}') => {
                        if (byte == b'}') != (objects & 1 == 1) {
                            return None;
                        }
                        objects >>= 1;
                        depth -= 1;
                        if depth == base {
                            let read = (2u64 << lane).wrapping_sub(1);
                            self.non_ascii |= non_ascii || c.non_ascii & read != 0;
                            self.at = at + 1;
                            return Some(());
                        }
                        Want::Next
                    }
                    (Want::Value | Want::ValueOrClose, _) => {
                        self.at = at;
                        match byte {
                            b't' | b'f' | b'n' => self.literal().map(drop)?,
                            _ => self.number()?,
                        }
                        resume = self.at;
                        steps &= from(resume - offset);
                        Want::Next
                    }
                    (Want::Key | Want::KeyOrClose, b'"') => {
                        key_quote = at;
                        Want::Colon
                    }
                    (Want::Colon, b':') => {
                        let below = c.backslashes & ((1u64 << lane) - 1);
                        let last = match below {
                            0 => last_backslash,
                            _ => offset + 64 - below.leading_zeros() as usize,
                        };
                        if last > key_quote + 1 {
                            return None;
                        }
                        Want::Value
                    }
                    (Want::Next, b',') if objects & 1 == 1 => Want::Key,
                    (Want::Next, b',') => Want::Value,
                    _ => return None,
                };
            }
            if bad != 0 {
                return None;
            }
            non_ascii |= c.non_ascii != 0;
            if c.backslashes != 0 {
                last_backslash = offset + 64 - c.backslashes.leading_zeros() as usize;
            }
            offset += 64;
        }
    }
}

/// The bits at and above `bit` (none from 64 on).
fn from(bit: usize) -> u64 {
    u64::MAX.checked_shl(bit as u32).unwrap_or(0)
}

/// The 64 bytes at `offset`, or what is left of them followed by NUL bytes (control bytes, so
/// a walk stops at the body's end); `None` past the end.
fn block_at<'b>(bytes: &'b [u8], offset: usize, padded: &'b mut [u8; 64]) -> Option<&'b [u8; 64]> {
    let rest = bytes.get(offset..)?;
    if let Some(block) = rest.first_chunk::<64>() {
        return Some(block);
    }
    padded.get_mut(..rest.len())?.copy_from_slice(rest);
    Some(padded)
}

/// The block's bitmasks, 16 bytes at a time with SSE2 (part of x86-64).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn classify(block: &[u8; 64]) -> Classes {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    let mask = |v: __m128i| -> u64 {
        // SAFETY: SSE2 is part of every x86-64 target.
        u64::from(unsafe { _mm_movemask_epi8(v) } as u16)
    };
    let mut c = Classes::default();
    for (i, part) in block.chunks_exact(16).enumerate() {
        // SAFETY: `part` is 16 readable bytes; `loadu` allows any alignment; the rest is SSE2.
        let (v, quote, backslash, low, control) = unsafe {
            let v = _mm_loadu_si128(part.as_ptr().cast());
            let is = |byte: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(byte as i8));
            // Signed lanes: bytes >= 0x80 are negative, so they pass `<` too and are masked out.
            (
                v,
                is(b'"'),
                is(b'\\'),
                _mm_cmplt_epi8(v, _mm_set1_epi8(0x21)),
                _mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
            )
        };
        let shift = 16 * i;
        let high = mask(v);
        c.quotes |= mask(quote) << shift;
        c.backslashes |= mask(backslash) << shift;
        c.spaces |= (mask(low) & !high) << shift;
        c.controls |= (mask(control) & !high) << shift;
        c.non_ascii |= high << shift;
    }
    // `spaces` holds every byte <= 0x20; a control byte is told apart by `controls`.
    c.spaces &= !c.controls;
    c
}

/// `classify` a byte at a time (other targets; the SSE2 one is tested against it).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn classify_bytes(block: &[u8; 64]) -> Classes {
    let mut c = Classes::default();
    for (i, &b) in block.iter().enumerate() {
        let bit = 1u64 << i;
        let set = |mask: &mut u64, yes: bool| *mask |= if yes { bit } else { 0 };
        set(&mut c.quotes, b == b'"');
        set(&mut c.backslashes, b == b'\\');
        set(&mut c.spaces, b == b' ');
        set(&mut c.controls, b < 0x20);
        set(&mut c.non_ascii, b >= 0x80);
    }
    c
}

#[cfg(not(target_arch = "x86_64"))]
fn classify(block: &[u8; 64]) -> Classes {
    classify_bytes(block)
}

/// Tab, LF and CR: the control bytes JSON allows between tokens.
fn json_whitespace(block: &[u8; 64]) -> u64 {
    let v = load(block);
    (v.eq(&u8x64::splat(b'\t')) | v.eq(&u8x64::splat(b'\n')) | v.eq(&u8x64::splat(b'\r'))).bitmask()
}

/// Bytes the byte walk reads after a backslash (`\u` is left to the full parser).
fn valid_escapes(block: &[u8; 64]) -> u64 {
    let v = load(block);
    b"\"\\/bfnrt"
        .iter()
        .fold(0, |all, &byte| all | v.eq(&u8x64::splat(byte)).bitmask())
}

#[cfg(test)]
#[path = "scan_skip_tests.rs"]
mod tests;
