//! Differential: rotor's strict request-head parser against monoio-http 0.3.12's decoder.
//! Never panic; whatever rotor accepts, monoio-http accepts with the same method, target,
//! version, headers and leftover bytes. Allowed disagreements, all "rotor is stricter":
//! framing/Host/Expect policy, 431 limits, non-origin-form targets, bare LF (monoio only looks
//! for CRLFCRLF), and leading CRLFs (rotor skips them; we feed monoio the bytes after them).
//! Header limit set to monoio's 96 so "too many headers" means the same on both sides.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use monoio_codec::Decoder as _;
use monoio_http::h1::codec::decoder::RequestHeadDecoder;
use rotor::codec::{parse_request_head, HeadLimits};

fuzz_target!(|data: &[u8]| {
    let limits = HeadLimits { max_head_bytes: 32768, max_headers: 96 };
    let mut ours_buf = BytesMut::from(data);
    let Ok(Some(ours)) = parse_request_head(&mut ours_buf, &limits) else { return };
    let skipped = data.chunks(2).take_while(|c| *c == b"\r\n").count() * 2;
    let mut theirs_buf = BytesMut::from(&data[skipped..]);
    let theirs = match RequestHeadDecoder.decode(&mut theirs_buf) {
        Ok(monoio_codec::Decoded::Some(h)) => h,
        other => panic!("rotor accepted, monoio-http did not: {:?}", other.map(|_| ())),
    };
    assert_eq!(ours.method_raw(), theirs.method.as_str().as_bytes());
    assert_eq!(ours.target().as_bytes(), theirs.uri.to_string().as_bytes());
    assert_eq!(ours.http10, theirs.version == http::Version::HTTP_10);
    assert_eq!(ours.headers.len(), theirs.headers.len());
    for h in &ours.headers {
        let name = std::str::from_utf8(&h.name).unwrap();
        let ours_vals: Vec<&[u8]> = ours.headers.iter().filter(|o| o.name.eq_ignore_ascii_case(&h.name)).map(|o| &o.value[..]).collect();
        let theirs_vals: Vec<&[u8]> = theirs.headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
        assert_eq!(ours_vals, theirs_vals, "header {name}");
    }
    assert_eq!(ours_buf, theirs_buf, "leftover");
});
