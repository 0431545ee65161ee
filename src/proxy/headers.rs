//! Header handling on the way through: which client headers go upstream, which upstream
//! headers come back, where credentials are read and written.
//! Invariant: the client's credentials and hop-by-hop headers never cross rotor in either
//! direction; the pool key is the only credential sent upstream.

use crate::codec::Field;
use bytes::{BufMut, BytesMut};

use crate::codec::encode::{
    check_request_field, check_request_header, put_request_header as put_header, put_target, UnsafeHead,
};
use crate::codec::fill::Fill;
use crate::codec::head::{Header, RequestHead};
use crate::config::Provider;
use crate::providers::prepared::ProviderHead;
use crate::providers::Adapter;

/// Client request headers rotor sets itself or must not forward (`not_forwarded` answers for
/// this list; a test holds the two equal).
#[cfg(test)]
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

/// Upstream response headers that describe the upstream hop only (`not_returned` answers for
/// this list; a test holds the two equal).
#[cfg(test)]
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

#[cfg(test)]
fn listed(name: &[u8], list: &[&str]) -> bool {
    list.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(name))
}

/// Names listed in the client's `Connection` header are hop-by-hop too.
fn named_by_connection(head: &RequestHead, name: &[u8]) -> bool {
    connection_tokens(head).any(|token| token.eq_ignore_ascii_case(name))
}

fn connection_tokens(head: &RequestHead) -> impl Iterator<Item = &[u8]> {
    head.headers
        .fields(Field::Connection)
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
}

/// Bit `min(len, 63)` of a name's length.
fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

/// The lengths of the names the client's `Connection` header lists ([`length_bit`]), but of
/// those whose tag keeps them back anyway (`keep-alive`, `te`, `upgrade`, ...): a forwarded
/// field of no such length is not named there (names of two lengths never match). Most clients
/// list `keep-alive` or nothing: asking [`named_by_connection`] of every forwarded field cost
/// ~45 instructions a field, ~500 for an SDK's request (callgrind).
fn connection_named_lengths(head: &RequestHead) -> u64 {
    // Most heads have no `Connection`: the adapters' set-up alone cost ~50 instructions.
    if head.field(Field::Connection).is_none() {
        return 0;
    }
    connection_tokens(head)
        .filter(|token| !Field::of(token).is_some_and(Field::not_forwarded))
        .fold(0, |lengths, token| lengths | length_bit(token.len()))
}

/// The key the client presented: `Authorization: Bearer <key>`, else `x-api-key`, else
/// `x-goog-api-key`, else the `key` query parameter (Google's styles, for the Gemini SDKs).
pub fn client_key(head: &RequestHead) -> Option<&[u8]> {
    if let Some(token) = head
        .field(Field::Authorization)
        .and_then(|v| bearer_token(v.trim_ascii()))
    {
        return Some(token.trim_ascii());
    }
    head.field(Field::XApiKey)
        .or_else(|| head.field(Field::XGoogApiKey))
        .map(|v| v.trim_ascii())
        .or_else(|| query_key(head.query()?))
}

/// What follows `Bearer ` (the scheme in any case) in an `Authorization` value with more after
/// it. The first eight bytes are read as one word and the scheme compared in one test: setting
/// bit 5 of the six letters' bytes folds an upper-case ASCII letter to its lower case and maps
/// no other byte to a letter of `bearer`, and the space is compared as it is, so this accepts
/// exactly what `value[..7].eq_ignore_ascii_case(b"bearer ")` did, whose byte loop cost ~50
/// instructions a request (`client_key` 115 -> 65, callgrind, issue 18).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const FOLD: u64 = u64::from_le_bytes(*b"\x20\x20\x20\x20\x20\x20\0\0");
    const SEVEN: u64 = u64::from_le_bytes(*b"\xff\xff\xff\xff\xff\xff\xff\0");
    const SCHEME: u64 = u64::from_le_bytes(*b"bearer \0");
    let (first, _) = value.split_first_chunk::<8>()?;
    let folded = (u64::from_le_bytes(*first) | FOLD) & SEVEN;
    value.get(7..).filter(|_| folded == SCHEME)
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

/// The key as one request sends it: its text (a secret or a current access token), and the
/// auth line `providers::prepared` wrote for it once, when there is one; with it, the whole
/// start of a POST head to the provider's `post_path`.
#[derive(Clone, Copy)]
pub struct Auth<'a> {
    pub key: &'a str,
    pub line: Option<&'a [u8]>,
    pub post: Option<&'a [u8]>,
}

/// Writes the upstream request head into `out`, behind what it holds: request line, Host, the
/// pool key in the provider's way, the adapter's own header (`extra`, replacing a client's of
/// that name), Content-Length, the client's end-to-end headers, then the provider's configured
/// headers. `out` is the answer's write buffer, lent before anything is written to the client
/// (`Responder::lend`): the request goes out of it, so no buffer is allocated and freed for it.
/// Every piece goes through the checked writers, so a CR, LF or NUL anywhere (a model name in
/// the path, a header value) refuses the whole head, and `out` is left as it was, instead of
/// splitting the request; only the client's fields as httparse parsed them, which cannot hold
/// those, are not looked at again. The constant parts come from `prepared` (written by the same writers
/// once per generation) when given, and the key's lines from `auth`; the bytes are the same
/// either way.
#[allow(clippy::too_many_arguments)]
pub fn upstream_request_head(
    out: &mut BytesMut,
    head: &RequestHead,
    provider: &Provider,
    prepared: Option<&ProviderHead>,
    auth: Auth<'_>,
    upstream_path: &str,
    body_len: usize,
    extra: Option<(&str, &str)>,
) -> Result<(), UnsafeHead> {
    let kept = out.len();
    let written = write_head(out, head, provider, prepared, auth, upstream_path, body_len, extra);
    if written.is_err() {
        out.truncate(kept);
    }
    written
}

/// The longest `content-length: N` CRLF.
const LENGTH_LINE: usize = 16 + 20 + 2;

#[allow(clippy::too_many_arguments)]
fn write_head(
    out: &mut BytesMut,
    head: &RequestHead,
    provider: &Provider,
    prepared: Option<&ProviderHead>,
    auth: Auth<'_>,
    upstream_path: &str,
    body_len: usize,
    extra: Option<(&str, &str)>,
) -> Result<(), UnsafeHead> {
    // Room for a body the round trip (`upstream::client::round_trip!`) copies behind the
    // head: one reservation, not a second one when the body is appended.
    let coalesced = if body_len <= crate::upstream::COALESCE_BODY_BYTES {
        body_len
    } else {
        0
    };
    match (prepared, auth.post) {
        // A POST to the prepared path with no query: request line, host and key in one copy.
        (Some(prepared), Some(post))
            if prepared.post_path == Some(upstream_path) && head.method_raw() == b"POST" && head.query().is_none() =>
        {
            out.reserve(post.len() + 512 + coalesced);
            let mut fill = Fill::new(out, post.len());
            fill.put(post);
            fill.commit();
        }
        _ => {
            out.reserve(512 + coalesced);
            put_start(out, head, provider, prepared, auth, upstream_path)?;
        }
    }
    let adapter = Adapter::of(provider);
    adapter.put_version(out, Some(head));
    if let Some((name, value)) = extra {
        put_header(out, name.as_bytes(), value.as_bytes())?;
    }
    let fixed = prepared.map_or(&[][..], |p| &p.fixed);
    // The client's fields come out no longer than their lines in its head, plus the space and
    // CR a bare `name:value` LF line lacks: with that bound the rest is one reservation.
    let fields = head.headers.raw().len() + 2 * head.headers.len();
    let mut fill = Fill::new(out, LENGTH_LINE + fields + fixed.len() + 2 + coalesced);
    if body_len > 0 || head.method_raw() != b"GET" {
        let mut digits = itoa::Buffer::new();
        fill.put(b"content-length: ");
        fill.put(digits.format(body_len).as_bytes());
        fill.put(b"\r\n");
    }
    put_client_headers(&mut fill, head, provider, extra)?;
    fill.put(fixed);
    if prepared.is_some() {
        fill.put(b"\r\n");
        fill.commit();
        return Ok(());
    }
    fill.commit();
    for (name, value) in &provider.headers {
        put_header(out, name.as_bytes(), value.as_bytes())?;
    }
    out.put_slice(b"\r\n");
    Ok(())
}

/// Request line, Host and the key's line, written piece by piece (checked).
fn put_start(
    out: &mut BytesMut,
    head: &RequestHead,
    provider: &Provider,
    prepared: Option<&ProviderHead>,
    auth: Auth<'_>,
    upstream_path: &str,
) -> Result<(), UnsafeHead> {
    put_target(out, head.method_raw())?;
    out.put_u8(b' ');
    put_target(out, provider.base_url.path.as_bytes())?;
    put_target(out, upstream_path.as_bytes())?;
    // An adapter that sets its own query (Gemini's `?alt=sse`) replaces the client's; the
    // client's `key=` (its rotor key) is never forwarded.
    if let Some(query) = head.query().filter(|_| !upstream_path.contains('?')).map(without_key) {
        if !query.is_empty() {
            out.put_u8(b'?');
            put_target(out, query.as_bytes())?;
        }
    }
    out.put_slice(b" HTTP/1.1\r\n");
    match prepared {
        Some(prepared) => out.put_slice(&prepared.host),
        None => put_header(out, b"host", provider.base_url.host_header.as_bytes())?,
    }
    match auth.line {
        Some(line) => out.put_slice(line),
        None => Adapter::of(provider).put_key(out, auth.key)?,
    }
    Ok(())
}

/// The client's end-to-end headers: not hop-by-hop (listed or named by its `Connection`), not
/// set by rotor, not the adapter's `extra` nor a configured provider header of the same name.
/// A field httparse did not parse (a head whose fields were replaced) is checked first. Lines
/// httparse parsed that the head holds exactly as `name: value` CRLF, one after another, are
/// copied as one run (as an answer's returned fields are, `Returned::for_each_piece`): one
/// copy where each field took four (~25 instructions each, ~800 for an SDK's request).
/// Placed by `fill`, whose reservation holds them all (see `write_head`): a refused one
/// leaves the fill uncommitted, so nothing of the head is kept.
fn put_client_headers(
    fill: &mut Fill<'_>,
    head: &RequestHead,
    provider: &Provider,
    extra: Option<(&str, &str)>,
) -> Result<(), UnsafeHead> {
    // `Connection` is itself not forwarded: only when the client sent one can it name others.
    let named = connection_named_lengths(head);
    // Without an adapter field or configured headers (most providers), only a name of a length
    // the client's `Connection` lists can be kept back: the others are not looked at.
    let by_name = extra.is_some() || !provider.headers.is_empty();
    let raw = head.headers.raw();
    let mut run = 0..0;
    // Each field's name was recognised once, at parse: the hop-by-hop and credential names
    // are skipped on their tag, without comparing names again.
    for t in head.headers.tagged_except(Field::not_forwarded) {
        let named_length = named & length_bit(t.name_len()) != 0;
        if (named_length || by_name) && kept_back(head, provider, extra, named, t.header().name) {
            continue;
        }
        match t.exact.clone().filter(|_| t.parsed) {
            // A line left out between two kept ones ends the run: they are not adjacent.
            Some(at) if at.start == run.end && !run.is_empty() => run.end = at.end,
            Some(at) => fill.put(raw.get(std::mem::replace(&mut run, at)).unwrap_or_default()),
            None => {
                let Header { name, value } = t.header();
                // httparse refused what the checks look for in a field it parsed (the test
                // `parsed_request_fields_pass_the_writer_checks` holds it to that): looking
                // again cost ~90 instructions a forwarded field, ~1,000 for an SDK's request.
                if !t.parsed {
                    match t.field {
                        // A tagged name is one of `Field`'s names: only the value needs the check.
                        Some(_) => check_request_field(name, value)?,
                        None => check_request_header(name, value)?,
                    }
                }
                fill.put(raw.get(std::mem::replace(&mut run, 0..0)).unwrap_or_default());
                fill.field(name, value);
            }
        }
    }
    fill.put(raw.get(run).unwrap_or_default());
    Ok(())
}

/// Whether the client's field `name`, not kept back by its tag, still stays back: named by the
/// client's `Connection` (`named`: its names' lengths, see [`connection_named_lengths`]), or
/// set by the adapter (`extra`) or the provider's configured headers.
fn kept_back(head: &RequestHead, provider: &Provider, extra: Option<(&str, &str)>, named: u64, name: &[u8]) -> bool {
    (named & length_bit(name.len()) != 0 && named_by_connection(head, name))
        || extra.is_some_and(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
        || provider
            .headers
            .iter()
            .any(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
}

/// `listed(name, NOT_RETURNED)` as the field tags answer it (what `Returned` reads).
#[cfg(test)]
fn not_returned(name: &[u8]) -> bool {
    Field::of(name).is_some_and(Field::not_returned)
}

/// `listed(name, NOT_FORWARDED)` as the field tags answer it (what `put_client_headers` reads).
#[cfg(test)]
fn not_forwarded(name: &[u8]) -> bool {
    Field::of(name).is_some_and(Field::not_forwarded)
}

#[cfg(test)]
#[path = "headers_tests.rs"]
mod tests;
