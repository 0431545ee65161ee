//! The downstream response head (what the `relay` step and every local answer send): status
//! line, fields, the framing header, `connection: close` and the blank line, written after
//! one reservation of its length (a bound, for an upstream head's fields).
//! Invariant: the framing we write always matches the body we will send (one framing header,
//! chosen here, never copied from upstream), and nothing but `out` is allocated. A field from
//! outside rotor (`HeadFields::checked`) whose name or value holds CR or LF is dropped, so a value
//! from upstream can never inject header lines; only rotor's own fields and an upstream head's
//! fields as httparse parsed them (`HeadFields::returned`, which cannot hold CR or LF) skip it.

use bytes::BytesMut;

use super::fill::Fill;
use super::head::BodyFraming;
use super::response::Returned;

/// One `name: value` field of a response head.
pub type Pair<'a> = (&'a str, &'a [u8]);

/// A response head's fields, written in this order: `checked`, `returned`, `relayed`'s first
/// three, `own`, then `relayed`'s overhead.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeadFields<'a> {
    /// From an upstream, a client or anything else rotor did not write: a field whose name or
    /// value holds CR or LF is skipped.
    pub checked: &'a [Pair<'a>],
    /// An upstream answer's fields, from its parsed head: httparse already refused CR, LF and
    /// NUL in them (see [`Returned`]), so they are written unchecked.
    pub returned: Option<Returned<'a>>,
    /// Rotor's own, written as they are: digits, static text, config names (`check_name`
    /// allows printable ASCII only) and request ids (`RequestId` keeps graphic ASCII
    /// only). A caller puts nothing here that could hold CR or LF.
    pub own: &'a [Pair<'a>],
    /// The fields of rotor's own that every relayed answer carries, written as `own` is.
    pub relayed: Option<Relayed<'a>>,
}

/// The values of the fields every relayed answer carries (`proxy::answer_fields`): the request
/// id, the provider's lines and the attempts' digits lead rotor's own fields, the overhead's
/// digits end them. Their names are written as constants: as `own` pairs, each name and value
/// was a copy of a length known only at run time (~15 instructions each, callgrind) and a
/// step of the loops that measure and write them.
/// Values as `own`'s: nothing that could hold CR or LF.
#[derive(Debug, Clone, Copy)]
pub struct Relayed<'a> {
    pub request_id: &'a [u8],
    pub provider: &'a ProviderLines,
    pub attempts: &'a [u8],
    pub overhead_us: Option<&'a [u8]>,
}

/// A provider's part of the fields every relayed answer carries, prepared once with its
/// config: `\r\nx-rotor-provider: {name}\r\nx-rotor-attempts: 1\r\nx-rotor-overhead-us: `.
/// An answer its first attempt delivered, with no own field between (most), takes all of it as
/// one piece between the request id's digits and the overhead's; any other the part up to its
/// attempts' digits. Written a name and value at a time, these were 6 of a chat answer's 18
/// pieces (callgrind, issue 18).
/// Invariant: the name holds no CR or LF (`config::check_name` allows printable ASCII only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderLines {
    text: Box<[u8]>,
    /// Where the attempts' digits go in `text`.
    attempts_at: usize,
}

impl ProviderLines {
    const BEFORE_NAME: &'static [u8] = b"\r\nx-rotor-provider: ";
    const AFTER_NAME: &'static [u8] = b"\r\nx-rotor-attempts: ";

    pub fn new(name: &[u8]) -> Self {
        let mut text = Self::BEFORE_NAME.to_vec();
        text.extend_from_slice(name);
        text.extend_from_slice(Self::AFTER_NAME);
        let attempts_at = text.len();
        text.extend_from_slice(b"1\r\nx-rotor-overhead-us: ");
        ProviderLines {
            text: text.into_boxed_slice(),
            attempts_at,
        }
    }

    /// The provider's name.
    pub fn name(&self) -> &[u8] {
        let end = self.attempts_at.saturating_sub(Self::AFTER_NAME.len());
        self.text.get(Self::BEFORE_NAME.len()..end).unwrap_or_default()
    }

    /// The lines up to the attempts' digits.
    fn to_attempts(&self) -> &[u8] {
        self.text.get(..self.attempts_at).unwrap_or_default()
    }

    /// The lines through one attempt's digit and the overhead's name.
    fn one_attempt(&self) -> &[u8] {
        &self.text
    }
}

/// What [`Relayed`]'s fields add to a head besides their values and the provider's lines:
/// the request id's name, the attempts' line end, and the overhead's name and line end.
const RELAYED_NAMES: usize = b"x-request-id: \r\n".len();
const OVERHEAD_NAME: usize = b"x-rotor-overhead-us: \r\n".len();

impl<'a> HeadFields<'a> {
    /// All of `fields` checked (the safe default for any list).
    pub fn checked(fields: &'a [Pair<'a>]) -> Self {
        HeadFields {
            checked: fields,
            returned: None,
            own: &[],
            relayed: None,
        }
    }
}

macro_rules! statuses {
    ($($code:literal $reason:literal,)*) => {
        /// Standard reason phrase; "" for codes without one (the phrase is optional, RFC 9112 §4).
        pub fn reason_phrase(status: u16) -> &'static str {
            match status {
                $($code => $reason,)*
                _ => "",
            }
        }

        /// The whole status line of a code that has a reason phrase, as one prepared string:
        /// one copy instead of formatting the number and looking up the reason.
        fn status_line(status: u16) -> Option<&'static [u8]> {
            match status {
                $($code => Some(concat!("HTTP/1.1 ", stringify!($code), " ", $reason, "\r\n").as_bytes()),)*
                _ => None,
            }
        }
    };
}

statuses! {
    100 "Continue",
    101 "Switching Protocols",
    200 "OK",
    201 "Created",
    202 "Accepted",
    204 "No Content",
    206 "Partial Content",
    301 "Moved Permanently",
    302 "Found",
    304 "Not Modified",
    307 "Temporary Redirect",
    308 "Permanent Redirect",
    400 "Bad Request",
    401 "Unauthorized",
    402 "Payment Required",
    403 "Forbidden",
    404 "Not Found",
    405 "Method Not Allowed",
    408 "Request Timeout",
    409 "Conflict",
    411 "Length Required",
    413 "Content Too Large",
    414 "URI Too Long",
    415 "Unsupported Media Type",
    417 "Expectation Failed",
    422 "Unprocessable Content",
    429 "Too Many Requests",
    431 "Request Header Fields Too Large",
    499 "Client Closed Request",
    500 "Internal Server Error",
    501 "Not Implemented",
    502 "Bad Gateway",
    503 "Service Unavailable",
    504 "Gateway Timeout",
    505 "HTTP Version Not Supported",
}

/// Statuses that never carry a body, so they get no `content-length: 0` either.
fn bodiless(status: u16) -> bool {
    status < 200 || status == 204 || status == 304
}

/// What ends a keep-alive head after a framing line, and after `connection: close`; without a
/// framing line, the same minus its first CRLF.
const END_KEEP: &[u8] = b"\r\n\r\n";
const END_CLOSE: &[u8] = b"\r\nconnection: close\r\n\r\n";

/// [`write_head`] with every field checked, no room behind.
pub fn write_response_head(
    out: &mut BytesMut,
    status: u16,
    headers: &[Pair<'_>],
    framing: BodyFraming,
    keep_alive: bool,
) {
    write_head(out, status, HeadFields::checked(headers), Some(framing), keep_alive, 0);
}

/// A head with no framing header and `connection: close`: the body ends when the connection
/// does. Only for HTTP/1.0 clients receiving a body of unknown length, who must not be sent
/// chunked encoding (RFC 9112 7.1).
pub fn write_response_head_until_close(out: &mut BytesMut, status: u16, headers: &[Pair<'_>]) {
    write_head(out, status, HeadFields::checked(headers), None, false, 0);
}

/// Write a status line, `fields`, the framing header and the blank line, with `room` more
/// bytes reserved behind it (a body the caller copies after the head: one allocation).
///
/// Framing: `content-length: N` for `Length`, `transfer-encoding: chunked` for `Chunked`; for
/// `Empty`, `content-length: 0` when the status may carry a body (so keep-alive clients know
/// it ended) and nothing otherwise; none at all for `None` (an HTTP/1.0 client reading until
/// close). `connection: close` when `!keep_alive`. Callers must not pass their own framing or
/// connection fields.
pub fn write_head(
    out: &mut BytesMut,
    status: u16,
    fields: HeadFields<'_>,
    framing: Option<BodyFraming>,
    keep_alive: bool,
    room: usize,
) {
    if let Some(head) = Usual::of(status, &fields, framing) {
        return head.write(out, keep_alive, room);
    }
    let mut code = itoa::Buffer::new();
    let mut length = itoa::Buffer::new();
    // An unknown code has no reason: "HTTP/1.1 299 \r\n" (the space stays, RFC 9112 §4).
    let (line, code, line_end): (&[u8], &[u8], &[u8]) = match status_line(status) {
        Some(line) => (line, b"", b""),
        None => (b"HTTP/1.1 ", code.format(status).as_bytes(), b" \r\n"),
    };
    let (framing_line, digits): (&[u8], &[u8]) = match framing {
        Some(BodyFraming::Length(n)) => (b"content-length: ", length.format(n).as_bytes()),
        Some(BodyFraming::Chunked) => (b"transfer-encoding: chunked", b""),
        Some(BodyFraming::Empty) if !bodiless(status) => (b"content-length: 0", b""),
        Some(BodyFraming::Empty) | None => (b"", b""),
    };
    let end = if keep_alive { END_KEEP } else { END_CLOSE };
    let end = if framing_line.is_empty() { &end[2..] } else { end };
    debug_assert!(
        fields.own.iter().all(|&(n, v)| !breaks_line(n, v)),
        "rotor's own fields hold no line break"
    );
    debug_assert!(
        fields.relayed.is_none_or(|r| {
            let values = [
                r.request_id,
                r.provider.name(),
                r.attempts,
                r.overhead_us.unwrap_or_default(),
            ];
            values.iter().all(|v| !breaks_line("", v))
        }),
        "the relayed fields hold no line break"
    );
    let (fields_len, clean) = measure(fields);
    let fixed = line.len() + code.len() + line_end.len() + framing_line.len() + digits.len() + end.len();
    // The returned fields are not measured (a pass over them, ~50 instructions per answer):
    // their bound is reserved, and only what is written is taken into the buffer.
    let len = fixed + fields_len + fields.returned.map_or(0, Returned::bound);
    let mut fill = Fill::new(out, len + room);
    fill.put(line);
    if !code.is_empty() {
        fill.put(code);
        fill.put(line_end);
    }
    for &(name, value) in fields.checked {
        if clean || !breaks_line(name, value) {
            fill.field(name.as_bytes(), value);
        }
    }
    if let Some(returned) = fields.returned {
        returned.for_each_piece(|piece| fill.put(piece));
    }
    if let Some(r) = fields.relayed {
        fill.put(b"x-request-id: ");
        fill.put(r.request_id);
        fill.put(r.provider.to_attempts());
        fill.put(r.attempts);
        fill.put(b"\r\n");
    }
    for &(name, value) in fields.own {
        fill.field(name.as_bytes(), value);
    }
    if let Some(overhead) = fields.relayed.and_then(|r| r.overhead_us) {
        fill.field(b"x-rotor-overhead-us", overhead);
    }
    fill.put(framing_line);
    fill.put(digits);
    fill.put(end);
    let written = fill.commit();
    debug_assert!(written <= len, "the head fits its reservation");
}

/// The head of the usual relayed answer: a status with a reason, the upstream's fields, then
/// rotor's of an answer its first attempt delivered and none of its own between them, and a
/// length or chunked framing. Written by a path of its own in 9 pieces (the request id, the
/// overhead and the length the only values), without `write_head`'s measuring of lists and
/// choice of framing: 553 against 472 instructions a chat answer (callgrind, issue 18).
struct Usual<'a> {
    line: &'static [u8],
    returned: Returned<'a>,
    request_id: &'a [u8],
    provider: &'a ProviderLines,
    overhead_us: &'a [u8],
    /// The body's length; `None` = chunked.
    length: Option<u64>,
}

impl<'a> Usual<'a> {
    #[inline(always)]
    fn of(status: u16, fields: &HeadFields<'a>, framing: Option<BodyFraming>) -> Option<Self> {
        let length = match framing {
            Some(BodyFraming::Length(n)) => Some(n),
            Some(BodyFraming::Chunked) => None,
            _ => return None,
        };
        let (Some(returned), Some(r)) = (fields.returned, fields.relayed) else {
            return None;
        };
        let (b"1", Some(overhead_us), true) = (
            r.attempts,
            r.overhead_us,
            fields.own.is_empty() && fields.checked.is_empty(),
        ) else {
            return None;
        };
        Some(Usual {
            line: status_line(status)?,
            returned,
            request_id: r.request_id,
            provider: r.provider,
            overhead_us,
            length,
        })
    }

    fn write(self, out: &mut BytesMut, keep_alive: bool, room: usize) {
        const ID_NAME: &[u8] = b"x-request-id: ";
        let mut digits = itoa::Buffer::new();
        let (framing, length): (&[u8], &[u8]) = match self.length {
            Some(n) => (b"\r\ncontent-length: ", digits.format(n).as_bytes()),
            None => (b"\r\ntransfer-encoding: chunked", b""),
        };
        let end = if keep_alive { END_KEEP } else { END_CLOSE };
        let lines = self.provider.one_attempt();
        let len = self.line.len()
            + self.returned.bound()
            + ID_NAME.len()
            + self.request_id.len()
            + lines.len()
            + self.overhead_us.len()
            + framing.len()
            + length.len()
            + end.len();
        let mut fill = Fill::new(out, len + room);
        fill.put(self.line);
        self.returned.for_each_piece(|piece| fill.put(piece));
        fill.put(ID_NAME);
        fill.put(self.request_id);
        fill.put(lines);
        fill.put(self.overhead_us);
        fill.put(framing);
        fill.put(length);
        fill.put(end);
        let written = fill.commit();
        debug_assert!(written <= len, "the head fits its reservation");
    }
}

/// The checked, own and relayed fields' bytes on the wire, and whether no checked field was
/// dropped (then the writing pass need not look at them again).
fn measure(fields: HeadFields<'_>) -> (usize, bool) {
    let mut len = 0;
    let mut clean = true;
    for &(name, value) in fields.checked {
        if breaks_line(name, value) {
            clean = false;
        } else {
            len += name.len() + value.len() + 4;
        }
    }
    for &(name, value) in fields.own {
        len += name.len() + value.len() + 4;
    }
    if let Some(r) = fields.relayed {
        // A bound: the provider's lines whole, whichever part of them is written.
        len += RELAYED_NAMES + r.request_id.len() + r.provider.one_attempt().len() + r.attempts.len();
        len += r.overhead_us.map_or(0, |us| OVERHEAD_NAME + us.len());
    }
    (len, clean)
}

fn breaks_line(name: &str, value: &[u8]) -> bool {
    super::encode::holds_any(name.as_bytes(), false) || super::encode::holds_any(value, false)
}

#[cfg(test)]
#[path = "response_head_tests.rs"]
mod tests;
