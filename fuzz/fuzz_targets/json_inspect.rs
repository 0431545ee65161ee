//! Strict inspection never panics; when it yields a model span, splicing a fixed name (with
//! characters that need escaping) re-inspects Ok with that name and the same stream flag.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rotor::codec::{inspect_body, splice_model};

const NEW: &str = "alias/\"q\"\\\n\u{1}é";

fuzz_target!(|body: &[u8]| {
    let Ok(found) = inspect_body(body) else { return };
    let Some(span) = found.model_span else { return };
    let out = splice_model(body, span, NEW);
    let again = inspect_body(&out).expect("spliced body must stay valid");
    assert_eq!(again.model.as_deref(), Some(NEW));
    assert_eq!(again.stream, found.stream);
});
