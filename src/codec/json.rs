//! Strict JSON inspection of request bodies (the `inspect` step): `model` and `stream`, and the
//! splice that rewrites an aliased model in place.
//!
//! Invariant: what routes the request is what the provider will read. The body must be exactly
//! one valid JSON object, and a duplicate top-level `model` or `stream` (even spelled with
//! escapes) is rejected, because parsers disagree on which duplicate wins (sonic-rs `get_many`
//! keeps the first, Python keeps the last): that gap would let one body route one way and bill
//! another (DESIGN 2.1a, monoio-notes §6). Nesting is bounded first (`codec::depth`): sonic-rs
//! recurses once per level and 15,000 levels overflowed a worker's stack.

use std::borrow::Cow;
use std::ops::Range;

use sonic_rs::JsonValueTrait;

use super::depth::check_depth;

#[path = "json_name.rs"]
mod name;
pub use name::ModelName;

/// What routing and billing need from a request body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspection {
    pub model: Option<String>,
    /// Byte range in the body of the model's JSON string value, quotes included (for splicing).
    pub model_span: Option<Range<usize>>,
    /// Absent or null → false.
    pub stream: bool,
    /// `max_completion_tokens` and `max_tokens` when they are non-negative integers (read in the
    /// same pass, for TPM estimates).
    pub max_completion_tokens: Option<u64>,
    pub max_tokens: Option<u64>,
    /// A top-level `stream_options` member is present.
    pub has_stream_options: bool,
    /// `stream_options.include_usage` is `true`.
    pub include_usage: bool,
}

/// Why a body was refused; the message is safe to show the client (no body bytes in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectError(pub String);

impl std::fmt::Display for InspectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InspectError {}

fn err(msg: &str) -> InspectError {
    InspectError(msg.to_owned())
}

/// One pass with `sonic_rs::to_object_iter`: every nested value is validated as it is skipped,
/// no DOM is built. Top-level `model` must be a string, `stream` a bool or null. A body nesting
/// deeper than `max_depth` is refused before sonic-rs (which recurses per level) sees it.
/// The plain body (almost every request) is read in one pass by `codec::scan`; anything else
/// by the full inspection below.
pub fn inspect_body(body: &[u8], max_depth: usize) -> Result<Inspection, InspectError> {
    match super::scan::inspect_plain(body, max_depth) {
        Some(inspection) => Ok(inspection),
        None => inspect_full(body, max_depth),
    }
}

/// `inspect_body` for the request path: the model borrowed from the body when the plain
/// reader decided it (the request keeps it as a [`ModelName`], copied once where it stays),
/// and `model` of the inspection left `None`. The same decisions and errors as `inspect_body`.
pub fn inspect_request(body: &[u8], max_depth: usize) -> Result<(Inspection, Option<Cow<'_, str>>), InspectError> {
    match super::scan::read_plain(body, max_depth) {
        Some((inspection, model)) => Ok((inspection, model.map(Cow::Borrowed))),
        None => {
            let mut inspection = inspect_full(body, max_depth)?;
            let model = inspection.model.take().map(Cow::Owned);
            Ok((inspection, model))
        }
    }
}

/// `inspect_body` with sonic-rs, for every body (and the reference `codec::scan` is tested
/// against, also by the `json_inspect` fuzz target).
pub fn inspect_full(body: &[u8], max_depth: usize) -> Result<Inspection, InspectError> {
    check_depth(body, max_depth).map_err(|e| InspectError(e.to_string()))?;
    let base = body.as_ptr() as usize;
    let mut out = Inspection::default();
    let mut seen_stream = false;
    // End of the last value read, to check what follows the closing brace (the iterator stops
    // at `}` and never looks further).
    let mut last_end: Option<usize> = None;
    for entry in sonic_rs::to_object_iter(body) {
        let (key, value) = entry.map_err(|e| {
            InspectError(format!(
                "request body is not a valid JSON object (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let raw = value.as_raw_str();
        let start = (raw.as_ptr() as usize).wrapping_sub(base);
        let end = start.wrapping_add(raw.len());
        if body.get(start..end).is_none() {
            return Err(err("request body could not be inspected"));
        }
        last_end = Some(end);
        match &*key {
            "model" => {
                if out.model_span.is_some() {
                    return Err(err("duplicate \"model\" field"));
                }
                let model = value.as_str().ok_or_else(|| err("\"model\" must be a string"))?;
                out.model = Some(model.to_owned());
                out.model_span = Some(start..end);
            }
            "stream" => {
                if seen_stream {
                    return Err(err("duplicate \"stream\" field"));
                }
                seen_stream = true;
                out.stream = match value.as_bool() {
                    Some(b) => b,
                    None if value.is_null() => false,
                    None => return Err(err("\"stream\" must be a boolean")),
                };
            }
            "max_completion_tokens" => out.max_completion_tokens = value.as_u64(),
            "max_tokens" => out.max_tokens = value.as_u64(),
            "stream_options" => {
                out.has_stream_options = true;
                out.include_usage = value.is_object()
                    && sonic_rs::get(raw.as_bytes(), ["include_usage"])
                        .ok()
                        .and_then(|v| v.as_bool())
                        == Some(true);
            }
            _ => {}
        }
    }
    check_tail(body, last_end)?;
    Ok(out)
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// After a successful iteration the object is closed by `}`; only whitespace may follow it.
fn check_tail(body: &[u8], last_end: Option<usize>) -> Result<(), InspectError> {
    let from = match last_end {
        Some(end) => end,
        // Empty object: skip to just past the opening brace.
        None => body.iter().position(|&b| !is_ws(b)).map_or(body.len(), |i| i + 1),
    };
    let rest = body.get(from..).unwrap_or(&[]);
    let mut tail = rest.iter().skip_while(|&&b| is_ws(b));
    if tail.next() != Some(&b'}') || tail.any(|&b| !is_ws(b)) {
        return Err(err("unexpected data after the JSON object"));
    }
    Ok(())
}

/// Replace the model value at `span` (from [`inspect_body`] on this same body) with
/// `new_model`, JSON-escaped; every other byte stays identical. A span that does not fit the
/// body returns the body unchanged.
pub fn splice_model(body: &[u8], span: Range<usize>, new_model: &str) -> Vec<u8> {
    let (Some(before), Some(after)) = (body.get(..span.start), body.get(span.end..)) else {
        return body.to_vec();
    };
    if span.start > span.end {
        return body.to_vec();
    }
    let mut out = Vec::with_capacity(before.len() + new_model.len() + 2 + after.len());
    out.extend_from_slice(before);
    push_json_string(&mut out, new_model);
    out.extend_from_slice(after);
    out
}

/// Quote and escape `s` as a JSON string (RFC 8259 §7): `"` `\` and control bytes.
fn push_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                let hi = HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0');
                let lo = HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0');
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hi, lo]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// The value of text field `name` in a multipart/form-data body (`model` on /v1/audio/*
/// uploads). `content_type` is the request's Content-Type value; the boundary may be quoted.
/// First matching part wins; `None` when the type, boundary or field is missing or malformed.
pub fn multipart_field<'a>(body: &'a [u8], content_type: &[u8], name: &str) -> Option<&'a [u8]> {
    let (media, params) = split_once(content_type, b';');
    if !trim(media).eq_ignore_ascii_case(b"multipart/form-data") {
        return None;
    }
    let boundary = param(params, b"boundary").filter(|b| !b.is_empty() && b.len() <= 70)?;
    let mut delim = Vec::with_capacity(boundary.len() + 4);
    delim.extend_from_slice(b"\r\n--");
    delim.extend_from_slice(boundary);
    let finder = memchr::memmem::Finder::new(&delim);
    // The first delimiter may open the body without the leading CRLF.
    let mut pos = if body.starts_with(delim.get(2..)?) {
        delim.len() - 2
    } else {
        finder.find(body)? + delim.len()
    };
    loop {
        let rest = body.get(pos..)?;
        if rest.starts_with(b"--") {
            return None; // close delimiter
        }
        // Transport padding after the boundary, then CRLF.
        let line_end = memchr::memmem::find(rest, b"\r\n")?;
        let part = rest.get(line_end + 2..)?;
        let headers_end = memchr::memmem::find(part, b"\r\n\r\n")?;
        let headers = part.get(..headers_end)?;
        let content = part.get(headers_end + 4..)?;
        let content_end = finder.find(content)?;
        if part_name(headers) == Some(name.as_bytes()) {
            return content.get(..content_end);
        }
        pos = (content.as_ptr() as usize - body.as_ptr() as usize) + content_end + delim.len();
    }
}

/// The `name` parameter of a part's Content-Disposition header.
fn part_name(headers: &[u8]) -> Option<&[u8]> {
    headers.split(|&b| b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (field, value) = split_once(line, b':');
        if !trim(field).eq_ignore_ascii_case(b"content-disposition") {
            return None;
        }
        let (kind, params) = split_once(value, b';');
        if !trim(kind).eq_ignore_ascii_case(b"form-data") {
            return None;
        }
        param(params, b"name")
    })
}

/// Value of parameter `key` in `; a=b; c="d;e"` (quoted values without their quotes;
/// backslash escapes are not undone, they do not occur in boundaries or field names we need).
fn param<'a>(mut params: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    loop {
        params = trim(params);
        params = params.strip_prefix(b";").map(trim).unwrap_or(params);
        if params.is_empty() {
            return None;
        }
        let eq = params.iter().position(|&b| b == b'=' || b == b';')?;
        let k = trim(params.get(..eq)?);
        let after = params.get(eq..)?;
        let (value, rest) = match after {
            [b'=', tail @ ..] => {
                let tail = trim(tail);
                if let [b'"', q @ ..] = tail {
                    let mut i = 0;
                    let close = loop {
                        match q.get(i)? {
                            b'\\' => i += 2,
                            b'"' => break i,
                            _ => i += 1,
                        }
                    };
                    (q.get(..close)?, q.get(close + 1..)?)
                } else {
                    let end = tail.iter().position(|&b| b == b';').unwrap_or(tail.len());
                    (trim(tail.get(..end)?), tail.get(end..)?)
                }
            }
            _ => (&b""[..], after),
        };
        if k.eq_ignore_ascii_case(key) {
            return Some(value);
        }
        params = rest;
    }
}

fn split_once(s: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match s.iter().position(|&b| b == sep) {
        Some(i) => (s.get(..i).unwrap_or(&[]), s.get(i + 1..).unwrap_or(&[])),
        None => (s, &[]),
    }
}

fn trim(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
