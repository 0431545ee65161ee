//! The OpenAI-to-OpenAI stream relay with usage accounting: the chunk with `usage` is read as it
//! passes. When the client did not ask for usage, rotor asked the upstream for it
//! (`openai::inject_include_usage`) and `Hide` mode removes the usage-only chunk and the
//! `"usage": null` members, so that client sees the stream it asked for. What an event says
//! about usage is read by `usage::event` on any valid JSON formatting, not by byte patterns.
//! Invariant: in `Observe` mode the bytes the client receives are exactly the upstream's; the
//! in-place reading of plain events (`plain_events`) gives exactly what the splitter and
//! `event_usage` give them.
//! JSON nesting deeper than `server.max_json_depth` is never parsed: the bytes still pass (the
//! same-protocol path relays what it does not need to understand).

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use sonic_simd::{u8x64, Mask, Simd};

use super::event::{event_usage, COMPACT_NULL_TAIL};
use super::openai::usage_of;
use super::Usage;
use crate::codec::sse::{Event, SseSplitter, MAX_EVENT_BYTES};
use crate::providers::transform::{openai_error_event, Emit, ResponseTransform};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Pass bytes through untouched; only read usage.
    Observe,
    /// Remove what rotor added to the stream (usage chunk, `"usage":null`).
    Hide,
}

/// OpenAI-to-OpenAI relay with usage accounting.
pub struct OpenAiUsageTap {
    mode: Mode,
    events: SseSplitter,
    usage: Usage,
    /// `server.max_json_depth`: deeper bodies and events are relayed without reading usage.
    max_depth: usize,
    /// `Hide` mode's output, reused piece after piece as `Exchange`'s gathered pieces are (a
    /// piece handed out shares it until the relay dropped it): no allocation per event.
    kept: BytesMut,
}

impl OpenAiUsageTap {
    pub fn new(mode: Mode, max_depth: usize) -> Self {
        OpenAiUsageTap {
            mode,
            events: SseSplitter::new(),
            usage: Usage::default(),
            max_depth,
            kept: BytesMut::new(),
        }
    }

    /// Reads the events `piece` completes: their usage, and in `Hide` mode what the client
    /// gets of them, appended to `kept`. Between events, plain ones are read in place
    /// (`plain_events`); the splitter reads the rest, a line at a time until it is between
    /// events again (a piece often ends inside an event), or all of it from the first `\r`.
    fn read_events(&mut self, piece: &[u8], mut kept: Option<&mut BytesMut>) {
        let max_depth = self.max_depth;
        let mut seen = None;
        let mut at = 0;
        let mut carriage_return = false;
        loop {
            if self.events.idle() && !carriage_return {
                let plain = piece.get(at..).unwrap_or_default();
                let (read, stopped_at_cr) = plain_events(plain, max_depth, &mut seen, kept.as_deref_mut());
                at += read;
                carriage_return = stopped_at_cr;
            }
            let rest = piece.get(at..).unwrap_or_default();
            if rest.is_empty() {
                break;
            }
            let mut read = |event: Event<'_>| {
                let facts = event_usage(event.data, max_depth);
                if facts.usage.is_some() {
                    seen = facts.usage;
                }
                // The usage-only chunk rotor asked for is read, not relayed.
                if let Some(kept) = kept.as_deref_mut().filter(|_| !facts.usage_only) {
                    write_event(event.event, event.data, facts.null_member, kept);
                }
            };
            if carriage_return {
                self.events.feed(rest, &mut read);
                break;
            }
            at = piece.len() - self.events.feed_line(rest, &mut read).len();
        }
        if let Some(usage) = seen {
            self.usage = usage;
        }
    }
}

impl ResponseTransform for OpenAiUsageTap {
    fn full(&mut self, status: u16, body: Bytes) -> Bytes {
        if (200..300).contains(&status) {
            if let Some(usage) = usage_of(&body, self.max_depth) {
                self.usage = usage;
            }
        }
        body
    }

    fn piece(&mut self, piece: Bytes) -> Emit {
        let mut out = Emit::new();
        match self.mode {
            Mode::Observe => {
                self.read_events(&piece, None);
                out.push(piece);
            }
            Mode::Hide => {
                // Re-framed events are no longer than the piece, but for `data:` lines that
                // gain a space.
                let mut kept = std::mem::take(&mut self.kept);
                kept.reserve(piece.len() + 64);
                self.read_events(&piece, Some(&mut kept));
                if !kept.is_empty() {
                    out.push(kept.split().freeze());
                }
                self.kept = kept;
            }
        }
        out
    }

    fn end(&mut self) -> Emit {
        let mut out = Emit::new();
        if self.mode == Mode::Hide {
            let mut kept = BytesMut::new();
            let max_depth = self.max_depth;
            self.events.finish(&mut |event| {
                let facts = event_usage(event.data, max_depth);
                write_event(event.event, event.data, facts.null_member, &mut kept)
            });
            if !kept.is_empty() {
                out.push(kept.freeze());
            }
        }
        out
    }

    fn fail(&mut self, message: &str) -> Emit {
        let mut out = self.end();
        out.push(openai_error_event(message));
        out
    }

    fn usage(&self) -> Usage {
        self.usage
    }
}

/// The `"usage"` key `plain_events` looks for.
const USAGE_KEY: &[u8] = b"\"usage\"";

/// Reads the plain events at the front of `piece` in place: a `data:` line ending in `\n` and
/// the blank line, the lines the splitter would see up to the first `\r`. Returns how many
/// bytes they took (the splitter reads from there) and whether a `\r` stopped it. An event
/// whose only `"usage"` is the compact `,"usage":null}` at its end is decided from those offsets
/// (what `event_usage` decides from its first mention), and in `Hide` mode the client's bytes
/// are the piece's without that member, copied in runs; any other event goes through
/// `event_usage` and `write_event` as the splitter's would.
/// Issue 18: a line search and a `"usage"` search per event, each a fresh memchr2/memmem call
/// on ~190 bytes, cost ~310 of a streamed event's ~930 instructions (callgrind); `Marks` finds
/// both in one pass over the piece.
fn plain_events(
    piece: &[u8],
    max_depth: usize,
    seen: &mut Option<Usage>,
    mut kept: Option<&mut BytesMut>,
) -> (usize, bool) {
    let mut marks = Marks::new(piece);
    // Start of the current event, and of the piece's bytes not yet copied to `kept`.
    let (mut at, mut copied) = (0, 0);
    let mut carriage_return = false;
    'events: loop {
        // The end of the event's first line, and the first `"usage"` on it.
        let mut first = None;
        let end = loop {
            let Some(mark) = marks.next() else {
                break 'events;
            };
            match piece.get(mark) {
                Some(b'\n') => break mark,
                Some(b'g') => {
                    let quote = mark.saturating_sub(4);
                    if first.is_none() && piece.get(quote..quote + USAGE_KEY.len()) == Some(USAGE_KEY) {
                        first = Some(quote);
                    }
                }
                _ => {
                    carriage_return = true;
                    break 'events;
                }
            }
        };
        let line = piece.get(at..end).unwrap_or_default();
        let blank = piece.get(end + 1) == Some(&b'\n');
        let Some(data) = line
            .strip_prefix(b"data:")
            .filter(|_| blank && end + 2 - at <= MAX_EVENT_BYTES)
        else {
            break;
        };
        marks.next();
        let data = data.strip_prefix(b" ").unwrap_or(data);
        let compact_null =
            first.is_some_and(|quote| quote + COMPACT_NULL_TAIL.len() == end + 1) && data.ends_with(COMPACT_NULL_TAIL);
        match (compact_null, kept.as_deref_mut()) {
            (true, None) => {}
            (true, Some(kept)) if line.starts_with(b"data: ") => {
                // The bytes so far up to the member's comma; its closing `}` starts the next run.
                let comma = end - COMPACT_NULL_TAIL.len();
                kept.extend_from_slice(piece.get(copied..comma).unwrap_or_default());
                copied = comma + COMPACT_NULL_TAIL.len() - 1;
            }
            (_, kept) => {
                let facts = event_usage(data, max_depth);
                if facts.usage.is_some() {
                    *seen = facts.usage;
                }
                if let Some(kept) = kept {
                    kept.extend_from_slice(piece.get(copied..at).unwrap_or_default());
                    if !facts.usage_only {
                        write_event(b"", data, facts.null_member, kept);
                    }
                    copied = end + 2;
                }
            }
        }
        at = end + 2;
    }
    if let Some(kept) = kept {
        kept.extend_from_slice(piece.get(copied..at).unwrap_or_default());
    }
    (at, carriage_return)
}

/// Offsets in `bytes` of every `\n`, `\r` and `g` (where a `"usage"` key can be: `g` is in
/// fewer of an OpenAI chunk's fixed members than `u`, which every `null` has), in order,
/// classified 64 bytes at a time (with AVX2 where the CPU has it, else sonic-simd: SSE2 on
/// x86-64, NEON on aarch64), so finding the next one is a bit operation, not a new search. One
/// combined mask per block: a mask per byte kind (to mark only a `u` after a `"`) cost ~100
/// instructions per event more than the few extra marks it drops (callgrind).
struct Marks<'a> {
    bytes: &'a [u8],
    /// Offset of the next block to classify, and of the one `pending` belongs to.
    next_block: usize,
    block: usize,
    /// Marks of `block` not yet returned, bit `i` for byte `block + i`.
    pending: u64,
    /// The CPU has AVX2 (asked once a piece; `std` caches the answer).
    #[cfg(target_arch = "x86_64")]
    avx2: bool,
}

impl<'a> Marks<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Marks {
            bytes,
            next_block: 0,
            block: 0,
            pending: 0,
            #[cfg(target_arch = "x86_64")]
            avx2: std::arch::is_x86_feature_detected!("avx2"),
        }
    }

    /// Bit `i`: byte `i` of `block` is `\n`, `\r` or `g`.
    #[allow(unsafe_code)]
    fn classify(&self, block: &[u8; 64]) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: `avx2` is set only when the CPU has AVX2.
            return unsafe { classify_avx2(block) };
        }
        classify_portable(block)
    }
}

/// `Marks::classify` through sonic-simd, whose x86-64 build is SSE2 (the baseline every
/// x86-64 CPU has: 16 bytes a compare).
fn classify_portable(block: &[u8; 64]) -> u64 {
    let v = load(block);
    let is = |byte: u8| v.eq(&u8x64::splat(byte));
    (is(b'\n') | is(b'\r') | is(b'g')).bitmask()
}

/// `Marks::classify` 32 bytes a compare, 22 instructions a block: the SSE2 form cost ~58, ~180
/// of a streamed event's ~700 (callgrind, issue 18: the tap's cost per event 442 -> 396).
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn classify_avx2(block: &[u8; 64]) -> u64 {
    use std::arch::x86_64::{__m256i, _mm256_cmpeq_epi8 as eq, _mm256_loadu_si256};
    use std::arch::x86_64::{_mm256_movemask_epi8, _mm256_or_si256 as or, _mm256_set1_epi8 as splat};
    let at = block.as_ptr().cast::<__m256i>();
    // SAFETY: `block` is 64 readable bytes, two 32-byte vectors; `loadu` allows any alignment.
    let (low, high) = unsafe { (_mm256_loadu_si256(at), _mm256_loadu_si256(at.add(1))) };
    let (line, carriage, g) = (splat(b'\n' as i8), splat(b'\r' as i8), splat(b'g' as i8));
    let low = or(or(eq(low, line), eq(low, carriage)), eq(low, g));
    let high = or(or(eq(high, line), eq(high, carriage)), eq(high, g));
    let (low, high) = (_mm256_movemask_epi8(low) as u32, _mm256_movemask_epi8(high) as u32);
    u64::from(low) | u64::from(high) << 32
}

impl Iterator for Marks<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.pending == 0 {
            let start = self.next_block;
            let rest = self.bytes.get(start..).filter(|rest| !rest.is_empty())?;
            // The last, short block is padded with zeros, which match nothing.
            let mut padded = [0u8; 64];
            let block = match rest.first_chunk::<64>() {
                Some(block) => block,
                None => {
                    padded.get_mut(..rest.len())?.copy_from_slice(rest);
                    &padded
                }
            };
            self.pending = self.classify(block);
            self.block = start;
            self.next_block = start + 64;
        }
        let bit = self.pending.trailing_zeros() as usize;
        self.pending &= self.pending - 1;
        Some(self.block + bit)
    }
}

/// One block as a vector (sonic-simd's portable SIMD, as `codec::depth` reads JSON).
#[allow(unsafe_code)]
fn load(block: &[u8; 64]) -> u8x64 {
    // SAFETY: `block` is 64 readable bytes, exactly one `u8x64`; `loadu` allows any alignment.
    unsafe { u8x64::loadu(block.as_ptr()) }
}

/// Re-frames one event for the client (`event:` line if any, `data:` line, blank line) without
/// the bytes of `remove` (the `"usage": null` member the injected option adds). OpenAI streams
/// carry only `data:` lines; upstream comments are not relayed (rotor sends its own keepalives).
fn write_event(name: &[u8], data: &[u8], remove: Option<Range<usize>>, out: &mut BytesMut) {
    if !name.is_empty() {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name);
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"data: ");
    match remove.and_then(|span| Some((data.get(..span.start)?, data.get(span.end..)?))) {
        Some((before, after)) => {
            out.extend_from_slice(before);
            out.extend_from_slice(after);
        }
        None => out.extend_from_slice(data),
    }
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
#[path = "openai_stream_tests.rs"]
mod tests;
