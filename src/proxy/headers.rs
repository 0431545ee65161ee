//! Header handling on the way through: which client headers go upstream, which upstream
//! headers come back, where credentials are read and written.
//! Invariant: the client's credentials and hop-by-hop headers never cross rotor in either
//! direction; the pool key is the only credential sent upstream.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::encode::{put_request_header as put_header, put_target, UnsafeHead};
use crate::codec::head::{Header, RequestHead};
use crate::config::Provider;
use crate::providers::Adapter;

/// Client request headers rotor sets itself or must not forward.
const NOT_FORWARDED: &[&str] = &[
    // hop-by-hop (RFC 9110 7.6.1)
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    // set by rotor for the upstream hop
    "host",
    "content-length",
    "expect",
    // the client's own credentials
    "authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    // rotor reads response bodies (usage) and relays SSE as it arrives: no compression upstream
    "accept-encoding",
];

/// Upstream response headers that describe the upstream hop only.
const NOT_RETURNED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

fn listed(name: &[u8], list: &[&str]) -> bool {
    list.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(name))
}

/// Names listed in the client's `Connection` header are hop-by-hop too.
fn named_by_connection(head: &RequestHead, name: &[u8]) -> bool {
    head.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(b"connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(name))
}

/// The key the client presented: `Authorization: Bearer <key>`, else `x-api-key`, else
/// `x-goog-api-key`, else the `key` query parameter (Google's styles, for the Gemini SDKs).
pub fn client_key(head: &RequestHead) -> Option<&[u8]> {
    if let Some(value) = head.header("authorization") {
        let value = value.trim_ascii();
        if value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ") {
            return Some(value[7..].trim_ascii());
        }
    }
    head.header("x-api-key")
        .or_else(|| head.header("x-goog-api-key"))
        .map(|v| v.trim_ascii())
        .or_else(|| query_key(head.query()?))
}

/// The `key=` parameter of a query (taken as it is: API keys are URL-safe).
fn query_key(query: &str) -> Option<&[u8]> {
    query.split('&').find_map(|p| p.strip_prefix("key=")).map(str::as_bytes)
}

/// The client's query without its `key` parameters: a client credential never goes upstream.
pub fn without_key(query: &str) -> std::borrow::Cow<'_, str> {
    let is_key = |p: &&str| *p == "key" || p.starts_with("key=");
    if !query.split('&').any(|p| is_key(&p)) {
        return std::borrow::Cow::Borrowed(query);
    }
    let kept: Vec<&str> = query.split('&').filter(|p| !is_key(p)).collect();
    std::borrow::Cow::Owned(kept.join("&"))
}

/// The client's `x-request-id` when it is a sane token, else a fresh random id.
pub fn request_id(head: &RequestHead) -> Bytes {
    if let Some(id) = head.header("x-request-id") {
        if !id.is_empty() && id.len() <= 64 && id.iter().all(|b| b.is_ascii_graphic()) {
            return id.clone();
        }
    }
    let mut out = BytesMut::with_capacity(16);
    let n = fastrand::u64(..);
    for shift in (0..16).rev() {
        out.put_u8(b"0123456789abcdef"[((n >> (shift * 4)) & 0xf) as usize]);
    }
    out.freeze()
}

/// Writes the upstream request head: request line, Host, the pool key in the provider's way,
/// the adapter's own header (`extra`, replacing a client's of that name), Content-Length, the
/// client's end-to-end headers, then the provider's configured headers.
/// Every piece goes through the checked writers, so a CR, LF or NUL anywhere (a model name in
/// the path, a header value) refuses the whole head instead of splitting the request.
pub fn upstream_request_head(
    head: &RequestHead,
    provider: &Provider,
    key: &str,
    upstream_path: &str,
    body_len: usize,
    extra: Option<(&str, &str)>,
) -> Result<BytesMut, UnsafeHead> {
    let mut out = BytesMut::with_capacity(512);
    put_target(&mut out, &head.method_raw)?;
    out.put_u8(b' ');
    put_target(&mut out, provider.base_url.path.as_bytes())?;
    put_target(&mut out, upstream_path.as_bytes())?;
    // An adapter that sets its own query (Gemini's `?alt=sse`) replaces the client's; the
    // client's `key=` (its rotor key) is never forwarded.
    if let Some(query) = head.query().filter(|_| !upstream_path.contains('?')).map(without_key) {
        if !query.is_empty() {
            out.put_u8(b'?');
            put_target(&mut out, query.as_bytes())?;
        }
    }
    out.put_slice(b" HTTP/1.1\r\n");
    put_header(&mut out, b"host", provider.base_url.host_header.as_bytes())?;
    Adapter::of(provider).put_auth(&mut out, key, Some(head))?;
    if let Some((name, value)) = extra {
        put_header(&mut out, name.as_bytes(), value.as_bytes())?;
    }
    if body_len > 0 || head.method_raw.as_ref() != b"GET" {
        let mut digits = itoa::Buffer::new();
        put_header(&mut out, b"content-length", digits.format(body_len).as_bytes())?;
    }
    for Header { name, value } in &head.headers {
        if listed(name, NOT_FORWARDED) || named_by_connection(head, name) {
            continue;
        }
        if extra.is_some_and(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name)) {
            continue;
        }
        if provider
            .headers
            .iter()
            .any(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
        {
            continue;
        }
        put_header(&mut out, name, value)?;
    }
    for (name, value) in &provider.headers {
        put_header(&mut out, name.as_bytes(), value.as_bytes())?;
    }
    out.put_slice(b"\r\n");
    Ok(out)
}

/// On the heap for the reason `codec::head::Headers` is: the list lives across the relay's awaits.
pub type ResponseHeaders<'a> = Vec<(&'a str, &'a [u8])>;

/// Upstream response headers worth returning (end-to-end ones), plus rotor's own.
pub fn response_headers<'a>(
    upstream: &'a [Header],
    request_id: &'a [u8],
    provider: &'a str,
    attempts: &'a [u8],
) -> ResponseHeaders<'a> {
    let mut out = ResponseHeaders::with_capacity(upstream.len() + 4);
    for h in upstream {
        if listed(&h.name, NOT_RETURNED) {
            continue;
        }
        // The provider's own request id stays visible (support tickets need it) under a name
        // that does not collide with rotor's.
        if h.name.eq_ignore_ascii_case(b"x-request-id") {
            out.push(("x-upstream-request-id", &h.value));
            continue;
        }
        if let Ok(name) = std::str::from_utf8(&h.name) {
            out.push((name, &h.value));
        }
    }
    out.push(("x-request-id", request_id));
    out.push(("x-rotor-provider", provider.as_bytes()));
    out.push(("x-rotor-attempts", attempts));
    out
}
