//! Random and mutated bodies for `codec::scan`: whatever the one-pass reader decides, the full
//! inspection reads the same (split from `scan_tests.rs` to keep files small).

use super::*;
use crate::codec::json::inspect_full;

/// The depth limit the bodies are read with, unless a test picks its own.
const D: usize = 128;

#[test]
fn random_bodies_are_undecided_or_read_as_the_full_inspection_reads_them() {
    let mut rng = fastrand::Rng::with_seed(1818);
    let parts: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\n",
        "\"",
        "\"model\"",
        "\"stream\"",
        "\"max_tokens\"",
        "\"m\"",
        "\"x\"",
        "true",
        "false",
        "null",
        "0",
        "12",
        "-1.5",
        "1e3",
        "\\",
        "\\n",
        "\\u0041",
        "é",
        "\t",
        "\u{1}",
        "\"abcdefghijklmnopqrstuvwxyz\"",
        "\"stream_options\"",
        "\"messages\"",
        "\"temperature\"",
        "\"type\"",
        "\"prompt_tokens\"",
        "\"role\"",
        "\"content\"",
        "\"mode",
        "\"types\"",
    ];
    let mut decided = 0;
    for _ in 0..50_000 {
        let mut body = String::from("{\"model\":\"m\"");
        for _ in 0..rng.usize(0..12) {
            body.push_str(parts[rng.usize(..parts.len())]);
        }
        if rng.bool() {
            body.push('}');
        }
        if let Some(fast) = inspect_plain(body.as_bytes(), D) {
            decided += 1;
            assert_eq!(Ok(fast), inspect_full(body.as_bytes(), D), "{body}");
        }
    }
    assert!(decided > 100, "only {decided} random bodies were decided");
}

/// A random JSON value of the scanner's subset (and sometimes outside it), nested up to `depth`.
fn random_value(rng: &mut fastrand::Rng, depth: usize, out: &mut String) {
    let ws = |rng: &mut fastrand::Rng, out: &mut String| {
        if rng.u8(..4) == 0 {
            out.push_str([" ", "\n", "\t", "\r\n  "][rng.usize(..4)]);
        }
    };
    ws(rng, out);
    match rng.u8(..if depth == 0 { 4 } else { 6 }) {
        0 => out.push_str(
            [
                "\"\"",
                "\"text\"",
                "\"é\\n\\\"\"",
                "\"a\\u0041\"",
                "\"0123456789abcdefXYZ\"",
            ][rng.usize(..5)],
        ),
        1 => out.push_str(["0", "-1", "12.5", "1e3", "-0.25"][rng.usize(..5)]),
        2 => out.push_str(["true", "false", "null"][rng.usize(..3)]),
        3 => out.push_str(["\"model\"", "\"m\""][rng.usize(..2)]),
        4 => {
            out.push('[');
            for i in 0..rng.usize(0..4) {
                if i > 0 {
                    out.push(',');
                }
                random_value(rng, depth - 1, out);
            }
            ws(rng, out);
            out.push(']');
        }
        _ => {
            out.push('{');
            for i in 0..rng.usize(0..4) {
                if i > 0 {
                    out.push(',');
                }
                ws(rng, out);
                out.push_str(["\"a\"", "\"content\"", "\"role\""][rng.usize(..3)]);
                ws(rng, out);
                out.push(':');
                random_value(rng, depth - 1, out);
            }
            ws(rng, out);
            out.push('}');
        }
    }
    ws(rng, out);
}

#[test]
fn random_nested_bodies_and_their_mutations_are_undecided_or_read_as_the_full_inspection_reads_them() {
    let mut rng = fastrand::Rng::with_seed(181818);
    let (mut decided, mut mutated_decided) = (0, 0);
    for _ in 0..20_000 {
        let mut body = String::from("{\"model\":\"m\"");
        for _ in 0..rng.usize(0..4) {
            body.push_str([",\"messages\":", ",\"x\":", ",\"stream\":", ",\"max_tokens\":"][rng.usize(..4)]);
            random_value(&mut rng, 5, &mut body);
        }
        body.push('}');
        let depth = [3, 5, D][rng.usize(..3)];
        if let Some(fast) = inspect_plain(body.as_bytes(), depth) {
            decided += 1;
            assert_eq!(Ok(fast), inspect_full(body.as_bytes(), depth), "{body}");
        }
        // One byte dropped, doubled or replaced by a structural one.
        let mut bytes = body.into_bytes();
        crate::codec::mutate_one_byte(&mut rng, &mut bytes, b"{}[],:\"\\ 0");
        if let Some(fast) = inspect_plain(&bytes, depth) {
            mutated_decided += 1;
            assert_eq!(
                Ok(fast),
                inspect_full(&bytes, depth),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    assert!(
        decided > 2_000 && mutated_decided > 200,
        "decided {decided}, mutated {mutated_decided}"
    );
}
