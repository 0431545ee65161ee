//! Response heads and chunk framing for the downstream side (the `relay` step writes with these),
//! and the checked pieces of upstream request heads (the `send` step).
//!
//! Invariant: the framing we write always matches the body we will send (one framing header,
//! chosen here, never copied from upstream), and nothing but `out` is allocated. No CR, LF or
//! NUL is ever written inside a request target or a request header: the writer refuses instead.

use bytes::{BufMut, BytesMut};

use super::head::BodyFraming;

/// Standard reason phrase; "" for codes without one (the phrase is optional, RFC 9112 §4).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        499 => "Client Closed Request",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Statuses that never carry a body, so they get no `content-length: 0` either.
fn bodiless(status: u16) -> bool {
    status < 200 || status == 204 || status == 304
}

/// Write a status line, `headers`, the framing header and the blank line.
///
/// Framing: `content-length: N` for `Length`, `transfer-encoding: chunked` for `Chunked`; for
/// `Empty`, `content-length: 0` when the status may carry a body (so keep-alive clients know
/// it ended) and nothing otherwise. `connection: close` when `!keep_alive`. Callers must not
/// pass their own framing or connection headers. A header whose name or value holds CR or LF
/// is skipped: it would let a value from upstream inject header lines.
pub fn write_response_head(
    out: &mut BytesMut,
    status: u16,
    headers: &[(&str, &[u8])],
    framing: BodyFraming,
    keep_alive: bool,
) {
    write_head(out, status, headers, Some(framing), keep_alive);
}

/// A head with no framing header and `connection: close`: the body ends when the connection
/// does. Only for HTTP/1.0 clients receiving a body of unknown length, who must not be sent
/// chunked encoding (RFC 9112 7.1).
pub fn write_response_head_until_close(out: &mut BytesMut, status: u16, headers: &[(&str, &[u8])]) {
    write_head(out, status, headers, None, false);
}

/// The most bytes `write_response_head` (or `..._until_close`) writes for `status` and
/// `headers`: reserve it together with the body to build head and body in one allocation.
pub fn response_head_capacity(status: u16, headers: &[(&str, &[u8])]) -> usize {
    let fields: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    17 + reason_phrase(status).len() + fields + 40 + 19 + 2
}

/// The status line of a 200, written whole.
const STATUS_LINE_200: &[u8] = b"HTTP/1.1 200 OK\r\n";

fn write_head(
    out: &mut BytesMut,
    status: u16,
    headers: &[(&str, &[u8])],
    framing: Option<BodyFraming>,
    keep_alive: bool,
) {
    out.reserve(response_head_capacity(status, headers));
    let mut num = itoa::Buffer::new();
    if status == 200 {
        // Nearly every answer: one copy of prepared bytes instead of formatting the number and
        // looking up the reason.
        out.put_slice(STATUS_LINE_200);
    } else {
        out.put_slice(b"HTTP/1.1 ");
        out.put_slice(num.format(status).as_bytes());
        out.put_u8(b' ');
        out.put_slice(reason_phrase(status).as_bytes());
        out.put_slice(b"\r\n");
    }
    for (name, value) in headers {
        if has_line_break(name.as_bytes()) || has_line_break(value) {
            continue;
        }
        out.put_slice(name.as_bytes());
        out.put_slice(b": ");
        out.put_slice(value);
        out.put_slice(b"\r\n");
    }
    match framing {
        None => {}
        Some(BodyFraming::Length(n)) => {
            out.put_slice(b"content-length: ");
            out.put_slice(num.format(n).as_bytes());
            out.put_slice(b"\r\n");
        }
        Some(BodyFraming::Chunked) => out.put_slice(b"transfer-encoding: chunked\r\n"),
        Some(BodyFraming::Empty) if !bodiless(status) => out.put_slice(b"content-length: 0\r\n"),
        Some(BodyFraming::Empty) => {}
    }
    if !keep_alive {
        out.put_slice(b"connection: close\r\n");
    }
    out.put_slice(b"\r\n");
}

fn has_line_break(b: &[u8]) -> bool {
    holds_any(b, false)
}

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
    let bad_name = name.is_empty() || name.iter().any(|&b| b <= b' ' || b == b':' || b == 0x7f);
    if bad_name {
        return Err(UnsafeHead("header name"));
    }
    if holds_any(value, true) {
        return Err(UnsafeHead("header value"));
    }
    out.reserve(name.len() + value.len() + 4);
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
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

    fn head(status: u16, framing: BodyFraming, keep_alive: bool) -> String {
        let mut out = BytesMut::new();
        write_response_head(
            &mut out,
            status,
            &[("content-type", b"text/event-stream")],
            framing,
            keep_alive,
        );
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn heads() {
        assert_eq!(
            head(200, BodyFraming::Length(12), true),
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 12\r\n\r\n"
        );
        assert_eq!(
            head(200, BodyFraming::Chunked, false),
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
        assert_eq!(
            head(404, BodyFraming::Empty, true),
            "HTTP/1.1 404 Not Found\r\ncontent-type: text/event-stream\r\ncontent-length: 0\r\n\r\n"
        );
        assert_eq!(
            head(204, BodyFraming::Empty, true),
            "HTTP/1.1 204 No Content\r\ncontent-type: text/event-stream\r\n\r\n"
        );
        assert!(head(299, BodyFraming::Empty, true).starts_with("HTTP/1.1 299 \r\n"));
    }

    #[test]
    fn header_injection_skipped() {
        let mut out = BytesMut::new();
        write_response_head(
            &mut out,
            200,
            &[("x", b"a\r\nset-cookie: y"), ("ok", b"1")],
            BodyFraming::Empty,
            true,
        );
        assert_eq!(&out[..], b"HTTP/1.1 200 OK\r\nok: 1\r\ncontent-length: 0\r\n\r\n");
    }

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
