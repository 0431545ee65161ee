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

/// `first_mention` 64 bytes a step.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn first_mention_avx2(bytes: &[u8]) -> Mention {
    use std::arch::x86_64::{__m256i, _mm256_cmpeq_epi8 as eq, _mm256_loadu_si256};
    use std::arch::x86_64::{_mm256_movemask_epi8 as bits, _mm256_set1_epi8 as splat};
    let (backslash, g, quote, u) = (
        splat(b'\\' as i8),
        splat(b'g' as i8),
        splat(b'"' as i8),
        splat(b'u' as i8),
    );
    // A mark in a block's last two bytes stays whatever follows it: the bytes after it lie in
    // the next block (or past the end, where no match can end).
    const EDGE: u64 = 0b11 << 62;
    let mut start = 0;
    // The last, short block is padded with zeros, which match neither.
    let mut padded = [0u8; 64];
    while let Some(rest) = bytes.get(start..).filter(|rest| !rest.is_empty()) {
        let block = match rest.first_chunk::<64>() {
            Some(block) => block,
            None => {
                padded.get_mut(..rest.len()).unwrap_or_default().copy_from_slice(rest);
                &padded
            }
        };
        let at = block.as_ptr().cast::<__m256i>();
        // SAFETY: `block` is 64 readable bytes, two 32-byte vectors; `loadu` allows any alignment.
        let (low, high) = unsafe { (_mm256_loadu_si256(at), _mm256_loadu_si256(at.add(1))) };
        let of = |byte| u64::from(bits(eq(low, byte)) as u32) | u64::from(bits(eq(high, byte)) as u32) << 32;
        // English text has a `g` or a `\n` every few dozen bytes, and each mark costs two
        // compares: only a `g` with a `"` two bytes on and a `\` with a `u` next are marked
        // (a 4 KiB answer: 318 -> 264 ns, `cargo bench --bench inspect -- usage_of`).
        let mut marks = (of(backslash) & ((of(u) >> 1) | EDGE)) | (of(g) & ((of(quote) >> 2) | EDGE));
        while marks != 0 {
            let mark = start + marks.trailing_zeros() as usize;
            marks &= marks - 1;
            let from = |at: usize| bytes.get(at..).unwrap_or_default();
            if from(mark).first_chunk() == Some(b"\\u00") {
                return Mention::Escape;
            }
            if from(mark.wrapping_sub(4)).first_chunk() == Some(b"\"usage\"") {
                return Mention::Usage(mark - 4);
            }
        }
        start += 64;
    }
    Mention::None
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

    #[test]
    fn the_first_mention_is_found_on_either_side_of_a_step() {
        for len in [7, 63, 64, 65, 70, 127, 128, 129, 200] {
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
