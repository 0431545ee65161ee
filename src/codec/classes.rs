//! A head's bytes in classes, 64 a step: for each byte whether it is `:`, optional whitespace
//! (SP, HTAB), or outside the field-value set (HTAB, SP, visible ASCII), as one bit in each of
//! three words, for `quick` to find a line's parts with a shift and a `trailing_zeros` each
//! instead of a loop a part.
//!
//! Invariant: bit `i` of a [`Block`] says whether byte `base + i` of the buffer is in that
//! class, and every byte past the buffer's end reads as a NUL (outside the value set), so every
//! search [`Classes::next`] makes stops at the buffer's end at the latest.
//!
//! Why: the word loops this replaced (eight bytes a step, one loop per part of a line, and the
//! OWS loops around the value) cost ~250 instructions a field, most of it per-field overhead
//! rather than bytes; classifying a block once costs under one instruction a byte (AVX2 where
//! the CPU has it, else SSE2, the x86-64 baseline; a byte loop on other targets), and each part
//! of a line is then a few (issue 18). The CPU is asked once a head ([`on_cpu`]), and the
//! reading of the head is compiled once for each classifier, the AVX2 one with AVX2 on, so a
//! block is classified inline where the cursor moves on: asking every block and calling through
//! two functions to the classifier cost ~44 instructions a block beside its own ~38 (a chat
//! request's two heads 2,406 -> 2,295 instructions, an SDK's 5,782 -> 5,414; callgrind).

/// The classes of 64 bytes from a [`Classes`] cursor's base: bit `i` is byte `base + i`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Block {
    /// `:`.
    colon: u64,
    /// SP or HTAB.
    ows: u64,
    /// Outside HTAB, SP and `!`..=`~`: a CR or LF ends a value here, any other such byte is
    /// not `quick`'s to read.
    stop: u64,
}

impl Block {
    /// Where a name ends: `:`, or any byte outside `!`..=`~`.
    #[inline(always)]
    pub(super) fn name_end(&self) -> u64 {
        self.colon | self.ows | self.stop
    }

    /// Where a word of the start line ends: any byte outside `!`..=`~`.
    #[inline(always)]
    pub(super) fn not_visible(&self) -> u64 {
        self.ows | self.stop
    }

    /// `:`.
    #[inline(always)]
    pub(super) fn colon(&self) -> u64 {
        self.colon
    }

    /// Where optional whitespace ends.
    #[inline(always)]
    pub(super) fn not_ows(&self) -> u64 {
        !self.ows
    }

    /// Where a value (or a reason phrase) ends.
    #[inline(always)]
    pub(super) fn stop(&self) -> u64 {
        self.stop
    }
}

/// A way to classify a block, picked once per head by [`on_cpu`], so the code that reads a head
/// is compiled for it: its blocks are classified inline, where asking the CPU and two calls a
/// block cost about as much again as AVX2's own work (~44 instructions a block beside ~38,
/// callgrind, issue 18).
pub(super) trait Classify: Copy {
    fn block(self, block: &[u8; 64]) -> Block;
}

/// AVX2, which the CPU has: made only by [`on_cpu`], after asking.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct Avx2 {
    _asked: (),
}

#[cfg(target_arch = "x86_64")]
impl Classify for Avx2 {
    #[allow(unsafe_code)]
    #[inline(always)]
    fn block(self, block: &[u8; 64]) -> Block {
        // SAFETY: an `Avx2` exists only where the CPU has AVX2 (`on_cpu` asked).
        unsafe { classify64_avx2(block) }
    }
}

/// What every CPU of the target has: SSE2 on x86-64, a byte walk elsewhere.
#[derive(Clone, Copy)]
pub(super) struct Baseline;

impl Classify for Baseline {
    #[allow(unsafe_code)]
    #[inline(always)]
    fn block(self, block: &[u8; 64]) -> Block {
        // SAFETY: every x86-64 CPU has SSE2 (the target's baseline, enabled in every build).
        #[cfg(target_arch = "x86_64")]
        return unsafe { classify64_sse2(block) };
        #[cfg(not(target_arch = "x86_64"))]
        classify_bytes(block)
    }
}

/// A reading of a head, done with whichever [`Classify`] [`on_cpu`] picks: generic over it, so
/// it is compiled once for each (its code inlined into [`run_avx2`] for AVX2).
pub(super) trait OnCpu {
    type Out;
    fn run<C: Classify>(self, classify: C) -> Self::Out;
}

/// `task` run with AVX2 where the CPU has it (asked once a head, not once a block), else with
/// the [`Baseline`].
#[allow(unsafe_code)]
#[inline]
pub(super) fn on_cpu<T: OnCpu>(task: T) -> T::Out {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { run_avx2(task) };
    }
    task.run(Baseline)
}

/// [`OnCpu::run`] with [`Avx2`], compiled for AVX2: the classifier is inlined into the reading.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn run_avx2<T: OnCpu>(task: T) -> T::Out {
    task.run(Avx2 { _asked: () })
}

/// A cursor over a buffer's classes that only moves forward: it holds one block, from `base`,
/// and classifies the next when a search runs past it (or a search starts past it).
pub(super) struct Classes<'a, C> {
    buf: &'a [u8],
    base: usize,
    block: Block,
    classify: C,
}

impl<'a, C: Classify> Classes<'a, C> {
    /// The classes of `buf` from `at` on.
    #[inline(always)]
    pub(super) fn at(buf: &'a [u8], at: usize, classify: C) -> Self {
        Classes {
            buf,
            base: at,
            block: classify_at(buf, at, classify),
            classify,
        }
    }

    /// The first place at or after `from` whose byte `pick` sets a bit for. `from` is never
    /// before a place an earlier search found (the cursor moves forward only), and `pick` sets
    /// a bit for a NUL: it stops at the buffer's end at the latest.
    #[inline(always)]
    pub(super) fn next(&mut self, mut from: usize, pick: impl Fn(&Block) -> u64) -> usize {
        loop {
            let off = from.wrapping_sub(self.base);
            if off < 64 {
                let bits = pick(&self.block) >> off;
                if bits != 0 {
                    return from + bits.trailing_zeros() as usize;
                }
            }
            self.advance(from);
            from = from.max(self.base);
        }
    }

    /// Whether the byte at `at` is in the block held and `pick` sets its bit: after a search
    /// found `at`, whether that byte is of a class.
    #[inline(always)]
    pub(super) fn holds(&self, at: usize, pick: impl Fn(&Block) -> u64) -> bool {
        let off = at.wrapping_sub(self.base);
        off < 64 && (pick(&self.block) >> off) & 1 != 0
    }

    /// The block after the one held, or the one at `from` when that lies further on.
    #[inline(always)]
    fn advance(&mut self, from: usize) {
        self.base = self.base.saturating_add(64).max(from);
        self.block = classify_at(self.buf, self.base, self.classify);
    }
}

/// The classes of the 64 bytes of `buf` from `base`, those past its end as NULs.
#[inline(always)]
fn classify_at<C: Classify>(buf: &[u8], base: usize, classify: C) -> Block {
    let rest = buf.get(base..).unwrap_or_default();
    let mut padded = [0u8; 64];
    // One classifying either way: its code is inlined where a cursor moves on.
    let block = match rest.first_chunk::<64>() {
        Some(block) => block,
        None => {
            if let Some(head) = padded.get_mut(..rest.len()) {
                head.copy_from_slice(rest);
            }
            &padded
        }
    };
    classify.block(block)
}

/// [`Classify::block`] with AVX2 where the CPU has it, asked each time (tests).
#[cfg(test)]
fn classify64(block: &[u8; 64]) -> Block {
    on_cpu(One(block))
}

#[cfg(test)]
struct One<'a>(&'a [u8; 64]);

#[cfg(test)]
impl OnCpu for One<'_> {
    type Out = Block;
    fn run<C: Classify>(self, classify: C) -> Block {
        classify.block(self.0)
    }
}

/// [`Classify::block`] with AVX2.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
#[inline]
unsafe fn classify64_avx2(block: &[u8; 64]) -> Block {
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi8 as add, _mm256_cmpeq_epi8 as eq, _mm256_cmpgt_epi8 as gt, _mm256_loadu_si256,
        _mm256_movemask_epi8 as bits, _mm256_or_si256 as or, _mm256_set1_epi8 as splat,
    };
    let at = block.as_ptr().cast::<__m256i>();
    // SAFETY: `block` is 64 readable bytes, two 32-byte vectors; `loadu` allows any alignment.
    let (low, high) = unsafe { (_mm256_loadu_si256(at), _mm256_loadu_si256(at.add(1))) };
    let word = |low: i32, high: i32| u64::from(low as u32) | u64::from(high as u32) << 32;
    let (colon, space, tab) = (splat(b':' as i8), splat(b' ' as i8), splat(b'\t' as i8));
    let (shift, above) = (splat(0x60), splat(-34));
    let colon = word(bits(eq(low, colon)), bits(eq(high, colon)));
    let ows = word(
        bits(or(eq(low, space), eq(low, tab))),
        bits(or(eq(high, space), eq(high, tab))),
    );
    // As in the SSE2 form.
    let outside = word(bits(gt(add(low, shift), above)), bits(gt(add(high, shift), above)));
    Block {
        colon,
        ows,
        stop: outside & !ows,
    }
}

/// [`Classify::block`] with SSE2.
///
/// # Safety
/// The CPU has SSE2 (every x86-64 CPU does).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
#[allow(unsafe_code)]
#[inline]
unsafe fn classify64_sse2(block: &[u8; 64]) -> Block {
    use std::arch::x86_64::{
        _mm_add_epi8 as add, _mm_cmpeq_epi8 as eq, _mm_cmpgt_epi8 as gt, _mm_loadu_si128, _mm_movemask_epi8 as bits,
        _mm_or_si128 as or, _mm_set1_epi8 as splat,
    };
    let mut colon = 0u64;
    let mut ows = 0u64;
    let mut outside = 0u64;
    for (i, part) in block.chunks_exact(16).enumerate() {
        // SAFETY: `part` is 16 readable bytes (`chunks_exact`), one `__m128i`; `loadu` allows any
        // alignment.
        let v = unsafe { _mm_loadu_si128(part.as_ptr().cast()) };
        let at = |mask: i32| u64::from(mask as u16) << (16 * i);
        colon |= at(bits(eq(v, splat(b':' as i8))));
        ows |= at(bits(or(eq(v, splat(b' ' as i8)), eq(v, splat(b'\t' as i8)))));
        // Adding 0x60 wraps SP..=`~` onto -128..=-34 (signed) and every other byte above it.
        outside |= at(bits(gt(add(v, splat(0x60)), splat(-34))));
    }
    // `outside` holds HTAB too, which a value may hold: the only class both hold.
    Block {
        colon,
        ows,
        stop: outside & !ows,
    }
}

/// [`Classify::block`] a byte at a time (portable; the SSE2 and AVX2 ones are tested against it).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn classify_bytes(block: &[u8; 64]) -> Block {
    let mut classes = Block::default();
    for (i, &b) in block.iter().enumerate() {
        let bit = 1u64 << i;
        if b == b':' {
            classes.colon |= bit;
        }
        if b == b' ' || b == b'\t' {
            classes.ows |= bit;
        } else if !(b' '..=b'~').contains(&b) {
            classes.stop |= bit;
        }
    }
    classes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte value at every place of a block, among random bytes: the SSE2 classes are
    /// the byte walk's.
    #[test]
    fn blocks_class_every_byte_as_a_byte_walk_does() {
        let mut rng = fastrand::Rng::with_seed(64);
        for at in 0..64 {
            for byte in 0..=255u8 {
                let mut block = [0u8; 64];
                block.iter_mut().for_each(|b| *b = rng.u8(..));
                block[at] = byte;
                let want = classify_bytes(&block);
                assert_eq!(classify64(&block), want, "{byte} at {at}");
                // SAFETY: every x86-64 CPU has SSE2; AVX2 only where detected.
                #[cfg(target_arch = "x86_64")]
                #[allow(unsafe_code)]
                unsafe {
                    assert_eq!(classify64_sse2(&block), want, "{byte} at {at}");
                    if std::arch::is_x86_feature_detected!("avx2") {
                        assert_eq!(classify64_avx2(&block), want, "{byte} at {at}");
                    }
                }
            }
        }
    }

    /// A search finds what a byte walk finds, across blocks, from anywhere, and stops at the
    /// buffer's end: with the baseline classifier, and with the one `on_cpu` picks.
    #[test]
    fn next_finds_what_a_byte_walk_finds() {
        searches_as_a_byte_walk(Baseline);
        on_cpu(Searches);
    }

    struct Searches;

    impl OnCpu for Searches {
        type Out = ();
        fn run<C: Classify>(self, classify: C) {
            searches_as_a_byte_walk(classify);
        }
    }

    fn searches_as_a_byte_walk<C: Classify>(classify: C) {
        let mut rng = fastrand::Rng::with_seed(65);
        let alphabet = b"ab:: \t\r\n\x7f\x80~!";
        for _ in 0..20_000 {
            let len = rng.usize(0..200);
            let buf: Vec<u8> = (0..len).map(|_| alphabet[rng.usize(..alphabet.len())]).collect();
            let start = rng.usize(0..=len);
            let mut classes = Classes::at(&buf, start, classify);
            let mut from = start;
            while from <= len {
                let walk = |is: &dyn Fn(u8) -> bool| (from..len).find(|&i| is(buf[i])).unwrap_or(len);
                let (found, want) = match rng.u8(..4) {
                    0 => (
                        classes.next(from, Block::name_end),
                        walk(&|b| b == b':' || !(b'!'..=b'~').contains(&b)),
                    ),
                    1 => (
                        classes.next(from, Block::not_visible),
                        walk(&|b| !(b'!'..=b'~').contains(&b)),
                    ),
                    2 => (classes.next(from, Block::not_ows), walk(&|b| b != b' ' && b != b'\t')),
                    _ => (
                        classes.next(from, Block::stop),
                        walk(&|b| b != b'\t' && !(b' '..=b'~').contains(&b)),
                    ),
                };
                assert_eq!(found, want, "{buf:?} from {from}");
                from = found + rng.usize(1..80);
            }
        }
    }
}
