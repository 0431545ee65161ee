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
        if !self.take(b'}') {
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
        }
        Some(out)
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
    /// leading zero, fraction or exponent. Longer ones are left to `usage_tail`.
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
mod tests {
    use super::super::usage_tail;
    use super::*;

    const D: usize = 128;

    /// `Some` from the quick reader is `usage_tail`'s answer.
    fn agree(tail: &[u8], depth: usize) -> bool {
        let Some((quick, alone)) = usage_tail_quick(tail, depth) else {
            return false;
        };
        assert_eq!(
            Some(quick),
            usage_tail(tail, depth),
            "{}",
            String::from_utf8_lossy(tail)
        );
        if alone {
            let rest = &tail[7..];
            assert!(
                !rest.windows(7).any(|w| w == b"\"usage\""),
                "{}",
                String::from_utf8_lossy(tail)
            );
        }
        true
    }

    #[test]
    fn common_usage_tails_are_read_byte_by_byte_as_usage_tail_reads_them() {
        for tail in [
            r#""usage":{"prompt_tokens":16,"completion_tokens":5,"total_tokens":21}}"#,
            r#""usage" : { "prompt_tokens" : 9 , "completion_tokens":12,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":3,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":7,"accepted_prediction_tokens":null}},"system_fingerprint":"fp_1","service_tier":null} "#,
            r#""usage":{"prompt_tokens_details":null,"completion_tokens_details":{"reasoning_tokens":null}}}"#,
            r#""usage":{}}"#,
            r#""usage":{"prompt_tokens":9999999999999999999,"total_tokens":0,"prompt":1,"c":2,"t_1":3,"prompt_tokens_x":4}}"#,
            "\"usage\":{\"prompt_tokens\":0}\r\n}\n",
            r#""usage":{"prompt_tokens":1,"completion_tokens":2},"x":{"a":[1,"é",{}]},"y":"z"}"#,
        ] {
            assert!(agree(tail.as_bytes(), D), "not decided: {tail}");
        }
    }

    #[test]
    fn what_the_quick_reader_cannot_be_sure_of_is_left_to_usage_tail() {
        for tail in [
            r#""usage":null}"#,
            r#""usage":{"prompt_tokens":1,"prompt_tokens":2}}"#,
            r#""usage":{"prompt_tokens":1.0}}"#,
            r#""usage":{"prompt_tokens":01}}"#,
            r#""usage":{"prompt_tokens":18446744073709551616}}"#,
            r#""usage":{"prompt_tokens":10000000000000000000}}"#,
            r#""usage":{"prompt_tokens ":1}}"#,
            r#""usage":{"Prompt_tokens":1}}"#,
            r#""usage":{"pro\u006dpt_tokens":1}}"#,
            r#""usage":{"x":"text"}}"#,
            r#""usage":{"x":-1}}"#,
            r#""usage":{"prompt_tokens_details":{"cached_tokens":1,"cached_tokens":1}}}"#,
            r#""usage":{"prompt_tokens_details":true}}"#,
            r#""usage":{"prompt_tokens":1}"#,
            r#""usage":{"prompt_tokens":1}}}"#,
            r#""usage":{"prompt_tokens":1}} x"#,
            r#""usage":{"prompt_tokens":1},"a":[1,2}"#,
            "\"usage\":{\"prompt_tokens\":1},\"a\":\"\u{1}\"}",
        ] {
            assert!(!agree(tail.as_bytes(), D), "decided: {tail}");
        }
        // The virtual `{`, `usage` and a details object count for the depth limit.
        let tail = br#""usage":{"prompt_tokens":1}}"#;
        for depth in 0..4 {
            assert!(usage_tail_quick(tail, depth).is_none(), "depth {depth}");
        }
        assert!(agree(tail, 4));
        assert!(!agree(br#""usage":{"prompt_tokens":1},"x":[[[]]]}"#, 4));
        assert!(agree(br#""usage":{"prompt_tokens":1},"x":[[[]]]}"#, 5));
        // Invalid UTF-8 after the usage object: the tail is refused as `usage_tail` refuses it.
        assert!(!agree(b"\"usage\":{\"prompt_tokens\":1},\"x\":\"\xff\"}", D));
    }

    /// The names read as one word (`known_member`), spaced, cut or misspelt near them, at
    /// every length of the tail: undecided or read as `usage_tail` reads them.
    #[test]
    fn names_read_as_one_word_and_their_near_misses_are_read_as_usage_tail_reads_them() {
        let mut decided = 0;
        for member in [
            r#""prompt_tokens":12"#,
            r#""prompt_tokens" :12"#,
            r#""prompt_tokenz":12"#,
            r#""prompt_tokens_":12"#,
            r#""completion_tokens":3"#,
            r#""completion_tokens" : 3"#,
            r#""completion_tokenx":3"#,
            r#""completion_toke":3"#,
            r#""total_tokens":15"#,
            r#""total_tokens" :15"#,
            r#""total_tokens":1.5"#,
            r#""total_tokensx":15"#,
        ] {
            let tail = format!(r#""usage":{{{member},{member},"total_tokens":15}}}}"#);
            let single = format!(r#""usage":{{{member}}}}}"#);
            for text in [tail, single] {
                for end in 0..=text.len() {
                    decided += usize::from(agree(&text.as_bytes()[..end], D));
                }
            }
        }
        assert!(decided > 10, "decided {decided}");
    }

    /// A random usage tail near the common shape: members of every kind the two readers tell
    /// apart, spacing, members after the object.
    fn random_tail(rng: &mut fastrand::Rng) -> String {
        let ws = |rng: &mut fastrand::Rng| {
            [""; 6]
                .iter()
                .chain(&[" ", "\n", "\t ", "\r\n"])
                .nth(rng.usize(..10))
                .copied()
                .unwrap_or("")
        };
        let keys = [
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "prompt_tokens_details",
            "completion_tokens_details",
            "cached_tokens",
            "reasoning_tokens",
            "x_1",
            "usage",
            "Cost",
            "k\\u0041",
        ];
        let values = [
            "0",
            "7",
            "12345",
            "01",
            "1.5",
            "-2",
            "1e3",
            "18446744073709551615",
            "18446744073709551616",
            "null",
            "true",
            "\"s\"",
            "{}",
            "[]",
            "{\"cached_tokens\":3}",
            "{\"reasoning_tokens\":null,\"a\":1}",
            "{\"cached_tokens\":1,\"cached_tokens\":2}",
            "{\"x\":[1]}",
        ];
        let mut out = format!("\"usage\"{}:{}{{", ws(rng), ws(rng));
        for i in 0..rng.usize(0..6) {
            if i > 0 {
                out.push(',');
            }
            let key = keys[rng.usize(..keys.len())];
            let value = values[rng.usize(..values.len())];
            out.push_str(&format!(
                "{}\"{key}\"{}:{}{value}{}",
                ws(rng),
                ws(rng),
                ws(rng),
                ws(rng)
            ));
        }
        out.push('}');
        for _ in 0..rng.usize(0..3) {
            out.push_str(&format!(
                ",{}\"{}\":{}",
                ws(rng),
                keys[rng.usize(..keys.len())],
                values[rng.usize(..values.len())]
            ));
        }
        out.push_str(&format!("{}}}{}", ws(rng), ws(rng)));
        out
    }

    /// `Some` from `usage_object_quick` is `usage_object`'s answer, ending at the same byte;
    /// the tail's object read at depth 1 (inside an event's object).
    fn object_agrees(tail: &[u8], depth: usize) -> bool {
        let Some(colon) = tail.iter().position(|&b| b == b':') else {
            return false;
        };
        let at = |depth| {
            let mut c = Cursor::new(tail, depth);
            (c.at, c.depth) = (colon + 1, 1);
            c
        };
        let mut quick = at(depth);
        let Some(counts) = usage_object_quick(&mut quick) else {
            assert_eq!(quick.at, colon + 1, "not moved");
            return false;
        };
        let mut cursor = at(depth);
        let text = String::from_utf8_lossy(tail);
        assert_eq!(super::super::usage_object(&mut cursor), Some(counts), "{text}");
        assert_eq!((cursor.at, cursor.depth), (quick.at, 1), "{text}");
        true
    }

    #[test]
    fn random_usage_tails_and_their_mutations_are_undecided_or_read_as_usage_tail_reads_them() {
        let mut rng = fastrand::Rng::with_seed(1801);
        let (mut decided, mut mutated_decided, mut objects) = (0, 0, 0);
        for _ in 0..30_000 {
            let tail = random_tail(&mut rng);
            let depth = [3, 4, 5, D][rng.usize(..4)];
            decided += usize::from(agree(tail.as_bytes(), depth));
            objects += usize::from(object_agrees(tail.as_bytes(), depth));
            // One byte dropped, doubled or replaced by a structural one.
            let mut bytes = tail.into_bytes();
            let at = rng.usize(..bytes.len());
            match rng.u8(..3) {
                0 => {
                    bytes.remove(at);
                }
                1 => bytes.insert(at, bytes[at]),
                _ => bytes[at] = b"{}[],:\"\\ 0n\xff"[rng.usize(..12)],
            }
            mutated_decided += usize::from(agree(&bytes, depth));
            objects += usize::from(object_agrees(&bytes, depth));
        }
        assert!(
            decided > 3_000 && mutated_decided > 1_000,
            "decided {decided}, mutated {mutated_decided}"
        );
        assert!(objects > 4_000, "objects {objects}");
    }
}
