use std::mem::MaybeUninit;

use super::*;
use crate::codec::classes::Baseline;
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

/// `read` of `buf`, held equal to the baseline classifier's reading of it (`request` and
/// `response` read with AVX2 where the CPU has it, each reading compiled for its classifier).
fn agreed<T: PartialEq + std::fmt::Debug>(buf: &[u8], read: T, baseline: T) -> T {
    assert_eq!(read, baseline, "{:?}", String::from_utf8_lossy(buf));
    read
}

/// `request`'s reading, held equal to the baseline classifier's.
fn quick_request(buf: &[u8]) -> Option<Request> {
    let (line, n, spans) = agreed(buf, request(buf, MAX), read_request(buf, MAX, Baseline))?;
    Some((n, line.method, line.target, line.http10, spans))
}

/// `response`'s reading, held equal to the baseline classifier's.
fn quick_response(buf: &[u8]) -> Option<(usize, u16, bool, Spans)> {
    let (line, n, spans) = agreed(buf, response(buf, MAX), read_response(buf, MAX, Baseline))?;
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

/// Plain heads with every byte value at every place (one place at a time): whatever the quick
/// reader accepts, httparse reads the same, and the plain heads themselves are accepted. The
/// heads are long enough that their lines cross the classes' 64-byte blocks.
#[test]
fn every_byte_at_every_place_reads_as_httparse_reads_it() {
    let request: &[u8] = b"POST /v1/chat/completions?a=b HTTP/1.1\r\nHost: 127.0.0.1:19101\r\n\
Content-Type: application/json\r\nAuthorization: Bearer bench-client-key\r\nX-Odd: a \t b \r\n\
x-empty:\r\nContent-Length: 163\r\n\r\n{}";
    let answer: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-ratelimit-remaining-requests:\t 9 \r\n\
x-request-id: req_0123456789abcdef0123456789abcdef\r\ncontent-length: 300\r\n\r\n{}";
    assert!(quick_request(request).is_some() && quick_response(answer).is_some());
    let mut accepted = 0;
    for (head, is_request) in [(request, true), (answer, false)] {
        for at in 0..head.len() {
            for byte in 0..=255u8 {
                let mut near = head.to_vec();
                near[at] = byte;
                if is_request {
                    if let Some(quick) = quick_request(&near) {
                        accepted += 1;
                        assert_eq!(
                            Some(quick),
                            httparse_request(&near),
                            "{:?}",
                            String::from_utf8_lossy(&near)
                        );
                    }
                } else if let Some(quick) = quick_response(&near) {
                    accepted += 1;
                    let slow = httparse_response(&near);
                    assert_eq!(Some(quick), slow, "{:?}", String::from_utf8_lossy(&near));
                }
            }
        }
    }
    assert!(accepted > 20_000, "{accepted} heads read");
}

/// Heads cut at every length are left to httparse (incomplete), never misread.
#[test]
fn heads_not_yet_whole_are_left_to_httparse() {
    let head: &[u8] = b"POST / HTTP/1.1\r\nHost: h\r\nX-Long: 0123456789012345678901234567890123456789012345678901234567890123456789\r\n\r\n";
    for len in 0..head.len() {
        assert!(quick_request(&head[..len]).is_none(), "{len}");
        assert!(httparse_request(&head[..len]).is_none(), "{len}");
    }
    assert!(quick_request(head).is_some());
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
