//! Chunk framing for the downstream side (the `relay` step writes with these; response heads
//! are `response_head`'s), and the checked pieces of upstream request heads (the `send` step).
//!
//! Invariant: nothing but `out` is allocated. No CR, LF or NUL is ever written inside a
//! request target or a request header: the writer refuses instead.

use bytes::{BufMut, BytesMut};

use super::fill::Fill;

/// Whether `b` holds CR or LF (or NUL too, with `nul`). The pieces checked are short (a header
/// name or value, a few to a hundred bytes), where a call into `memchr` costs more than the
/// scan: eight bytes at a time with the has-zero-byte trick, then the tail byte by byte.
pub fn holds_any(b: &[u8], nul: bool) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let zero_in = |w: u64| w.wrapping_sub(ONES) & !w & HIGHS != 0;
    let nul_mask = if nul { u64::MAX } else { 0 };
    let mut words = b.chunks_exact(8);
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let w = u64::from_ne_bytes(bytes);
        let cr = w ^ u64::from_ne_bytes([b'\r'; 8]);
        let lf = w ^ u64::from_ne_bytes([b'\n'; 8]);
        // For NUL the word itself is tested; without it, a word of all ones never has a zero.
        if zero_in(cr) || zero_in(lf) || zero_in(w | !nul_mask) {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&c| c == b'\r' || c == b'\n' || (nul && c == 0))
}

/// A request head was not written: one of its parts would have ended a line (or the request
/// line) early and let the rest be read as further header lines or a second request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsafeHead(pub &'static str);

impl std::fmt::Display for UnsafeHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refused to send a request whose {} holds CR, LF, NUL or another byte that breaks the head",
            self.0
        )
    }
}

/// Appends one piece of a request target (the request line is written by the caller around
/// its pieces). Refuses control bytes, space and DEL (see `target::target_is_clean`).
pub fn put_target(out: &mut BytesMut, piece: &[u8]) -> Result<(), UnsafeHead> {
    if !super::target::target_is_clean(piece) {
        return Err(UnsafeHead("request target"));
    }
    out.put_slice(piece);
    Ok(())
}

/// Appends `name: value` CRLF. Refuses a name that is empty or holds a separator or control
/// byte, and a value holding CR, LF or NUL: nothing is written then.
pub fn put_request_header(out: &mut BytesMut, name: &[u8], value: &[u8]) -> Result<(), UnsafeHead> {
    check_request_header(name, value)?;
    let mut fill = Fill::new(out, name.len() + value.len() + 4);
    fill.field(name, value);
    fill.commit();
    Ok(())
}

/// What [`put_request_header`] refuses, for a writer that places the field itself.
pub fn check_request_header(name: &[u8], value: &[u8]) -> Result<(), UnsafeHead> {
    let bad_name = name.is_empty() || name.iter().any(|&b| b <= b' ' || b == b':' || b == 0x7f);
    if bad_name {
        return Err(UnsafeHead("header name"));
    }
    check_request_field(name, value)
}

/// [`check_request_header`] for a name the request parser tagged as one of [`super::Field`]'s:
/// it equals a fixed token name ignoring ASCII case, so it holds no separator or control byte
/// and only the value is checked (the name scan cost ~50 per forwarded field, callgrind).
#[inline]
pub fn check_request_field(name: &[u8], value: &[u8]) -> Result<(), UnsafeHead> {
    debug_assert!(
        super::Field::of(name).is_some() || !name.iter().any(|&b| b <= b' ' || b == b':' || b == 0x7f),
        "a tagged or checked name"
    );
    if holds_any(value, true) {
        return Err(UnsafeHead("header value"));
    }
    Ok(())
}

/// One chunk: hex size, CRLF, data, CRLF. Empty `data` writes nothing, because an empty chunk
/// would be read as the last one.
pub fn write_chunk(out: &mut BytesMut, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.reserve(16 + 4 + data.len());
    out.put_slice(format_hex(data.len() as u64, &mut [0u8; 16]));
    out.put_slice(b"\r\n");
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// The last chunk with no trailers.
pub fn write_last_chunk(out: &mut BytesMut) {
    out.put_slice(b"0\r\n\r\n");
}

/// Lower-case hex without leading zeros, written into `scratch` (itoa has no hex).
fn format_hex(mut n: u64, scratch: &mut [u8; 16]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut i = scratch.len();
    loop {
        i -= 1;
        if let (Some(slot), Some(&d)) = (scratch.get_mut(i), DIGITS.get((n & 0xf) as usize)) {
            *slot = d;
        }
        n >>= 4;
        if n == 0 || i == 0 {
            break;
        }
    }
    scratch.get(i..).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::chunked::{Chunk, ChunkedDecoder, ChunkedLimits};

    #[test]
    fn request_head_pieces_refuse_line_breaks() {
        let mut out = BytesMut::new();
        assert_eq!(put_target(&mut out, b"/v1beta/models/x:generateContent"), Ok(()));
        assert_eq!(put_request_header(&mut out, b"x-goog-api-key", b"k"), Ok(()));
        let good = out.len();
        for target in [&b"/m HTTP/1.1\r\nhost: x"[..], b"/a\nb", b"/a\0", b"/a b", b"/a\x7f"] {
            assert_eq!(put_target(&mut out, target), Err(UnsafeHead("request target")));
        }
        for value in [&b"a\r\nx-evil: 1"[..], b"a\nb", b"a\rb", b"a\0b"] {
            assert_eq!(
                put_request_header(&mut out, b"x", value),
                Err(UnsafeHead("header value"))
            );
        }
        for name in [&b""[..], b"a b", b"a:b", b"a\r\nb", b"a\0"] {
            assert_eq!(put_request_header(&mut out, name, b"v"), Err(UnsafeHead("header name")));
        }
        assert_eq!(out.len(), good, "a refused piece writes nothing");
        assert_eq!(&out[..], b"/v1beta/models/x:generateContentx-goog-api-key: k\r\n");
    }

    /// Every name `Field` tags passes the full name check, in any case: skipping it for them
    /// (`check_request_field`) refuses exactly what `check_request_header` does.
    #[test]
    fn tagged_names_need_no_name_check() {
        for field in crate::codec::Field::ALL {
            for name in [field.name().to_owned(), field.name().to_ascii_uppercase()] {
                assert_eq!(crate::codec::Field::of(name.as_bytes()), Some(field), "{name}");
                for value in [&b"v"[..], b"", b"a b\t\xff", b"a\r\nx: 1", b"a\0"] {
                    assert_eq!(
                        check_request_header(name.as_bytes(), value),
                        check_request_field(name.as_bytes(), value),
                        "{name} {value:?}"
                    );
                }
            }
        }
    }

    /// Differential: `holds_any` answers as `memchr2` / `memchr3` did, at every length and
    /// offset of the byte looked for (both sides of the 8-byte words).
    #[test]
    fn holds_any_matches_memchr() {
        let mut rng = fastrand::Rng::with_seed(18);
        for len in 0..40 {
            for _ in 0..200 {
                let mut b: Vec<u8> = (0..len).map(|_| rng.u8(0x20..=0xff)).collect();
                if len > 0 && rng.bool() {
                    let at = rng.usize(..len);
                    b[at] = [b'\r', b'\n', 0, b'\t', 0x0b, 0x8d, 0x0e][rng.usize(..7)];
                }
                assert_eq!(
                    holds_any(&b, false),
                    memchr::memchr2(b'\r', b'\n', &b).is_some(),
                    "{b:?}"
                );
                assert_eq!(
                    holds_any(&b, true),
                    memchr::memchr3(b'\r', b'\n', 0, &b).is_some(),
                    "{b:?}"
                );
            }
        }
        for c in 0..=255u8 {
            for at in 0..17 {
                let mut b = vec![b'a'; 17];
                b[at] = c;
                assert_eq!(holds_any(&b, true), matches!(c, b'\r' | b'\n' | 0), "{c} at {at}");
                assert_eq!(holds_any(&b, false), matches!(c, b'\r' | b'\n'), "{c} at {at}");
            }
        }
    }

    #[test]
    fn chunks_round_trip_through_decoder() {
        let mut out = BytesMut::new();
        write_chunk(&mut out, b"hello");
        write_chunk(&mut out, b"");
        write_chunk(&mut out, &[b'x'; 300]);
        write_last_chunk(&mut out);
        assert!(out.starts_with(b"5\r\nhello\r\n12c\r\n"));
        let mut dec = ChunkedDecoder::new(ChunkedLimits::default());
        let mut data = Vec::new();
        while let Some(c) = dec.decode(&mut out).unwrap() {
            match c {
                Chunk::Data(d) => data.extend_from_slice(&d),
                Chunk::Done => break,
            }
        }
        assert_eq!(data.len(), 305);
        assert!(out.is_empty());
    }

    #[test]
    fn hex() {
        assert_eq!(format_hex(0, &mut [0; 16]), b"0");
        assert_eq!(format_hex(255, &mut [0; 16]), b"ff");
        assert_eq!(format_hex(u64::MAX, &mut [0; 16]), b"ffffffffffffffff");
    }
}
