//! Differential: rotor's upstream answer-head parser (`parse_response_head`, whose plain heads
//! `codec::quick` reads over `codec::classes`' byte masks) against httparse, the parser it
//! falls back to. Never panic; whatever rotor accepts, httparse accepts from the same bytes
//! with the same head length, status and fields (names and values, in order). Rotor's reading
//! is replayed here: leading CRLFs skipped, interim 1xx heads (not 101) dropped. Allowed
//! disagreements, all "rotor is stricter": its framing policy (Content-Length, Transfer-Encoding)
//! and the head-size limit.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rotor::codec::{parse_response_head, HeadLimits};

const MAX_HEADERS: usize = 96;

fuzz_target!(|data: &[u8]| {
    let limits = HeadLimits { max_head_bytes: 32768, max_headers: MAX_HEADERS };
    let mut ours_buf = BytesMut::from(data);
    let Ok(Some(ours)) = parse_response_head(&mut ours_buf, &limits, false) else { return };
    let consumed = data.len() - ours_buf.len();
    let mut at = 0;
    loop {
        at += data[at..].chunks(2).take_while(|c| *c == b"\r\n").count() * 2;
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut theirs = httparse::Response::new(&mut slots);
        let len = match theirs.parse(&data[at..]) {
            Ok(httparse::Status::Complete(len)) => len,
            other => panic!("rotor accepted, httparse did not: {other:?}"),
        };
        let status = theirs.code.expect("a complete head has a status");
        if (100..200).contains(&status) && status != 101 {
            at += len;
            continue;
        }
        assert_eq!(at + len, consumed, "head length");
        assert_eq!(ours.status, status, "status");
        let ours_fields: Vec<(&[u8], &[u8])> = ours.headers.iter().map(|h| (h.name, h.value)).collect();
        let theirs_fields: Vec<(&[u8], &[u8])> =
            theirs.headers.iter().map(|h| (h.name.as_bytes(), h.value)).collect();
        assert_eq!(ours_fields, theirs_fields, "fields");
        return;
    }
});
