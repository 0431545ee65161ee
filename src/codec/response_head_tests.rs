use super::*;
use crate::codec::encode::holds_any;

/// The writer as it was before the one-reservation fill (`put_slice` per piece, every field
/// checked), kept as the reference the new one is compared with byte for byte.
fn reference(out: &mut BytesMut, status: u16, headers: &[Pair<'_>], framing: Option<BodyFraming>, keep_alive: bool) {
    use bytes::BufMut;
    let mut num = itoa::Buffer::new();
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(num.format(status).as_bytes());
    out.put_u8(b' ');
    out.put_slice(reason_phrase(status).as_bytes());
    out.put_slice(b"\r\n");
    for (name, value) in headers {
        if holds_any(name.as_bytes(), false) || holds_any(value, false) {
            continue;
        }
        out.put_slice(name.as_bytes());
        out.put_slice(b": ");
        out.put_slice(value);
        out.put_slice(b"\r\n");
    }
    match framing {
        None => {}
        Some(BodyFraming::Length(n)) => {
            out.put_slice(b"content-length: ");
            out.put_slice(num.format(n).as_bytes());
            out.put_slice(b"\r\n");
        }
        Some(BodyFraming::Chunked) => out.put_slice(b"transfer-encoding: chunked\r\n"),
        Some(BodyFraming::Empty) if !bodiless(status) => out.put_slice(b"content-length: 0\r\n"),
        Some(BodyFraming::Empty) => {}
    }
    if !keep_alive {
        out.put_slice(b"connection: close\r\n");
    }
    out.put_slice(b"\r\n");
}

fn head(status: u16, framing: BodyFraming, keep_alive: bool) -> String {
    let mut out = BytesMut::new();
    write_response_head(
        &mut out,
        status,
        &[("content-type", b"text/event-stream")],
        framing,
        keep_alive,
    );
    String::from_utf8(out.to_vec()).unwrap()
}

#[test]
fn heads() {
    assert_eq!(
        head(200, BodyFraming::Length(12), true),
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 12\r\n\r\n"
    );
    assert_eq!(
        head(200, BodyFraming::Chunked, false),
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    assert_eq!(
        head(404, BodyFraming::Empty, true),
        "HTTP/1.1 404 Not Found\r\ncontent-type: text/event-stream\r\ncontent-length: 0\r\n\r\n"
    );
    assert_eq!(
        head(204, BodyFraming::Empty, true),
        "HTTP/1.1 204 No Content\r\ncontent-type: text/event-stream\r\n\r\n"
    );
    assert!(head(299, BodyFraming::Empty, true).starts_with("HTTP/1.1 299 \r\n"));
}

#[test]
fn header_injection_skipped() {
    let mut out = BytesMut::new();
    write_response_head(
        &mut out,
        200,
        &[("x", b"a\r\nset-cookie: y"), ("ok", b"1"), ("bad\nname", b"v")],
        BodyFraming::Empty,
        true,
    );
    assert_eq!(&out[..], b"HTTP/1.1 200 OK\r\nok: 1\r\ncontent-length: 0\r\n\r\n");
}

#[test]
fn every_status_line_is_number_and_phrase() {
    for status in 0..=u16::MAX {
        let want = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
        match status_line(status) {
            Some(line) => assert_eq!(line, want.as_bytes(), "{status}"),
            None => assert_eq!(reason_phrase(status), "", "{status}"),
        }
    }
}

/// The phrases as RFC 9110 §15 names them (a rename once turned 431's "Fields" into another
/// word: the test above compares the table with itself and could not see it).
#[test]
fn phrases_are_the_rfc_ones() {
    let rfc = [
        (200, "OK"),
        (400, "Bad Request"),
        (404, "Not Found"),
        (413, "Content Too Large"),
        (429, "Too Many Requests"),
        (431, "Request Header Fields Too Large"),
        (502, "Bad Gateway"),
        (503, "Service Unavailable"),
        (504, "Gateway Timeout"),
    ];
    for (status, phrase) in rfc {
        assert_eq!(reason_phrase(status), phrase, "{status}");
    }
}

const VALUES: &[&[u8]] = &[
    b"",
    b"1",
    b"application/json",
    b"a\r\nset-cookie: x",
    b"a\nb",
    b"a\rb",
    b"\r",
    b"tab\there",
    b"nul\0inside",
    b"\xff\xfe high bytes \x80",
    b" spaced out ",
    b"0123456789abcdef0123456789abcdef-long-enough-for-several-words",
];
const NAMES: &[&str] = &[
    "",
    "x",
    "content-type",
    "X-Odd_Name",
    "bad\rname",
    "bad\nname",
    "x-rotor-overhead-us",
];

fn random_fields(rng: &mut fastrand::Rng, clean_only: bool) -> Vec<Pair<'static>> {
    (0..rng.usize(0..9))
        .map(|_| (NAMES[rng.usize(..NAMES.len())], VALUES[rng.usize(..VALUES.len())]))
        .filter(|&(n, v)| !clean_only || !breaks_line(n, v))
        .collect()
}

/// Relayed fields of random values (clean, as rotor's are; an empty one too), overhead or not.
fn random_relayed(rng: &mut fastrand::Rng) -> Relayed<'static> {
    let clean: Vec<&'static [u8]> = VALUES.iter().copied().filter(|v| !breaks_line("", v)).collect();
    let pick = |rng: &mut fastrand::Rng| clean[rng.usize(..clean.len())];
    let provider: &'static ProviderLines = Box::leak(Box::new(ProviderLines::new(pick(rng))));
    Relayed {
        request_id: pick(rng),
        provider,
        // One attempt (the prepared lines taken whole) or any other digits.
        attempts: if rng.bool() { b"1" } else { pick(rng) },
        overhead_us: rng.bool().then(|| pick(rng)),
    }
}

/// The relayed fields as the pairs they stand for: those before `own`, and the overhead after.
fn relayed_pairs(r: &Relayed<'static>) -> (Vec<Pair<'static>>, Vec<Pair<'static>>) {
    let first = vec![
        ("x-request-id", r.request_id),
        ("x-rotor-provider", r.provider.name()),
        ("x-rotor-attempts", r.attempts),
    ];
    (
        first,
        r.overhead_us
            .map(|us| ("x-rotor-overhead-us", us))
            .into_iter()
            .collect(),
    )
}

/// Differential: the one-reservation writer answers byte for byte as the reference for every
/// status (known, unknown, bodiless), every framing, keep-alive or close, and field lists with
/// odd values (line breaks, NUL, tabs, high bytes, empty names and values); rotor's own fields
/// (always clean) and the relayed ones come out after the checked ones as if they had been
/// checked, in their places.
#[test]
fn new_writer_matches_the_reference() {
    let mut rng = fastrand::Rng::with_seed(18);
    let statuses = [
        0, 1, 99, 100, 101, 199, 200, 201, 204, 206, 299, 304, 404, 429, 499, 503, 599, 999, 1000, 65535,
    ];
    let framings = [
        None,
        Some(BodyFraming::Empty),
        Some(BodyFraming::Chunked),
        Some(BodyFraming::Length(0)),
        Some(BodyFraming::Length(9)),
        Some(BodyFraming::Length(10)),
        Some(BodyFraming::Length(123_456)),
        Some(BodyFraming::Length(u64::MAX)),
    ];
    for status in statuses {
        for framing in framings {
            for keep_alive in [true, false] {
                for _ in 0..20 {
                    let checked = random_fields(&mut rng, false);
                    let own = random_fields(&mut rng, true);
                    let relayed = rng.bool().then(|| random_relayed(&mut rng));
                    let (first, last) = relayed.map_or((vec![], vec![]), |r| relayed_pairs(&r));
                    let all: Vec<Pair<'_>> = checked.iter().chain(&first).chain(&own).chain(&last).copied().collect();
                    let mut want = BytesMut::new();
                    reference(&mut want, status, &all, framing, keep_alive);
                    let room = rng.usize(0..300);
                    let mut got = BytesMut::from(&b"kept"[..]);
                    let fields = HeadFields {
                        checked: &checked,
                        returned: None,
                        own: &own,
                        relayed,
                    };
                    write_head(&mut got, status, fields, framing, keep_alive, room);
                    assert_eq!(&got[..4], b"kept", "what was in the buffer stays");
                    assert_eq!(
                        String::from_utf8_lossy(&got[4..]),
                        String::from_utf8_lossy(&want),
                        "{status} {framing:?} {keep_alive} {all:?}"
                    );
                    assert!(got.capacity() - got.len() >= room, "room reserved behind the head");
                }
            }
        }
    }
}

/// The public wrappers are the writer with every field checked.
#[test]
fn wrappers_check_every_field() {
    let fields: &[Pair<'_>] = &[("a", b"1"), ("b", b"x\ny"), ("c", b"3")];
    let mut want = BytesMut::new();
    reference(&mut want, 200, fields, None, false);
    let mut got = BytesMut::new();
    write_response_head_until_close(&mut got, 200, fields);
    assert_eq!(got, want);
    assert_eq!(
        &got[..],
        b"HTTP/1.1 200 OK\r\na: 1\r\nc: 3\r\nconnection: close\r\n\r\n"
    );
}

/// Differential: an upstream head's fields written unchecked (`returned`) come out byte for
/// byte as the reference writes them checked, after `checked` and before `own`, for heads of
/// returned, hop-by-hop, renamed and odd fields (tabs, high bytes, empty values, LF-only lines),
/// whose exact CRLF lines are copied in runs.
#[test]
fn returned_fields_match_the_checked_reference() {
    use crate::codec::head::HeadLimits;
    use crate::codec::response::parse_response_head;
    let lines: &[&[u8]] = &[
        b"Content-Type: application/json",
        b"X-Request-Id: up-1",
        b"connection: keep-alive",
        b"Keep-Alive: timeout=5",
        b"x-odd!: caf\xe9\t\"q\" ",
        b"x-empty:",
        b"Set-Cookie: a=b",
        b"x-ratelimit-remaining-requests: 99",
        b"x-ratelimit-reset-tokens: 6ms",
    ];
    let mut rng = fastrand::Rng::with_seed(18);
    for _ in 0..300 {
        let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
        let mut returned: Vec<(String, Vec<u8>)> = Vec::new();
        for _ in 0..rng.usize(0..8) {
            let line = lines[rng.usize(..lines.len())];
            raw.extend_from_slice(line);
            raw.extend_from_slice(if rng.bool() { b"\r\n" } else { b"\n" });
            let (name, value) = line.split_at(line.iter().position(|&b| b == b':').unwrap());
            let name = String::from_utf8(name.to_vec()).unwrap();
            let value = value[1..].trim_ascii().to_vec();
            match name.to_ascii_lowercase().as_str() {
                "connection" | "keep-alive" => {}
                "x-request-id" => returned.push(("x-upstream-request-id".into(), value)),
                _ => returned.push((name, value)),
            }
        }
        raw.extend_from_slice(b"\r\n");
        let mut buf = BytesMut::from(&raw[..]);
        let head = parse_response_head(&mut buf, &HeadLimits::default(), false)
            .unwrap()
            .unwrap();
        let checked: &[Pair<'_>] = &[("a", b"1"), ("b", b"x\ry")];
        let own: &[Pair<'_>] = &[("x-own", b"2")];
        let mut all: Vec<Pair<'_>> = checked.to_vec();
        all.extend(returned.iter().map(|(n, v)| (n.as_str(), &v[..])));
        all.extend_from_slice(own);
        let mut want = BytesMut::new();
        reference(&mut want, 200, &all, Some(BodyFraming::Chunked), true);
        let fields = HeadFields {
            checked,
            returned: Some(head.returned(true)),
            own,
            relayed: None,
        };
        let mut got = BytesMut::new();
        write_head(&mut got, 200, fields, Some(BodyFraming::Chunked), true, 0);
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want), "{raw:?}");
    }
}

/// The usual relayed answer's own path (`Usual`: upstream fields, one attempt, an overhead, a
/// length or chunks, nothing of rotor's own between) writes what the general path writes, at
/// every status, framing and keep-alive, with its room reserved; a head it does not take
/// (two attempts, no overhead, an unknown status) is the general path's as before.
#[test]
fn the_usual_relayed_head_is_the_general_one() {
    use crate::codec::head::HeadLimits;
    use crate::codec::response::parse_response_head;
    let mut rng = fastrand::Rng::with_seed(18);
    let uppers = [
        &b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 277\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nDate: x\r\nX-Request-Id: up\r\nConnection: keep-alive\r\nA:b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
    ];
    let statuses = [200, 201, 299, 404, 429, 503, 999];
    let framings = [
        None,
        Some(BodyFraming::Empty),
        Some(BodyFraming::Chunked),
        Some(BodyFraming::Length(0)),
        Some(BodyFraming::Length(277)),
        Some(BodyFraming::Length(u64::MAX)),
    ];
    let lines = ProviderLines::new(b"mock");
    for raw in uppers {
        let mut buf = BytesMut::from(raw);
        let head = parse_response_head(&mut buf, &HeadLimits::default(), false)
            .unwrap()
            .unwrap();
        let mut returned: Vec<Pair<'_>> = vec![];
        head.returned(true).for_each(|n, v| returned.push((n, v)));
        for (attempts, overhead) in [(&b"1"[..], Some(&b"125"[..])), (b"2", Some(b"7")), (b"1", None)] {
            let relayed = Relayed {
                request_id: b"57600d42d3883858",
                provider: &lines,
                attempts,
                overhead_us: overhead,
            };
            let mut all = returned.clone();
            all.extend([
                ("x-request-id", relayed.request_id),
                ("x-rotor-provider", &b"mock"[..]),
                ("x-rotor-attempts", attempts),
            ]);
            all.extend(overhead.map(|us| ("x-rotor-overhead-us", us)));
            for status in statuses {
                for framing in framings {
                    for keep_alive in [true, false] {
                        let mut want = BytesMut::new();
                        reference(&mut want, status, &all, framing, keep_alive);
                        let fields = HeadFields {
                            checked: &[],
                            returned: Some(head.returned(true)),
                            own: &[],
                            relayed: Some(relayed),
                        };
                        let room = rng.usize(0..300);
                        let mut got = BytesMut::from(&b"kept"[..]);
                        write_head(&mut got, status, fields, framing, keep_alive, room);
                        assert_eq!(
                            String::from_utf8_lossy(&got[4..]),
                            String::from_utf8_lossy(&want),
                            "{status} {framing:?} {keep_alive} {attempts:?} {overhead:?}"
                        );
                        assert!(got.capacity() - got.len() >= room, "room reserved behind the head");
                    }
                }
            }
        }
    }
}
