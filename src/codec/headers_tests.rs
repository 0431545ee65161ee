use super::*;

#[test]
fn from_pairs_reads_back_in_order() {
    let h = Headers::from_pairs(&[("Content-Type", "a/b"), ("x-Empty", ""), ("X-A", "1"), ("x-a", "2")]);
    assert_eq!(h.len(), 4);
    let got: Vec<(&[u8], &[u8])> = h.iter().map(|f| (f.name, f.value)).collect();
    let want: Vec<(&[u8], &[u8])> = vec![
        (b"Content-Type", b"a/b"),
        (b"x-Empty", b""),
        (b"X-A", b"1"),
        (b"x-a", b"2"),
    ];
    assert_eq!(got, want);
    assert_eq!(h.get(1).map(|f| f.value), Some(&b""[..]));
    assert_eq!(h.get(4), None);
    assert_eq!(h.find("x-a"), Some(&b"1"[..]));
    assert_eq!(h.find_bytes("CONTENT-type").as_deref(), Some(&b"a/b"[..]));
    assert_eq!(h.find("missing"), None);
    assert!(Headers::default().is_empty());
}

#[test]
fn a_span_outside_the_buffer_reads_as_empty() {
    let mut spans = Spans::default();
    spans.push("a", 0..1, 1..9);
    spans.push("te", 1..3, 3..9);
    let h = Headers::parsed(Bytes::from_static(b"ate"), spans);
    assert_eq!(h.get(0), Some(Header { name: b"a", value: b"" }));
    assert_eq!(h.find_bytes("a").as_deref(), Some(&b""[..]));
    assert_eq!(h.field_bytes(Field::Te).as_deref(), Some(&b""[..]));
    assert_eq!(h.field(Field::Te), Some(&b""[..]));
    let text: Vec<(Option<Field>, &str, &[u8])> = h.tagged_text().collect();
    assert_eq!(text, [(None, "a", &b""[..]), (Some(Field::Te), "te", &b""[..])]);
}

#[test]
fn names_as_text_are_the_names() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Type: a\r\nX-Odd_Name!: \xe9\r\nx-request-id: 1\r\n\r\n";
    let mut buf = BytesMut::from(&raw[..]);
    let head = crate::codec::response::parse_response_head(&mut buf, &Default::default(), false)
        .unwrap()
        .unwrap();
    let names: Vec<&str> = head.headers.tagged_text().map(|(_, n, _)| n).collect();
    assert_eq!(names, ["Content-Type", "X-Odd_Name!", "x-request-id"]);
    let pairs = Headers::from_pairs(&[("caf\u{e9}", "v"), ("b", "w")]);
    let got: Vec<(&str, &[u8])> = pairs.tagged_text().map(|(_, n, v)| (n, v)).collect();
    assert_eq!(got, [("caf\u{e9}", &b"v"[..]), ("b", &b"w"[..])]);
}

/// `find` answers as a walk comparing every name, whatever lengths the list holds (the
/// lengths clamp at 63, so long names share a bit).
#[test]
fn find_answers_as_the_walk_for_names_of_any_length() {
    let long = "x".repeat(70);
    let longer = "y".repeat(90);
    let h = Headers::from_pairs(&[
        ("retry-after", "1"),
        ("X-RateLimit-Remaining-Tokens", "0"),
        (long.as_str(), "l"),
        ("a", "b"),
    ]);
    let walk = |name: &str| {
        h.iter()
            .find(|f| f.name.eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| f.value)
    };
    for name in [
        "retry-after",
        "Retry-After",
        "retry-after-ms",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-remaining-tokenz",
        "x-ratelimit-remaining-requests",
        long.as_str(),
        longer.as_str(),
        "A",
        "b",
        "",
    ] {
        assert_eq!(h.find(name), walk(name), "{name}");
        assert_eq!(h.find_bytes(name).as_deref(), walk(name), "{name}");
    }
    assert_eq!(Headers::default().find("a"), None);
}

/// The index answers as the name walk does: the first of duplicates, any case, and a name
/// that only starts like an indexed one is not it.
#[test]
fn the_index_answers_as_the_name_walk() {
    let h = Headers::from_pairs(&[
        ("Content-Type", "a/b"),
        ("HOST", "h1"),
        ("Content-Type-X", "no"),
        ("x-api-keys", "no"),
        ("hoSt", "h2"),
        ("X-Api-Key", "k"),
        ("Connection", "close"),
        ("connection", "x-drop"),
    ]);
    let walk = |name: &str| {
        h.iter()
            .find(|f| f.name.eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| f.value)
    };
    for f in Field::ALL {
        assert_eq!(h.field(f), walk(f.name()), "{f:?}");
        assert_eq!(h.find(f.name()), walk(f.name()), "{f:?}");
        let all: Vec<&[u8]> = h
            .iter()
            .filter(|x| x.name.eq_ignore_ascii_case(f.name().as_bytes()))
            .map(|x| x.value)
            .collect();
        assert_eq!(h.fields(f).collect::<Vec<_>>(), all, "{f:?}");
        assert_eq!(h.repeated(f), all.len() > 1, "{f:?}");
    }
    assert_eq!(h.field(Field::Host), Some(&b"h1"[..]));
    assert_eq!(h.find("content-type-x"), Some(&b"no"[..]));
    assert_eq!(h.find("x-api-keys"), Some(&b"no"[..]));
    assert_eq!(h.field(Field::XApiKey), Some(&b"k"[..]));
    let tags: Vec<Option<Field>> = h.tagged().map(|(f, _)| f).collect();
    assert_eq!(tags[..3], [Some(Field::ContentType), Some(Field::Host), None]);
}

/// Past the index's byte (a first occurrence at span 254 or later), look-ups walk and still
/// answer as the name walk does: first, all, and repeats.
#[test]
fn fields_far_down_a_long_list_are_found() {
    let mut pairs: Vec<(String, String)> = (0..300).map(|i| (format!("x-{i}"), i.to_string())).collect();
    pairs[253] = ("host".into(), "h253".into());
    pairs[254] = ("Expect".into(), "e254".into());
    pairs[255] = ("te".into(), "t255".into());
    pairs[280] = ("content-type".into(), "c280".into());
    pairs[290] = ("Content-Type".into(), "c290".into());
    pairs[299] = ("expect".into(), "e299".into());
    let h = Headers::from_pairs(&pairs);
    for f in Field::ALL {
        let all: Vec<&[u8]> = h
            .iter()
            .filter(|x| x.name.eq_ignore_ascii_case(f.name().as_bytes()))
            .map(|x| x.value)
            .collect();
        assert_eq!(h.field(f), all.first().copied(), "{f:?}");
        assert_eq!(h.field_bytes(f).as_deref(), all.first().copied(), "{f:?}");
        assert_eq!(h.fields(f).collect::<Vec<_>>(), all, "{f:?}");
        assert_eq!(h.repeated(f), all.len() > 1, "{f:?}");
    }
    assert_eq!(h.field(Field::Te), Some(&b"t255"[..]));
    assert_eq!(h.field(Field::ContentType), Some(&b"c280"[..]));
}

/// A line is exact only when the buffer holds `name: value` CRLF as written: one space, no
/// trailing space, CRLF (not a bare LF), so a run of exact lines copied whole is what writing
/// each field would give.
#[test]
fn exact_lines_are_the_ones_written_as_they_are() {
    use crate::codec::head::HeadLimits;
    use crate::codec::response::parse_response_head;
    let raw = b"HTTP/1.1 200 OK\r\na: 1\r\nb:2\r\nc:  3\r\nd: 4 \r\ne: 5\nf: \r\ng: 7\r\n\r\n";
    let mut buf = BytesMut::from(&raw[..]);
    let head = parse_response_head(&mut buf, &HeadLimits::default(), false)
        .unwrap()
        .unwrap();
    let lines: Vec<(&str, Option<&[u8]>)> = head
        .headers
        .lines()
        .map(|l| (l.name, l.exact.map(|r| &head.headers.raw()[r])))
        .collect();
    assert_eq!(
        lines,
        [
            ("a", Some(&b"a: 1\r\n"[..])),
            ("b", None),
            ("c", None),
            ("d", None),
            ("e", None),
            ("f", Some(&b"f: \r\n"[..])),
            ("g", Some(&b"g: 7\r\n"[..])),
        ]
    );
}

/// A span is 20 bytes, and the list a scanner starts holds an SDK's 17 fields (and more)
/// without growing: one allocation a head.
#[test]
fn a_scanned_list_holds_an_sdk_head_without_growing() {
    assert_eq!(std::mem::size_of::<Span>(), 20);
    let mut raw = b"POST /v1/chat/completions HTTP/1.1\r\n".to_vec();
    for i in 0..24 {
        raw.extend_from_slice(format!("X-Stainless-Field-{i}: value {i}\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    let (_, len, spans) = crate::codec::quick::request(&raw, 100).unwrap();
    assert_eq!((len, spans.len()), (raw.len(), 24));
    assert_eq!(spans.list.capacity(), Spans::for_scan().list.capacity());
    let h = Headers::parsed(Bytes::from(raw), spans);
    assert_eq!(h.find("x-stainless-field-23"), Some(&b"value 23"[..]));
}

/// A detached head reads every field as before, from a buffer of its own: the one it was
/// parsed from (a connection's read buffer) is freed when nothing else holds it.
#[test]
fn a_detached_head_reads_the_same_from_its_own_buffer() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nx-request-id: r1\r\nX-A: 1\r\n\r\nrest";
    let mut buf = BytesMut::with_capacity(8 * 1024);
    buf.extend_from_slice(raw);
    let read_buffer = buf.as_ptr();
    let mut head = crate::codec::response::parse_response_head(&mut buf, &Default::default(), false)
        .unwrap()
        .unwrap();
    let before: Vec<(Vec<u8>, Vec<u8>)> = head
        .headers
        .iter()
        .map(|f| (f.name.to_vec(), f.value.to_vec()))
        .collect();
    assert_eq!(head.headers.raw().as_ptr(), read_buffer, "parsed in place");
    head.headers.detach();
    let after: Vec<(Vec<u8>, Vec<u8>)> = head
        .headers
        .iter()
        .map(|f| (f.name.to_vec(), f.value.to_vec()))
        .collect();
    assert_eq!(after, before);
    assert_eq!(before.len(), 3);
    assert_eq!(head.headers.field(Field::ContentType), Some(&b"text/event-stream"[..]));
    assert_eq!(head.headers.find("x-a"), Some(&b"1"[..]));
    assert_ne!(
        head.headers.raw().as_ptr(),
        read_buffer,
        "no longer shares the read buffer"
    );
    assert_eq!(&buf[..], b"rest");
}
