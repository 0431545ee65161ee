//! Byte needles the usage taps look for in every body and stream event, each searcher built once
//! (`memmem::find` builds a new searcher per call, which cost 2 % of a streaming proxy core:
//! `benches/profile.sh perf`, issue 7), and `first_mention`, both of an answer's needles found
//! in one pass.
//! Invariant: a `false` from `may_name_usage` and a `Mention::None` are certain (no member of
//! the bytes can be named `usage`); everything else needs a parse to confirm.

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

/// What `first_mention` found first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mention {
    /// A `"usage"` at this offset, no `\u00` before it.
    Usage(usize),
    /// A `\u00` (`LETTER_ESCAPE`) before any `"usage"`.
    Escape,
    /// Neither: the bytes name no member `usage`.
    None,
}

/// The first `"usage"` or `\u00` in `bytes`: `may_name_usage`'s two searches as one pass, and
/// where the first mention is. With AVX2, 64 bytes a step marking every `g` two bytes before a
/// `"` (the fifth and seventh bytes of a `"usage"`) and every `\` before a `u`, each mark
/// compared whole: a memmem search for `"usage"` and a memchr for `\` over a 277-byte chat
/// answer cost ~330 instructions (callgrind, issue 18). Without AVX2 the two searches.
#[allow(unsafe_code)]
pub(crate) fn first_mention(bytes: &[u8]) -> Mention {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { first_mention_avx2(bytes) };
    }
    first_mention_portable(bytes)
}

/// `first_mention` with memchr's searches (any CPU; the reference the AVX2 form is tested
/// against).
fn first_mention_portable(bytes: &[u8]) -> Mention {
    let usage = USAGE.find(bytes);
    let escape = memchr::memchr(b'\\', bytes).and_then(|at| Some(at + LETTER_ESCAPE.find(bytes.get(at..)?)?));
    match (usage, escape) {
        (Some(usage), Some(escape)) if usage < escape => Mention::Usage(usage),
        (_, Some(_)) => Mention::Escape,
        (Some(usage), None) => Mention::Usage(usage),
        (None, None) => Mention::None,
    }
}

/// `first_mention` 64 bytes a step: each step loads the block three times, from its start and
/// one and two bytes on, so a `\` with a `u` next and a `g` with a `"` two on are each found
/// by two compares and an AND lane by lane, and a block with neither costs one test (about 25
/// instructions a block) instead of a mask per byte class moved out of the vector unit and
/// shifted (about 50; the mock's 277-byte chat answer 264 -> 177: callgrind, issue 18).
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn first_mention_avx2(bytes: &[u8]) -> Mention {
    let len = bytes.len();
    let mut start = 0;
    // Whole steps: the block's 64 bytes and the two after it lie in `bytes`.
    while start + STEP <= len {
        // SAFETY: the CPU has AVX2; `bytes[start..start + STEP]` is readable.
        let marks = unsafe { marks64(bytes.as_ptr().add(start)) };
        if let Some(found) = confirm(bytes, start, marks) {
            return found;
        }
        start += 64;
    }
    // Fewer than `STEP` bytes are left. A mention needs its mark at least three bytes before
    // the end, so the last two bytes need no step of their own.
    if start + 2 >= len {
        return Mention::None;
    }
    let (base, marks) = match len.checked_sub(STEP) {
        // The step that ends at the body's end, its marks before `start` (read already) dropped.
        // SAFETY: the CPU has AVX2; `bytes[base..len]` is `STEP` readable bytes.
        Some(base) => (
            base,
            unsafe { marks64(bytes.as_ptr().add(base)) } >> (start - base) << (start - base),
        ),
        // A body shorter than a step, padded with zeros (which match none of the four bytes).
        None => {
            let mut padded = [0u8; STEP];
            padded.get_mut(..len).unwrap_or_default().copy_from_slice(bytes);
            // SAFETY: the CPU has AVX2; `padded` is `STEP` readable bytes.
            (0, unsafe { marks64(padded.as_ptr()) })
        }
    };
    confirm(bytes, base, marks).unwrap_or(Mention::None)
}

/// Bytes a step of `first_mention_avx2` reads: a block and the two bytes after it.
#[cfg(target_arch = "x86_64")]
const STEP: usize = 66;

/// Bit `i`: byte `at + i` is a `\` with a `u` next or a `g` with a `"` two bytes on.
///
/// # Safety
/// The CPU has AVX2, and the `STEP` bytes from `at` are readable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
#[inline]
unsafe fn marks64(at: *const u8) -> u64 {
    use std::arch::x86_64::_mm256_testz_si256 as none;
    use std::arch::x86_64::{__m256i, _mm256_and_si256 as and, _mm256_cmpeq_epi8 as eq, _mm256_loadu_si256};
    use std::arch::x86_64::{_mm256_movemask_epi8 as bits, _mm256_or_si256 as or, _mm256_set1_epi8 as splat};
    // SAFETY (every load): `off + 32 <= STEP`; `loadu` allows any alignment.
    let load = |off: usize| unsafe { _mm256_loadu_si256(at.add(off).cast::<__m256i>()) };
    let half = |off: usize| {
        let (here, next, two_on) = (load(off), load(off + 1), load(off + 2));
        or(
            and(eq(here, splat(b'\\' as i8)), eq(next, splat(b'u' as i8))),
            and(eq(here, splat(b'g' as i8)), eq(two_on, splat(b'"' as i8))),
        )
    };
    let (low, high) = (half(0), half(32));
    let either = or(low, high);
    if none(either, either) != 0 {
        return 0;
    }
    u64::from(bits(low) as u32) | u64::from(bits(high) as u32) << 32
}

/// The first of `marks` (bit `i` = byte `base + i`) that begins a `\u00` or is the `g` of a
/// `"usage"`, as a mention; `None` when none does.
#[cfg(target_arch = "x86_64")]
#[inline]
fn confirm(bytes: &[u8], base: usize, mut marks: u64) -> Option<Mention> {
    while marks != 0 {
        let mark = base + marks.trailing_zeros() as usize;
        marks &= marks - 1;
        let from = |at: usize| bytes.get(at..).unwrap_or_default();
        if from(mark).first_chunk() == Some(b"\\u00") {
            return Some(Mention::Escape);
        }
        if from(mark.wrapping_sub(4)).first_chunk() == Some(b"\"usage\"") {
            return Some(Mention::Usage(mark - 4));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 pass finds what the two searches find, on bodies of every length around the
    /// 64-byte steps with mentions (whole, cut, overlapping) at every place, and random ones.
    #[test]
    fn the_first_mention_is_the_first_of_the_two_searches() {
        let mut rng = fastrand::Rng::with_seed(18);
        let pieces: [&[u8]; 9] = [
            b"\"usage\"",
            b"\\u00",
            b"\\u0",
            b"usage\"",
            b"g",
            b"\\",
            b"\"",
            b"ab",
            b"\"usage",
        ];
        let mut found = [0; 3];
        for round in 0..20_000 {
            let mut body = Vec::new();
            let len = if round < 300 { round } else { rng.usize(..300) };
            while body.len() < len {
                match rng.u8(..4) {
                    0 => body.extend_from_slice(pieces[rng.usize(..pieces.len())]),
                    _ => body.push(b"xg\\\"u0 s{}"[rng.usize(..10)]),
                }
            }
            let want = first_mention_portable(&body);
            found[match want {
                Mention::Usage(_) => 0,
                Mention::Escape => 1,
                Mention::None => 2,
            }] += 1;
            assert_eq!(first_mention(&body), want, "{}", String::from_utf8_lossy(&body));
        }
        assert!(found.iter().all(|&n| n > 1_000), "{found:?}");
    }

    /// Every length up to past three steps (so the last, overlapping step starts at every
    /// offset), every place, the mention up to the body's last byte.
    #[test]
    fn the_first_mention_is_found_on_either_side_of_a_step() {
        for len in 4..=200 {
            for at in 0..=len - 4 {
                let mut body = vec![b'x'; len];
                body[at..at + 4].copy_from_slice(b"\\u00");
                assert_eq!(first_mention(&body), Mention::Escape, "len {len} at {at}");
                body[at + 3] = b'x';
                assert_eq!(first_mention(&body), Mention::None, "len {len} at {at}");
            }
        }
        for len in 7..=200 {
            for at in 0..len - 6 {
                let mut body = vec![b'g'; len];
                body[at..at + 7].copy_from_slice(b"\"usage\"");
                assert_eq!(first_mention(&body), Mention::Usage(at), "len {len} at {at}");
                let mut body = vec![b'\\'; len];
                body[at..at + 7].copy_from_slice(b"\"usage\"");
                body[at..at + 4].copy_from_slice(b"\\u00");
                assert_eq!(first_mention(&body), Mention::Escape, "len {len} at {at}");
            }
        }
        assert_eq!(first_mention(b"usage\"g\\u0"), Mention::None);
    }
}
