//! Tests of the quick usage reader (`scan_usage`): wherever it answers, `usage_tail` agrees.

use super::super::usage_tail;
use super::*;

const D: usize = 128;

/// `Some` from the quick reader is `usage_tail`'s answer.
fn agree(tail: &[u8], depth: usize) -> bool {
    let Some((quick, alone)) = usage_tail_quick(tail, depth) else {
        return false;
    };
    assert_eq!(
        Some(quick),
        usage_tail(tail, depth),
        "{}",
        String::from_utf8_lossy(tail)
    );
    if alone {
        let rest = &tail[7..];
        assert!(
            !rest.windows(7).any(|w| w == b"\"usage\""),
            "{}",
            String::from_utf8_lossy(tail)
        );
    }
    true
}

#[test]
fn common_usage_tails_are_read_byte_by_byte_as_usage_tail_reads_them() {
    for tail in [
        r#""usage":{"prompt_tokens":16,"completion_tokens":5,"total_tokens":21}}"#,
        r#""usage" : { "prompt_tokens" : 9 , "completion_tokens":12,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":3,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":7,"accepted_prediction_tokens":null}},"system_fingerprint":"fp_1","service_tier":null} "#,
        r#""usage":{"prompt_tokens_details":null,"completion_tokens_details":{"reasoning_tokens":null}}}"#,
        r#""usage":{}}"#,
        r#""usage":{"prompt_tokens":9999999999999999999,"total_tokens":0,"prompt":1,"c":2,"t_1":3,"prompt_tokens_x":4}}"#,
        "\"usage\":{\"prompt_tokens\":0}\r\n}\n",
        r#""usage":{"prompt_tokens":1,"completion_tokens":2},"x":{"a":[1,"é",{}]},"y":"z"}"#,
    ] {
        assert!(agree(tail.as_bytes(), D), "not decided: {tail}");
    }
}

#[test]
fn what_the_quick_reader_cannot_be_sure_of_is_left_to_usage_tail() {
    for tail in [
        r#""usage":null}"#,
        r#""usage":{"prompt_tokens":1,"prompt_tokens":2}}"#,
        r#""usage":{"prompt_tokens":1.0}}"#,
        r#""usage":{"prompt_tokens":01}}"#,
        r#""usage":{"prompt_tokens":18446744073709551616}}"#,
        r#""usage":{"prompt_tokens":10000000000000000000}}"#,
        r#""usage":{"prompt_tokens ":1}}"#,
        r#""usage":{"Prompt_tokens":1}}"#,
        r#""usage":{"pro\u006dpt_tokens":1}}"#,
        r#""usage":{"x":"text"}}"#,
        r#""usage":{"x":-1}}"#,
        r#""usage":{"prompt_tokens_details":{"cached_tokens":1,"cached_tokens":1}}}"#,
        r#""usage":{"prompt_tokens_details":true}}"#,
        r#""usage":{"prompt_tokens":1}"#,
        r#""usage":{"prompt_tokens":1}}}"#,
        r#""usage":{"prompt_tokens":1}} x"#,
        r#""usage":{"prompt_tokens":1},"a":[1,2}"#,
        "\"usage\":{\"prompt_tokens\":1},\"a\":\"\u{1}\"}",
    ] {
        assert!(!agree(tail.as_bytes(), D), "decided: {tail}");
    }
    // The virtual `{`, `usage` and a details object count for the depth limit.
    let tail = br#""usage":{"prompt_tokens":1}}"#;
    for depth in 0..4 {
        assert!(usage_tail_quick(tail, depth).is_none(), "depth {depth}");
    }
    assert!(agree(tail, 4));
    assert!(!agree(br#""usage":{"prompt_tokens":1},"x":[[[]]]}"#, 4));
    assert!(agree(br#""usage":{"prompt_tokens":1},"x":[[[]]]}"#, 5));
    // Invalid UTF-8 after the usage object: the tail is refused as `usage_tail` refuses it.
    assert!(!agree(b"\"usage\":{\"prompt_tokens\":1},\"x\":\"\xff\"}", D));
}

/// The names read as one word (`known_member`), spaced, cut or misspelt near them, at
/// every length of the tail: undecided or read as `usage_tail` reads them.
#[test]
fn names_read_as_one_word_and_their_near_misses_are_read_as_usage_tail_reads_them() {
    let mut decided = 0;
    for member in [
        r#""prompt_tokens":12"#,
        r#""prompt_tokens" :12"#,
        r#""prompt_tokenz":12"#,
        r#""prompt_tokens_":12"#,
        r#""completion_tokens":3"#,
        r#""completion_tokens" : 3"#,
        r#""completion_tokenx":3"#,
        r#""completion_toke":3"#,
        r#""total_tokens":15"#,
        r#""total_tokens" :15"#,
        r#""total_tokens":1.5"#,
        r#""total_tokensx":15"#,
    ] {
        let tail = format!(r#""usage":{{{member},{member},"total_tokens":15}}}}"#);
        let single = format!(r#""usage":{{{member}}}}}"#);
        for text in [tail, single] {
            for end in 0..=text.len() {
                decided += usize::from(agree(&text.as_bytes()[..end], D));
            }
        }
    }
    assert!(decided > 10, "decided {decided}");
}

/// A random usage tail near the common shape: members of every kind the two readers tell
/// apart, spacing, members after the object.
fn random_tail(rng: &mut fastrand::Rng) -> String {
    let ws = |rng: &mut fastrand::Rng| {
        [""; 6]
            .iter()
            .chain(&[" ", "\n", "\t ", "\r\n"])
            .nth(rng.usize(..10))
            .copied()
            .unwrap_or("")
    };
    let keys = [
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
        "cached_tokens",
        "reasoning_tokens",
        "x_1",
        "usage",
        "Cost",
        "k\\u0041",
    ];
    let values = [
        "0",
        "7",
        "12345",
        "01",
        "1.5",
        "-2",
        "1e3",
        "18446744073709551615",
        "18446744073709551616",
        "null",
        "true",
        "\"s\"",
        "{}",
        "[]",
        "{\"cached_tokens\":3}",
        "{\"reasoning_tokens\":null,\"a\":1}",
        "{\"cached_tokens\":1,\"cached_tokens\":2}",
        "{\"x\":[1]}",
    ];
    let mut out = format!("\"usage\"{}:{}{{", ws(rng), ws(rng));
    for i in 0..rng.usize(0..6) {
        if i > 0 {
            out.push(',');
        }
        let key = keys[rng.usize(..keys.len())];
        let value = values[rng.usize(..values.len())];
        out.push_str(&format!(
            "{}\"{key}\"{}:{}{value}{}",
            ws(rng),
            ws(rng),
            ws(rng),
            ws(rng)
        ));
    }
    out.push('}');
    for _ in 0..rng.usize(0..3) {
        out.push_str(&format!(
            ",{}\"{}\":{}",
            ws(rng),
            keys[rng.usize(..keys.len())],
            values[rng.usize(..values.len())]
        ));
    }
    out.push_str(&format!("{}}}{}", ws(rng), ws(rng)));
    out
}

/// `Some` from `usage_object_quick` is `usage_object`'s answer, ending at the same byte;
/// the tail's object read at depth 1 (inside an event's object).
fn object_agrees(tail: &[u8], depth: usize) -> bool {
    let Some(colon) = tail.iter().position(|&b| b == b':') else {
        return false;
    };
    let at = |depth| {
        let mut c = Cursor::new(tail, depth);
        (c.at, c.depth) = (colon + 1, 1);
        c
    };
    let mut quick = at(depth);
    let Some(counts) = usage_object_quick(&mut quick) else {
        assert_eq!(quick.at, colon + 1, "not moved");
        return false;
    };
    let mut cursor = at(depth);
    let text = String::from_utf8_lossy(tail);
    assert_eq!(super::super::usage_object(&mut cursor), Some(counts), "{text}");
    assert_eq!((cursor.at, cursor.depth), (quick.at, 1), "{text}");
    true
}

#[test]
fn random_usage_tails_and_their_mutations_are_undecided_or_read_as_usage_tail_reads_them() {
    let mut rng = fastrand::Rng::with_seed(1801);
    let (mut decided, mut mutated_decided, mut objects) = (0, 0, 0);
    for _ in 0..30_000 {
        let tail = random_tail(&mut rng);
        let depth = [3, 4, 5, D][rng.usize(..4)];
        decided += usize::from(agree(tail.as_bytes(), depth));
        objects += usize::from(object_agrees(tail.as_bytes(), depth));
        let mut bytes = tail.into_bytes();
        crate::codec::mutate_one_byte(&mut rng, &mut bytes, crate::codec::USAGE_MUTATIONS);
        mutated_decided += usize::from(agree(&bytes, depth));
        objects += usize::from(object_agrees(&bytes, depth));
    }
    assert!(
        decided > 3_000 && mutated_decided > 1_000,
        "decided {decided}, mutated {mutated_decided}"
    );
    assert!(objects > 4_000, "objects {objects}");
}

/// The usual three members, compact and in order (`usual_three`), with every kind of count and
/// what may follow them, and each byte of them dropped, doubled or replaced: undecided or read
/// as `usage_tail` reads them, for a tail and for a streamed chunk's object.
#[test]
fn the_usual_three_members_and_their_mutations_are_read_as_usage_tail_reads_them() {
    let mut rng = fastrand::Rng::with_seed(1818);
    let counts = ["0", "7", "41", "1234567", "18446744073709551615"];
    let odd = ["01", "1.5", "-2", "null", " 3", "1e2", "99999999999999999999"];
    let after = [
        "}}",
        "} }\n",
        ",\"prompt_tokens_details\":{\"cached_tokens\":3}}}",
        ",\"completion_tokens_details\":{\"reasoning_tokens\":2},\"x\":1},\"system_fingerprint\":\"fp\"}",
        ",\"prompt_tokens\":1}}",
        " , \"usage\":2}}",
        "}",
        "",
    ];
    let (mut decided, mut objects) = (0, 0);
    for _ in 0..20_000 {
        let pick = |rng: &mut fastrand::Rng| match rng.u8(..8) {
            0 => odd[rng.usize(..odd.len())],
            _ => counts[rng.usize(..counts.len())],
        };
        let (p, c, t) = (pick(&mut rng), pick(&mut rng), pick(&mut rng));
        let rest = after[rng.usize(..after.len())];
        let tail = format!(r#""usage":{{"prompt_tokens":{p},"completion_tokens":{c},"total_tokens":{t}{rest}"#);
        let mut bytes = tail.into_bytes();
        decided += usize::from(agree(&bytes, D));
        objects += usize::from(object_agrees(&bytes, D));
        crate::codec::mutate_one_byte(&mut rng, &mut bytes, crate::codec::USAGE_MUTATIONS);
        decided += usize::from(agree(&bytes, D));
        objects += usize::from(object_agrees(&bytes, D));
    }
    assert!(
        decided > 5_000 && objects > 5_000,
        "decided {decided}, objects {objects}"
    );
}
