//! `Field`: the header names rotor itself reads or drops, recognised once while a head is parsed,
//! and the index of where each first occurs, so a lookup is one array read instead of a walk
//! over every field comparing names.
//!
//! Invariant: a span is tagged `Some(f)` exactly when its name equals `f.name()` ASCII
//! case-insensitively (the test holds `Field::of` to that), and the index's entry for `f` is the
//! first span so tagged; lookups through the index therefore answer as the name walk would.

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

    /// The field `name` is, if any: its length and first byte leave at most one candidate,
    /// which is then compared whole (one compare per field, most fields none).
    pub fn of(name: &[u8]) -> Option<Field> {
        let candidate = match (name.len(), name.first().map(u8::to_ascii_lowercase)) {
            (2, _) => Field::Te,
            (4, _) => Field::Host,
            (6, _) => Field::Expect,
            (7, Some(b'a')) => Field::ApiKey,
            (7, Some(b't')) => Field::Trailer,
            (7, _) => Field::Upgrade,
            (9, _) => Field::XApiKey,
            (10, Some(b'c')) => Field::Connection,
            (10, _) => Field::KeepAlive,
            (12, Some(b'c')) => Field::ContentType,
            (12, _) => Field::XRequestId,
            (13, _) => Field::Authorization,
            (14, Some(b'c')) => Field::ContentLength,
            (14, _) => Field::XGoogApiKey,
            (15, _) => Field::AcceptEncoding,
            (16, _) => Field::ProxyConnection,
            (17, Some(b'a')) => Field::AnthropicVersion,
            (17, _) => Field::TransferEncoding,
            (18, _) => Field::ProxyAuthenticate,
            (19, _) => Field::ProxyAuthorization,
            _ => return None,
        };
        token_eq_lower(name, candidate.name().as_bytes()).then_some(candidate)
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldIndex {
    /// Span index + 1 of each field's first occurrence; 0 when absent.
    first: [u32; Field::ALL.len()],
    /// Bit `f as u8`: the field occurs more than once.
    repeated: u32,
}

impl FieldIndex {
    /// Records that span `at` is field `f`.
    pub(crate) fn note(&mut self, f: Field, at: usize) {
        let bit = 1u32 << (f as u8);
        match self.first.get_mut(f as usize) {
            Some(slot) if *slot == 0 => *slot = u32::try_from(at).map_or(u32::MAX, |a| a.saturating_add(1)),
            _ => self.repeated |= bit,
        }
    }

    /// The span index of the first `f`.
    pub(crate) fn first(&self, f: Field) -> Option<usize> {
        let slot = *self.first.get(f as usize)?;
        (slot != 0).then(|| slot as usize - 1)
    }

    pub(crate) fn repeated(&self, f: Field) -> bool {
        self.repeated & (1u32 << (f as u8)) != 0
    }
}

/// `name` equals `lower` (a name with no uppercase ASCII letter) ASCII case-insensitively,
/// eight bytes at a time: `name` is lowercased a word at once and compared with `lower`'s word.
/// A name of 8 or more bytes ends with the overlapping last word; a shorter one is one word
/// padded with NUL (on both sides, so the padding compares equal).
pub(crate) fn token_eq_lower(name: &[u8], lower: &[u8]) -> bool {
    if name.len() != lower.len() {
        return false;
    }
    if name.len() < 8 {
        return to_lower8(padded(name)) == padded(lower);
    }
    let mut ours = name.chunks_exact(8);
    let mut theirs = lower.chunks_exact(8);
    for (a, b) in ours.by_ref().zip(theirs.by_ref()) {
        if to_lower8(word(a)) != word(b) {
            return false;
        }
    }
    let last = |b: &[u8]| u64::from_le_bytes(b.last_chunk::<8>().copied().unwrap_or_default());
    to_lower8(last(name)) == last(lower)
}

/// Eight bytes as one little-endian word (a shorter slice reads as zero).
fn word(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap_or_default())
}

/// Up to seven bytes as one word, NUL-padded.
fn padded(b: &[u8]) -> u64 {
    b.iter().rev().fold(0u64, |w, &byte| w << 8 | u64::from(byte))
}

/// Every byte `A`..=`Z` of `x` lowercased, every other byte as it was. Per lane, on its low
/// seven bits (so no carry crosses a lane): `+ 0x3f` sets the lane's high bit from `A` on,
/// `+ 0x25` from `[` on; a lane in between whose own high bit is clear is an uppercase letter,
/// and gets 0x20 added (its flag, 0x80, shifted down by two).
fn to_lower8(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = ONES * 0x7f;
    let low = x & LOW7;
    let from_a = low + ONES * u64::from(0x80 - b'A');
    let past_z = low + ONES * u64::from(0x80 - b'Z' - 1);
    let upper = from_a & !past_z & !x & !LOW7;
    x | upper >> 2
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
    fn token_eq_lower_agrees_with_eq_ignore_ascii_case() {
        // Every byte value against each letter's case and the neighbours of `A`, `Z`, `a`, `z`,
        // at every position of names 1..=24 bytes long (short words, whole and overlapping).
        let lower = b"abcdefghijklmnopqrstuvwxyz-0123";
        for len in 1..=24 {
            let want = &lower[..len];
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut name = want.to_vec();
                    name[at] = byte;
                    assert_eq!(
                        token_eq_lower(&name, want),
                        name.eq_ignore_ascii_case(want),
                        "{name:?} {want:?}"
                    );
                }
            }
            assert!(!token_eq_lower(&want[1..], want));
        }
        assert!(token_eq_lower(b"", b""));
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
    }
}
