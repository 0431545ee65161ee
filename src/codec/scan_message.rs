//! The usual chat message of `codec::scan`: `{"role":"…","content":"…"}`, compact, in that
//! order, both values strings (what the OpenAI SDKs and most clients send for every text
//! message), read by `Cursor::skip` as two word compares around its two strings instead of the
//! byte walk's grammar steps (its `{`, two keys, two strings, the comma and the `}`, each found
//! by a dispatch on the next byte: about 300 instructions a message, callgrind, issue 18).
//! Invariant: a message is read here only where the byte walk reads the same bytes the same
//! way (the same string reader, the same depth limit), so it would accept them too; anything
//! else leaves the cursor as it was and the byte walk decides.

use super::{member, Cursor};

impl Cursor<'_> {
    /// At a `{`: the usual message read through its `}` (true), or nothing read (false).
    #[inline(always)]
    pub(super) fn usual_message(&mut self) -> bool {
        let (at, non_ascii) = (self.at, self.non_ascii);
        if self.usual_message_here().is_some() {
            return true;
        }
        (self.at, self.non_ascii) = (at, non_ascii);
        false
    }

    /// `usual_message`'s reading, leaving the cursor wherever it stopped.
    #[inline(always)]
    fn usual_message_here(&mut self) -> Option<()> {
        const OPEN: (u128, u128, usize) = member(b"{\"role\":\"");
        const CONTENT: (u128, u128, usize) = member(b",\"content\":\"");
        // The byte walk's `enter` refuses the object at the limit.
        if self.depth + 1 >= self.limit {
            return None;
        }
        self.glue(OPEN)?;
        self.string_after_quote()?;
        self.glue(CONTENT)?;
        self.string_after_quote()?;
        (self.peek()? == b'}').then(|| self.at += 1)
    }

    /// The bytes at the cursor open with `glue` (a `member` word: the next 16 bytes compared
    /// as one word under its mask): the cursor moved past it. Fewer than 16 bytes left is no
    /// match (a message is followed by at least `]}` in a body).
    #[inline(always)]
    fn glue(&mut self, (word, mask, len): (u128, u128, usize)) -> Option<()> {
        let rest = self.bytes.get(self.at..)?;
        let head = u128::from_le_bytes(*rest.first_chunk::<16>()?);
        (head & mask == word).then(|| self.at += len)
    }
}

#[cfg(test)]
mod tests {
    use super::super::MAX_SCAN_DEPTH;
    use super::*;

    /// `skip` from the start of `value` with the usual message read by its own path (`true`) or
    /// by the byte walk only (`false`): the answer, where the cursor stopped, whether it saw a
    /// byte >= 0x80, the depth it ended at.
    fn walked<const USUAL: bool>(value: &[u8], limit: usize) -> (Option<()>, usize, bool, usize) {
        let mut c = Cursor::new(value, limit);
        let read = c.walk::<USUAL>();
        (read, c.at, c.non_ascii, c.depth)
    }

    /// Messages of the usual shape (each must take the path) and near misses (each must not).
    const USUAL: &[&str] = &[
        r#"{"role":"user","content":"Say hello in five words."}"#,
        r#"{"role":"system","content":"You are terse."}"#,
        r#"{"role":"","content":""}"#,
        r#"{"role":"assistant","content":"héllo \"quoted\" \\ \/ \b\f\n\r\t and more than thirty-two bytes"}"#,
        r#"{"role":"a very long role name past sixteen","content":"x"}"#,
    ];
    const NEAR: &[&str] = &[
        r#"{ "role":"user","content":"x"}"#,
        r#"{"role" :"user","content":"x"}"#,
        r#"{"role":"user", "content":"x"}"#,
        r#"{"role":"user","content":"x" }"#,
        r#"{"content":"x","role":"user"}"#,
        r#"{"role":"user","content":"x","name":"n"}"#,
        r#"{"role":"user","content":[{"type":"text","text":"x"}]}"#,
        r#"{"role":"assistant","content":null}"#,
        r#"{"role":"tool","tool_call_id":"c","content":"x"}"#,
        r#"{"role":"user","content":"\u0041"}"#,
        r#"{"role":"user","content":"a	b"}"#,
        r#"{"role":"user","content":"x""#,
        r#"{"role":"user","content":"x"]"#,
        r#"{"role":"us"#,
        r#"{"rolf":"user","content":"x"}"#,
    ];

    #[test]
    fn the_usual_message_takes_its_path_and_near_misses_do_not() {
        for message in USUAL {
            // What follows a message in a body (its words are compared 16 bytes at a time).
            let body = format!("{message}],\"n\":1}}");
            let mut c = Cursor::new(body.as_bytes(), MAX_SCAN_DEPTH);
            assert!(c.usual_message(), "{message}");
            assert_eq!((c.at, c.depth), (message.len(), 0), "{message}");
        }
        for message in NEAR {
            let mut c = Cursor::new(message.as_bytes(), MAX_SCAN_DEPTH);
            assert!(!c.usual_message(), "{message}");
            assert_eq!((c.at, c.non_ascii), (0, false), "untouched: {message}");
        }
        // At the depth limit the object is the byte walk's to refuse.
        let mut c = Cursor::new(USUAL[0].as_bytes(), 1);
        assert!(!c.usual_message());
        assert_eq!(walked::<true>(USUAL[0].as_bytes(), 1).0, None);
    }

    /// Each message, alone and in an array, and every one-byte mutation of it (dropped,
    /// doubled, or replaced by a byte that matters to the grammar), at every depth limit that
    /// matters: read exactly as the byte walk reads it (answer, end, `non_ascii`, depth).
    #[test]
    fn messages_and_their_mutations_are_skipped_as_the_byte_walk_skips_them() {
        let specials = b"{}[],:\"\\ \tu0e\x01\xc3";
        let mut taken = 0;
        for message in USUAL.iter().chain(NEAR) {
            let pair = format!("[{message},{message}]");
            for value in [message.to_string(), pair] {
                let bytes = value.as_bytes();
                let mut variants = vec![bytes.to_vec()];
                for at in 0..bytes.len() {
                    let mut dropped = bytes.to_vec();
                    dropped.remove(at);
                    let mut doubled = bytes.to_vec();
                    doubled.insert(at, bytes[at]);
                    variants.extend([dropped, doubled]);
                    for &special in specials {
                        let mut replaced = bytes.to_vec();
                        replaced[at] = special;
                        variants.push(replaced);
                    }
                }
                for variant in &variants {
                    for limit in [1, 2, 3, MAX_SCAN_DEPTH] {
                        let fast = walked::<true>(variant, limit);
                        assert_eq!(
                            fast,
                            walked::<false>(variant, limit),
                            "{} at limit {limit}",
                            String::from_utf8_lossy(variant)
                        );
                        taken += usize::from(fast.0.is_some());
                    }
                }
            }
        }
        assert!(taken > 1_000, "only {taken} variants were read");
    }
}
