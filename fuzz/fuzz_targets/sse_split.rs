//! The SSE splitter gives the same events whether the input arrives whole or split at two
//! fuzzer-chosen points, and never holds more than `MAX_EVENT_BYTES`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rotor::codec::sse::{SseSplitter, MAX_EVENT_BYTES};

fn events(pieces: &[&[u8]]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut s = SseSplitter::new();
    let mut out = Vec::new();
    for p in pieces {
        s.feed(p, &mut |e| out.push((e.event.to_vec(), e.data.to_vec())));
        assert!(s.buffered() <= MAX_EVENT_BYTES);
    }
    s.finish(&mut |e| out.push((e.event.to_vec(), e.data.to_vec())));
    out
}

fuzz_target!(|input: &[u8]| {
    let Some((&cut, body)) = input.split_first() else { return };
    let a = (cut as usize * 7) % (body.len() + 1);
    let b = (a + (cut as usize % 13)).min(body.len());
    assert_eq!(events(&[body]), events(&[&body[..a], &body[a..b], &body[b..]]));
});
