//! `skip` (blocks first) against `skip_bytes` (the byte walk): same answer, end position, depth
//! and `non_ascii` on hand-written, random and mutated values, at every nesting limit.

use super::super::Cursor;

/// Runs both from `at` (base depth `depth`) and compares; answers whether the blocks decided.
fn same(body: &[u8], at: usize, depth: usize, limit: usize) -> bool {
    let start = |c: &mut Cursor<'_>| {
        c.at = at;
        c.depth = depth;
    };
    let mut bytes = Cursor::new(body, limit);
    start(&mut bytes);
    let want = bytes.skip_bytes();
    let mut both = Cursor::new(body, limit);
    start(&mut both);
    let got = both.skip();
    let show = || String::from_utf8_lossy(body).into_owned();
    assert_eq!(got, want, "answer on {:?} at {at} depth {depth} limit {limit}", show());
    if want.is_some() {
        assert_eq!(both.at, bytes.at, "end on {:?}", show());
        assert_eq!(both.non_ascii, bytes.non_ascii, "non_ascii on {:?}", show());
        assert_eq!(both.depth, depth, "depth on {:?}", show());
    }
    // The blocks alone: `Some` only as the byte walk, `None` with the cursor untouched.
    let mut blocks = Cursor::new(body, limit);
    start(&mut blocks);
    blocks.ws();
    let from = blocks.at;
    if !matches!(blocks.peek(), Some(b'[' | b'{')) {
        return false;
    }
    match blocks.skip_blocks() {
        Some(()) => {
            assert_eq!(want, Some(()), "blocks accepted {:?}", show());
            assert_eq!(
                (blocks.at, blocks.non_ascii),
                (bytes.at, bytes.non_ascii),
                "{:?}",
                show()
            );
            true
        }
        None => {
            assert_eq!((blocks.at, blocks.depth, blocks.non_ascii), (from, depth, false));
            false
        }
    }
}

fn all_limits(body: &str) -> usize {
    let mut decided = 0;
    for limit in [1, 2, 3, 4, 8, 64] {
        for depth in [0, 1] {
            decided += usize::from(same(body.as_bytes(), 0, depth, limit));
        }
    }
    decided
}

#[test]
fn hand_written_values_agree() {
    let long = "x".repeat(150);
    let cases = [
        r#"[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in five words."}],"temperature":0.2}"#.to_owned(),
        "[]".into(),
        "{}".into(),
        " [ ] ".into(),
        "[ { } , [ ] , \"a\" ]".into(),
        "\t\r\n[\n\t{\"a\"\r:\n1}\t]".into(),
        r#"[{"content":"héllo \"quoted\" \\ \/ \b\f\n\r\t"}]"#.into(),
        r#"["\u0041"]"#.into(),
        r#"["\x"]"#.into(),
        "[\"tab\there\"]".into(),
        "[\"nul\u{0}\"]".into(),
        "[1,-2,3.5,0,-0.25,true,false,null]".into(),
        "[1e5]".into(),
        "[01]".into(),
        "[1.]".into(),
        "[-]".into(),
        "[truex]".into(),
        "[tru]".into(),
        "[1,]".into(),
        "[,1]".into(),
        "{\"a\":1,}".into(),
        "{\"a\" 1}".into(),
        "{\"a\":}".into(),
        "{1:2}".into(),
        "[}".into(),
        "{]".into(),
        "[\"a\"\"b\"]".into(),
        "[\"a\",\"b\"".into(),
        "[\"open".into(),
        "[".into(),
        "[[[[[[]]]]]]".into(),
        "{\"a\":{\"b\":{\"c\":{}}}}".into(),
        format!("[\"{long}\",\"{long}\\n{long}\",{{\"k{long}\":[1,2,{{}}]}}]"),
        format!("[\"{long}\\\\\",\"{long}\\\"\"]"),
        format!("[{}0{}]", " ".repeat(70), " ".repeat(70)),
        format!("[{}12345678]", " ".repeat(60)),
        format!("[{}true]", " ".repeat(61)),
        "[\"é\",\"日本\"]".into(),
        "[\"a\"]\u{80}".into(),
        "[\u{e9}]".into(),
        "[\\\"a\"]".into(),
        "[\"a\"\\]".into(),
        "[ \u{0c} ]".into(),
    ];
    for case in &cases {
        all_limits(case);
    }
    assert!(
        all_limits(&cases[0]) > 0,
        "the bench body's messages are decided by the blocks"
    );
}

/// A small xorshift generator (no dependency, same values every run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'t>(&mut self, from: &[&'t str]) -> &'t str {
        from[self.below(from.len())]
    }
}

fn ws(rng: &mut Rng, out: &mut String) {
    if rng.below(4) == 0 {
        out.push_str(rng.pick(&[" ", "\n", "\t", "\r\n  ", "   "]));
    }
}

fn string(rng: &mut Rng, out: &mut String) {
    out.push('"');
    for _ in 0..rng.below(40) {
        let part = match rng.below(12) {
            0 => rng
                .pick(&["\\n", "\\\"", "\\\\", "\\/", "\\t", "\\u00e9", "\\b"])
                .to_owned(),
            1 => rng.pick(&["é", "日", "[", "]", "{", "}", ":", ",", "'"]).to_owned(),
            2 => "z".repeat(rng.below(70)),
            _ => rng.pick(&["a", "hello ", "b", "Say ", "0"]).to_owned(),
        };
        out.push_str(&part);
    }
    out.push('"');
}

fn value(rng: &mut Rng, out: &mut String, depth: usize) {
    ws(rng, out);
    match rng.below(if depth > 6 { 3 } else { 6 }) {
        0 => string(rng, out),
        1 => out.push_str(rng.pick(&["0", "-1", "12.5", "true", "false", "null", "1e3", "-0.0"])),
        2 => string(rng, out),
        3 | 4 => {
            out.push('{');
            for i in 0..rng.below(4) {
                if i > 0 {
                    out.push(',');
                }
                ws(rng, out);
                string(rng, out);
                ws(rng, out);
                out.push(':');
                value(rng, out, depth + 1);
            }
            ws(rng, out);
            out.push('}');
        }
        _ => {
            out.push('[');
            for i in 0..rng.below(4) {
                if i > 0 {
                    out.push(',');
                }
                value(rng, out, depth + 1);
            }
            ws(rng, out);
            out.push(']');
        }
    }
    ws(rng, out);
}

const ROUNDS: usize = 3000;
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Random values, then the same with one byte deleted, inserted or replaced, or cut short.
#[test]
fn random_and_mutated_values_agree() {
    let mut rng = Rng(SEED);
    let alphabet = b"\"\\[]{}:, 0-.eEtfnul\n\t\x01\x7f\xc3\xa9a";
    let mut decided = 0;
    for _ in 0..ROUNDS {
        let mut text = String::from(rng.pick(&["[", "{\"k\":"]));
        value(&mut rng, &mut text, 0);
        text.push_str(rng.pick(&["]", "}", "],\"t\":0.2}"]));
        let mut body = text.into_bytes();
        if body.first() == Some(&b'{') {
            body.drain(..5);
            body.insert(0, b'[');
        }
        for limit in [3, 8, 64] {
            decided += usize::from(same(&body, 0, 1, limit));
        }
        for _ in 0..4 {
            let mut mutated = body.clone();
            let at = rng.below(mutated.len());
            let byte = alphabet[rng.below(alphabet.len())];
            match rng.below(4) {
                0 => drop(mutated.remove(at)),
                1 => mutated.insert(at, byte),
                2 => mutated[at] = byte,
                _ => mutated.truncate(at),
            }
            for limit in [3, 64] {
                same(&mutated, 0, 1, limit);
            }
        }
    }
    assert!(decided > 3000, "the blocks decided only {decided} of 9000 values");
}

#[test]
fn classify_agrees_with_the_byte_loop() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let alphabet = b"\"\\ \t\n\r\x00\x1f\x20\x21\x7f\x80\xff\xc3[]{}:,a0";
    for _ in 0..5000 {
        let mut block = [0u8; 64];
        for b in block.iter_mut() {
            *b = match rng.below(3) {
                0 => rng.next() as u8,
                _ => alphabet[rng.below(alphabet.len())],
            };
        }
        assert_eq!(super::classify(&block), super::classify_bytes(&block), "{block:?}");
    }
}
