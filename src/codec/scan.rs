//! A one-pass reader for the JSON that requests and answers usually are, so the common body is
//! validated and read in one walk over its bytes instead of a depth scan plus sonic-rs (which
//! cost about 5 k instructions per chat request, and 2.8 k per answer for its `usage` tail:
//! callgrind, issue 18).
//! Invariant: this reader only ever decides the plain case. It accepts a strict subset of JSON
//! (RFC 8259 minus `\u` escapes, exponents, control bytes and anything nested more than
//! `MAX_SCAN_DEPTH` or the caller's limit), and answers `None` ("not decided here") for
//! everything else, including every malformed input; the caller then runs its full parser,
//! whose answer (and error message) stands. So whatever this reader accepts, the full parser
//! accepts with the same reading.

use super::json::Inspection;

#[path = "scan_usage.rs"]
mod quick;
pub(crate) use quick::usage_object_quick;
pub use quick::usage_tail_quick;

#[path = "scan_string.rs"]
mod string;
#[cfg(test)]
use string::{special16, special16_swar};

#[path = "scan_message.rs"]
mod message;

/// Deepest nesting read here (the caller's `server.max_json_depth` may lower it); deeper bodies
/// go to the full parser. Bounds this reader's recursion.
const MAX_SCAN_DEPTH: usize = 64;

/// A position in a body being read; every method answers `None` for "not decided here".
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Open arrays and objects around the position.
    depth: usize,
    /// Refused at this depth (the smaller of the caller's limit and `MAX_SCAN_DEPTH`).
    limit: usize,
    /// A byte >= 0x80 was seen in a string: the caller checks the whole body is UTF-8.
    pub(crate) non_ascii: bool,
}

impl<'a> Cursor<'a> {
    /// `max_depth` as `codec::depth::check_depth` counts it (every `[` and `{`).
    pub(crate) fn new(bytes: &'a [u8], max_depth: usize) -> Self {
        Cursor {
            bytes,
            at: 0,
            depth: 0,
            limit: max_depth.min(MAX_SCAN_DEPTH),
            non_ascii: false,
        }
    }

    pub(crate) fn at(&self) -> usize {
        self.at
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    pub(crate) fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Whitespace, then `byte`.
    pub(crate) fn eat(&mut self, byte: u8) -> Option<()> {
        self.take(byte).then_some(())
    }

    /// Whitespace, then `byte` if it is next (true) or nothing (false). Compact JSON has no
    /// whitespace, so the byte at the position is compared first and only whitespace sends the
    /// cursor through `ws` (a token cost a whitespace test, then a second load and compare).
    #[inline]
    pub(crate) fn take(&mut self, byte: u8) -> bool {
        match self.peek() {
            Some(next) if next == byte => {}
            Some(b' ' | b'\t' | b'\n' | b'\r') => {
                self.ws();
                if self.peek() != Some(byte) {
                    return false;
                }
            }
            _ => return false,
        }
        self.at += 1;
        true
    }

    /// Only whitespace left.
    pub(crate) fn at_end(&mut self) -> bool {
        self.ws();
        self.at == self.bytes.len()
    }

    /// Enters an array or object (its opener already read).
    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth < self.limit).then_some(())
    }

    /// Whitespace, then a key without escapes and its colon. Inlined into its callers (the
    /// object loops of `skip` and `inspect_plain`).
    #[inline(always)]
    pub(crate) fn key(&mut self) -> Option<&'a [u8]> {
        self.ws();
        if let Some(key) = self.known_member() {
            return Some(key);
        }
        let key = match self.known_key() {
            Some(key) => key,
            None => match self.string()? {
                (key, false) => key,
                (_, true) => return None,
            },
        };
        self.eat(b':')?;
        Some(key)
    }

    /// `known_key` with the colon right after the name: the next 16 bytes compared as one word
    /// against the quoted name and colon (one compare, no slice compare, no separate colon
    /// read); `None` (nothing read) for any other bytes, which `known_key` and `string` then
    /// read. Keys cost ~66 instructions each through `known_key` and `eat` (8 of them in the
    /// bench body, callgrind, issue 18).
    #[inline]
    fn known_member(&mut self) -> Option<&'a [u8]> {
        const MODEL: (u128, u128, usize) = member(b"\"model\":");
        const MESSAGES: (u128, u128, usize) = member(b"\"messages\":");
        const STREAM: (u128, u128, usize) = member(b"\"stream\":");
        const ROLE: (u128, u128, usize) = member(b"\"role\":");
        const CONTENT: (u128, u128, usize) = member(b"\"content\":");
        const TEMPERATURE: (u128, u128, usize) = member(b"\"temperature\":");
        const TYPE: (u128, u128, usize) = member(b"\"type\":");
        const PROMPT_TOKENS: (u128, u128, usize) = member(b"\"prompt_tokens\":");
        let rest = self.bytes.get(self.at..)?;
        let head = u128::from_le_bytes(*rest.first_chunk::<16>()?);
        let is = |(word, mask, _): (u128, u128, usize)| head & mask == word;
        let (_, _, len) = match rest.get(1)? {
            b'm' if is(MODEL) => MODEL,
            b'm' if is(MESSAGES) => MESSAGES,
            b's' if is(STREAM) => STREAM,
            b'r' if is(ROLE) => ROLE,
            b'c' if is(CONTENT) => CONTENT,
            b't' if is(TEMPERATURE) => TEMPERATURE,
            b't' if is(TYPE) => TYPE,
            b'p' if is(PROMPT_TOKENS) => PROMPT_TOKENS,
            _ => return None,
        };
        self.at += len;
        rest.get(1..len - 2)
    }

    /// `key` for a streamed chunk's members (`usage::event` reads its usage chunk whole): its
    /// names compared as one word each, any other key read by `key`. Through `key` each of
    /// these cost ~60 instructions more (callgrind, issue 18); they are not among `key`'s own
    /// names, which would cost every request body's keys a longer dispatch.
    pub(crate) fn chunk_key(&mut self) -> Option<&'a [u8]> {
        const ID: (u128, u128, usize) = member(b"\"id\":");
        const OBJECT: (u128, u128, usize) = member(b"\"object\":");
        const CREATED: (u128, u128, usize) = member(b"\"created\":");
        const CHOICES: (u128, u128, usize) = member(b"\"choices\":");
        const USAGE: (u128, u128, usize) = member(b"\"usage\":");
        self.ws();
        let known = self.bytes.get(self.at..).and_then(|rest| {
            let head = u128::from_le_bytes(*rest.first_chunk::<16>()?);
            let is = |(word, mask, _): (u128, u128, usize)| head & mask == word;
            let (_, _, len) = match rest.get(1)? {
                b'i' if is(ID) => ID,
                b'o' if is(OBJECT) => OBJECT,
                b'c' if is(CHOICES) => CHOICES,
                b'c' if is(CREATED) => CREATED,
                b'u' if is(USAGE) => USAGE,
                _ => return None,
            };
            Some((rest.get(1..len - 2)?, len))
        });
        match known {
            Some((key, len)) => {
                self.at += len;
                Some(key)
            }
            None => self.key(),
        }
    }

    /// A key chat requests and answers name often, compared whole with its quotes against the
    /// bytes at the position (read as `string` reads it: ASCII, no escape), told apart by its
    /// first letter; `None` (nothing read) for any other. Reading keys through `string` cost
    /// ~70 instructions each, ~850 per chat request (callgrind, issue 18).
    fn known_key(&mut self) -> Option<&'a [u8]> {
        let rest = self.bytes.get(self.at..)?;
        let quoted: &[u8] = match rest.get(1)? {
            b'm' if rest.starts_with(b"\"model\"") => b"\"model\"",
            b'm' if rest.starts_with(b"\"messages\"") => b"\"messages\"",
            b's' if rest.starts_with(b"\"stream\"") => b"\"stream\"",
            b'r' if rest.starts_with(b"\"role\"") => b"\"role\"",
            b'c' if rest.starts_with(b"\"content\"") => b"\"content\"",
            b't' if rest.starts_with(b"\"temperature\"") => b"\"temperature\"",
            b't' if rest.starts_with(b"\"type\"") => b"\"type\"",
            b'p' if rest.starts_with(b"\"prompt_tokens\"") => b"\"prompt_tokens\"",
            _ => return None,
        };
        self.at += quoted.len();
        rest.get(1..quoted.len() - 1)
    }

    /// Whitespace, then a non-negative integer that fits `u64` (no fraction, no exponent).
    pub(crate) fn uint(&mut self) -> Option<u64> {
        self.ws();
        let start = self.at;
        let mut n: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.at += 1;
        }
        let digits = self.at - start;
        let leading_zero = digits > 1 && self.bytes.get(start) == Some(&b'0');
        if digits == 0 || leading_zero || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(n)
    }

    /// Whitespace, then `true`, `false` or `null` (`Some(None)`).
    pub(crate) fn literal(&mut self) -> Option<Option<bool>> {
        self.ws();
        let rest = self.bytes.get(self.at..)?;
        let (value, len) = if rest.starts_with(b"true") {
            (Some(true), 4)
        } else if rest.starts_with(b"false") {
            (Some(false), 5)
        } else if rest.starts_with(b"null") {
            (None, 4)
        } else {
            return None;
        };
        self.at += len;
        Some(value)
    }

    /// Whitespace, then a number: `-`, integer part, optional fraction (no exponent).
    fn number(&mut self) -> Option<()> {
        self.ws();
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let digits = |c: &mut Self| {
            let start = c.at;
            while let Some(b'0'..=b'9') = c.peek() {
                c.at += 1;
            }
            c.at - start
        };
        let first = self.peek();
        let whole = digits(self);
        if whole == 0 || (whole > 1 && first == Some(b'0')) {
            return None;
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if digits(self) == 0 {
                return None;
            }
        }
        (!matches!(self.peek(), Some(b'e' | b'E'))).then_some(())
    }

    /// Whitespace, then any value of the subset, read to its end. One loop, no recursion: the
    /// open containers are the bits of `objects` (1 = object), so a nested value costs no call
    /// (with `key` inlined, ~110 instructions less per chat request than a call per value and
    /// key: callgrind, issue 18). `enter` keeps the nesting below 64 levels, the bits a `u64`
    /// holds. A chat message of the usual shape is read whole by `usual_message`.
    pub(crate) fn skip(&mut self) -> Option<()> {
        self.walk::<true>()
    }

    /// `skip`; `USUAL` reads the usual chat message by its own path (`usual_message`), off only
    /// in the tests that hold that path to the byte walk.
    #[inline(always)]
    fn walk<const USUAL: bool>(&mut self) -> Option<()> {
        let base = self.depth;
        let mut objects: u64 = 0;
        loop {
            // A value.
            self.ws();
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    self.string_after_quote()?;
                }
                b'{' if USUAL && self.usual_message() => {}
                opener @ (b'{' | b'[') => {
                    self.at += 1;
                    self.enter()?;
                    let object = opener == b'{';
                    if !self.take(if object { b'}' } else { b']' }) {
                        objects = objects << 1 | u64::from(object);
                        if object {
                            self.key()?;
                        }
                        continue;
                    }
                    self.depth -= 1;
                }
                b't' | b'f' | b'n' => {
                    self.literal()?;
                }
                _ => self.number()?,
            }
            // After a value: close containers until a comma (then the next element, or the
            // next member's key) or until the value `skip` was called for is read.
            loop {
                if self.depth == base {
                    return Some(());
                }
                let object = objects & 1 == 1;
                if self.take(b',') {
                    if object {
                        self.key()?;
                    }
                    break;
                }
                self.eat(if object { b'}' } else { b']' })?;
                objects >>= 1;
                self.depth -= 1;
            }
        }
    }

    /// The top-level object is being read: counts it for the depth limit.
    pub(crate) fn open_object(&mut self) -> Option<()> {
        self.eat(b'{')?;
        self.enter()
    }

    /// An object (at its `{`) read for one member: `read`'s value for `name` (called at the
    /// value, after whitespace), `Some(None)` when the object has no such member, every other
    /// member skipped. `None` for a repeated `name` too: left to the full parser, which decides
    /// which one counts.
    pub(crate) fn only_member<T>(
        &mut self,
        name: &[u8],
        mut read: impl FnMut(&mut Self) -> Option<T>,
    ) -> Option<Option<T>> {
        self.open_object()?;
        let mut found = None;
        if !self.take(b'}') {
            loop {
                if self.key()? == name {
                    if found.is_some() {
                        return None;
                    }
                    self.ws();
                    found = Some(read(self)?);
                } else {
                    self.skip()?;
                }
                if !self.take(b',') {
                    break;
                }
            }
            self.eat(b'}')?;
        }
        self.depth -= 1;
        Some(found)
    }

    /// Done: only whitespace left, and the whole body is UTF-8 when a string was not ASCII.
    pub(crate) fn finish(mut self) -> Option<()> {
        let utf8 = !self.non_ascii || std::str::from_utf8(self.bytes).is_ok();
        (self.at_end() && utf8).then_some(())
    }
}

/// `json::inspect_body` for the plain body, in one pass; `None` = not decided here (also for
/// every body the full inspection refuses, a duplicate `model`, `stream` or `stream_options`).
pub(crate) fn inspect_plain(body: &[u8], max_depth: usize) -> Option<Inspection> {
    let (mut out, model) = read_plain(body, max_depth)?;
    out.model = model.map(str::to_owned);
    Some(out)
}

/// `inspect_plain` with the model's text borrowed from the body (`out.model` stays `None`):
/// the request path copies it once, where it keeps it (`json::inspect_request`).
pub(crate) fn read_plain(body: &[u8], max_depth: usize) -> Option<(Inspection, Option<&str>)> {
    let mut c = Cursor::new(body, max_depth);
    let mut out = Inspection::default();
    let mut seen_stream = false;
    let mut model = None;
    c.open_object()?;
    if !c.take(b'}') {
        loop {
            let key = c.key()?;
            c.ws();
            match key {
                b"model" => {
                    let start = c.at();
                    let (value, escaped) = c.string()?;
                    if escaped || model.is_some() {
                        return None;
                    }
                    model = Some(value);
                    out.model_span = Some(start..c.at());
                }
                b"stream" => {
                    if std::mem::replace(&mut seen_stream, true) {
                        return None;
                    }
                    out.stream = c.literal()?.unwrap_or(false);
                }
                b"max_completion_tokens" => out.max_completion_tokens = Some(c.uint()?),
                b"max_tokens" => out.max_tokens = Some(c.uint()?),
                b"stream_options" => {
                    if std::mem::replace(&mut out.has_stream_options, true) {
                        return None;
                    }
                    out.include_usage = stream_options(&mut c)?;
                }
                _ => c.skip()?,
            }
            if !c.take(b',') {
                break;
            }
        }
        c.eat(b'}')?;
    }
    c.finish()?;
    Some((out, model.map(checked_text)))
}

/// A `stream_options` value, read in the same pass: whether it is an object whose
/// `include_usage` is `true` (what the full inspection asks sonic-rs). A repeated
/// `include_usage` is left to the full inspection, which every body with `stream_options` went
/// to before (a sonic-rs pass on top of this one; issue 18).
fn stream_options(c: &mut Cursor<'_>) -> Option<bool> {
    c.ws();
    if c.peek() != Some(b'{') {
        c.skip()?;
        return Some(false);
    }
    let include_usage = c.only_member(b"include_usage", |c| match c.peek() {
        Some(b't' | b'f' | b'n') => Some(c.literal()? == Some(true)),
        _ => {
            c.skip()?;
            Some(false)
        }
    })?;
    Some(include_usage == Some(true))
}

/// The text of a string value read by a `Cursor` whose `finish` passed, without checking its
/// UTF-8 a second time (`from_utf8` on the model cost 118 instructions a request: callgrind,
/// issue 18).
#[allow(unsafe_code)]
fn checked_text(value: &[u8]) -> &str {
    debug_assert!(std::str::from_utf8(value).is_ok());
    // SAFETY: `finish` passed, so either no string held a byte >= 0x80 (the value is ASCII) or
    // the whole body is valid UTF-8; the value lies between two ASCII quotes, which are
    // character boundaries, so it is valid UTF-8 on its own.
    unsafe { std::str::from_utf8_unchecked(value) }
}

/// A quoted name and its colon, as `known_member` compares them: its word, the mask of its
/// length, its length.
const fn member(quoted: &[u8]) -> (u128, u128, usize) {
    (word(quoted), u128::MAX >> (8 * (16 - quoted.len())), quoted.len())
}

/// `bytes` (at most 16) as one little-endian word, the rest zero: a key compared whole.
const fn word(bytes: &[u8]) -> u128 {
    let mut out = 0u128;
    let mut i = 0;
    while i < bytes.len() && i < 16 {
        out |= (bytes[i] as u128) << (8 * i);
        i += 1;
    }
    out
}

#[path = "scan_tail.rs"]
mod tail;
pub(crate) use tail::usage_object;
pub use tail::{usage_tail, UsageCounts};

#[cfg(test)]
#[path = "scan_random_tests.rs"]
mod random_tests;
#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
