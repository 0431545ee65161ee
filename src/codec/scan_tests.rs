use super::*;
use crate::codec::json::inspect_full;

const D: usize = 128;

/// Bodies the one-pass reader must decide, each read exactly as the full inspection reads it.
const PLAIN: &[&str] = &[
    r#"{"model":"gpt-4o-mini","stream":false,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in five words."}],"temperature":0.2}"#,
    r#"{}"#,
    " \r\n\t{ } \n",
    r#"{"model":"m"}"#,
    r#"{"stream":true,"model":"a/b:c","max_tokens":0,"max_completion_tokens":18446744073709551615}"#,
    r#"{"stream":null,"model":"m","n":-1.5,"x":[],"y":[[1,2],{"a":{"b":[true,false,null]}}]}"#,
    r#"{"model":"mödel","messages":[{"content":"héllo \"quoted\" \\ \/ \b\f\n\r\t"}]}"#,
    r#"{"model":"m","tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]}"#,
    r#"{ "model" : "m" , "stream" : true }"#,
    r#"{"model":"m","temperature":0,"top_p":0.95,"seed":-0}"#,
    r#"{"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"temperature":1,"prompt_tokens":2,"model":"m"}"#,
    r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
    r#"{"model":"m","stream_options":{"include_usage":false}}"#,
    r#"{"model":"m","stream_options":{"x":[1,{"include_usage":true}],"include_usage":null}}"#,
    r#"{"model":"m","stream_options":{"include_usage":"true","y":2}}"#,
    r#"{"model":"m","stream_options":{"continuous_usage_stats":true, "include_usage" : true }}"#,
    r#"{"model":"m","stream_options":{}}"#,
    r#"{"model":"m","stream_options":null}"#,
    r#"{"model":"m","stream_options":[{"include_usage":true}]}"#,
    r#"{"model":"m","stream_options":true}"#,
    r#"{"models":1,"mode":2,"messagesx":3,"streams":4,"rolex":5,"conten":6,"temp":7,"typ":8,"prompt_token":9,"model":"m"}"#,
];

/// Bodies left to the full inspection (errors, or what this reader does not decide).
const UNDECIDED: &[&str] = &[
    "",
    "[]",
    r#"{"model":"m""#,
    r#"{"model":"m",}"#,
    r#"{"model":"m"} x"#,
    r#"{"model":"m"}}"#,
    r#"{"model":1}"#,
    r#"{"model":"m","model":"n"}"#,
    r#"{"model":"m","stream":true,"stream":false}"#,
    r#"{"model":"m","stream":"yes"}"#,
    r#"{"model":"m","stream_options":{"include_usage":true},"stream_options":{}}"#,
    r#"{"model":"m","stream_options":{"include_usage":true,"include_usage":false}}"#,
    r#"{"model":"m","stream_options":{"include_\u0075sage":true}}"#,
    r#"{"model":"m","stream_options":{"include_usage":tru}}"#,
    r#"{"model":"m","stream_options":{"include_usage":true,}}"#,
    r#"{"mod\u0065l":"m"}"#,
    r#"{"model":"m\u0041"}"#,
    r#"{"model":"m\n"}"#,
    r#"{"model":"m","x":1e5}"#,
    r#"{"model":"m","x":01}"#,
    r#"{"model":"m","x":1.}"#,
    r#"{"model":"m","x":-}"#,
    r#"{"model":"m","x":tru}"#,
    r#"{"model":"m","x":"a	b"}"#,
    r#"{"model":"m","max_tokens":-1}"#,
    r#"{"model":"m","max_tokens":1.5}"#,
    r#"{"model":"m","max_tokens":18446744073709551616}"#,
    r#"{"model":"m","x":[1,]}"#,
    r#"{"model":"m","x":{"a"}}"#,
    r#"{"model":"m","x":'a'}"#,
    r#"{"model":"m","x":"\x"}"#,
];

#[test]
fn plain_bodies_are_read_in_one_pass_exactly_as_the_full_inspection_reads_them() {
    for body in PLAIN {
        let fast = inspect_plain(body.as_bytes(), D);
        assert!(fast.is_some(), "not decided: {body}");
        assert_eq!(fast.map(Ok), Some(inspect_full(body.as_bytes(), D)), "{body}");
    }
}

#[test]
fn everything_else_is_left_to_the_full_inspection() {
    for body in UNDECIDED {
        assert_eq!(inspect_plain(body.as_bytes(), D), None, "decided: {body}");
    }
    // Invalid UTF-8 in a string, and nesting at the caller's limit.
    assert_eq!(inspect_plain(b"{\"model\":\"m\xff\"}", D), None);
    assert_eq!(inspect_plain(br#"{"model":"m","x":[[[]]]}"#, 3), None);
    assert!(inspect_plain(br#"{"model":"m","x":[[[]]]}"#, 5).is_some());
    let deep = format!("{{\"x\":{}{}}}", "[".repeat(100), "]".repeat(100));
    assert_eq!(inspect_plain(deep.as_bytes(), 1024), None);
}

#[test]
fn every_prefix_of_a_plain_body_is_undecided_or_read_as_the_full_inspection_reads_it() {
    for body in PLAIN.iter().chain(UNDECIDED) {
        for end in 0..body.len() {
            let Some(part) = body.as_bytes().get(..end) else {
                continue;
            };
            if let Some(fast) = inspect_plain(part, D) {
                assert_eq!(Ok(fast), inspect_full(part, D), "{}", String::from_utf8_lossy(part));
            }
        }
    }
}

fn counts(prompt: u64, completion: u64, cached: u64, reasoning: u64) -> Option<UsageCounts> {
    Some(UsageCounts {
        prompt,
        completion,
        cached,
        reasoning,
    })
}

#[test]
fn a_plain_usage_tail_is_read_in_one_pass() {
    let tail = |s: &str| usage_tail(s.as_bytes(), D);
    assert_eq!(
        tail(r#""usage":{"prompt_tokens":16,"completion_tokens":5,"total_tokens":21}}"#),
        counts(16, 5, 0, 0)
    );
    assert_eq!(
        tail(
            r#""usage" : {"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":3,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":7,"accepted_prediction_tokens":null}},"system_fingerprint":"fp_1","service_tier":null} "#
        ),
        counts(9, 12, 3, 7)
    );
    assert_eq!(
        tail(r#""usage":{"prompt_tokens_details":null,"completion_tokens_details":{"reasoning_tokens":null}}}"#),
        counts(0, 0, 0, 0)
    );
    assert_eq!(tail(r#""usage":{}}"#), counts(0, 0, 0, 0));
}

#[test]
fn a_usage_tail_serde_would_read_otherwise_is_left_to_it() {
    for tail in [
        r#""usage":null}"#,
        r#""usage":{"prompt_tokens":1,"prompt_tokens":2}}"#,
        r#""usage":{"prompt_tokens":1.0}}"#,
        r#""usage":{"prompt_tokens":-1}}"#,
        r#""usage":{"prompt_tokens":null}}"#,
        r#""usage":{"prompt_tokens":"1"}}"#,
        r#""usage":{"prompt_tokens_details":{"cached_tokens":1,"cached_tokens":1}}}"#,
        r#""usage":{"prompt_tokens_details":true}}"#,
        r#""usage":{"prompt_tokens_details":{"cached_tokens":true}}}"#,
        r#""usage":{"prompt_tokens":1}"#,
        r#""usage":{"prompt_tokens":1}}}"#,
        r#""usage":{"prompt_tokens":1}},}"#,
        r#""usage":{"prompt_tokens":1}} x"#,
        r#""usage":{"prompt_tokens":1}]}"#,
        r#""usage":{"pro\u006dpt_tokens":1}}"#,
        r#""usage":{"prompt_tokens":1},"a":[1,2}"#,
    ] {
        assert_eq!(usage_tail(tail.as_bytes(), D), None, "{tail}");
    }
    // The virtual `{` and `usage` count for the depth limit.
    let tail = br#""usage":{"prompt_tokens":1,"x":{}}}"#;
    assert_eq!(usage_tail(tail, 3), None);
    assert_eq!(usage_tail(tail, 4), counts(1, 0, 0, 0));
}

#[test]
fn each_special_byte_at_each_place_of_a_long_string_is_read_as_the_full_inspection_reads_it() {
    for special in ["\\n", "\\\"", "\\\\", "é", "\\u0041", "\t", "\"", "\u{1}"] {
        for at in 0..24 {
            let text: String = "abcdefghijklmnopqrstuvwx".chars().take(at).collect();
            let body = format!("{{\"model\":\"m\",\"x\":\"{text}{special}yz0123456789\",\"y\":1}}");
            match inspect_plain(body.as_bytes(), D) {
                Some(fast) => assert_eq!(Ok(fast), inspect_full(body.as_bytes(), D), "{body}"),
                None => assert!(
                    matches!(special, "\\u0041" | "\t" | "\"" | "\u{1}"),
                    "undecided: {body}"
                ),
            }
        }
    }
}

/// The byte-at-a-time reading of `special16`: the first special byte and every byte >= 0x80.
fn special_reference(block: &[u8; 16]) -> (Option<u32>, u32) {
    let first = block.iter().position(|&b| matches!(b, b'"' | b'\\' | 0..=0x1f));
    let high = block
        .iter()
        .enumerate()
        .filter(|(_, &b)| b >= 0x80)
        .fold(0u32, |bits, (i, _)| bits | 1 << i);
    (first.map(|i| i as u32), high)
}

#[test]
fn the_block_classifiers_agree_with_a_byte_at_a_time_reading() {
    let mut rng = fastrand::Rng::with_seed(18);
    // Bytes near every boundary the classifiers test, and plain ones.
    let pool = [
        0u8, 0x01, 0x1f, 0x20, 0x21, b'"', b'#', b'[', b'\\', b']', b'a', 0x7e, 0x7f, 0x80, 0xc3, 0xdf, 0xe0, 0xff,
    ];
    for round in 0..20_000 {
        let mut block = [0u8; 16];
        for b in &mut block {
            // Mostly plain text, so blocks without any special byte are common too.
            *b = if round % 3 == 0 || rng.u8(..4) == 0 {
                pool[rng.usize(..pool.len())]
            } else {
                rng.u8(0x23..0x5b)
            };
        }
        let (first, high) = special_reference(&block);
        for (stop, got_high) in [special16(&block), special16_swar(&block)] {
            let got_first = (stop != 0).then(|| stop.trailing_zeros());
            assert_eq!(got_first, first, "{block:?}");
            assert_eq!(got_high, high, "{block:?}");
        }
    }
}

#[test]
fn strings_across_block_and_body_ends_are_read_as_the_full_inspection_reads_them() {
    // Every special byte (and invalid UTF-8) at every place of strings up to three blocks long,
    // with the string ending the body's last partial block or running into its end.
    let specials: &[&[u8]] = &[
        b"\\n",
        b"\\\"",
        b"\\\\",
        b"\\/",
        "é".as_bytes(),
        "中".as_bytes(),
        "😀".as_bytes(),
        b"\\u0041",
        b"\t",
        b"\x7f",
        b"\x00",
        b"\x1f",
        b"\xff",
        b"\xc3",
        b"\xe4\xb8",
        b"\\x",
        b"\\",
    ];
    for special in specials {
        for at in 0..50 {
            for after in [0usize, 1, 15, 16, 17] {
                let mut body = b"{\"model\":\"m\",\"x\":\"".to_vec();
                body.extend(std::iter::repeat_n(b'a', at));
                body.extend_from_slice(special);
                body.extend(std::iter::repeat_n(b'z', after));
                body.extend_from_slice(b"\"}");
                for end in [body.len(), body.len() - 1, body.len() - 2] {
                    let part = &body[..end];
                    let fast = inspect_plain(part, D);
                    let full = inspect_full(part, D);
                    if let Some(fast) = fast {
                        assert_eq!(Ok(fast), full, "{}", String::from_utf8_lossy(part));
                    } else if end == body.len() {
                        // Undecided only where the subset ends (or the body is bad).
                        assert!(
                            full.is_err() || special.starts_with(b"\\u"),
                            "undecided: {}",
                            String::from_utf8_lossy(part)
                        );
                    }
                }
            }
        }
    }
}

/// Keys read by whole comparison (`known_key`): each, a longer and a shorter name sharing its
/// start, with an escape, cut anywhere, read as the full inspection reads them.
#[test]
fn known_keys_and_their_near_misses_are_read_as_the_full_inspection_reads_them() {
    let names = [
        "model",
        "messages",
        "stream",
        "role",
        "content",
        "temperature",
        "type",
        "prompt_tokens",
    ];
    let mut decided = 0;
    for name in names {
        let short = &name[..name.len() - 1];
        let escaped = format!("{short}\\u00{:x}", name.as_bytes()[name.len() - 1]);
        for key in [
            name.to_owned(),
            format!("{name}s"),
            short.to_owned(),
            escaped,
            format!("{name} "),
        ] {
            let value = if name == "model" {
                "\"m\""
            } else {
                "[{\"role\":\"r\",\"type\":1}]"
            };
            let body = format!("{{\"x\":{{\"{key}\":1}},\"{key}\" : {value},\"model\":\"n\"}}");
            for end in 0..=body.len() {
                let part = &body.as_bytes()[..end];
                if let Some(fast) = inspect_plain(part, D) {
                    decided += 1;
                    assert_eq!(Ok(fast), inspect_full(part, D), "{}", String::from_utf8_lossy(part));
                }
            }
        }
    }
    assert!(decided > 20, "decided {decided}");
}

/// `skip` keeps its open containers as bits of one word: arrays and objects mixed and closed
/// in every order, down to `MAX_SCAN_DEPTH` and past it, each with siblings after it, read as
/// the full inspection reads them or left to it (past the subset's depth or the caller's limit).
#[test]
fn mixed_nesting_to_the_deepest_level_is_skipped_as_the_full_inspection_reads_it() {
    // sonic-rs recurses once per level, and a debug build's frames are large: a roomy stack.
    let run = std::thread::Builder::new().stack_size(64 << 20).spawn(|| {
        let mut decided = 0;
        for levels in 1..=MAX_SCAN_DEPTH + 2 {
            let (mut open, mut close) = (String::new(), String::new());
            for level in 0..levels {
                // Objects on a pattern that is not a plain alternation, so pops meet both kinds.
                if level % 3 == 1 {
                    open.push_str("{\"k\":");
                    close.insert_str(0, ",\"z\":[1,{}]}");
                } else {
                    open.push('[');
                    close.insert_str(0, ",\"s\",{\"a\":[]}]");
                }
            }
            let body = format!("{{\"model\":\"m\",\"x\":{open}null{close},\"y\":[[],{{}}]}}");
            // The body nests `levels + 3` deep: its object, `x`'s levels, the innermost `{"a":[]}`;
            // the subset decides only what nests less deep than the limit.
            let real = levels + 3;
            for depth in (levels..levels + 6).chain([D]) {
                let fast = inspect_plain(body.as_bytes(), depth);
                let full = inspect_full(body.as_bytes(), depth);
                match fast {
                    Some(fast) => {
                        assert!(real < depth.min(MAX_SCAN_DEPTH), "{body} at {depth}");
                        assert_eq!(Ok(fast), full, "{body} at {depth}");
                        decided += 1;
                    }
                    None => assert!(full.is_err() || real >= depth.min(MAX_SCAN_DEPTH), "{body} at {depth}"),
                }
            }
        }
        // Every level below the subset's depth at the default limit, and more.
        assert!(decided > 2 * (MAX_SCAN_DEPTH - 4), "decided {decided}");
    });
    run.and_then(|t| t.join().map_err(|_| std::io::Error::other("panicked")))
        .unwrap();
}
