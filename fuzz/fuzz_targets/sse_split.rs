//! The SSE splitter gives the same events whether the input arrives whole, split at two
//! fuzzer-chosen points or one byte at a time (whole events are read in place, the rest line by
//! line: both ways agree), and never holds more than `MAX_EVENT_BYTES`.
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
    let whole = events(&[body]);
    assert_eq!(whole, events(&[&body[..a], &body[a..b], &body[b..]]));
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(whole, events(&bytes));
});
