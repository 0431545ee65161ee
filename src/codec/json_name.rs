//! `ModelName`: the model a request names, as the request path carries it from `inspect` to
//! `finish`. A name of up to `INLINE` bytes (almost every one) is held inline, copied once
//! out of the body the plain reader decided it in; a longer one, and a name the full parser
//! decoded, on the heap.
//! Invariant: the bytes held are always exactly those of a `str` (the text is never checked
//! again). As a `String` the name cost an allocation and its free per request (~100
//! instructions, callgrind, issue 18).

use std::ops::Deref;

/// Longest name held inline, a whole number of words (the whole value is 64 bytes).
const INLINE: usize = 56;

/// A model name (see the module docs).
#[derive(Clone)]
pub struct ModelName(Repr);

#[derive(Clone)]
enum Repr {
    /// `bytes[len..]` are spaces, so whole words of `bytes` can be judged.
    Inline {
        len: u8,
        printable: bool,
        bytes: [u8; INLINE],
    },
    Heap(Box<str>),
}

impl ModelName {
    /// `name`, copied (inline when it fits, with whether it is all printable ASCII, judged in
    /// the same go).
    pub fn new(name: &str) -> Self {
        let src = name.as_bytes();
        let mut bytes = [b' '; INLINE];
        let len = match u8::try_from(src.len()) {
            Ok(len) if src.len() <= INLINE => len,
            _ => return ModelName(Repr::Heap(name.into())),
        };
        // A name of 8 to 16 bytes (most) in two overlapping word moves, not a `memcpy` call,
        // and judged in the same two words (bytes in both are judged twice, which is harmless).
        let outside = match (src.first_chunk::<8>(), src.last_chunk::<8>()) {
            (Some(first), Some(last)) if src.len() <= 16 => {
                bytes[..8].copy_from_slice(first);
                bytes[src.len() - 8..src.len()].copy_from_slice(last);
                unprintable(u64::from_le_bytes(*first)) | unprintable(u64::from_le_bytes(*last))
            }
            _ => {
                bytes[..src.len()].copy_from_slice(src);
                // The words the name lies in (their rest is spaces).
                let words = bytes.chunks_exact(8).take(src.len().div_ceil(8));
                words.fold(0, |outside, word| {
                    outside | unprintable(u64::from_le_bytes(word.try_into().unwrap_or([0; 8])))
                })
            }
        };
        let printable = outside == 0;
        ModelName(Repr::Inline { len, printable, bytes })
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes, .. } => inline_text(bytes, *len),
            Repr::Heap(name) => name,
        }
    }

    /// Every byte is printable ASCII (0x20..0x7f) and the name is held inline: such a name has
    /// no control character and is far below `codec::target::MAX_MODEL_NAME_BYTES`, so the
    /// request path needs not check it again (`proxy::inspect::validate_model_name`, ~75
    /// instructions a request, callgrind, issue 18). False says nothing either way.
    pub fn is_plain(&self) -> bool {
        matches!(self.0, Repr::Inline { printable: true, .. })
    }
}

/// Non-zero unless each of the eight bytes of `word` is within 0x20..=0x7e: none has its high
/// bit, none is below 0x20 (adding 0x60 to its low seven bits leaves bit 7 clear), none is
/// 0x7f (adding 1 sets it). The low seven bits plus at most 0x60 never carry into the next
/// byte.
fn unprintable(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = ONES * 0x80;
    let low = word & !HIGH;
    let at_least_space = (low + ONES * 0x60) & HIGH;
    let del = (low + ONES) & HIGH;
    (word & HIGH) | (at_least_space ^ HIGH) | del
}

/// The text of an inline name.
#[allow(unsafe_code)]
fn inline_text(bytes: &[u8; INLINE], len: u8) -> &str {
    let held = bytes.get(..usize::from(len)).unwrap_or_default();
    debug_assert!(std::str::from_utf8(held).is_ok());
    // SAFETY: an inline name is only ever built by `ModelName::new`, which copies the whole of
    // a `&str` into `bytes[..len]` and nothing else into them afterwards, so they are valid
    // UTF-8 (see the module invariant).
    unsafe { std::str::from_utf8_unchecked(held) }
}

impl From<String> for ModelName {
    /// A decoded name: inline when short (its allocation is freed at once), else kept.
    fn from(name: String) -> Self {
        match name.len() <= INLINE {
            true => ModelName::new(&name),
            false => ModelName(Repr::Heap(name.into_boxed_str())),
        }
    }
}

impl Deref for ModelName {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for ModelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for ModelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for ModelName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ModelName {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_inline_and_long_ones_on_the_heap() {
        for name in [
            "",
            "gpt-4o-mini",
            "é/ü",
            &"m".repeat(INLINE),
            &"n".repeat(INLINE + 1),
            &"x".repeat(256),
        ] {
            let made = ModelName::new(name);
            assert_eq!(made.as_str(), name);
            assert_eq!(
                matches!(made.0, Repr::Inline { .. }),
                name.len() <= INLINE,
                "{}",
                name.len()
            );
            let from = ModelName::from(name.to_owned());
            assert_eq!(&*from, name);
            assert_eq!(from, made);
        }
        assert_eq!(std::mem::size_of::<ModelName>(), 64);
        assert!(ModelName::new("gpt-4o-mini").is_plain());
        assert!(ModelName::new(" ~").is_plain());
        assert!(
            !ModelName::new(&"x".repeat(INLINE + 1)).is_plain(),
            "on the heap: not judged"
        );
        for bad in ["\u{7f}", "a\u{1}", "\u{85}", "é", "\t", "abcdefgh\u{0}"] {
            assert!(!ModelName::new(bad).is_plain(), "{bad:?}");
        }
    }

    #[test]
    fn printable_is_exactly_0x20_to_0x7e_in_every_position_and_length() {
        for len in 1..=INLINE {
            for at in 0..len {
                for byte in 0..=0x7fu8 {
                    let mut name = vec![b'm'; len];
                    name[at] = byte;
                    let Ok(text) = std::str::from_utf8(&name) else { continue };
                    let made = ModelName::new(text);
                    assert_eq!(made.as_str(), text);
                    assert_eq!(made.is_plain(), (0x20..0x7f).contains(&byte), "{len} {at} {byte:#x}");
                }
            }
        }
        assert_eq!(format!("{:?}", ModelName::new("a\"b")), "\"a\\\"b\"");
    }
}
