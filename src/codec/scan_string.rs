//! The string scan of `codec::scan`: a JSON string read to its closing quote sixteen bytes at
//! a time (SSE2 through sonic-simd, or a word-at-a-time fallback), stopping only at a quote,
//! backslash or control byte. The structural walk (objects, arrays, numbers, literals) and what
//! is read from a body stay in `scan`.
//! Invariant: as `scan`'s: a string is decided here only when the full parser reads it the same
//! (no `\u` escape, no control byte), and the position past a body's end is never handed out.

use super::Cursor;

impl<'a> Cursor<'a> {
    /// Whitespace, then a string; the bytes between its quotes and whether it has escapes.
    #[inline]
    pub(crate) fn string(&mut self) -> Option<(&'a [u8], bool)> {
        self.eat(b'"')?;
        self.string_after_quote()
    }

    /// `string` from just past its opening quote.
    #[inline]
    pub(super) fn string_after_quote(&mut self) -> Option<(&'a [u8], bool)> {
        let start = self.at;
        // Most strings (keys, names, short values) close within the 16 bytes after their quote
        // with nothing special before: one block, no loop and no call.
        if let Some(block) = self.bytes.get(start..).and_then(|rest| rest.first_chunk::<16>()) {
            let (stop, high) = special16(block);
            let lane = stop.trailing_zeros();
            if stop == 0 {
                // Plain text throughout: `string_rest` reads on after this block, not from it.
                self.non_ascii |= high != 0;
                self.at = start + 16;
            } else if block.get(lane as usize) == Some(&b'"') {
                self.non_ascii |= high & ((1u32 << lane) - 1) != 0;
                self.at = start + lane as usize + 1;
                return Some((self.bytes.get(start..self.at - 1)?, false));
            }
        }
        self.string_rest(start)
    }

    /// `string` from `start` (just past the opening quote) on, for longer strings and escapes.
    #[inline(never)]
    fn string_rest(&mut self, start: usize) -> Option<(&'a [u8], bool)> {
        let mut escaped = false;
        loop {
            // Plain text (non-ASCII included) is skipped 16 bytes at a time to the next quote,
            // backslash or control byte; only those are looked at one by one.
            self.at = next_special(self.bytes, self.at, &mut self.non_ascii)?;
            let b = self.peek()?;
            self.at += 1;
            match b {
                b'"' => return Some((self.bytes.get(start..self.at - 1)?, escaped)),
                b'\\' => {
                    escaped = true;
                    // `\u` escapes (surrogates) are left to the full parser.
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
                        _ => return None,
                    }
                }
                // A control byte: the full parser refuses it.
                _ => return None,
            }
        }
    }
}

/// The position of the first `"`, `\\` or control byte (< 0x20) at or after `at`; `None` when
/// the body ends first. Sets `non_ascii` when a byte >= 0x80 comes before it. Sixteen bytes at
/// a time (SSE2 or NEON through sonic-simd); the last partial block is copied into one padded
/// with NUL, a control byte, so the scan stops there and the position past the end is refused.
pub(super) fn next_special(bytes: &[u8], mut at: usize, non_ascii: &mut bool) -> Option<usize> {
    loop {
        let rest = bytes.get(at..)?;
        let (stop, high) = match rest.first_chunk::<16>() {
            Some(block) => special16(block),
            None => {
                let mut block = [0u8; 16];
                block.get_mut(..rest.len())?.copy_from_slice(rest);
                special16(&block)
            }
        };
        if stop == 0 {
            *non_ascii |= high != 0;
            at += 16;
            continue;
        }
        let lane = stop.trailing_zeros();
        *non_ascii |= high & ((1u32 << lane) - 1) != 0;
        let found = at + lane as usize;
        return (found < bytes.len()).then_some(found);
    }
}

/// Bit `i` of the first answer: byte `i` is `"`, `\\` or a control byte; of the second: byte `i`
/// is >= 0x80. SSE2 (x86-64 baseline) through sonic-simd.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub(super) fn special16(block: &[u8; 16]) -> (u32, u32) {
    use sonic_simd::{i8x16, Mask, Simd};
    // SAFETY: `block` is 16 readable bytes, exactly one `i8x16`; `loadu` allows any alignment.
    let v = unsafe { i8x16::loadu(block.as_ptr()) };
    // Signed lanes: a byte >= 0x80 is negative, so `> 0x1f` fails for controls and non-ASCII.
    let printable = u32::from(v.gt(&i8x16::splat(0x1f)).bitmask());
    let high = u32::from(v.gt(&i8x16::splat(-1)).bitmask()) ^ 0xffff;
    let quote = u32::from((v.eq(&i8x16::splat(b'"' as i8)) | v.eq(&i8x16::splat(b'\\' as i8))).bitmask());
    let control = !printable & !high & 0xffff;
    (quote | control, high)
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn special16(block: &[u8; 16]) -> (u32, u32) {
    special16_swar(block)
}

/// `special16` eight bytes at a time in a `u64` (portable; tested against the SSE2 one).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
pub(super) fn special16_swar(block: &[u8; 16]) -> (u32, u32) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A lane is flagged (high bit) when its byte is zero (Mycroft's test; a false flag only
    // ever sits above a true one, so the lowest flag is exact, and ASCII lanes are exact).
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    // The high bit of each lane, packed into bit `lane`.
    let pack = |flags: u64| {
        let mut bits = 0u32;
        for lane in 0..8 {
            bits |= (((flags >> (lane * 8 + 7)) & 1) as u32) << lane;
        }
        bits
    };
    let half = |x: u64| {
        let high = x & HIGH;
        // Lanes >= 0x80 are masked out of the control test (their bits 5-7 are not all zero).
        let stop = zero(x & 0xe0e0_e0e0_e0e0_e0e0) | zero(x ^ (ONES * 0x22)) | zero(x ^ (ONES * 0x5c));
        // Only flags below the first true one are exact: keep the lowest.
        (pack(stop & stop.wrapping_neg()), pack(high))
    };
    let (lo, hi) = block.split_at(8);
    let word = |h: &[u8]| u64::from_le_bytes(h.try_into().unwrap_or([0; 8]));
    let (stop_lo, high_lo) = half(word(lo));
    let (stop_hi, high_hi) = half(word(hi));
    (stop_lo | stop_hi << 8, high_lo | high_hi << 8)
}
