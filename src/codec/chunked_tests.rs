//! Unit tests for the chunked decoder, centred on split invariance.

use super::*;

/// Outcome of decoding a whole input: concatenated data, then Ok(leftover) or the error.
type Outcome = (Vec<u8>, Result<Option<Vec<u8>>, ChunkError>);

/// Feed `pieces` one after another, draining the decoder after each.
pub(crate) fn run(pieces: &[&[u8]]) -> Outcome {
    let mut dec = ChunkedDecoder::new(ChunkedLimits {
        max_line_bytes: 64,
        max_trailer_bytes: 64,
    });
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    for (idx, piece) in pieces.iter().enumerate() {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(Chunk::Data(d))) => {
                    assert!(!d.is_empty(), "empty Data");
                    data.extend_from_slice(&d);
                }
                Ok(Some(Chunk::Done)) => {
                    assert!(dec.is_done());
                    // Whatever follows the message, buffered or not yet fed, is the next one.
                    let mut left = buf.to_vec();
                    for p in &pieces[idx + 1..] {
                        left.extend_from_slice(p);
                    }
                    return (data, Ok(Some(left)));
                }
                Ok(None) => break,
                Err(e) => return (data, Err(e)),
            }
        }
    }
    (data, Ok(None))
}

/// `run` with `decode_into` (every buffered chunk at once, as the upstream client reads).
fn run_into(pieces: &[&[u8]]) -> Outcome {
    let mut dec = ChunkedDecoder::new(ChunkedLimits {
        max_line_bytes: 64,
        max_trailer_bytes: 64,
    });
    let mut buf = BytesMut::new();
    let mut data = BytesMut::new();
    for (idx, piece) in pieces.iter().enumerate() {
        buf.extend_from_slice(piece);
        match dec.decode_into(&mut buf, &mut data) {
            Ok(true) => {
                assert!(dec.is_done());
                let mut left = buf.to_vec();
                for p in &pieces[idx + 1..] {
                    left.extend_from_slice(p);
                }
                return (data.to_vec(), Ok(Some(left)));
            }
            Ok(false) => {}
            Err(e) => return (data.to_vec(), Err(e)),
        }
    }
    (data.to_vec(), Ok(None))
}

/// Every split (and byte-at-a-time) must give the same data, error and leftover as one piece,
/// chunk by chunk (`decode`) and all at once (`decode_into`).
fn assert_split_invariant(input: &[u8]) {
    let whole = run(&[input]);
    assert_eq!(
        run_into(&[input]),
        whole,
        "decode_into {:?}",
        String::from_utf8_lossy(input)
    );
    for i in 0..=input.len() {
        let (a, b) = input.split_at(i);
        assert_eq!(run_into(&[a, b]), whole, "decode_into split at {i}");
    }
    for i in 0..=input.len() {
        let (a, b) = input.split_at(i);
        assert_eq!(
            run(&[a, b]),
            whole,
            "split at {i} of {:?}",
            String::from_utf8_lossy(input)
        );
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(
        run(&bytes),
        whole,
        "byte at a time: {:?}",
        String::from_utf8_lossy(input)
    );
}

const CASES: &[&[u8]] = &[
    b"5\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT",
    b"A;name=val\r\n0123456789\r\n0;x\r\nTrailer: t\r\nX: y\r\n\r\nrest",
    b"1a  ;ext\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n",
    b"000000000000005\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhelloX\r\n0\r\n\r\n",
    b"5\nhello\r\n0\r\n\r\n",
    b"5\r\nhello\n0\r\n\r\n",
    b"5 \r\nhello\r\n0\r\n\r\n",
    b"-5\r\nhello\r\n",
    b"\r\n",
    b"g\r\n",
    b"10000000000000000\r\n",
    b"ffffffffffffffff\r\nabc",
    b"5;a\x01b\r\nhello\r\n",
    b"0\r\nBad\x00: x\r\n\r\n",
    b"0\r\nno colon\r\n\r\n",
    b"0\r\nTrailer: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
    b"5;aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nhello\r\n",
    b"3\r\nabc\r\n",
    b"0\r\n\r",
];

#[test]
fn split_invariance() {
    for case in CASES {
        assert_split_invariant(case);
    }
}

#[test]
fn expected_outcomes() {
    assert_eq!(run(&[CASES[0]]), (b"hello".to_vec(), Ok(Some(vec![]))));
    assert_eq!(run(&[CASES[1]]), (b"hello world".to_vec(), Ok(Some(b"NEXT".to_vec()))));
    assert_eq!(run(&[CASES[2]]), (b"0123456789".to_vec(), Ok(Some(b"rest".to_vec()))));
    assert_eq!(run(&[CASES[3]]).0, b"abcdefghijklmnopqrstuvwxyz".to_vec());
    assert_eq!(run(&[CASES[4]]).0, b"hello".to_vec());
    assert_eq!(run(&[CASES[5]]).1, Err(ChunkError("missing CRLF after chunk data")));
    assert_eq!(run(&[CASES[6]]).1, Err(ChunkError("bare LF")));
    assert_eq!(run(&[CASES[7]]).1, Err(ChunkError("missing CRLF after chunk data")));
    assert!(run(&[CASES[8]]).1.is_err());
    assert!(run(&[CASES[9]]).1.is_err());
    assert!(run(&[CASES[10]]).1.is_err());
    assert!(run(&[CASES[11]]).1.is_err());
    assert_eq!(run(&[CASES[12]]).1, Err(ChunkError("bad chunk size")));
    assert_eq!(run(&[CASES[13]]), (b"abc".to_vec(), Ok(None)));
    assert!(run(&[CASES[14]]).1.is_err());
    assert!(run(&[CASES[15]]).1.is_err());
    assert!(run(&[CASES[16]]).1.is_err());
    assert_eq!(run(&[CASES[17]]).1, Err(ChunkError("trailer section too large")));
    assert_eq!(run(&[CASES[18]]).1, Err(ChunkError("chunk line too long")));
    assert_eq!(run(&[CASES[19]]), (b"abc".to_vec(), Ok(None)));
    assert_eq!(run(&[CASES[20]]), (vec![], Ok(None)));
}

#[test]
fn partial_chunk_passes_on_at_once() {
    let mut dec = ChunkedDecoder::new(ChunkedLimits::default());
    let mut buf = BytesMut::from(&b"100\r\ndata: a"[..]);
    assert_eq!(
        dec.decode(&mut buf),
        Ok(Some(Chunk::Data(Bytes::from_static(b"data: a"))))
    );
    assert_eq!(dec.decode(&mut buf), Ok(None));
    assert!(!dec.is_done());
}

#[test]
fn done_is_sticky_and_keeps_next_message() {
    let mut dec = ChunkedDecoder::new(ChunkedLimits::default());
    let mut buf = BytesMut::from(&b"0\r\n\r\nGET /"[..]);
    assert_eq!(dec.decode(&mut buf), Ok(Some(Chunk::Done)));
    assert_eq!(dec.decode(&mut buf), Ok(Some(Chunk::Done)));
    assert_eq!(&buf[..], b"GET /");
}

/// The slow pair `plain_size_line` stands in for, as `scan` used it before.
fn general_size_line(rest: &[u8], max: usize) -> Result<Option<(u64, usize)>, ChunkError> {
    let Some(len) = line_len(rest, max)? else {
        return Ok(None);
    };
    Ok(Some((parse_size_line(&rest[..len])?, len)))
}

/// Differential check of the fast size-line reader against `line_len` + `parse_size_line`:
/// every line it accepts gets the same size and length from them, for every line limit, and it
/// accepts the plain lines SSE upstreams send.
#[test]
fn plain_size_lines_read_as_the_general_parser_reads_them() {
    const ALPHABET: &[u8] = b"09aFg\r\n ;";
    let mut inputs: Vec<Vec<u8>> = vec![Vec::new()];
    let mut last: Vec<Vec<u8>> = vec![Vec::new()];
    for _ in 0..5 {
        let next: Vec<Vec<u8>> = last
            .iter()
            .flat_map(|prefix| {
                ALPHABET.iter().map(move |&b| {
                    let mut v = prefix.clone();
                    v.push(b);
                    v
                })
            })
            .collect();
        inputs.extend(next.iter().cloned());
        last = next;
    }
    for digits in [15, 16, 17, 18] {
        let line = format!("{}\r\nxyz", "f".repeat(digits));
        inputs.push(line.into_bytes());
    }
    let mut accepted = 0;
    for input in &inputs {
        for max in 0..=22 {
            if let Some(fast) = plain_size_line(input, max) {
                accepted += 1;
                assert_eq!(general_size_line(input, max), Ok(Some(fast)), "{input:?} max {max}");
            }
        }
    }
    assert!(accepted > 1000, "{accepted}");
    assert_eq!(plain_size_line(b"c9\r\ndata: {}", 4096), Some((0xc9, 4)));
    assert_eq!(plain_size_line(b"ffffffffffffffff\r\n", 4096), Some((u64::MAX, 18)));
    for other in [
        &b"c9;x\r\n"[..],
        b"c9 \r\n",
        b"c9\n",
        b"c9\r",
        b"\r\n",
        b"fffffffffffffffff\r\n",
    ] {
        assert_eq!(plain_size_line(other, 4096), None, "{other:?}");
    }
}
