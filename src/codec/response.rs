//! Upstream response heads: parse and frame what a provider sends back (the `send`/`relay` steps).
//!
//! Invariant: tolerant where it is safe (identical repeated Content-Length values, interim 1xx
//! heads), strict on anything that could make us misjudge where the body ends: a response is
//! framed unambiguously or it is a 502.

use std::mem::MaybeUninit;

use bytes::BytesMut;

use super::field_index::Field;
use super::fields::{
    header_slots, map_httparse_error, parse_content_length, skip_leading_empty_lines, trim_ows, INLINE_SLOTS,
};
use super::head::{HeadError, HeadLimits, Headers};
use super::headers::{spans_of, Spans};
use super::quick;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    Empty,
    Length(u64),
    Chunked,
    /// No length and no chunking: the body runs until the upstream closes (RFC 9112 §6.3 rule 8).
    UntilClose,
}

#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub headers: Headers,
    pub framing: ResponseFraming,
    /// Whether the connection may go back to the pool after this response's body.
    pub keep_alive: bool,
}

impl ResponseHead {
    /// The fields of this head the client gets back; `content_type`: the upstream's
    /// `content-type` among them (false when rotor replaces it).
    pub fn returned(&self, content_type: bool) -> Returned<'_> {
        Returned {
            headers: &self.headers,
            content_type,
        }
    }
}

/// The upstream fields an answer returns to the client, as they were parsed: all but the
/// hop-by-hop and framing ones (`Field::not_returned`) and a replaced `content-type`, with the
/// upstream's `x-request-id` under the name `x-upstream-request-id` (rotor's own id takes the
/// name; support tickets need the provider's). Read straight from the head's buffer: no list
/// of them is built (that `Vec` and its pushes cost ~226 instructions per chat answer).
///
/// Only [`ResponseHead::returned`] makes one, and a `ResponseHead`'s fields are only ever what
/// `parse_response_head` parsed: httparse accepts a name of token bytes and a value of HTAB,
/// SP, visible ASCII and obs-text only (obsolete line folding is off), so no name or value here
/// holds CR, LF or NUL (a test holds parsed heads to that), and the head writer needs not check
/// them again.
#[derive(Debug, Clone, Copy)]
pub struct Returned<'a> {
    headers: &'a Headers,
    content_type: bool,
}

impl<'a> Returned<'a> {
    /// Calls `f` with each returned field's name and value, in the order they came: what
    /// [`Returned::for_each_piece`] writes, field by field (the tests' reference).
    #[cfg(test)]
    pub(crate) fn for_each(self, mut f: impl FnMut(&'a str, &'a [u8])) {
        for (field, name, value) in self.headers.tagged_text() {
            let name = match field {
                Some(f) if f.not_returned() => continue,
                Some(Field::ContentType) if !self.content_type => continue,
                Some(Field::XRequestId) => "x-upstream-request-id",
                _ => name,
            };
            f(name, value);
        }
    }

    /// The bytes [`Returned::for_each`]'s fields make as `name: value` CRLF lines, handed to
    /// `put` in order: a run of returned lines that the head holds exactly so, one after
    /// another, as one piece (most of an answer's fields come back untouched: one copy for
    /// the run where each field was four), every other field in its four pieces.
    #[inline]
    pub(crate) fn for_each_piece(self, mut put: impl FnMut(&'a [u8])) {
        let raw = self.headers.raw();
        let mut run = 0..0;
        for line in self.headers.lines() {
            let renamed = match line.field {
                Some(f) if f.not_returned() => continue,
                Some(Field::ContentType) if !self.content_type => continue,
                Some(Field::XRequestId) => Some("x-upstream-request-id"),
                _ => None,
            };
            match (renamed, line.exact) {
                // A dropped line between two kept ones ends the run: they are not adjacent.
                (None, Some(at)) if at.start == run.end && !run.is_empty() => run.end = at.end,
                (None, Some(at)) => {
                    put(raw.get(std::mem::replace(&mut run, at)).unwrap_or_default());
                }
                (renamed, _) => {
                    put(raw.get(std::mem::replace(&mut run, 0..0)).unwrap_or_default());
                    put(renamed.unwrap_or(line.name).as_bytes());
                    put(b": ");
                    put(line.value);
                    put(b"\r\n");
                }
            }
        }
        put(raw.get(run).unwrap_or_default());
    }

    /// At least the length of what [`Returned::for_each_piece`] hands out, without a pass over
    /// the fields: each line is in the head, and written it grows by at most 2 (`name:value`
    /// LF becomes `name: value` CRLF) and 9 (the rename of `x-request-id`).
    #[inline]
    pub(crate) fn bound(self) -> usize {
        self.headers.raw().len() + 11 * self.headers.len()
    }
}

fn bad(reason: &'static str) -> HeadError {
    HeadError::new(502, reason)
}

/// Parse the final response head from the front of `buf`.
///
/// `head_request`: the request was HEAD, so the response has no body whatever it says. Interim
/// 1xx heads (except 101) are consumed and skipped. `Ok(None)` = need more bytes. Errors carry
/// status 502 (the upstream misbehaved, not the client).
pub fn parse_response_head(
    buf: &mut BytesMut,
    limits: &HeadLimits,
    head_request: bool,
) -> Result<Option<ResponseHead>, HeadError> {
    loop {
        skip_leading_empty_lines(buf);
        if buf.is_empty() {
            // Nothing to parse yet (every exchange asks once before its first read).
            return Ok(None);
        }
        let (head_len, status, http10, spans) = match quick_response(buf, limits) {
            Some(read) => read,
            None => match httparse_response(buf, limits)? {
                Some(read) => read,
                None => return Ok(None),
            },
        };
        if (100..200).contains(&status) && status != 101 {
            // Interim response (100 Continue, 103 Early Hints): drop it, read the next head.
            let _ = buf.split_to(head_len);
            continue;
        }
        let headers = Headers::parsed(buf.split_to(head_len).freeze(), spans);
        return response_policy(status, headers, http10, head_request).map(Some);
    }
}

/// A head's length, status, HTTP/1.0-ness and fields.
type Read = (usize, u16, bool, Spans);

/// A plain head (`quick`), in one pass: what httparse would read from it, without its slot
/// array and the walk that turns the slots into spans. `None` for anything else, which
/// httparse then reads as before (a head too large, too: its error is said there).
fn quick_response(buf: &[u8], limits: &HeadLimits) -> Option<Read> {
    let (line, head_len, spans) = quick::response(buf, limits.max_headers)?;
    (head_len <= limits.max_head_bytes).then_some((head_len, line.status, line.http10, spans))
}

/// The head as httparse reads it (bare LFs taken), refused when too large.
fn httparse_response(buf: &BytesMut, limits: &HeadLimits) -> Result<Option<Read>, HeadError> {
    let mut inline = [const { MaybeUninit::uninit() }; INLINE_SLOTS];
    let mut spill = Vec::new();
    let slots = header_slots(&mut inline, &mut spill, limits.max_headers);
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, slots);
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_head_bytes {
                return Err(bad("upstream response head too large"));
            }
            return Ok(None);
        }
        Err(e) => return Err(map_httparse_error(e, 502)),
    };
    if head_len > limits.max_head_bytes {
        return Err(bad("upstream response head too large"));
    }
    let spans = spans_of(buf.as_ptr() as usize, resp.headers);
    Ok(Some((head_len, resp.code.unwrap_or(0), resp.version == Some(0), spans)))
}

/// RFC 9110 §8.6: identical repeated values (or a list of them) may be taken as one; `so_far`
/// is what earlier Content-Length fields said.
fn content_length(value: &[u8], mut so_far: Option<u64>) -> Result<Option<u64>, HeadError> {
    // Most values are one number: read whole, it is the list's only part (the split below
    // reads each part again; a value that is not one number takes it, for the same errors).
    if let Some(n) = parse_content_length(value) {
        return match so_far {
            Some(l) if l != n => Err(bad("conflicting upstream Content-Length")),
            _ => Ok(Some(n)),
        };
    }
    for part in value.split(|&b| b == b',') {
        let n = parse_content_length(part).ok_or(bad("invalid upstream Content-Length"))?;
        if so_far.is_some_and(|l| l != n) {
            return Err(bad("conflicting upstream Content-Length"));
        }
        so_far = Some(n);
    }
    Ok(so_far)
}

/// Exactly one `Transfer-Encoding: chunked`.
fn check_response_te(value: &[u8], repeated: bool) -> Result<(), HeadError> {
    if repeated || !trim_ows(value).eq_ignore_ascii_case(b"chunked") {
        return Err(bad("unsupported upstream Transfer-Encoding"));
    }
    Ok(())
}

/// Both Content-Length and Transfer-Encoding: the error of the first bad field in order, as a
/// walk over the fields reports it, else the conflict itself.
#[cold]
fn mixed_framing_error(headers: &Headers) -> HeadError {
    let mut length = None;
    let mut te_seen = false;
    for (field, h) in headers.tagged() {
        let checked = match field {
            Some(Field::ContentLength) => content_length(h.value, length).map(|l| length = l),
            Some(Field::TransferEncoding) => check_response_te(h.value, std::mem::replace(&mut te_seen, true)),
            _ => Ok(()),
        };
        if let Err(e) = checked {
            return e;
        }
    }
    bad("upstream sent both Content-Length and Transfer-Encoding")
}

fn response_policy(status: u16, headers: Headers, http10: bool, head_request: bool) -> Result<ResponseHead, HeadError> {
    let te_seen = headers.field(Field::TransferEncoding).is_some();
    if te_seen && headers.field(Field::ContentLength).is_some() {
        return Err(mixed_framing_error(&headers));
    }
    let mut length: Option<u64> = None;
    for value in headers.fields(Field::ContentLength) {
        length = content_length(value, length)?;
    }
    if te_seen {
        let first = headers.field(Field::TransferEncoding).unwrap_or_default();
        check_response_te(first, headers.repeated(Field::TransferEncoding))?;
    }
    let connection = headers.connection();
    let no_body = head_request || status < 200 || status == 204 || status == 304;
    let framing = if no_body {
        ResponseFraming::Empty
    } else if te_seen {
        ResponseFraming::Chunked
    } else {
        match length {
            Some(0) => ResponseFraming::Empty,
            Some(n) => ResponseFraming::Length(n),
            None => ResponseFraming::UntilClose,
        }
    };
    let keep_alive = framing != ResponseFraming::UntilClose
        && status != 101
        && !connection.close
        && (!http10 || connection.keep_alive);
    Ok(ResponseHead {
        status,
        headers,
        framing,
        keep_alive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8], head: bool) -> Result<Option<ResponseHead>, HeadError> {
        let mut buf = BytesMut::from(raw);
        parse_response_head(&mut buf, &HeadLimits::default(), head)
    }

    fn ok(raw: &[u8]) -> ResponseHead {
        parse(raw, false).unwrap().unwrap()
    }

    #[test]
    fn length_and_leftover() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"[..]);
        let h = parse_response_head(&mut buf, &HeadLimits::default(), false)
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.status, h.framing, h.keep_alive),
            (200, ResponseFraming::Length(2), true)
        );
        assert_eq!(&buf[..], b"hi");
    }

    #[test]
    fn partial_needs_more() {
        assert!(parse(b"HTTP/1.1 200 OK\r\n", false).unwrap().is_none());
    }

    #[test]
    fn interim_heads_skipped() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"[..],
        );
        let h = parse_response_head(&mut buf, &HeadLimits::default(), false)
            .unwrap()
            .unwrap();
        assert_eq!((h.status, h.framing), (201, ResponseFraming::Empty));
        assert!(buf.is_empty());
        // Only the interim head has arrived: consumed, then need more.
        let mut buf = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\n"[..]);
        assert!(parse_response_head(&mut buf, &HeadLimits::default(), false)
            .unwrap()
            .is_none());
        assert!(buf.is_empty());
    }

    #[test]
    fn bodiless_statuses_and_head() {
        assert_eq!(ok(b"HTTP/1.1 204 No Content\r\n\r\n").framing, ResponseFraming::Empty);
        assert_eq!(
            ok(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n").framing,
            ResponseFraming::Empty
        );
        let h = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, ResponseFraming::Empty);
        assert!(h.keep_alive);
        assert!(!ok(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").keep_alive);
    }

    #[test]
    fn chunked_and_conflicts() {
        assert_eq!(
            ok(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n").framing,
            ResponseFraming::Chunked
        );
        let e = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            false,
        );
        assert_eq!(e.unwrap_err().status, 502);
        let e = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false);
        assert_eq!(e.unwrap_err().status, 502);
        let e = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!(e.unwrap_err().status, 502);
    }

    #[test]
    fn repeated_content_length() {
        assert_eq!(
            ok(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").framing,
            ResponseFraming::Length(5)
        );
        assert_eq!(
            ok(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n").framing,
            ResponseFraming::Length(5)
        );
        let e = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            false,
        );
        assert_eq!(e.unwrap_err().status, 502);
        let e = parse(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false);
        assert_eq!(e.unwrap_err().status, 502);
    }

    #[test]
    fn until_close_and_keep_alive() {
        let h = ok(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (ResponseFraming::UntilClose, false));
        assert!(!ok(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n").keep_alive);
        assert!(!ok(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").keep_alive);
        assert!(ok(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n").keep_alive);
    }

    /// What `Returned` promises the head writer: a head that parses holds no CR, LF or NUL in
    /// any field's name or value, whatever bytes came (heads built at random from pieces that
    /// include them, bare CRs, folded lines and control bytes).
    #[test]
    fn parsed_fields_never_hold_line_breaks() {
        use crate::codec::encode::holds_any;
        let pieces: &[&[u8]] = &[
            b"\r\n", b"\n", b"\r", b"\0", b":", b": ", b" ", b"\t", b"a", b"X-A", b"\xe9", b"\x7f", b"\x0b", b"\r\n ",
            b"\r\nB: ",
        ];
        let mut rng = fastrand::Rng::with_seed(18);
        let mut fields = 0;
        for _ in 0..20_000 {
            let mut raw = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
            for _ in 0..rng.usize(0..10) {
                raw.extend_from_slice(pieces[rng.usize(..pieces.len())]);
            }
            raw.extend_from_slice(b"\r\n\r\n");
            let mut buf = BytesMut::from(&raw[..]);
            let Ok(Some(head)) = parse_response_head(&mut buf, &HeadLimits::default(), false) else {
                continue;
            };
            for h in &head.headers {
                fields += 1;
                assert!(!holds_any(h.name, true) && !holds_any(h.value, true), "{raw:?}");
            }
            head.returned(true)
                .for_each(|n, v| assert!(!holds_any(n.as_bytes(), true) && !holds_any(v, true), "{raw:?}"));
        }
        assert!(fields > 5_000, "enough heads parsed to mean something: {fields}");
    }

    #[test]
    fn malformed_is_502() {
        assert_eq!(parse(b"HTTP/2 200 OK\r\n\r\n", false).unwrap_err().status, 502);
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nX: a\0\r\n\r\n", false).unwrap_err().status,
            502
        );
        let limits = HeadLimits {
            max_head_bytes: 16,
            max_headers: 100,
        };
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nServer: long-name"[..]);
        assert_eq!(parse_response_head(&mut buf, &limits, false).unwrap_err().status, 502);
    }
}
