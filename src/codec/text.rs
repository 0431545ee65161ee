//! `Text`: a slice of a shared head buffer known to be UTF-8.
//!
//! Invariant: a `Text` is made only by [`Text::new`], which checks its bytes once; `Bytes` is
//! immutable, so [`Text::as_str`] hands the text out without checking again. The request path
//! asks for the request's path in six phases (issue 18: `from_utf8` on every ask cost ~500
//! instructions a request).

use std::ops::Deref;

use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    bytes: Bytes,
}

impl Text {
    /// The bytes as text, or `None` when they are not UTF-8.
    pub fn new(bytes: Bytes) -> Option<Self> {
        // Request-targets are ASCII (origin-form allows nothing else): `is_ascii` answers them
        // a word at a time; the full check is for the rest.
        (bytes.is_ascii() || std::str::from_utf8(&bytes).is_ok()).then_some(Self { bytes })
    }

    pub fn as_str(&self) -> &str {
        checked(&self.bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl Deref for Text {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// The one unchecked conversion: only `Text::as_str` calls it, on the bytes `Text::new` checked.
#[allow(unsafe_code)]
fn checked(bytes: &[u8]) -> &str {
    debug_assert!(std::str::from_utf8(bytes).is_ok());
    // SAFETY: `bytes` is the `Bytes` of a `Text`, whose only constructor `Text::new` refused any
    // that were not UTF-8; a `Text`'s field is private and `Bytes` never changes its contents.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_accepts_exactly_utf8_and_as_str_agrees_with_from_utf8() {
        let samples: &[&[u8]] = &[
            b"",
            b"/v1/chat/completions",
            b"/v1/models?key=abc&x=1",
            "/caf\u{e9}/\u{1f600}".as_bytes(),
            b"/\xff",
            b"/\xc3",
            b"\xe2\x82",
            b"/ok\x80more",
            b"*",
        ];
        for raw in samples {
            let text = Text::new(Bytes::copy_from_slice(raw));
            let want = std::str::from_utf8(raw).ok();
            assert_eq!(text.as_ref().map(Text::as_str), want, "{raw:?}");
            if let Some(t) = text {
                assert_eq!(t.as_bytes(), *raw);
                assert_eq!(&t[..], *raw);
            }
        }
    }
}
