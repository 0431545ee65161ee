//! Strict inspection never panics, and the one-pass reader (`codec::scan`) agrees with the full
//! one; when it yields a model span, splicing a fixed name (with
//! characters that need escaping) re-inspects Ok with that name and the same stream flag.
//! The quick usage-tail reader (`usage_tail_quick`) answers only what `usage_tail` answers, on
//! the body itself and on the body as a tail after `"usage":`.
//! The depth bound agrees with sonic-rs: on any body sonic-rs parses, `check_depth` passes at
//! exactly the body's real depth and fails one below it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rotor::codec::{
    check_depth, inspect_body, inspect_full, splice_model, usage_tail, usage_tail_quick, DEFAULT_MAX_DEPTH,
};
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

const NEW: &str = "alias/\"q\"\\\n\u{1}é";

/// Nesting of arrays and objects in `v`, walked with an explicit stack.
fn depth(v: &sonic_rs::Value) -> usize {
    let (mut deepest, mut stack) = (0, vec![(v, 0)]);
    while let Some((v, d)) = stack.pop() {
        let d = d + usize::from(v.is_array() || v.is_object());
        deepest = deepest.max(d);
        stack.extend(v.as_array().into_iter().flat_map(|a| a.iter()).map(|c| (c, d)));
        stack.extend(v.as_object().into_iter().flat_map(|o| o.iter()).map(|(_, c)| (c, d)));
    }
    deepest
}

fuzz_target!(|body: &[u8]| {
    if check_depth(body, DEFAULT_MAX_DEPTH).is_ok() {
        if let Ok(v) = sonic_rs::from_slice::<sonic_rs::Value>(body) {
            let real = depth(&v);
            assert!(check_depth(body, real).is_ok(), "real depth {real}");
            assert!(real == 0 || check_depth(body, real - 1).is_err(), "real depth {real}");
        }
    }
    // The quick usage-tail reader decides only what the general one reads the same.
    let mut tail = b"\"usage\":".to_vec();
    tail.extend_from_slice(body);
    for tail in [body, &tail[..]] {
        for depth in [4, DEFAULT_MAX_DEPTH] {
            if let Some((quick, alone)) = usage_tail_quick(tail, depth) {
                assert_eq!(Some(quick), usage_tail(tail, depth));
                assert!(!alone || !tail[7..].windows(7).any(|w| w == b"\"usage\""));
            }
        }
    }
    // The one-pass reader (codec::scan) decides only what the full inspection reads the same.
    let quick = inspect_body(body, DEFAULT_MAX_DEPTH);
    let full = inspect_full(body, DEFAULT_MAX_DEPTH);
    match (&quick, &full) {
        (Ok(q), Ok(f)) => assert_eq!(q, f),
        (Err(q), Err(f)) => assert_eq!(q, f),
        _ => panic!("one-pass {quick:?} vs full {full:?}"),
    }
    let Ok(found) = quick else { return };
    let Some(span) = found.model_span else { return };
    let out = splice_model(body, span, NEW);
    let again = inspect_body(&out, DEFAULT_MAX_DEPTH).expect("spliced body must stay valid");
    assert_eq!(again.model.as_deref(), Some(NEW));
    assert_eq!(again.stream, found.stream);
});
