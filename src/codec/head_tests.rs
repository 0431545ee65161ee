//! Unit tests for the request-head rules, one test per rule.

use super::*;

fn parse(raw: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    let mut buf = BytesMut::from(raw);
    parse_request_head(&mut buf, &HeadLimits::default())
}

fn ok(raw: &[u8]) -> RequestHead {
    parse(raw).unwrap().unwrap()
}

fn status(raw: &[u8]) -> u16 {
    parse(raw).unwrap_err().status
}

#[test]
fn simple_get_splits_head_and_keeps_body() {
    let mut buf = BytesMut::from(&b"POST /v1/chat?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET"[..]);
    let h = parse_request_head(&mut buf, &HeadLimits::default()).unwrap().unwrap();
    assert_eq!(h.method, Method::Post);
    assert_eq!(h.method_raw(), b"POST");
    assert_eq!(h.target(), "/v1/chat?x=1");
    assert_eq!(h.path(), "/v1/chat");
    assert_eq!(h.query(), Some("x=1"));
    assert_eq!(h.framing, BodyFraming::Length(3));
    assert!(h.keep_alive);
    assert!(!h.http10);
    assert_eq!(h.header("HOST"), Some(&b"a"[..]));
    assert_eq!(h.headers.get(1).map(|f| f.name), Some(&b"Content-Length"[..]));
    assert_eq!(&buf[..], b"abcGET");
}

#[test]
fn partial_head_needs_more() {
    assert!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
    assert!(parse(b"").unwrap().is_none());
}

#[test]
fn leading_empty_lines_skipped() {
    let h = ok(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(h.path(), "/");
}

#[test]
fn oversized_incomplete_head_is_431() {
    let limits = HeadLimits {
        max_head_bytes: 64,
        max_headers: 100,
    };
    let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
    raw.extend(std::iter::repeat_n(b'a', 100));
    let mut buf = BytesMut::from(&raw[..]);
    assert_eq!(parse_request_head(&mut buf, &limits).unwrap_err().status, 431);
    // A complete head over the limit is refused too.
    raw.extend_from_slice(b"\r\n\r\n");
    let mut buf = BytesMut::from(&raw[..]);
    assert_eq!(parse_request_head(&mut buf, &limits).unwrap_err().status, 431);
}

#[test]
fn too_many_headers_is_431() {
    let limits = HeadLimits {
        max_head_bytes: 32768,
        max_headers: 3,
    };
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"[..]);
    assert_eq!(parse_request_head(&mut buf, &limits).unwrap_err().status, 431);
}

#[test]
fn forbidden_bytes_in_values_and_names_rejected() {
    assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nX Y: a\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nX\0: a\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nX : a\r\n\r\n"), 400);
    // A bare LF inside a value ends the line; the rest is not a valid field line.
    assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\nb\r\n\r\n"), 400);
}

#[test]
fn bare_lf_line_ends_rejected() {
    assert_eq!(status(b"GET / HTTP/1.1\nHost: a\n\n"), 400);
    assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\n\r\n"), 400);
    // Leading empty lines are skipped only as CRLF.
    assert_eq!(status(b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
}

#[test]
fn obs_fold_rejected() {
    assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n"), 400);
}

#[test]
fn target_forms() {
    assert_eq!(status(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_eq!(status(b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_eq!(status(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    let h = ok(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(h.target(), "*");
    assert_eq!(h.method, Method::Options);
    let h = ok(b"PROPFIND /x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(h.method, Method::Other);
    assert_eq!(h.method_raw(), b"PROPFIND");
}

#[test]
fn only_http_10_and_11() {
    assert_eq!(status(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
    assert_eq!(status(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"), 505);
    assert!(ok(b"GET / HTTP/1.0\r\n\r\n").http10);
}

#[test]
fn cl_and_te_together_rejected() {
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
        400
    );
}

#[test]
fn repeated_content_length_rejected_even_equal() {
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n"),
        400
    );
}

#[test]
fn content_length_syntax() {
    for bad in [
        &b"+3"[..],
        b"-3",
        b"3 4",
        b"",
        b"0x3",
        b"3,3",
        b"99999999999999999999",
        b"1\x0b",
    ] {
        let mut raw = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ".to_vec();
        raw.extend_from_slice(bad);
        raw.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&raw).map(|_| ()).unwrap_err().status, 400, "{bad:?}");
    }
    let h = ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9999999999999999999\r\n\r\n");
    assert_eq!(h.framing, BodyFraming::Length(9_999_999_999_999_999_999));
    let h = ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(h.framing, BodyFraming::Empty);
    assert_eq!(ok(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").framing, BodyFraming::Empty);
}

#[test]
fn transfer_encoding_rules() {
    let te = |v: &str| {
        let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {v}\r\n\r\n");
        parse(raw.as_bytes()).map(|h| h.map(|h| h.framing))
    };
    assert_eq!(te("chunked"), Ok(Some(BodyFraming::Chunked)));
    assert_eq!(te("CHUNKED "), Ok(Some(BodyFraming::Chunked)));
    assert_eq!(te("gzip, chunked").unwrap_err().status, 501);
    assert_eq!(te("gzip").unwrap_err().status, 501);
    assert_eq!(te("chunked, chunked").unwrap_err().status, 400);
    assert_eq!(te("chunked,").unwrap_err().status, 400);
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
        400
    );
    assert_eq!(status(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
}

#[test]
fn host_rules() {
    assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
}

#[test]
fn keep_alive_rules() {
    assert!(ok(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").keep_alive);
    assert!(!ok(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, Close\r\n\r\n").keep_alive);
    assert!(!ok(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert!(ok(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    assert!(!ok(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
    assert!(ok(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n").keep_alive);
}

#[test]
fn expect_rules() {
    assert!(ok(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n").expect_continue);
    assert!(!ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n").expect_continue);
    assert_eq!(status(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n"), 417);
    assert!(!ok(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
}

#[test]
fn non_ascii_target_rejected() {
    // httparse hands the target out as &str and refuses bytes >= 0x80, and origin-form is
    // ASCII: the target `path()` reads unchecked was checked once, at parse (`codec::text`).
    assert_eq!(status(b"GET /\xff?a HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_eq!(status(b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
}

/// `path()` and `query()` read the text checked at parse; they answer as the full
/// `from_utf8` + split at the first `?` they replaced (issue 18).
#[test]
fn path_and_query_agree_with_a_full_split() {
    for t in [
        "/",
        "/v1/chat/completions",
        "/v1/models?key=a&b=2",
        "/a?",
        "/a??b",
        "/?x",
        "/a%20b?c=%3F",
        "*",
    ] {
        let method = if t == "*" { "OPTIONS" } else { "GET" };
        let h = ok(format!("{method} {t} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        let (path, query) = t.split_once('?').map_or((t, None), |(p, q)| (p, Some(q)));
        assert_eq!((h.path(), h.query()), (path, query), "{t}");
        assert_eq!((h.target(), h.method_raw()), (t, method.as_bytes()));
    }
}

#[test]
fn target_must_be_rfc3986() {
    // Fuzz find (request_head differential): httparse accepts a backtick, http::Uri does not.
    for t in [
        "/ch`t", "/a{b}", "/a|b", "/a\"b", "/a#frag", "/a%zz", "/a%2", "/a^b", "/a[0]",
    ] {
        let raw = format!("GET {t} HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(status(raw.as_bytes()), 400, "{t}");
    }
    let h = ok(b"GET /v1/models/a%2Fb;x=1:@!$&'()*+,?q=/?a~b_c-d. HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(h.path(), "/v1/models/a%2Fb;x=1:@!$&'()*+,");
}

#[test]
fn find_header_first_match_case_insensitive() {
    let h = ok(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\n\r\n");
    assert_eq!(find_header(&h.headers, "x-A"), Some(&b"1"[..]));
    assert_eq!(find_header(&h.headers, "missing"), None);
}

#[test]
fn header_limit_above_inline_slots_spills() {
    let mut raw = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..150 {
        raw.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    let limits = HeadLimits {
        max_head_bytes: 32768,
        max_headers: 200,
    };
    let h = parse_request_head(&mut BytesMut::from(&raw[..]), &limits)
        .unwrap()
        .unwrap();
    assert_eq!(h.headers.len(), 151);
    assert_eq!(status(&raw), 431);
}

/// Differential (issue 18: fields are spans into the head, not a `Bytes` each): the parsed
/// list holds exactly httparse's fields, in order, for request and response heads.
#[test]
fn header_spans_read_back_as_httparse_sees_them() {
    let fields =
        "Host: a\r\nX-Empty:\r\nx-tab:\tv  w \r\nContent-Length: 0\r\nX-A: 1\r\nx-a: 2\r\nAccept: */*\r\n\r\nleft";
    let request = format!("GET /p?q HTTP/1.1\r\n{fields}");
    let response = format!("HTTP/1.1 200 OK\r\n{fields}");
    let mut slots = [httparse::EMPTY_HEADER; 16];
    let mut theirs = httparse::Request::new(&mut slots);
    theirs.parse(request.as_bytes()).unwrap();
    let want: Vec<(&[u8], &[u8])> = theirs.headers.iter().map(|h| (h.name.as_bytes(), h.value)).collect();
    assert_eq!(want.len(), 7);
    let ours = ok(request.as_bytes());
    let got: Vec<(&[u8], &[u8])> = ours.headers.iter().map(|h| (h.name, h.value)).collect();
    assert_eq!(got, want);
    let mut buf = BytesMut::from(response.as_bytes());
    let resp = crate::codec::parse_response_head(&mut buf, &HeadLimits::default(), false)
        .unwrap()
        .unwrap();
    let got: Vec<(&[u8], &[u8])> = resp.headers.iter().map(|h| (h.name, h.value)).collect();
    assert_eq!(got, want);
    assert_eq!(&buf[..], b"left");
}

/// What the upstream request writer relies on to forward a client's fields unchecked: every
/// field of a request head that parses passes the writer's checks (a token name, no CR, LF or
/// NUL in the value), whatever bytes came (heads built at random from pieces that include
/// them, bare CRs, folded lines, separators and control bytes).
#[test]
fn parsed_request_fields_pass_the_writer_checks() {
    use crate::codec::encode::check_request_header;
    let pieces: &[&[u8]] = &[
        b"\r\n",
        b"\n",
        b"\r",
        b"\0",
        b":",
        b": ",
        b" ",
        b"\t",
        b"a",
        b"X-A",
        b"\xe9",
        b"\x7f",
        b"\x0b",
        b"\r\n ",
        b"\r\nB: ",
        b"\r\nC:",
        b"(",
        b"\"",
        b",",
        b";",
        b"@",
        b"\r\n\r\n",
    ];
    let mut rng = fastrand::Rng::with_seed(18);
    let mut fields = 0;
    for _ in 0..20_000 {
        let mut raw = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
        for _ in 0..rng.usize(0..10) {
            raw.extend_from_slice(pieces[rng.usize(..pieces.len())]);
        }
        raw.extend_from_slice(b"\r\n\r\n");
        let mut buf = BytesMut::from(&raw[..]);
        let Ok(Some(head)) = parse_request_head(&mut buf, &HeadLimits::default()) else {
            continue;
        };
        for t in head.headers.tagged_except(|_| false) {
            fields += 1;
            assert!(t.parsed, "{raw:?}");
            assert_eq!(
                check_request_header(t.header().name, t.header().value),
                Ok(()),
                "{raw:?}"
            );
        }
    }
    assert!(fields > 10_000, "enough heads parsed to mean something: {fields}");
}

/// A repeated framing field is refused with the reason of the first offence in order, and a
/// bad Expect before it answers 417 (the index keeps the walk's order of errors).
#[test]
fn the_first_offence_in_order_is_reported() {
    let reason = |raw: &[u8]| parse(raw).unwrap_err();
    assert_eq!(
        reason(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: x\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\n").status,
        417
    );
    let e =
        reason(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nHOST: b\r\ncontent-length: 1\r\nExpect: x\r\n\r\n");
    assert_eq!((e.status, e.reason), (400, "repeated Host"));
    let e = reason(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-encoding: chunked\r\n\r\n");
    assert_eq!((e.status, e.reason), (400, "repeated Transfer-Encoding"));
    let head = ok(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nEXPECT: 100-continue\r\nConnection: x\r\nconnection: close\r\n\r\n");
    assert!(head.expect_continue && !head.keep_alive);
    assert_eq!(head.field(Field::Connection), Some(&b"x"[..]));
}

/// The reference the line-end check replaced: any LF not right after a CR, byte by byte.
fn bare_lf_bytewise(head: &[u8]) -> bool {
    (0..head.len()).any(|i| head[i] == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}

/// `lines_end_in_crlf` refuses a head exactly when a byte walk finds a bare LF in what httparse
/// took: heads built at random from pieces with CR, LF, CRLF, empty lines, spaces and control
/// bytes anywhere (the start, the request line, names, values, the end).
#[test]
fn bare_lf_verdict_agrees_with_a_byte_walk() {
    let pieces: &[&[u8]] = &[
        b"\r\n",
        b"\n",
        b"\r",
        b"\r\r\n",
        b"\n\r\n",
        b"a",
        b"X-A: ",
        b"Host: h",
        b": ",
        b" ",
        b"\t",
        b"\0",
        b"\x0b",
        b"GET / HTTP/1.1",
        b"GET /",
        b" HTTP/1.1",
    ];
    let mut rng = fastrand::Rng::with_seed(1812);
    let (mut refused, mut accepted) = (0, 0);
    for _ in 0..40_000 {
        let mut raw = Vec::new();
        if rng.bool() {
            raw.extend_from_slice(pieces[rng.usize(..5)]);
        }
        raw.extend_from_slice(b"GET / HTTP/1.1");
        for _ in 0..rng.usize(0..8) {
            raw.extend_from_slice(pieces[rng.usize(..pieces.len())]);
        }
        raw.extend_from_slice([&b"\r\n\r\n"[..], b"\n\n", b"\r\n\n", b"\n\r\n"][rng.usize(..4)]);
        let skipped = raw.chunks(2).take_while(|c| *c == b"\r\n").count() * 2;
        let mut buf = BytesMut::from(&raw[..]);
        let mut slots = [httparse::EMPTY_HEADER; 100];
        let Ok(httparse::Status::Complete(len)) = httparse::Request::new(&mut slots).parse(&raw[skipped..]) else {
            continue;
        };
        let bare = bare_lf_bytewise(&raw[skipped..skipped + len]);
        let verdict = parse_request_head(&mut buf, &HeadLimits::default());
        let said_bare = matches!(&verdict, Err(e) if e.reason == "bare LF in request head");
        assert_eq!(said_bare, bare, "{raw:?} -> {verdict:?}");
        if bare {
            refused += 1;
        } else {
            accepted += 1;
        }
    }
    assert!(
        refused > 1_000 && accepted > 1_000,
        "both verdicts met: {refused} {accepted}"
    );
}
