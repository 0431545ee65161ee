//! The usage tail of a plain OpenAI answer read byte by byte without the general `Cursor`
//! (`usage_tail` cost ~1.0 k instructions per chat answer, most of it in `Cursor::key` and its
//! key compares: callgrind, issue 18).
//! Invariant: `usage_tail_quick` answers `Some` only where `usage_tail` answers the same
//! `Some`; for anything outside its narrow shape (a key that is not plain `[a-z0-9_]`, a value
//! that is neither a plain integer nor `null`, a duplicate count, a depth limit below 4) it
//! answers `None` and the caller runs `usage_tail`. What follows the `usage` object is read by
//! the `Cursor` exactly as `usage_tail` reads it. It also tells when the tail holds no second
//! `"usage"`, so the caller need not search for one: when it read every byte itself (its
//! grammar quotes only keys, so such a mention could only be a key, and none was `usage`).

use super::{word, Cursor, UsageCounts, MAX_SCAN_DEPTH};

/// `usage_tail` for its common shape: `"usage":{"prompt_tokens":16,...}` followed by the body's
/// end or more members, and whether the tail certainly has no other `"usage"` after its first
/// seven bytes. `None` = not decided here.
pub fn usage_tail_quick(tail: &[u8], max_depth: usize) -> Option<(UsageCounts, bool)> {
    // `usage_tail` opens the virtual `{`, the usage object and a details object: depth 3.
    if max_depth.min(MAX_SCAN_DEPTH) <= 3 {
        return None;
    }
    if !tail.starts_with(b"\"usage\"") {
        return None;
    }
    let mut q = Quick {
        bytes: tail,
        at: 7,
        named_usage: false,
    };
    q.eat(b':')?;
    let out = q.object()?;
    // The common end: the body's closing brace and nothing but whitespace after it. Every byte
    // read so far was ASCII, so the tail is UTF-8 exactly when the `Cursor` would find it so.
    let after = q.at;
    if q.take(b'}') && q.at_end() {
        return Some((out, !q.named_usage));
    }
    // More members (`"system_fingerprint"`, ...): read as `usage_tail` reads them.
    let mut c = Cursor::new(tail, max_depth);
    c.at = after;
    c.enter()?;
    while c.take(b',') {
        c.key()?;
        c.skip()?;
    }
    c.eat(b'}')?;
    c.finish()?;
    Some((out, false))
}

/// `usage_object` for the same common shape, at the cursor (the object's `{`, after whitespace
/// or not): the counts, the cursor moved just past the object. `None` (the cursor not moved) =
/// not decided here. It keeps no depth, so it reads only where the cursor's limit leaves room
/// for the object and a details object, as `usage_object` opens them. A stream's usage chunk
/// read its object through the `Cursor` for ~860 instructions (callgrind, issue 18).
pub(crate) fn usage_object_quick(c: &mut Cursor<'_>) -> Option<UsageCounts> {
    if c.depth + 2 >= c.limit {
        return None;
    }
    let mut q = Quick {
        bytes: c.bytes,
        at: c.at,
        named_usage: false,
    };
    let out = q.object()?;
    c.at = q.at;
    Some(out)
}

/// `usage_tail_quick`'s slots for the members it reads: the counts (2 and 3 are the details),
/// and any other member.
const PROMPT: usize = 0;
const COMPLETION: usize = 1;
const OTHER: usize = 4;

/// A position in the tail; ASCII structure only.
struct Quick<'a> {
    bytes: &'a [u8],
    at: usize,
    /// A key named `usage` was read.
    named_usage: bool,
}

impl<'a> Quick<'a> {
    /// Whitespace, then a usage object read to its `}`: its counts, as `usage_object` reads
    /// them.
    #[inline(always)]
    fn object(&mut self) -> Option<UsageCounts> {
        self.eat(b'{')?;
        let mut out = UsageCounts::default();
        let mut seen = [false; 4];
        if self.take(b'}') {
            return Some(out);
        }
        if let Some((prompt, completion)) = self.usual_three() {
            (out.prompt, out.completion) = (prompt, completion);
            seen[PROMPT] = true;
            seen[COMPLETION] = true;
            if !self.take(b',') {
                self.eat(b'}')?;
                return Some(out);
            }
        }
        self.members(out, seen)
    }

    /// The object's members from the cursor on (after its `{` or a `,`), to its `}`: the
    /// counts in `out`, `seen` the counts already read.
    #[inline(always)]
    fn members(&mut self, mut out: UsageCounts, mut seen: [bool; 4]) -> Option<UsageCounts> {
        loop {
            let slot = match self.known_member() {
                Some(slot) => slot,
                // Keys told apart by length first.
                None => match self.key()? {
                    key if key.len() == 13 && key == b"prompt_tokens" => PROMPT,
                    key if key.len() == 17 && key == b"completion_tokens" => COMPLETION,
                    key if key.len() == 21 && key == b"prompt_tokens_details" => 2,
                    key if key.len() == 25 && key == b"completion_tokens_details" => 3,
                    _ => OTHER,
                },
            };
            // A count `usage_tail` reads twice is refused.
            if slot < OTHER && std::mem::replace(seen.get_mut(slot)?, true) {
                return None;
            }
            match slot {
                PROMPT => out.prompt = self.uint()?,
                COMPLETION => out.completion = self.uint()?,
                2 => out.cached = self.details(b"cached_tokens")?,
                3 => out.reasoning = self.details(b"reasoning_tokens")?,
                _ => self.plain_value()?,
            }
            if !self.take(b',') {
                break;
            }
        }
        self.eat(b'}')?;
        Some(out)
    }

    /// The members almost every usage object opens with, in their usual order and without
    /// whitespace, `"prompt_tokens":N,"completion_tokens":N,"total_tokens":N`, compared as
    /// three words with the counts between: the prompt and completion counts, the cursor just
    /// past the total. `None` (the cursor not moved) for anything else, which `members` then
    /// reads from the start; what this reads, `members` reads the same (the same names, the
    /// same `uint`, and a total `members` would also take). Read member by member (whitespace
    /// looked for around every token, each name found by `known_member`, slots and duplicates
    /// checked, the total through `plain_value`) the mock's usage object cost ~410
    /// instructions (callgrind, issue 18).
    #[inline(always)]
    fn usual_three(&mut self) -> Option<(u64, u64)> {
        let start = self.at;
        let read = self.usual_three_here();
        if read.is_none() {
            self.at = start;
        }
        read
    }

    /// `usual_three`'s reading, leaving the cursor wherever it stopped.
    #[inline(always)]
    fn usual_three_here(&mut self) -> Option<(u64, u64)> {
        const PROMPT_NAME: u128 = word(b"\"prompt_tokens\":");
        // `,"completion_tokens":` is 21 bytes: its first 16, then its last 8.
        const COMPLETION_HEAD: u128 = word(b",\"completion_tok");
        const COMPLETION_END: u64 = u64::from_le_bytes(*b"tokens\":");
        const TOTAL_NAME: u128 = word(b",\"total_tokens\":");
        if self.word()? != PROMPT_NAME {
            return None;
        }
        self.at += 16;
        let prompt = self.uint()?;
        let rest = self.bytes.get(self.at..)?;
        let end = rest.get(13..).and_then(|end| end.first_chunk::<8>());
        if self.word()? != COMPLETION_HEAD || u64::from_le_bytes(*end?) != COMPLETION_END {
            return None;
        }
        self.at += 21;
        let completion = self.uint()?;
        if self.word()? != TOTAL_NAME {
            return None;
        }
        self.at += 16;
        self.uint()?;
        Some((prompt, completion))
    }

    /// The next 16 bytes as one little-endian word (`None` when fewer are left).
    #[inline(always)]
    fn word(&self) -> Option<u128> {
        let rest = self.bytes.get(self.at..)?;
        Some(u128::from_le_bytes(*rest.first_chunk::<16>()?))
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        self.ws();
        (self.peek()? == byte).then(|| self.at += 1)
    }

    fn take(&mut self, byte: u8) -> bool {
        self.eat(byte).is_some()
    }

    fn at_end(&mut self) -> bool {
        self.ws();
        self.at == self.bytes.len()
    }

    /// Whitespace, a key of `[a-z0-9_]` only (so no escape, no control, ASCII), its colon. The
    /// names a usage object usually holds are compared whole (with their closing quote), the
    /// others read byte by byte.
    fn key(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.at;
        let rest = self.bytes.get(start..)?;
        let len = match rest.first() {
            Some(b'p') if rest.starts_with(b"prompt_tokens\"") => 13,
            Some(b'c') if rest.starts_with(b"completion_tokens\"") => 17,
            Some(b't') if rest.starts_with(b"total_tokens\"") => 12,
            _ => rest
                .iter()
                .position(|b| !matches!(b, b'a'..=b'z' | b'_' | b'0'..=b'9'))
                .unwrap_or(rest.len()),
        };
        // The closing quote right after the name (no whitespace inside a key).
        if rest.get(len) != Some(&b'"') {
            return None;
        }
        self.at = start + len + 1;
        self.eat(b':')?;
        let key = rest.get(..len)?;
        self.named_usage |= key == b"usage";
        Some(key)
    }

    /// Whitespace, then one of the names every usage object has, with its closing quote and
    /// colon right after it, read by comparing the next 16 bytes as one word: its slot
    /// (`PROMPT`, `COMPLETION`, `OTHER` for `total_tokens`). `None` (nothing but whitespace
    /// read) for anything else, which `key` then reads. Reading these through `key` (its
    /// compares, a second compare to find the slot, the colon) cost ~60 instructions a member
    /// (callgrind, issue 18). No `usage` among them, so `named_usage` stays as `key` leaves it.
    fn known_member(&mut self) -> Option<usize> {
        const PROMPT_NAME: u128 = word(b"\"prompt_tokens\":");
        const COMPLETION_HEAD: u128 = word(b"\"completion_toke");
        const TOTAL_NAME: u128 = word(b"\"total_tokens\":");
        const FIFTEEN: u128 = u128::MAX >> 8;
        self.ws();
        let rest = self.bytes.get(self.at..)?;
        let head = u128::from_le_bytes(*rest.first_chunk::<16>()?);
        let (slot, len) = if head == PROMPT_NAME {
            (PROMPT, 16)
        } else if head == COMPLETION_HEAD && rest.get(16..20) == Some(&b"ns\":"[..]) {
            (COMPLETION, 20)
        } else if head & FIFTEEN == TOTAL_NAME {
            (OTHER, 15)
        } else {
            return None;
        };
        self.at += len;
        Some(slot)
    }

    /// `Cursor::uint` up to 19 digits (which always fit `u64`): a non-negative integer, no
    /// leading zero, fraction or exponent. Longer ones are left to `usage_tail`. Inlined: a
    /// call per count cost ~15 instructions of its ~50 (three counts an answer; callgrind,
    /// issue 18).
    #[inline(always)]
    fn uint(&mut self) -> Option<u64> {
        self.ws();
        let rest = self.bytes.get(self.at..)?;
        let (mut n, mut digits) = (0u64, 0usize);
        // One test a byte for digit or not (`b - '0'` wraps above 9 for every other byte).
        while let Some(d) = rest.get(digits).map(|b| b.wrapping_sub(b'0')).filter(|&d| d <= 9) {
            if digits == 19 {
                return None;
            }
            n = n * 10 + u64::from(d);
            digits += 1;
        }
        let leading_zero = digits > 1 && rest.first() == Some(&b'0');
        if digits == 0 || leading_zero || matches!(rest.get(digits), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        self.at += digits;
        Some(n)
    }

    /// `null` (true) or nothing read (false).
    fn null(&mut self) -> bool {
        self.ws();
        let null = self.bytes.get(self.at..).is_some_and(|rest| rest.starts_with(b"null"));
        if null {
            self.at += 4;
        }
        null
    }

    /// A value `Cursor::skip` reads: here only a plain integer or `null`.
    fn plain_value(&mut self) -> Option<()> {
        if self.null() {
            return Some(());
        }
        self.uint().map(|_| ())
    }

    /// `usage_tail`'s `details`: null (0), or an object whose `field` is a count or null (0),
    /// its other members plain integers or null.
    fn details(&mut self, field: &[u8]) -> Option<u64> {
        if self.null() {
            return Some(0);
        }
        self.eat(b'{')?;
        let mut found = None;
        if !self.take(b'}') {
            loop {
                let key = self.key()?;
                if key == field {
                    if found.is_some() {
                        return None;
                    }
                    found = Some(if self.null() { 0 } else { self.uint()? });
                } else {
                    self.plain_value()?;
                }
                if !self.take(b',') {
                    break;
                }
            }
            self.eat(b'}')?;
        }
        Some(found.unwrap_or(0))
    }
}

#[cfg(test)]
#[path = "scan_usage_tests.rs"]
mod tests;
