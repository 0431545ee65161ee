use bytes::BytesMut;

use super::*;
use crate::codec::head::{BodyFraming, HeadLimits, Headers};
use crate::codec::response::parse_response_head;
use crate::codec::response_head::write_head;
use crate::codec::Field;

/// The list `proxy::headers::response_headers` built before `AnswerFields` (every returned
/// upstream field copied into a `Vec`, then rotor's three), kept as the reference.
fn reference_list<'a>(upstream: &'a Headers, rid: &'a [u8], provider: &'a str, attempts: &'a [u8]) -> Vec<Pair<'a>> {
    let mut out = Vec::with_capacity(upstream.len() + 4);
    for (field, name, value) in upstream.tagged_text() {
        if field.is_some_and(Field::not_returned) {
            continue;
        }
        if field == Some(Field::XRequestId) {
            out.push(("x-upstream-request-id", value));
            continue;
        }
        out.push((name, value));
    }
    out.push(("x-request-id", rid));
    out.push(("x-rotor-provider", provider.as_bytes()));
    out.push(("x-rotor-attempts", attempts));
    out
}

/// What the relay added to that list and how it split it (`OWN_FIELDS` = 3 from the end, the
/// upstream's checked), written by the head writer: the bytes the client got before.
fn reference_head(head: &ResponseHead, extra: &Extra, framing: Option<BodyFraming>) -> BytesMut {
    let mut headers = reference_list(&head.headers, b"rid-1", "mock", extra.attempts);
    let mut own_from = headers.len().saturating_sub(3);
    if let Some(flag) = extra.cache {
        headers.push(("x-rotor-cache", flag));
    }
    if let Some(content_type) = extra.content_type {
        let before = headers.len();
        headers.retain(|(name, _)| !name.eq_ignore_ascii_case("content-type"));
        own_from = own_from.saturating_sub(before - headers.len());
        headers.push(("content-type", content_type));
    }
    if let Some(seconds) = extra.retry_after {
        if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("retry-after")) {
            headers.push(("retry-after", seconds));
        }
    }
    headers.push(("x-rotor-overhead-us", b"17"));
    let (checked, own) = headers.split_at(own_from);
    let mut out = BytesMut::new();
    write_head(
        &mut out,
        head.status,
        HeadFields {
            checked,
            returned: None,
            own,
            relayed: None,
        },
        framing,
        true,
        0,
    );
    out
}

/// The same through `AnswerFields`, as `relay` calls it.
fn new_head(head: &ResponseHead, extra: &Extra, framing: Option<BodyFraming>) -> BytesMut {
    let lines = ProviderLines::new(b"mock");
    let mut fields = AnswerFields::new(head, b"rid-1", &lines, extra.attempts);
    if let Some(flag) = extra.cache {
        fields.push("x-rotor-cache", flag);
    }
    if let Some(content_type) = extra.content_type {
        fields.replace_content_type(content_type);
    }
    if let Some(seconds) = extra.retry_after {
        fields.retry_after_unless_sent(seconds);
    }
    fields.overhead_us(b"17");
    let mut out = BytesMut::new();
    write_head(&mut out, head.status, fields.fields(), framing, true, 0);
    out
}

struct Extra {
    /// The attempts' digits: one attempt takes the provider's prepared lines whole.
    attempts: &'static [u8],
    cache: Option<&'static [u8]>,
    content_type: Option<&'static [u8]>,
    retry_after: Option<&'static [u8]>,
}

const UPSTREAM_FIELDS: &[&str] = &[
    "Content-Type: application/json",
    "content-type: text/event-stream; charset=utf-8",
    "X-Request-Id: up-1",
    "x-request-id:up-2",
    "Retry-After: 30",
    "retry-after:\t5 ",
    "Connection: keep-alive",
    "Keep-Alive: timeout=5",
    "Content-Length: 0",
    "Trailer: x",
    "Upgrade: h2c",
    "TE: trailers",
    "Proxy-Connection: close",
    "x-ratelimit-remaining-tokens: 99",
    "Set-Cookie: a=b; Path=/",
    "X-Odd_Name!: caf\u{e9} \"q\"\tb",
    "x-empty:",
    "Date: Fri, 04 Dec 2026 19:00:00 GMT",
];

/// Differential: for upstream heads of every mix of returned, hop-by-hop, renamed and replaced
/// fields (any case, odd spacing, tabs, high bytes, empty values), and every combination of
/// what the relay adds, `AnswerFields` writes byte for byte what the `Vec` list wrote.
#[test]
fn answer_heads_match_the_list_they_replace() {
    let mut rng = fastrand::Rng::with_seed(18);
    let mut compared = 0;
    for _ in 0..400 {
        let mut raw = String::from("HTTP/1.1 200 OK\r\n");
        for _ in 0..rng.usize(0..10) {
            raw.push_str(UPSTREAM_FIELDS[rng.usize(..UPSTREAM_FIELDS.len())]);
            raw.push_str("\r\n");
        }
        raw.push_str("\r\n");
        let mut buf = BytesMut::from(raw.as_bytes());
        // Repeated Content-Length values agree (0), so every head here parses.
        let head = parse_response_head(&mut buf, &HeadLimits::default(), false)
            .expect("a valid head")
            .expect("complete");
        for bits in 0..16u8 {
            let extra = Extra {
                attempts: if bits & 8 != 0 { b"2" } else { b"1" },
                cache: (bits & 1 != 0).then_some(&b"hit"[..]),
                content_type: (bits & 2 != 0).then_some(&b"application/json"[..]),
                retry_after: (bits & 4 != 0).then_some(&b"7"[..]),
            };
            for framing in [Some(BodyFraming::Length(12)), Some(BodyFraming::Chunked), None] {
                let want = reference_head(&head, &extra, framing);
                let got = new_head(&head, &extra, framing);
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want),
                    "{raw:?} {bits}"
                );
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 400 * 16 * 3);
}

/// Every field the relay can add fits: none is silently left out.
#[test]
fn the_most_own_fields_all_fit() {
    let mut buf = BytesMut::from(&b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: a/b\r\n\r\n"[..]);
    let head = parse_response_head(&mut buf, &HeadLimits::default(), false)
        .unwrap()
        .unwrap();
    let lines = ProviderLines::new(b"p");
    let mut fields = AnswerFields::new(&head, b"r", &lines, b"1");
    fields.push("x-rotor-cache", b"miss");
    fields.replace_content_type(b"text/event-stream");
    fields.retry_after_unless_sent(b"3");
    fields.overhead_us(b"9");
    let own: Vec<&str> = fields.fields().own.iter().map(|(n, _)| *n).collect();
    assert_eq!(own, ["x-rotor-cache", "content-type", "retry-after"]);
    let mut out = BytesMut::new();
    write_head(&mut out, 503, fields.fields(), None, true, 0);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.ends_with(
            "\r\nx-request-id: r\r\nx-rotor-provider: p\r\nx-rotor-attempts: 1\r\nx-rotor-cache: miss\r\n\
             content-type: text/event-stream\r\nretry-after: 3\r\nx-rotor-overhead-us: 9\r\n\r\n"
        ),
        "{text}"
    );
    assert!(
        !text.contains("a/b"),
        "the upstream's content-type was replaced: {text}"
    );
    assert!(text.contains("content-type: text/event-stream\r\n"), "{text}");
}

/// An upstream head carrying what would break a line is refused when parsed (502), so it never
/// becomes fields written unchecked; and a clean value is returned as it came.
#[test]
fn line_breaks_never_reach_returned_fields() {
    for raw in [
        &b"HTTP/1.1 200 OK\r\nX-Evil: a\rset-cookie: y\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nX-Evil: a\0b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Evil: a\r\n b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX\rEvil: a\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Evil : a\r\n\r\n",
    ] {
        let mut buf = BytesMut::from(raw);
        let parsed = parse_response_head(&mut buf, &HeadLimits::default(), false);
        assert_eq!(parsed.unwrap_err().status, 502, "{:?}", String::from_utf8_lossy(raw));
    }
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\nX-Fine: a\tb\n\n"[..]);
    let head = parse_response_head(&mut buf, &HeadLimits::default(), false)
        .unwrap()
        .unwrap();
    let mut out = BytesMut::new();
    write_head(
        &mut out,
        200,
        AnswerFields::new(&head, b"r", &ProviderLines::new(b"p"), b"1").fields(),
        None,
        true,
        0,
    );
    assert!(String::from_utf8_lossy(&out).contains("\r\nX-Fine: a\tb\r\n"));
}
