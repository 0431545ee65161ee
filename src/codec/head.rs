//! Downstream request heads: parse, limit and frame (the first step of the request path, `read`).
//!
//! Invariant: a request head is accepted only when its body framing is unambiguous (RFC 9112
//! §6.3 read strictly), so a front proxy and rotor can never disagree on where a request ends.
//! `httparse` does the tokenising (it rejects forbidden bytes in names, values and targets),
//! or for a plain head `quick`, which reads only what httparse reads the same way; this module
//! adds the limits and the framing policy httparse leaves to its caller.

use std::mem::MaybeUninit;

use std::ops::Range;

use bytes::BytesMut;

use super::field_index::Field;
use super::fields::{
    header_slots, map_httparse_error, parse_content_length, range_in, skip_leading_empty_lines, trim_ows, INLINE_SLOTS,
};
use super::headers::{spans_of, Spans};
use super::origin_form;
use super::quick;

/// Bounds on a request head, so a client cannot make a worker buffer without end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Whole head, request line to blank line. Beyond this: 431.
    pub max_head_bytes: usize,
    /// Header fields. Beyond this: 431.
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        Self {
            max_head_bytes: 32768,
            max_headers: 100,
        }
    }
}

pub use super::headers::{Header, Headers, NameLengths};

/// Headers from static pairs, for unit tests of code that reads headers.
#[cfg(test)]
pub(crate) fn test_headers(pairs: &[(&'static str, &'static str)]) -> Headers {
    Headers::from_pairs(pairs)
}

/// First header named `name`, compared ASCII case-insensitively (field names are
/// case-insensitive, RFC 9110 §5.1).
pub fn find_header<'a>(headers: &'a Headers, name: &str) -> Option<&'a [u8]> {
    headers.find(name)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    /// Any other valid token; see `RequestHead::method_raw()`.
    Other,
}

impl Method {
    fn from_bytes(m: &[u8]) -> Self {
        match m {
            b"GET" => Self::Get,
            b"HEAD" => Self::Head,
            b"POST" => Self::Post,
            b"PUT" => Self::Put,
            b"PATCH" => Self::Patch,
            b"DELETE" => Self::Delete,
            b"OPTIONS" => Self::Options,
            _ => Self::Other,
        }
    }
}

/// How the request body is delimited. `Content-Length: 0` is reported as `Empty`, so callers
/// have one case for "no body".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
}

#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    pub http10: bool,
    /// The fields, and the one frozen buffer the whole head lies in: the method and target are
    /// read from it too (each used to hold a `Bytes` of its own on that buffer: two slices,
    /// a UTF-8 check and two releases, ~200 instructions a request, callgrind, issue 18).
    pub headers: Headers,
    pub framing: BodyFraming,
    pub keep_alive: bool,
    /// `Expect: 100-continue` on HTTP/1.1: the client waits for `100 Continue` before the body.
    pub expect_continue: bool,
    /// Where the method lies in the head buffer.
    method_at: Range<u32>,
    /// Where the raw request-target lies in the head buffer: origin-form (`/path?query`) or `*`
    /// (OPTIONS only), checked at parse to be those, so ASCII (`target` relies on it).
    target_at: Range<u32>,
    /// Where the path ends in the target (its first `?`, else its length): found once at parse,
    /// since several phases ask for the path.
    path_end: u32,
}

impl RequestHead {
    /// The method as sent (a token; see `method`).
    pub fn method_raw(&self) -> &[u8] {
        self.headers.head_bytes(&self.method_at)
    }

    /// The raw request-target: origin-form (`/path?query`) or `*` (OPTIONS only).
    pub fn target(&self) -> &str {
        ascii_text(self.headers.head_bytes(&self.target_at))
    }

    /// The target before `?`.
    pub fn path(&self) -> &str {
        self.target().get(..self.path_end as usize).unwrap_or("")
    }

    /// The target after the first `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.target().get(self.path_end as usize..)?.strip_prefix('?')
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.find(name)
    }

    /// The first `f`, through the field index.
    pub fn field(&self, f: Field) -> Option<&[u8]> {
        self.headers.field(f)
    }
}

/// The one unchecked conversion: only `RequestHead::target` calls it, on the target's bytes.
#[allow(unsafe_code)]
fn ascii_text(target: &[u8]) -> &str {
    debug_assert!(target.is_ascii());
    // SAFETY: `target_at` is set only by `parse_request_head`, to where httparse (or `quick`)
    // found the target in the very buffer `headers` then holds (`Bytes` never changes its
    // contents), and only after `origin_form::path_end` (words of ASCII path letters, a table
    // of ASCII bytes, `?` and `%`) or the test for `*` accepted those bytes: they are ASCII, so UTF-8. A range that does not fit reads as empty.
    // No safe way: checking again on every ask is the cost `path_end` and this avoid (the
    // path is asked for in six phases; `from_utf8` each time cost ~500 instructions a request).
    unsafe { std::str::from_utf8_unchecked(target) }
}

/// A rejected head: the status to answer with, and a short reason safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadError {
    pub status: u16,
    pub reason: &'static str,
}

impl HeadError {
    pub(crate) const fn new(status: u16, reason: &'static str) -> Self {
        Self { status, reason }
    }
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.reason)
    }
}

impl std::error::Error for HeadError {}

fn bad(reason: &'static str) -> HeadError {
    HeadError::new(400, reason)
}

/// Parse one request head from the front of `buf`.
///
/// `Ok(None)` means more bytes are needed (and `buf.len() <= max_head_bytes`). On `Ok(Some)`
/// the head bytes are split off the front of `buf` (split_to + freeze; headers are slices of
/// that), and any body bytes already read stay in `buf`.
pub fn parse_request_head(buf: &mut BytesMut, limits: &HeadLimits) -> Result<Option<RequestHead>, HeadError> {
    // RFC 9112 §2.2: a server SHOULD ignore empty lines before the request-line (some clients
    // send a stray CRLF after a body). Dropping them here keeps them out of the size limit.
    skip_leading_empty_lines(buf);
    let read = match quick_request(buf, limits.max_headers) {
        Some(read) => read,
        None => match httparse_request(buf, limits)? {
            Some(read) => read,
            None => return Ok(None),
        },
    };
    if read.head_len > limits.max_head_bytes {
        return Err(HeadError::new(431, "request header section too large"));
    }
    let method = Method::from_bytes(buf.get(read.method_at.clone()).unwrap_or_default());
    let target = buf.get(read.target_at.clone()).unwrap_or_default();
    let path_end = match origin_form::path_end(target) {
        Some(end) if target.first() == Some(&b'/') => end,
        _ if target == b"*" && method == Method::Options => target.len(),
        _ => return Err(bad("request-target must be origin-form")),
    };
    let head = buf.split_to(read.head_len).freeze();
    let headers = Headers::parsed(head, read.spans);
    let policy = request_policy(&headers, read.http10)?;
    Ok(Some(RequestHead {
        method,
        http10: read.http10,
        headers,
        framing: policy.framing,
        keep_alive: policy.keep_alive,
        expect_continue: policy.expect_continue,
        method_at: narrow(read.method_at),
        target_at: narrow(read.target_at),
        path_end: u32::try_from(path_end).unwrap_or(u32::MAX),
    }))
}

/// Where a request head's parts lie in the buffer it was read from, however it was read.
struct Read {
    head_len: usize,
    http10: bool,
    method_at: Range<usize>,
    target_at: Range<usize>,
    spans: Spans,
}

/// A plain head (`quick`), in one pass: what httparse would read from it, without its slot
/// array and the walk that turns the slots into spans (with the answer's head read the same
/// way, 21,515 -> 20,549 instructions a chat request, callgrind, issue 18). `None` for
/// anything else, which httparse then reads as before.
fn quick_request(buf: &[u8], max_headers: usize) -> Option<Read> {
    let (line, head_len, spans) = quick::request(buf, max_headers)?;
    Some(Read {
        head_len,
        http10: line.http10,
        method_at: line.method,
        target_at: line.target,
        spans,
    })
}

/// The head as httparse reads it, refused when too large or when a line ends in a bare LF.
fn httparse_request(buf: &BytesMut, limits: &HeadLimits) -> Result<Option<Read>, HeadError> {
    // Uninitialised slots: initialising (and moving) 4 KiB of headers per call cost more
    // than parsing the head itself (bench `parse_request_head`).
    let mut inline = [const { MaybeUninit::uninit() }; INLINE_SLOTS];
    let mut spill = Vec::new();
    let slots = header_slots(&mut inline, &mut spill, limits.max_headers);
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_head_bytes {
                return Err(HeadError::new(431, "request header section too large"));
            }
            return Ok(None);
        }
        Err(httparse::Error::Version) if !well_formed_version(buf) => {
            return Err(bad("malformed request line"));
        }
        Err(e) => return Err(map_httparse_error(e, 400)),
    };
    if head_len > limits.max_head_bytes {
        return Err(HeadError::new(431, "request header section too large"));
    }
    let base = buf.as_ptr() as usize;
    let method_at = range_in(base, req.method.unwrap_or("").as_bytes());
    // httparse accepts a bare LF as a line end (RFC 9112 §2.2 allows it); a front proxy
    // that does not is how requests get smuggled, so we refuse it.
    if !lines_end_in_crlf(buf, head_len, method_at.start, req.headers) {
        return Err(bad("bare LF in request head"));
    }
    Ok(Some(Read {
        head_len,
        http10: req.version == Some(0),
        method_at,
        target_at: range_in(base, req.path.unwrap_or("").as_bytes()),
        spans: spans_of(base, req.headers),
    }))
}

/// Whether every line of the head (the first `head_len` bytes of `buf`, which httparse took
/// whole, the method at `method_start` and `fields` in it) ends in CRLF. httparse takes an LF
/// only as a line's end (never inside the request line, a name or a value: those refuse
/// control bytes) and a CR only before an LF, so the LFs of a head are exactly: in empty
/// lines it skipped before the method (our own skip took every CRLF, so any left held a bare
/// LF and the method does not start the buffer), just before each field's name (the previous
/// line's end), and the last two line ends. Reading those few bytes replaced a scan of every
/// byte of the head (`has_bare_lf`, 16 bytes at a time: ~150 instructions a request,
/// callgrind, issue 18); a test holds this to a byte walk on random heads.
fn lines_end_in_crlf(buf: &[u8], head_len: usize, method_start: usize, fields: &[httparse::Header<'_>]) -> bool {
    let base = buf.as_ptr() as usize;
    let crlf_before = |at: usize| at.checked_sub(2).and_then(|from| buf.get(from..at)) == Some(b"\r\n");
    method_start == 0
        && buf.get(..head_len).is_some_and(|head| head.ends_with(b"\r\n\r\n"))
        && fields
            .iter()
            .all(|h| crlf_before(range_in(base, h.name.as_bytes()).start))
}

/// `r` in `u32`s: a head is far shorter than 4 GiB (`max_head_bytes`), and a range that does
/// not fit would read as empty rather than wrap.
fn narrow(r: Range<usize>) -> Range<u32> {
    let at = |i: usize| u32::try_from(i).unwrap_or(u32::MAX);
    at(r.start)..at(r.end)
}

struct RequestPolicy {
    framing: BodyFraming,
    keep_alive: bool,
    expect_continue: bool,
}

/// The framing and connection rules of RFC 9112 §6 and §9, read strictly, through the field
/// index. Look-ups by name on the chat path (span_of, client_key, request_id,
/// put_client_headers, response_headers) fell from ~2.8 k to ~1.2 k instructions a request,
/// and recognising the names at parse (`Field::of`, request and answer) added ~480, ~240 once
/// it compared whole words against precomputed keys (callgrind, issue 18).
fn request_policy(headers: &Headers, http10: bool) -> Result<RequestPolicy, HeadError> {
    if [Field::ContentLength, Field::TransferEncoding, Field::Host]
        .into_iter()
        .any(|f| headers.repeated(f))
    {
        return Err(first_field_error(headers));
    }
    let mut expect_continue = false;
    for value in headers.fields(Field::Expect) {
        check_expect(value)?;
        // RFC 9110 §10.1.1: ignore 100-continue from an HTTP/1.0 client.
        expect_continue = !http10;
    }
    let connection = headers.connection();
    let content_length = headers.field(Field::ContentLength);
    let transfer_encoding = headers.field(Field::TransferEncoding);
    let host_seen = headers.field(Field::Host).is_some();
    if !http10 && !host_seen {
        return Err(bad("missing Host"));
    }
    let framing = match (content_length, transfer_encoding) {
        (Some(_), Some(_)) => return Err(bad("both Content-Length and Transfer-Encoding")),
        (_, Some(_)) if http10 => return Err(bad("Transfer-Encoding on HTTP/1.0")),
        (_, Some(te)) => {
            check_transfer_encoding(te).map_err(|status| match status {
                501 => HeadError::new(501, "unsupported transfer-coding"),
                _ => bad("invalid Transfer-Encoding"),
            })?;
            BodyFraming::Chunked
        }
        (Some(cl), None) => match parse_content_length(cl) {
            Some(0) => BodyFraming::Empty,
            Some(n) => BodyFraming::Length(n),
            None => return Err(bad("invalid Content-Length")),
        },
        (None, None) => BodyFraming::Empty,
    };
    let keep_alive = if http10 {
        connection.keep_alive && !connection.close
    } else {
        !connection.close
    };
    Ok(RequestPolicy {
        framing,
        keep_alive,
        expect_continue,
    })
}

fn check_expect(value: &[u8]) -> Result<(), HeadError> {
    if !trim_ows(value).eq_ignore_ascii_case(b"100-continue") {
        return Err(HeadError::new(417, "unsupported Expect"));
    }
    Ok(())
}

/// A head with a repeated Content-Length, Transfer-Encoding or Host: the error the first
/// offending field in order gives (a bad Expect before the repeat answers 417), as a walk
/// over the fields in order reports it.
#[cold]
fn first_field_error(headers: &Headers) -> HeadError {
    let mut seen = [false; 3];
    for (field, h) in headers.tagged() {
        let (slot, reason) = match field {
            Some(Field::ContentLength) => (0, "repeated Content-Length"),
            Some(Field::TransferEncoding) => (1, "repeated Transfer-Encoding"),
            Some(Field::Host) => (2, "repeated Host"),
            Some(Field::Expect) => match check_expect(h.value) {
                Err(e) => return e,
                Ok(()) => continue,
            },
            _ => continue,
        };
        if let Some(seen) = seen.get_mut(slot) {
            if std::mem::replace(seen, true) {
                return bad(reason);
            }
        }
    }
    bad("repeated header")
}

/// Whether the request line is `method SP target SP HTTP/d.d`, so a version error means an
/// unsupported version (505) rather than a malformed line such as a space inside the target.
fn well_formed_version(buf: &[u8]) -> bool {
    let line_end = memchr::memchr(b'\n', buf).unwrap_or(buf.len());
    let line = buf.get(..line_end).unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(_), Some(_), Some(v), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    matches!(v, [b'H', b'T', b'T', b'P', b'/', a, b'.', b] if a.is_ascii_digit() && b.is_ascii_digit())
}

/// Accept exactly `chunked`. `Err(501)` for a coding we do not implement, `Err(400)` for a
/// malformed or repeated one (`chunked, chunked` would be a smuggling vector).
pub(crate) fn check_transfer_encoding(value: &[u8]) -> Result<(), u16> {
    let mut chunked = 0usize;
    let mut other = false;
    for token in value.split(|&b| b == b',') {
        let token = trim_ows(token);
        if token.is_empty() {
            return Err(400);
        }
        if token.eq_ignore_ascii_case(b"chunked") {
            chunked += 1;
        } else {
            other = true;
        }
    }
    match (chunked, other) {
        (1, false) => Ok(()),
        (0 | 1, true) => Err(501),
        _ => Err(400),
    }
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
