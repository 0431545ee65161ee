use std::mem::MaybeUninit;

use super::*;
use crate::codec::headers::spans_of;

const MAX: usize = 8;

/// A request head as read: length, method and target ranges, HTTP/1.0, fields.
type Request = (usize, Range<usize>, Range<usize>, bool, Spans);

/// What httparse reads from a request head: length, method and target ranges, version, spans.
fn httparse_request(buf: &[u8]) -> Option<Request> {
    let mut slots = [const { MaybeUninit::uninit() }; MAX];
    let mut req = httparse::Request::new(&mut []);
    let Ok(httparse::Status::Complete(n)) = req.parse_with_uninit_headers(buf, &mut slots) else {
        return None;
    };
    let base = buf.as_ptr() as usize;
    let at = |part: &[u8]| {
        let start = part.as_ptr() as usize - base;
        start..start + part.len()
    };
    let method = at(req.method?.as_bytes());
    let target = at(req.path?.as_bytes());
    Some((n, method, target, req.version == Some(0), spans_of(base, req.headers)))
}

fn httparse_response(buf: &[u8]) -> Option<(usize, u16, bool, Spans)> {
    let mut slots = [const { MaybeUninit::uninit() }; MAX];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
    let Ok(httparse::Status::Complete(n)) = parsed else {
        return None;
    };
    Some((
        n,
        resp.code?,
        resp.version == Some(0),
        spans_of(buf.as_ptr() as usize, resp.headers),
    ))
}

fn quick_request(buf: &[u8]) -> Option<Request> {
    let line = request_line(buf)?;
    let (n, spans) = fields(buf, line.end, MAX)?;
    Some((n, line.method, line.target, line.http10, spans))
}

fn quick_response(buf: &[u8]) -> Option<(usize, u16, bool, Spans)> {
    let line = status_line(buf)?;
    let (n, spans) = fields(buf, line.end, MAX)?;
    Some((n, line.status, line.http10, spans))
}

fn pick<'a>(rng: &mut fastrand::Rng, from: &[&'a [u8]]) -> &'a [u8] {
    from[rng.usize(..from.len())]
}

/// A plain piece, or one time in `odds` an odd one.
fn piece<'a>(rng: &mut fastrand::Rng, plain: &[&'a [u8]], odd: &[&'a [u8]], odds: usize) -> &'a [u8] {
    if rng.usize(..odds) == 0 {
        pick(rng, odd)
    } else {
        pick(rng, plain)
    }
}

/// Fields built from pieces that are mostly plain, some not (and the blank line, or not).
fn random_fields(rng: &mut fastrand::Rng, head: &mut Vec<u8>) {
    let names: &[&[u8]] = &[
        b"Host",
        b"content-length",
        b"Content-Type",
        b"Authorization",
        b"X-Odd_Name!",
        b"x-request-id",
        b"a",
        b"Te",
        b"Accept-Encoding",
        b"X-Stainless-Package-Version",
        b"x-ratelimit-remaining-requests-per-day",
    ];
    let odd_names: &[&[u8]] = &[b"x y", b"x\x7f", b"", b"\xc3\xa9", b"x\"", b"\tx", b"x\r"];
    let colons: &[&[u8]] = &[b":", b": ", b": ", b":  ", b":\t", b": \t"];
    let odd_colons: &[&[u8]] = &[b" :", b"::", b"", b"\r\n :"];
    let values: &[&[u8]] = &[
        b"v",
        b"",
        b"  ",
        b"a b",
        b"a\t",
        b"a\tb",
        b"a  ",
        b"Bearer bench-client-key",
        b"application/json; charset=utf-8",
        b"0123456789abcdef0123456789",
        b"1234567",
        b"~!@#$%^&*()_+{}|:<>?",
    ];
    let odd_values: &[&[u8]] = &[b"x\x7fy", b"\x80", b"a\x00b", b"\xff", b"a\rb", b"a\nb", b"\x1f"];
    let ends: &[&[u8]] = &[b"\r\n"];
    let odd_ends: &[&[u8]] = &[b"\n", b"\r", b"", b"\r\n\t", b"\r\n "];
    for _ in 0..rng.usize(0..MAX + 2) {
        head.extend_from_slice(piece(rng, names, odd_names, 40));
        head.extend_from_slice(piece(rng, colons, odd_colons, 40));
        head.extend_from_slice(piece(rng, values, odd_values, 40));
        head.extend_from_slice(piece(rng, ends, odd_ends, 40));
    }
    head.extend_from_slice(piece(rng, ends, odd_ends, 20));
    head.extend_from_slice(pick(rng, &[b"", b"body", b"\r\n"]));
}

fn disturb(rng: &mut fastrand::Rng, head: &mut Vec<u8>) {
    match rng.u8(..8) {
        0 if !head.is_empty() => {
            let at = rng.usize(..head.len());
            head[at] = rng.u8(..);
        }
        1 => head.truncate(rng.usize(..=head.len())),
        _ => {}
    }
}

#[test]
fn plain_request_heads_read_as_httparse_reads_them() {
    let mut rng = fastrand::Rng::with_seed(18);
    let methods: &[&[u8]] = &[b"GET", b"POST", b"OPTIONS", b"M-X", b"P!ST"];
    let odd_methods: &[&[u8]] = &[b"G\x7fT", b"", b"PO ST", b"P(ST", b"\nGET"];
    let targets: &[&[u8]] = &[
        b"/",
        b"/v1/chat/completions",
        b"/v1/x?key=1&b=2",
        b"*",
        b"/a%20b",
        b"/a\"b{}",
    ];
    let odd_targets: &[&[u8]] = &[b"/\x80", b"", b"/a b", b"/\t", b"/\x7f"];
    let versions: &[&[u8]] = &[b"HTTP/1.1", b"HTTP/1.0"];
    let odd_versions: &[&[u8]] = &[b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 ", b"HTTP/1.", b"HTTP/1.1x"];
    let spaces: &[&[u8]] = &[b" "];
    let odd_spaces: &[&[u8]] = &[b"  ", b"\t", b""];
    let mut accepted = 0;
    for _ in 0..200_000 {
        let mut head = Vec::new();
        head.extend_from_slice(piece(&mut rng, methods, odd_methods, 30));
        head.extend_from_slice(piece(&mut rng, spaces, odd_spaces, 30));
        head.extend_from_slice(piece(&mut rng, targets, odd_targets, 30));
        head.extend_from_slice(piece(&mut rng, spaces, odd_spaces, 30));
        head.extend_from_slice(piece(&mut rng, versions, odd_versions, 30));
        head.extend_from_slice(piece(&mut rng, &[b"\r\n"], &[b"\n", b"\r", b""], 30));
        random_fields(&mut rng, &mut head);
        disturb(&mut rng, &mut head);
        if let Some(quick) = quick_request(&head) {
            accepted += 1;
            let slow = httparse_request(&head);
            assert_eq!(Some(quick), slow, "{:?}", String::from_utf8_lossy(&head));
        }
    }
    assert!(accepted > 5_000, "{accepted} plain heads");
}

#[test]
fn plain_response_heads_read_as_httparse_reads_them() {
    let mut rng = fastrand::Rng::with_seed(1818);
    let lines: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.0 404 Not Found\r\n",
        b"HTTP/1.1 204\r\n",
        b"HTTP/1.1 200 \r\n",
        b"HTTP/1.1 200 \t odd\treason \r\n",
        b"HTTP/1.1 2x0 OK\r\n",
        b"HTTP/1.1 200 OK\n",
        b"HTTP/1.1 200OK\r\n",
        b"HTTP/1.1  200 OK\r\n",
        b"HTTP/1.1 200 caf\xc3\xa9\r\n",
        b"HTTP/1.1 200 a\x7f\r\n",
        b"HTTP/2.0 200 OK\r\n",
        b"HTTP/1.1 100 Continue\r\n",
    ];
    let mut accepted = 0;
    for _ in 0..200_000 {
        let mut head = pick(&mut rng, lines).to_vec();
        random_fields(&mut rng, &mut head);
        disturb(&mut rng, &mut head);
        if let Some(quick) = quick_response(&head) {
            accepted += 1;
            assert_eq!(
                Some(quick),
                httparse_response(&head),
                "{:?}",
                String::from_utf8_lossy(&head)
            );
        }
    }
    assert!(accepted > 5_000, "{accepted} plain heads");
}

#[test]
fn the_heads_of_the_chat_path_are_plain() {
    let request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n\
Authorization: Bearer k\r\nContent-Length: 2\r\n\r\n{}";
    let (n, method, target, http10, spans) = quick_request(request).unwrap();
    assert_eq!(
        (&request[method], &request[target], http10),
        (&b"POST"[..], &b"/v1/chat/completions"[..], false)
    );
    assert_eq!((n, spans.len()), (request.len() - 2, 4));
    let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
    let (n, status, http10, spans) = quick_response(answer).unwrap();
    assert_eq!((n, status, http10, spans.len()), (answer.len() - 2, 200, false, 2));
    // More fields than allowed, a bare LF, a head not yet whole: left to httparse.
    let many = [&b"HTTP/1.1 200 OK\r\n"[..], &b"a: 1\r\n".repeat(MAX + 1), b"\r\n"].concat();
    assert!(quick_response(&many).is_none());
    assert!(quick_response(b"HTTP/1.1 200 OK\r\na: 1\n\r\n").is_none());
    assert!(quick_response(b"HTTP/1.1 200 OK\r\na: 1\r\n").is_none());
}

/// The eight-byte steps stop where a byte walk does, at every place and kind of byte.
#[test]
fn word_steps_stop_where_a_byte_walk_stops() {
    let walk_word = |buf: &[u8], colon: bool| {
        buf.iter()
            .position(|&b| !(b'!'..=b'~').contains(&b) || (colon && b == b':'))
            .unwrap_or(buf.len())
    };
    let walk_value = |buf: &[u8]| {
        buf.iter()
            .position(|&b| !(b == b'\t' || (b' '..=b'~').contains(&b)))
            .unwrap_or(buf.len())
    };
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..100_000 {
        let len = rng.usize(0..40);
        let mut buf: Vec<u8> = (0..len).map(|_| rng.u8(b'!'..=b'~')).collect();
        for _ in 0..rng.usize(0..3) {
            if len > 0 {
                let at = rng.usize(..len);
                buf[at] = match rng.u8(..4) {
                    0 => rng.u8(..),
                    1 => b':',
                    2 => b' ',
                    _ => *[b'\t', 0, 0x1f, 0x20, 0x7f, 0x80, 0xff, b'\r']
                        .get(rng.usize(..8))
                        .unwrap(),
                };
            }
        }
        assert_eq!(word_end(&buf, 0, true), walk_word(&buf, true), "{buf:?}");
        assert_eq!(word_end(&buf, 0, false), walk_word(&buf, false), "{buf:?}");
        assert_eq!(visible_run(&buf, 0), walk_value(&buf), "{buf:?}");
    }
}

/// The eight-byte token check answers as the table does, for names of every length made of
/// letters, digits and `-` with at times another visible byte at any place.
#[test]
fn token_steps_answer_as_the_table() {
    let mut rng = fastrand::Rng::with_seed(1809);
    let plain = b"abcxyzABCXYZ0189-";
    for _ in 0..200_000 {
        let len = rng.usize(1..40);
        let mut name: Vec<u8> = (0..len).map(|_| plain[rng.usize(..plain.len())]).collect();
        for _ in 0..rng.usize(0..3) {
            let at = rng.usize(..len);
            name[at] = loop {
                let b = rng.u8(b'!'..=b'~');
                if b != b':' {
                    break b;
                }
            };
        }
        let want = name.iter().all(|&b| TOKEN[usize::from(b)]);
        assert_eq!(is_token(&name), want, "{:?}", String::from_utf8_lossy(&name));
    }
    for b in b'!'..=b'~' {
        let word = [b; 8];
        let want = b.is_ascii_alphanumeric() || b == b'-';
        assert_eq!(plain_word(word), want, "{b}");
    }
}
