//! `Field`: the header names rotor itself reads or drops, recognised once while a head is parsed,
//! and the index of where each first occurs, so a lookup is one array read instead of a walk
//! over every field comparing names.
//!
//! Invariant: a span is tagged `Some(f)` exactly when its name equals `f.name()` ASCII
//! case-insensitively (the test holds `Field::of` to that), and the index's entry for `f` is the
//! first span so tagged (past its byte's reach, where a walk for that span starts); lookups
//! through the index therefore answer as the name walk would.

/// A header name read or dropped by the request or response path (lowercase in `name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Field {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    Expect,
    Authorization,
    XApiKey,
    XGoogApiKey,
    ApiKey,
    ContentType,
    XRequestId,
    AcceptEncoding,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Upgrade,
    ProxyAuthorization,
    ProxyAuthenticate,
    AnthropicVersion,
}

impl Field {
    pub const ALL: [Field; 20] = [
        Field::Host,
        Field::ContentLength,
        Field::TransferEncoding,
        Field::Connection,
        Field::Expect,
        Field::Authorization,
        Field::XApiKey,
        Field::XGoogApiKey,
        Field::ApiKey,
        Field::ContentType,
        Field::XRequestId,
        Field::AcceptEncoding,
        Field::KeepAlive,
        Field::ProxyConnection,
        Field::Te,
        Field::Trailer,
        Field::Upgrade,
        Field::ProxyAuthorization,
        Field::ProxyAuthenticate,
        Field::AnthropicVersion,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Field::Host => "host",
            Field::ContentLength => "content-length",
            Field::TransferEncoding => "transfer-encoding",
            Field::Connection => "connection",
            Field::Expect => "expect",
            Field::Authorization => "authorization",
            Field::XApiKey => "x-api-key",
            Field::XGoogApiKey => "x-goog-api-key",
            Field::ApiKey => "api-key",
            Field::ContentType => "content-type",
            Field::XRequestId => "x-request-id",
            Field::AcceptEncoding => "accept-encoding",
            Field::KeepAlive => "keep-alive",
            Field::ProxyConnection => "proxy-connection",
            Field::Te => "te",
            Field::Trailer => "trailer",
            Field::Upgrade => "upgrade",
            Field::ProxyAuthorization => "proxy-authorization",
            Field::ProxyAuthenticate => "proxy-authenticate",
            Field::AnthropicVersion => "anthropic-version",
        }
    }

    /// The field `name` is, if any: its length and first byte leave at most one candidate
    /// (two table reads, [`PICK`]), whose name is then compared whole in at most three words
    /// (see [`Key`]).
    #[inline]
    pub fn of(name: &[u8]) -> Option<Field> {
        Self::of_inlined(name)
    }

    /// [`Field::of`], inlined into the loop that reads a head's fields (`quick::fields`, once a
    /// field): a call there cost ~10 instructions a field.
    #[inline(always)]
    pub(crate) fn of_inlined(name: &[u8]) -> Option<Field> {
        let class = FIRST_CLASS[usize::from(*name.first()?)];
        let candidate = *PICK.get(name.len())?.get(usize::from(class))?;
        let field = *Field::ALL.get(usize::from(candidate))?;
        KEYS.get(usize::from(candidate))?.matches(name).then_some(field)
    }

    /// Hop-by-hop (RFC 9110 §7.6.1), set by rotor for the upstream hop, or the client's own
    /// credentials: never forwarded upstream. `AnthropicVersion`, `ContentType` and
    /// `XRequestId` are read, and forwarded.
    pub fn not_forwarded(self) -> bool {
        !matches!(self, Field::AnthropicVersion | Field::ContentType | Field::XRequestId)
    }

    /// Describes the upstream hop only: never returned to the client.
    pub fn not_returned(self) -> bool {
        matches!(
            self,
            Field::Connection
                | Field::KeepAlive
                | Field::ProxyConnection
                | Field::Te
                | Field::Trailer
                | Field::TransferEncoding
                | Field::Upgrade
                | Field::ContentLength
        )
    }
}

/// Where each field first occurs in a list, and which occur more than once.
///
/// A byte per field: a head travels by value through the request path (returned, wrapped,
/// moved into futures), and `u32` slots made this index 84 bytes of every move; at 24 a
/// response head fits the size the compiler copies inline instead of calling `memcpy`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldIndex {
    /// Span index + 1 of each field's first occurrence; 0 when absent; [`FAR`] when that index
    /// is `FAR - 1` or more (a head with hundreds of fields), then found by a walk from there.
    first: [u8; Field::ALL.len()],
    /// Bit `f as u8`: the field occurs more than once.
    repeated: u32,
}

/// The slot of a field first met at span index `FAR - 1` or later.
pub(crate) const FAR: u8 = u8::MAX;

impl FieldIndex {
    /// Records that span `at` is field `f`.
    pub(crate) fn note(&mut self, f: Field, at: usize) {
        let bit = 1u32 << (f as u8);
        match self.first.get_mut(f as usize) {
            Some(slot) if *slot == 0 => *slot = u8::try_from(at).map_or(FAR, |a| a.saturating_add(1)),
            _ => self.repeated |= bit,
        }
    }

    /// The span index of the first `f`, or, when that is `FAR - 1` or more, `FAR - 1` (where a
    /// walk for it starts).
    #[inline]
    pub(crate) fn first(&self, f: Field) -> Option<usize> {
        let slot = *self.first.get(f as usize)?;
        (slot != 0).then(|| usize::from(slot) - 1)
    }

    #[inline]
    pub(crate) fn repeated(&self, f: Field) -> bool {
        self.repeated & (1u32 << (f as u8)) != 0
    }
}

/// A field's name as the words [`words`] reads from a name of its length, and which bits of
/// them case may change: `0x20` in each byte that is a letter, none elsewhere. A name of that
/// length is the field's, ASCII case-insensitively, exactly when every word ORed with `fold`
/// equals `word`: a letter's byte may differ only in its case bit, any other byte not at all.
/// Two operations a word, where lowercasing the name a word at a time took eight (issue 18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    word: [u64; 3],
    fold: [u64; 3],
}

impl Key {
    const fn of(name: &str) -> Key {
        let word = words_const(name.as_bytes());
        let mut fold = [0u64; 3];
        let mut w = 0;
        while w < 3 {
            let mut byte = 0;
            while byte < 8 {
                let b = (word[w] >> (byte * 8)) as u8;
                if b.is_ascii_lowercase() {
                    fold[w] |= 0x20 << (byte * 8);
                }
                byte += 1;
            }
            w += 1;
        }
        Key { word, fold }
    }

    /// `name` (of the field's length: the caller picked the field by it) is the field's name.
    #[inline(always)]
    fn matches(&self, name: &[u8]) -> bool {
        let w = words(name);
        let differ = |i: usize| (w[i] | self.fold[i]) ^ self.word[i];
        differ(0) | differ(1) | differ(2) == 0
    }
}

/// The first bytes that tell apart two fields of one length (`a`, `c` and `t`, either case) as
/// classes 1 to 3; any other byte is class 0.
static FIRST_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let firsts = *b"act";
    let mut i = 0;
    while i < firsts.len() {
        table[firsts[i] as usize] = i as u8 + 1;
        table[firsts[i].to_ascii_uppercase() as usize] = i as u8 + 1;
        i += 1;
    }
    table
};

/// No field has this length and first byte.
const NONE: u8 = u8::MAX;

/// The only field a name may be, by its length and its first byte's class (`NONE` if none):
/// a field whose first byte has class 0 fills every class of its length, one of classes 1 to
/// 3 then takes its own. Two fields of one length and class cannot both be told apart this
/// way: building the table fails then.
static PICK: [[u8; 4]; 20] = {
    let mut pick = [[NONE; 4]; 20];
    let mut pass = 0;
    while pass < 2 {
        let mut i = 0;
        while i < Field::ALL.len() {
            let name = Field::ALL[i].name().as_bytes();
            let class = FIRST_CLASS[name[0] as usize] as usize;
            let row = &mut pick[name.len()];
            if pass == 0 && class == 0 {
                assert!(row[0] == NONE, "two fields of one length start with no telling byte");
                *row = [i as u8; 4];
            } else if pass == 1 && class != 0 {
                assert!(
                    row[class] == NONE || row[0] == row[class],
                    "two fields of one length and class"
                );
                row[class] = i as u8;
            }
            i += 1;
        }
        pass += 1;
    }
    pick
};

/// The key of each field, at its index.
static KEYS: [Key; Field::ALL.len()] = {
    let mut keys = [Key {
        word: [0; 3],
        fold: [0; 3],
    }; Field::ALL.len()];
    let mut i = 0;
    while i < keys.len() {
        keys[i] = Key::of(Field::ALL[i].name());
        i += 1;
    }
    keys
};

/// A name of up to 24 bytes as up to three little-endian words that together hold every byte,
/// read in at most three loads however long it is: up to 8 bytes, its first and last four
/// (two, for 2 or 3 bytes) in one word; up to 16, its first and last eight; up to 24, bytes
/// 0..8, 8..16 and its last eight. Words overlap, so two names of one length are equal exactly
/// when their words are. Unused words are 0.
#[inline(always)]
fn words(name: &[u8]) -> [u64; 3] {
    let eight = |b: &[u8]| b.first_chunk::<8>().map_or(0, |c| u64::from_le_bytes(*c));
    let last8 = |b: &[u8]| b.last_chunk::<8>().map_or(0, |c| u64::from_le_bytes(*c));
    let four = |c: Option<&[u8; 4]>| c.map_or(0, |c| u64::from(u32::from_le_bytes(*c)));
    let two = |c: Option<&[u8; 2]>| c.map_or(0, |c| u64::from(u16::from_le_bytes(*c)));
    match name.len() {
        0..=1 => [name.first().map_or(0, |&b| u64::from(b)), 0, 0],
        2..=3 => [two(name.first_chunk()) | two(name.last_chunk()) << 16, 0, 0],
        4..=8 => [four(name.first_chunk()) | four(name.last_chunk()) << 32, 0, 0],
        9..=16 => [eight(name), last8(name), 0],
        _ => [eight(name), eight(name.get(8..).unwrap_or_default()), last8(name)],
    }
}

/// [`words`] for the keys, at compile time (a byte at a time; a test holds the two equal).
const fn words_const(name: &[u8]) -> [u64; 3] {
    const fn le(name: &[u8], from: usize, count: usize) -> u64 {
        let mut w = 0u64;
        let mut i = 0;
        while i < count {
            w |= (name[from + i] as u64) << (8 * i);
            i += 1;
        }
        w
    }
    let n = name.len();
    match n {
        0 => [0, 0, 0],
        1 => [name[0] as u64, 0, 0],
        2..=3 => [le(name, 0, 2) | le(name, n - 2, 2) << 16, 0, 0],
        4..=8 => [le(name, 0, 4) | le(name, n - 4, 4) << 32, 0, 0],
        9..=16 => [le(name, 0, 8), le(name, n - 8, 8), 0],
        _ => [le(name, 0, 8), le(name, 8, 8), le(name, n - 8, 8)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn of_recognises_exactly_the_names_in_any_case() {
        for f in Field::ALL {
            let name = f.name();
            assert_eq!(Field::of(name.as_bytes()), Some(f), "{name}");
            assert_eq!(Field::of(name.to_ascii_uppercase().as_bytes()), Some(f), "{name}");
            let mixed: String = name
                .chars()
                .enumerate()
                .map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c })
                .collect();
            assert_eq!(Field::of(mixed.as_bytes()), Some(f), "{mixed}");
            for near in [
                format!("{name}x"),
                format!("{name}-"),
                name[1..].to_string(),
                format!("z{}", &name[1..]),
                format!("{}_", &name[..name.len() - 1]),
                format!("x-{name}"),
            ] {
                let want = Field::ALL.into_iter().find(|g| g.name().eq_ignore_ascii_case(&near));
                assert_eq!(Field::of(near.as_bytes()), want, "{near}");
            }
        }
        for other in [
            "",
            "x",
            "accept",
            "user-agent",
            "hosts",
            "content-typ",
            "te\0",
            "h\u{f8}st",
        ] {
            assert_eq!(Field::of(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn of_agrees_with_eq_ignore_ascii_case_at_every_byte() {
        // Each field's name with every byte value at every position: the neighbours of `A`,
        // `Z`, `a`, `z`, each letter's other case, and bytes that differ from `-` only in 0x20.
        for f in Field::ALL {
            let name = f.name().as_bytes();
            for at in 0..name.len() {
                for byte in 0..=255u8 {
                    let mut near = name.to_vec();
                    near[at] = byte;
                    let want = Field::ALL
                        .into_iter()
                        .find(|g| g.name().as_bytes().eq_ignore_ascii_case(&near));
                    assert_eq!(Field::of(&near), want, "{near:?}");
                }
            }
        }
    }

    #[test]
    fn words_hold_every_byte_and_agree_with_the_const_reading() {
        let text = b"abcdefghijklmnopqrstuvwx";
        for len in 0..=24 {
            let name = &text[..len];
            assert_eq!(words(name), words_const(name), "{len}");
            for at in 0..len {
                let mut other = name.to_vec();
                other[at] ^= 0x40;
                assert_ne!(words(&other), words(name), "{len} {at}");
            }
        }
    }

    #[test]
    fn all_lists_each_field_at_its_own_index() {
        for (i, f) in Field::ALL.into_iter().enumerate() {
            assert_eq!(f as usize, i, "{f:?}");
        }
        assert!(Field::ALL.len() <= 32, "the repeat flags are one u32");
    }

    #[test]
    fn the_index_keeps_the_first_and_flags_repeats() {
        let mut index = FieldIndex::default();
        index.note(Field::Host, 3);
        index.note(Field::Te, 0);
        index.note(Field::Te, 5);
        assert_eq!(index.first(Field::Host), Some(3));
        assert_eq!(index.first(Field::Te), Some(0));
        assert_eq!(index.first(Field::Expect), None);
        assert!(index.repeated(Field::Te) && !index.repeated(Field::Host));
        for (at, want) in [(253, 253), (254, 254), (255, 254), (70_000, 254)] {
            let mut index = FieldIndex::default();
            index.note(Field::Expect, at);
            assert_eq!(index.first(Field::Expect), Some(want), "{at}");
        }
    }
}
