//! Split invariance: feeding the bytes in one piece, split at two fuzzer-chosen points, or one
//! byte at a time must give the same data, the same result and the same leftover, chunk by chunk
//! (`decode`) and all buffered chunks at once (`decode_into`); no panic.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rotor::codec::{Chunk, ChunkError, ChunkedDecoder, ChunkedLimits};

fn run(pieces: &[&[u8]]) -> (Vec<u8>, Result<Option<Vec<u8>>, ChunkError>) {
    let mut dec = ChunkedDecoder::new(ChunkedLimits { max_line_bytes: 64, max_trailer_bytes: 128 });
    let (mut buf, mut data) = (BytesMut::new(), Vec::new());
    for (i, piece) in pieces.iter().enumerate() {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(Chunk::Data(d))) => { assert!(!d.is_empty()); data.extend_from_slice(&d) }
                Ok(Some(Chunk::Done)) => return (data, Ok(Some([&buf[..], &pieces[i + 1..].concat()].concat()))),
                Ok(None) => break,
                Err(e) => return (data, Err(e)),
            }
        }
    }
    (data, Ok(None))
}

/// `run` with `decode_into`: every buffered chunk at once, as the upstream client reads.
fn run_into(pieces: &[&[u8]]) -> (Vec<u8>, Result<Option<Vec<u8>>, ChunkError>) {
    let mut dec = ChunkedDecoder::new(ChunkedLimits { max_line_bytes: 64, max_trailer_bytes: 128 });
    let (mut buf, mut data) = (BytesMut::new(), BytesMut::new());
    for (i, piece) in pieces.iter().enumerate() {
        buf.extend_from_slice(piece);
        match dec.decode_into(&mut buf, &mut data) {
            Ok(true) => return (data.to_vec(), Ok(Some([&buf[..], &pieces[i + 1..].concat()].concat()))),
            Ok(false) => {}
            Err(e) => return (data.to_vec(), Err(e)),
        }
    }
    (data.to_vec(), Ok(None))
}

fuzz_target!(|input: (u16, u16, &[u8])| {
    let (a, b, data) = input;
    let (a, b) = (a as usize % (data.len() + 1), b as usize % (data.len() + 1));
    let (a, b) = (a.min(b), a.max(b));
    let whole = run(&[data]);
    assert_eq!(run(&[&data[..a], &data[a..b], &data[b..]]), whole);
    assert_eq!(run(&data.chunks(1).collect::<Vec<_>>()), whole);
    assert_eq!(run_into(&[data]), whole);
    assert_eq!(run_into(&[&data[..a], &data[a..b], &data[b..]]), whole);
});
