//! A plain head's field lines checked on their byte classes at once, 64 bytes a step, for
//! `quick::fields` to read: the head's end, where each line ends, where its colon and its value
//! are, so the per-field loop only finds those places and records the span.
//!
//! Invariant: [`Lines::of`] answers only for a head whose every byte from the first field line
//! to its blank line is HTAB, SP, visible ASCII, or a CR with an LF after it (no bare CR or LF,
//! no other control byte, no obs-text) and whose blank line's CRLF lies within the buffer; its
//! CR words then hold exactly the field lines' ends, in order, so each line lies between two of
//! them and holds neither CR nor LF. Anything else (or a head of more than [`BLOCKS`] blocks)
//! is `None`, for httparse to read.
//!
//! Why: line by line, a field's CRLF, its trailing OWS and where its block ended were tested
//! one field at a time, ~170 instructions a field with its name and span (callgrind, issue 18);
//! on the words they are a few operations a block for the whole head.

use super::classes::{classify, Classes};

/// The most 64-byte blocks of field lines read (1 KiB: an SDK's request head is about 600 bytes).
const BLOCKS: usize = 16;

/// The class words of a head's field lines, from `base`, block `k` at `base + 64 * k`.
pub(super) struct Lines {
    base: usize,
    colon: [u64; BLOCKS],
    ows: [u64; BLOCKS],
    /// The field lines' CRs (not the blank line's).
    cr: [u64; BLOCKS],
    /// The number of field lines.
    pub(super) count: usize,
    /// Where the head ends, after its blank line.
    pub(super) end: usize,
    /// Some field line's value ends in SP or HTAB (before its CR): values need trimming.
    pub(super) trailing_ows: bool,
}

impl Lines {
    /// The field lines of `buf` from `at` (the start of the line after the start line) to the
    /// blank line, checked; `classes` is `buf`'s cursor, its block at or before `at`. Inlined:
    /// returned from a call, the words were copied out (a `memcpy` a head).
    #[inline(always)]
    pub(super) fn of(buf: &[u8], classes: &Classes<'_>, at: usize) -> Option<Lines> {
        let (mut base, mut block) = classes.held();
        if at.wrapping_sub(base) >= 64 {
            (base, block) = (at, classify(buf, at));
        }
        let mut lines = Lines {
            base,
            colon: [0; BLOCKS],
            ows: [0; BLOCKS],
            cr: [0; BLOCKS],
            count: 0,
            end: 0,
            trailing_ows: false,
        };
        // The bytes of this block that are the head's from `at` on, the lines that start in it
        // (the first at `at`, the others after an LF), and the CR, LF and OWS at the last byte
        // of the block before.
        let mut from = !0u64 << (at - base);
        let mut starts = 1u64 << (at - base);
        let (mut cr_before, mut ows_before) = (0, 0);
        for k in 0..BLOCKS {
            let (cr, lf) = (block.cr() & from, block.lf() & from);
            let blank = (starts | lf << 1) & cr;
            // The head's bytes here: up to the blank line's CR, when it is in this block.
            let head = from & (!0u64 >> (63 - blank.trailing_zeros().min(63)));
            // Every byte outside the value set is a CR or an LF, every LF follows a CR and
            // every CR (but the blank line's, checked below) precedes an LF.
            if block.stop() & head != (cr | lf) & head || lf & head != (cr << 1 | cr_before) & head {
                return None;
            }
            lines.trailing_ows |= ((block.ows() & from) << 1 | ows_before) & cr & head & !blank != 0;
            *lines.colon.get_mut(k)? = block.colon();
            *lines.ows.get_mut(k)? = block.ows();
            *lines.cr.get_mut(k)? = cr & head & !blank;
            lines.count += (cr & head & !blank).count_ones() as usize;
            if blank != 0 {
                let blank_at = base + 64 * k + blank.trailing_zeros() as usize;
                (buf.get(blank_at + 1) == Some(&b'\n')).then_some(())?;
                lines.end = blank_at + 2;
                return Some(lines);
            }
            (cr_before, ows_before, starts) = (cr >> 63, block.ows() >> 63, lf >> 63);
            from = !0;
            block = classify(buf, base + 64 * (k + 1));
        }
        None
    }

    /// The ends (CRs) of the field lines, in order.
    pub(super) fn ends(&self) -> impl Iterator<Item = usize> + '_ {
        let mut k = 0;
        let mut bits = self.cr[0];
        (0..self.count).map_while(move |_| {
            while bits == 0 {
                k += 1;
                bits = *self.cr.get(k)?;
            }
            let at = self.base + 64 * k + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(at)
        })
    }

    /// The first `:` at or after `from` (within a line: before its end, when it has one), or
    /// `usize::MAX` when none is in the blocks read.
    #[inline(always)]
    pub(super) fn colon(&self, from: usize) -> usize {
        self.first(from, |k| self.colon.get(k).copied())
    }

    /// The first byte at or after `from` that is not SP or HTAB: within a line, its end at the
    /// latest (a CR is neither).
    #[inline(always)]
    pub(super) fn not_ows(&self, from: usize) -> usize {
        self.first(from, |k| self.ows.get(k).map(|w| !w))
    }

    #[inline(always)]
    fn first(&self, from: usize, word: impl Fn(usize) -> Option<u64>) -> usize {
        let off = from.wrapping_sub(self.base);
        let mut k = off / 64;
        let Some(w) = word(k) else { return usize::MAX };
        let bits = w >> (off % 64);
        if bits != 0 {
            return from + bits.trailing_zeros() as usize;
        }
        loop {
            k += 1;
            match word(k) {
                Some(0) => {}
                Some(w) => return self.base + 64 * k + w.trailing_zeros() as usize,
                None => return usize::MAX,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Heads whose lines end at every place of a block, with bytes of every class at random:
    /// the lines found are the CRLF-separated lines of a byte walk, or the head is refused
    /// exactly when a byte walk finds a bare CR or LF or another byte outside the value set.
    #[test]
    fn lines_are_what_a_byte_walk_finds() {
        let mut rng = fastrand::Rng::with_seed(4);
        let alphabet = b"ab:: \t\r\n\r\n\r\n\x7f\x80~!\0";
        for _ in 0..100_000 {
            let len = rng.usize(0..300);
            let mut buf: Vec<u8> = (0..len).map(|_| alphabet[rng.usize(..alphabet.len())]).collect();
            if rng.bool() {
                // Mostly plain lines.
                buf = buf
                    .split(|&b| b == b'\n')
                    .flat_map(|l| {
                        [
                            l.iter().copied().filter(|&b| (b' '..0x7f).contains(&b)).collect(),
                            b"\r\n".to_vec(),
                        ]
                    })
                    .flatten()
                    .collect();
                buf.extend_from_slice(b"\r\n");
            }
            let at = rng.usize(0..=buf.len().min(100));
            let classes = Classes::at(&buf, rng.usize(0..=at));
            let want = walk(&buf, at);
            let got = Lines::of(&buf, &classes, at).map(|l| (l.ends().collect::<Vec<_>>(), l.end, l.trailing_ows));
            assert_eq!(got, want, "{buf:?} at {at}");
        }
    }

    /// The lines from `at` to the blank line as a byte walk finds them: their ends, the head's
    /// end, whether a value ends in OWS; `None` for a bare CR or LF, another byte outside the
    /// value set, or no blank line (the heads here are far shorter than `BLOCKS` blocks).
    fn walk(buf: &[u8], at: usize) -> Option<(Vec<usize>, usize, bool)> {
        let mut ends = Vec::new();
        let mut trailing = false;
        let mut start = at;
        loop {
            let end = (start..buf.len()).find(|&i| !(buf[i] == b'\t' || (b' '..=b'~').contains(&buf[i])))?;
            if buf[end] != b'\r' || buf.get(end + 1) != Some(&b'\n') {
                return None;
            }
            if end == start {
                return Some((ends, end + 2, trailing));
            }
            trailing |= matches!(buf[end - 1], b' ' | b'\t');
            ends.push(end);
            start = end + 2;
        }
    }
}
