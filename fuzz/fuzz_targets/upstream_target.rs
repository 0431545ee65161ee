//! Client text never reshapes an upstream URL. As a path: `check_path` never panics, and what
//! it passes has no `.`/`..` segment even read the simple way (one decode, `/` and `\` split,
//! `;params` cut). As a model name that `check_model_name` passes: the Gemini path holds it as
//! one segment with no byte that could end the target, and that segment decodes to the name.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rotor::codec::target::{check_model_name, check_path, percent_decode, target_is_clean};
use rotor::providers::gemini::request::path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if check_path(&text).is_ok() {
        for seg in text.split('?').next().unwrap_or("").split('/') {
            let decoded = percent_decode(seg.as_bytes());
            for piece in decoded.split(|&b| b == b'/' || b == b'\\') {
                let core = piece.split(|&b| b == b';').next().unwrap_or(piece);
                assert!(core != b"." && core != b"..", "dot segment passed in {text:?}");
            }
        }
    }
    if check_model_name(&text).is_ok() {
        let name = text.strip_prefix("models/").unwrap_or(&text);
        for stream in [false, true] {
            let built = path(&text, stream);
            assert!(target_is_clean(built.as_bytes()), "{built:?}");
            let rest = built.strip_prefix("/models/").expect("fixed prefix");
            let (segment, _method) = rest.rsplit_once(':').expect("method suffix");
            assert!(!segment.contains(['/', '?', '#', ' ', '\\']), "{built:?}");
            assert_eq!(percent_decode(segment.as_bytes()).as_ref(), name.as_bytes());
        }
    }
});
