//! Byte needles the usage taps look for in every body and stream event, each searcher built once.
//! `memmem::find` builds a new searcher per call, which cost 2 % of a streaming proxy core
//! (`benches/profile.sh perf`, issue 7).

use std::sync::LazyLock;

use memchr::memmem::Finder;

macro_rules! needles {
    ($($(#[$doc:meta])* $name:ident = $bytes:expr;)*) => {
        $($(#[$doc])* pub(crate) static $name: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new($bytes));)*
    };
}

needles! {
    /// A `usage` key.
    USAGE = b"\"usage\"";
    /// The only JSON escape that can spell a letter of `usage` in a key (`\u0075sage`): text
    /// with neither this nor a plain `"usage"` has no usage member.
    LETTER_ESCAPE = b"\\u00";
    /// Gemini's usage member.
    USAGE_METADATA = b"\"usageMetadata\"";
    /// Anthropic's first stream event, when it arrives without an `event:` line.
    MESSAGE_START = b"\"message_start\"";
}

/// Whether `json` can have a member named `usage`: it holds `"usage"` or an escape that could
/// spell one of its letters. `false` is certain; `true` needs a parse to confirm.
pub(crate) fn may_name_usage(json: &[u8]) -> bool {
    USAGE.find(json).is_some() || LETTER_ESCAPE.find(json).is_some()
}

/// Where a stream event's first `"usage"` starts, and whether a `\u00` escape comes before it:
/// what `USAGE.find` and `LETTER_ESCAPE.find` answer together, in one pass.
///
/// Written by hand because a stream event is a few hundred bytes and both searches run on every
/// one: memchr's searchers cost about 190 instructions a call whatever the length, so the two
/// took 40 % of an event's cost (`benches/profile.sh callgrind`, CHUNKS=5 against CHUNKS=105).
/// This walks the event 16 bytes at a time for `u`, the letter both needles share, and looks at
/// each `u`'s neighbours. Whole bodies keep memchr, which is faster per byte on long text.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UsageMarks {
    /// Start of the first `"usage"` (its opening quote).
    pub first: Option<usize>,
    /// A `\u00` before `first` (anywhere, when there is no `"usage"`).
    pub escape: bool,
}

impl UsageMarks {
    /// `may_name_usage`'s answer for the same bytes.
    pub(crate) fn may_name_usage(self) -> bool {
        self.first.is_some() || self.escape
    }
}

pub(crate) fn usage_marks(json: &[u8]) -> UsageMarks {
    let mut marks = UsageMarks::default();
    for (block_no, block) in json.chunks(16).enumerate() {
        let mut lanes = u_lanes(block);
        while lanes != 0 {
            let at = block_no * 16 + lanes.trailing_zeros() as usize;
            lanes &= lanes - 1;
            let before = at.checked_sub(1).and_then(|b| json.get(b));
            let after = |n: usize| json.get(at + 1..at + 1 + n);
            match before {
                Some(b'"') if after(5) == Some(b"sage\"") => {
                    marks.first = Some(at - 1);
                    return marks;
                }
                Some(b'\\') if after(2) == Some(b"00") => marks.escape = true,
                _ => {}
            }
        }
    }
    marks
}

/// Bit `i`: byte `i` of `block` (at most 16 bytes) is `u`.
fn u_lanes(block: &[u8]) -> u32 {
    let mut padded = [0u8; 16];
    let full: &[u8; 16] = match block.try_into() {
        Ok(full) => full,
        Err(_) => {
            if let Some(head) = padded.get_mut(..block.len()) {
                head.copy_from_slice(block);
            }
            &padded
        }
    };
    u_lanes16(full)
}

/// SSE2 (x86-64 baseline) through sonic-simd.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn u_lanes16(block: &[u8; 16]) -> u32 {
    use sonic_simd::{i8x16, Mask, Simd};
    // SAFETY: `block` is 16 readable bytes, exactly one `i8x16`; `loadu` allows any alignment.
    let v = unsafe { i8x16::loadu(block.as_ptr()) };
    u32::from(v.eq(&i8x16::splat(b'u' as i8)).bitmask())
}

#[cfg(not(target_arch = "x86_64"))]
fn u_lanes16(block: &[u8; 16]) -> u32 {
    u_lanes_swar(block)
}

/// `u_lanes16` eight bytes at a time in a `u64` (portable; tested against the SSE2 one).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn u_lanes_swar(block: &[u8; 16]) -> u32 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let mut bits = 0u32;
    for (half, word) in block.chunks_exact(8).enumerate() {
        let x = u64::from_le_bytes(word.try_into().unwrap_or([0; 8])) ^ (u64::from(b'u') * 0x0101_0101_0101_0101);
        // Exact per lane: the high bit is set where the lane is non-zero.
        let nonzero = ((x & LOW7) + LOW7) | x;
        for lane in 0..8 {
            if nonzero >> (lane * 8 + 7) & 1 == 0 {
                bits |= 1 << (half * 8 + lane);
            }
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two memchr searches `usage_marks` stands for.
    fn by_memmem(json: &[u8]) -> UsageMarks {
        match USAGE.find(json) {
            Some(first) => UsageMarks {
                first: Some(first),
                escape: LETTER_ESCAPE
                    .find(json.get(..first + 1).unwrap_or(json))
                    .is_some_and(|e| e < first),
            },
            None => UsageMarks {
                first: None,
                escape: LETTER_ESCAPE.find(json).is_some(),
            },
        }
    }

    #[test]
    fn usage_marks_agree_with_memmem_on_chosen_events() {
        let cases: &[&[u8]] = &[
            b"",
            b"u",
            b"\"usage\"",
            b"usage\"",
            b"\"usag",
            b"{\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"usage\":null}",
            b"{\"text\":\"\\u0075sage\",\"usage\":{}}",
            b"{\"\\u0075sage\":{}}",
            b"\\u0",
            b"{\"a\":\"uuuuuuuuuuuuuuuu\\\"usage\\\"\"}",
            b"0123456789abcde\"usage\"",
            b"0123456789abcdef\"usage\"",
            b"0123456789abcd\\u00",
        ];
        for case in cases {
            assert_eq!(
                usage_marks(case),
                by_memmem(case),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn usage_marks_agree_with_memmem_on_random_events() {
        // Bytes drawn from the needles' own letters, so matches and near-matches are common.
        const ALPHABET: &[u8] = b"\"\\usage0{}:, x";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..50_000 {
            let len = (next() % 80) as usize;
            let json: Vec<u8> = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect();
            assert_eq!(
                usage_marks(&json),
                by_memmem(&json),
                "{:?}",
                String::from_utf8_lossy(&json)
            );
        }
    }

    #[test]
    fn the_portable_lanes_equal_the_sse2_lanes() {
        let mut block = [0u8; 16];
        for round in 0..4096u32 {
            for (i, b) in block.iter_mut().enumerate() {
                *b = match (round >> (i % 12)) & 3 {
                    0 => b'u',
                    1 => b'u' ^ 0x80,
                    2 => b'v',
                    _ => (round as u8).wrapping_mul(i as u8),
                };
            }
            assert_eq!(u_lanes_swar(&block), u_lanes16(&block), "{block:?}");
        }
    }
}
