//! Unit tests for the OpenAI stream tap: Hide and Observe over every cut, and the in-place
//! reading (`plain_events`, `Marks`) against the splitter path.

use super::*;
use crate::codec::DEFAULT_MAX_DEPTH as D;

const INJECTED: &[u8] = b"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n\
data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11,\
\"prompt_tokens_details\":{\"cached_tokens\":4},\"completion_tokens_details\":{\"reasoning_tokens\":1}}}\n\n\
data: [DONE]\n\n";

fn run(mode: Mode, pieces: &[&[u8]]) -> (Vec<u8>, Usage) {
    let mut tap = OpenAiUsageTap::new(mode, D);
    let mut out = Vec::new();
    for p in pieces {
        for b in tap.piece(Bytes::copy_from_slice(p)) {
            out.extend_from_slice(&b);
        }
    }
    for b in tap.end() {
        out.extend_from_slice(&b);
    }
    (out, tap.usage())
}
#[test]
fn hide_removes_the_usage_chunk_and_nulls_but_keeps_the_tokens() {
    for cut in 0..INJECTED.len() {
        let (a, b) = INJECTED.split_at(cut);
        let (out, usage) = run(Mode::Hide, &[a, b]);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("usage"), "cut {cut}: {text}");
        assert!(
            text.contains("\"content\":\"hi\"") && text.ends_with("data: [DONE]\n\n"),
            "cut {cut}: {text}"
        );
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (9, 2));
        assert_eq!((usage.cached_tokens, usage.reasoning_tokens), (4, 1));
        assert!(usage.reported);
    }
}
#[test]
fn hide_removes_only_top_level_null_members_and_leaves_duplicates() {
    let chunk: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"token \\\"usage\\\" up\"},\
\"usage_hint\":1}],\"usage\":null}\n\ndata: {\"choices\": [], \"usage\": null, \"x\": 1}\n\n\
data: {\"usage\":null,\"x\":1,\"usage\":null}\n\n";
    let (out, usage) = run(Mode::Hide, &[chunk]);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        text,
        "data: {\"choices\":[{\"delta\":{\"content\":\"token \\\"usage\\\" up\"},\"usage_hint\":1}]}\n\n\
         data: {\"choices\": [], \"x\": 1}\n\n\
         data: {\"usage\":null,\"x\":1,\"usage\":null}\n\n"
    );
    assert!(!usage.reported);
}
/// Issue 16 item 4: `"usage": null` with a space once kept the usage chunk in the stream.
#[test]
fn hide_reads_python_spaced_streams_in_any_key_order() {
    let spaced: &[u8] = b"data: {\"usage\": null, \"choices\": [{\"delta\": {\"content\": \"hi\"}}]}\n\n\
data: {\"id\": \"c\", \"choices\": [{\"delta\": {}}], \"usage\": null}\n\n\
data: {\"usage\": {\"completion_tokens\": 2, \"prompt_tokens\": 9}, \"choices\": []}\n\n\
data: [DONE]\n\n";
    for cut in 0..spaced.len() {
        let (a, b) = spaced.split_at(cut);
        let (out, usage) = run(Mode::Hide, &[a, b]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "data: {\"choices\": [{\"delta\": {\"content\": \"hi\"}}]}\n\n\
             data: {\"id\": \"c\", \"choices\": [{\"delta\": {}}]}\n\ndata: [DONE]\n\n",
            "cut {cut}"
        );
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (9, 2), "cut {cut}");
        let (out, usage) = run(Mode::Observe, &[a, b]);
        assert_eq!((out.as_slice(), usage.prompt_tokens), (spaced, 9), "cut {cut}");
    }
}
/// Whole pieces (events read in place by the splitter) give what single bytes give (events
/// read line by line): comments and names between, spacing, CRLF, the usage chunk mid-piece.
#[test]
fn hide_gives_the_same_bytes_whole_or_byte_by_byte() {
    let mixed: &[u8] = b"data: {\"a\":1,\"usage\":null}\n\n: comment\n\ndata: {\"b\":2,\"usage\":null}\n\n\
data:{\"c\":3}\n\ndata: {\"d\":4}\n\nevent: x\ndata: {\"e\":5}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":9}}\n\n\
data: {\"f\":6,\"usage\":null}\r\n\r\ndata: {\"g\":7, \"usage\": null}\n\ndata: [DONE]\n\n";
    let (whole, usage) = run(Mode::Hide, &[mixed]);
    let bytes: Vec<&[u8]> = mixed.chunks(1).collect();
    let (single, _) = run(Mode::Hide, &bytes);
    assert_eq!(
        String::from_utf8(whole.clone()).unwrap(),
        String::from_utf8(single).unwrap()
    );
    assert_eq!(
        String::from_utf8(whole).unwrap(),
        "data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: {\"c\":3}\n\ndata: {\"d\":4}\n\nevent: x\ndata: {\"e\":5}\n\n\
         data: {\"f\":6}\n\ndata: {\"g\":7}\n\ndata: [DONE]\n\n"
    );
    assert_eq!(usage.prompt_tokens, 9);
}
#[test]
fn observe_passes_bytes_untouched() {
    let (out, usage) = run(Mode::Observe, &[&INJECTED[..50], &INJECTED[50..]]);
    assert_eq!(out, INJECTED);
    assert_eq!(usage.prompt_tokens, 9);
}
#[test]
fn too_deep_answers_pass_untouched_with_whole_body_usage_read_from_the_tail_only() {
    let deep = |tail: &str| format!(r#"{{"x":{}{}{tail}}}"#, "[".repeat(100_000), "]".repeat(100_000));
    // The usage member and what follows it nest no deeper: read from there.
    let shallow_tail = deep(r#","usage":{"prompt_tokens":3,"completion_tokens":5}"#);
    // A deep value after the usage member: the tail is deep too, nothing is parsed.
    let deep_tail = format!(
        r#"{{"usage":{{"prompt_tokens":3,"completion_tokens":5}},"x":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    for (body, read) in [(shallow_tail, true), (deep_tail, false)] {
        let mut tap = OpenAiUsageTap::new(Mode::Observe, D);
        assert_eq!(tap.full(200, Bytes::from(body.clone())).as_ref(), body.as_bytes());
        assert_eq!(tap.usage().reported, read);
        let stream = format!("data: {body}\n\ndata: [DONE]\n\n");
        for mode in [Mode::Observe, Mode::Hide] {
            let (out, usage) = run(mode, &[stream.as_bytes()]);
            assert_eq!(out, stream.as_bytes(), "{mode:?}");
            // A stream event is depth-checked whole before any read (`usage::event`).
            assert!(!usage.reported, "{mode:?}");
        }
    }
}

/// What the tap gave before events were read in place: every event through the splitter,
/// `event_usage` and `write_event`.
fn through_the_splitter(mode: Mode, stream: &[u8]) -> (Vec<u8>, Option<Usage>) {
    let mut splitter = SseSplitter::new();
    let (mut out, mut seen) = (BytesMut::new(), None);
    let mut read = |event: Event<'_>| {
        let facts = event_usage(event.data, D);
        if facts.usage.is_some() {
            seen = facts.usage;
        }
        if mode == Mode::Hide && !facts.usage_only {
            write_event(event.event, event.data, facts.null_member, &mut out);
        }
    };
    splitter.feed(stream, &mut read);
    splitter.finish(&mut read);
    match mode {
        Mode::Hide => (out.to_vec(), seen),
        Mode::Observe => (stream.to_vec(), seen),
    }
}

/// Events read in place (`plain_events`) give the bytes and usage the splitter path gives,
/// for every event shape next to the plain ones and every cut of the stream in two.
#[test]
fn events_read_in_place_equal_the_splitter_path() {
    let events: [&[u8]; 12] = [
        b"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
        b"data:{\"id\":\"c\",\"choices\":[],\"usage\":null}\n\n",
        b"data: {\"usage\":null,\"x\":1,\"usage\":null}\n\n",
        b"data: {\"choices\":[{\"delta\":{\"content\":\"usage\"}}],\"usage\":null}\n\n",
        b"data: {\"choices\":[{\"delta\":{\"usage\":null}}],\"usage\":null}\n\n",
        b"data: {\"a\":1, \"usage\": null}\n\n",
        b"data: {\"\\u0075sage\":{\"prompt_tokens\":3},\"choices\":[]}\n\n",
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n",
        b"event: x\ndata: {\"e\":5,\"usage\":null}\n\n",
        b": comment\n\ndata: {\"f\":6}\n\n",
        b"data: {\"g\":7,\"usage\":null}\r\n\r\n",
        b"data: [DONE]\n\n",
    ];
    let mut streams: Vec<Vec<u8>> = events.iter().map(|e| [*e, events[0], events[11]].concat()).collect();
    streams.push(events.concat());
    streams.push(events.iter().rev().flat_map(|e| e.iter().copied()).collect());
    for stream in &streams {
        for mode in [Mode::Hide, Mode::Observe] {
            let (want, usage) = through_the_splitter(mode, stream);
            for cut in 0..=stream.len() {
                let (a, b) = stream.split_at(cut);
                let (out, got) = run(mode, &[a, b]);
                let text = String::from_utf8_lossy(stream);
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&want),
                    "{mode:?} cut {cut}: {text}"
                );
                assert_eq!(got, usage.unwrap_or_default(), "{mode:?} cut {cut}: {text}");
            }
        }
    }
}

/// `Marks` against one byte at a time, with marks on both sides of the 64-byte block edges
/// and in the padded last block.
#[test]
fn marks_are_every_line_end_and_every_g() {
    for len in [0, 1, 63, 64, 65, 127, 128, 130, 200] {
        for at in [0, 1, 62, 63, 64, 100, 127, 128, 129] {
            let mut bytes: Vec<u8> = (0..len).map(|i| b"ab\"gg\n\rx"[i % 8]).collect();
            if at + 1 < len {
                bytes[at] = b'"';
                bytes[at + 1] = b'g';
            }
            let want: Vec<usize> = (0..len).filter(|&i| matches!(bytes[i], b'\n' | b'\r' | b'g')).collect();
            assert_eq!(Marks::new(&bytes).collect::<Vec<_>>(), want, "len {len} at {at}");
        }
    }
}

/// The AVX2 classifier marks exactly the bytes the portable one marks: every byte value at
/// every lane of both halves, and random blocks.
#[cfg(target_arch = "x86_64")]
#[test]
#[allow(unsafe_code)]
fn the_avx2_classifier_marks_what_the_portable_one_marks() {
    if !std::arch::is_x86_feature_detected!("avx2") {
        return;
    }
    let mut rng = fastrand::Rng::with_seed(64);
    let mut marked = 0;
    for lane in 0..64 {
        for byte in 0..=255u8 {
            let mut block = [b'a'; 64];
            block[lane] = byte;
            let marks = classify_portable(&block);
            // SAFETY: checked above.
            assert_eq!(unsafe { classify_avx2(&block) }, marks, "byte {byte} at {lane}");
            marked += marks.count_ones();
        }
    }
    assert_eq!(marked, 64 * 3, "\\n, \\r and g at each lane");
    for _ in 0..10_000 {
        let mut block = [0u8; 64];
        for b in &mut block {
            *b = b"\n\r\"gua {}"[rng.usize(..9)];
        }
        // SAFETY: checked above.
        assert_eq!(unsafe { classify_avx2(&block) }, classify_portable(&block));
    }
}
/// `Hide` writes each piece's events into one buffer it keeps: once the relay dropped what a
/// piece gave, the next piece's events are written at the same address (no allocation per
/// event), and a piece still held elsewhere is never written over.
#[test]
fn hide_reuses_its_buffer_once_the_last_piece_was_dropped_and_never_overwrites_a_held_one() {
    let event: &[u8] = b"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n";
    let expected: &[u8] = b"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
    let mut tap = OpenAiUsageTap::new(Mode::Hide, D);
    let first = tap.piece(Bytes::from_static(event));
    let address = first[0].as_ptr();
    drop(first);
    // Takes the block a freed buffer would leave, so a new allocation could not land there.
    let occupant = Vec::<u8>::with_capacity(event.len() + 64);
    let second = tap.piece(Bytes::from_static(event));
    assert_eq!(&second[0][..], expected);
    assert_eq!(second[0].as_ptr(), address, "written where the dropped piece was");
    let third = tap.piece(Bytes::from_static(event));
    assert_eq!(
        (&second[0][..], &third[0][..]),
        (expected, expected),
        "the held piece is intact"
    );
    assert_ne!(third[0].as_ptr(), second[0].as_ptr());
    drop(occupant);
}
