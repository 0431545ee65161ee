//! `RequestId`: the id of one request, the client's `x-request-id` when it is a sane token, else
//! sixteen fresh random hex digits; echoed in the answer's `x-request-id` and kept in its record.
//!
//! Invariant: 1..=64 bytes of graphic ASCII, held inline. A drawn id used to be a `Bytes` of its
//! own, allocated per request and written a digit at a time (~180 instructions a request with
//! its free, callgrind, issue 18); inline and spread a word at a time it costs no allocation.

use std::ops::Deref;

use crate::codec::head::RequestHead;
use crate::codec::Field;

/// The longest client `x-request-id` kept; a longer one is replaced by a fresh id.
const MAX_LEN: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestId {
    len: u8,
    bytes: [u8; MAX_LEN],
}

impl RequestId {
    /// The client's `x-request-id` when it is 1..=64 graphic ASCII bytes, else a fresh id.
    pub fn of(head: &RequestHead) -> Self {
        head.field(Field::XRequestId)
            .and_then(Self::kept)
            .unwrap_or_else(|| Self::fresh(fastrand::u64(..)))
    }

    fn kept(id: &[u8]) -> Option<Self> {
        let sane = !id.is_empty() && id.len() <= MAX_LEN && id.iter().all(u8::is_ascii_graphic);
        let mut kept = Self {
            len: u8::try_from(id.len()).ok().filter(|_| sane)?,
            bytes: [0; MAX_LEN],
        };
        kept.bytes.get_mut(..id.len())?.copy_from_slice(id);
        Some(kept)
    }

    /// `n` as sixteen lowercase hex digits, most significant first.
    fn fresh(n: u64) -> Self {
        let mut id = Self {
            len: 16,
            bytes: [0; MAX_LEN],
        };
        let (high, low) = ((n >> 32) as u32, n as u32);
        if let Some(digits) = id.bytes.first_chunk_mut::<16>() {
            let (first, last) = digits.split_at_mut(8);
            first.copy_from_slice(&hex8(high));
            last.copy_from_slice(&hex8(low));
        }
        id
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }
}

/// `x` as eight lowercase hex digits, most significant first, in a few word operations: each
/// nibble is spread into a byte of its own (nibble `i` into byte `i`), then every byte becomes
/// its digit at once (`'0' + v`, plus 39 more for `v >= 10`, which is when `v + 6` carries
/// into bit 4; no byte can overflow into the next).
fn hex8(x: u32) -> [u8; 8] {
    let mut v = u64::from(x);
    v = (v | v << 16) & 0x0000_ffff_0000_ffff;
    v = (v | v << 8) & 0x00ff_00ff_00ff_00ff;
    v = (v | v << 4) & 0x0f0f_0f0f_0f0f_0f0f;
    const ONES: u64 = 0x0101_0101_0101_0101;
    let letters = ((v + 6 * ONES) >> 4) & ONES;
    (v + b'0' as u64 * ONES + letters * 39).to_be_bytes()
}

impl Deref for RequestId {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// As `Bytes` shows it (`b"..."`), which the id was before: debug logs read the same.
impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&bytes::Bytes::copy_from_slice(self.as_bytes()), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::head::{parse_request_head, HeadLimits};
    use bytes::BytesMut;

    fn head(raw: &str) -> RequestHead {
        let mut buf = BytesMut::from(raw.as_bytes());
        parse_request_head(&mut buf, &HeadLimits::default()).unwrap().unwrap()
    }

    #[test]
    fn fresh_ids_are_the_number_in_sixteen_lowercase_hex_digits() {
        let mut n = 0x0123_4567_89ab_cdefu64;
        for _ in 0..10_000 {
            assert_eq!(RequestId::fresh(n).as_bytes(), format!("{n:016x}").as_bytes());
            n = n
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
        }
        for n in [0, u64::MAX, 0xa000_0000_0000_0009, 0x9999_aaaa_ffff_0000] {
            assert_eq!(RequestId::fresh(n).as_bytes(), format!("{n:016x}").as_bytes());
        }
    }

    #[test]
    fn a_sane_client_id_is_kept_and_any_other_replaced_by_a_fresh_one() {
        let kept = RequestId::of(&head("GET / HTTP/1.1\r\nHost: r\r\nx-request-id: abc-1\r\n\r\n"));
        assert_eq!(&kept[..], b"abc-1");
        let longest = "x".repeat(64);
        let raw = format!("GET / HTTP/1.1\r\nHost: r\r\nX-Request-Id: {longest}\r\n\r\n");
        assert_eq!(&RequestId::of(&head(&raw))[..], longest.as_bytes());
        for id in ["bad id", &"y".repeat(65), "caf\u{e9}", ""] {
            let raw = format!("GET / HTTP/1.1\r\nHost: r\r\nx-request-id: {id}\r\n\r\n");
            let fresh = RequestId::of(&head(&raw));
            let again = RequestId::of(&head(&raw));
            assert_eq!(fresh.len(), 16, "{id}");
            assert!(
                fresh.iter().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
                "{fresh:?}"
            );
            assert_ne!(fresh, again);
        }
        let none = RequestId::of(&head("GET / HTTP/1.1\r\nHost: r\r\n\r\n"));
        assert_eq!(none.len(), 16);
    }

    #[test]
    fn debug_reads_as_the_bytes_did() {
        let id = RequestId::kept(b"a\"b\\c").unwrap();
        assert_eq!(
            format!("{id:?}"),
            format!("{:?}", bytes::Bytes::from_static(b"a\"b\\c"))
        );
    }
}
