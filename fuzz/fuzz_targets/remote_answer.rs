//! The remote config fetch's answer framing (`config::remote::answer_body`) on arbitrary bytes
//! from a config server: never panics, a body found before the close is the same body at the
//! close, and a body is never longer than what was read.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rotor::config::remote::answer_body;

fuzz_target!(|data: &[u8]| {
    let open = answer_body(data, false);
    let closed = answer_body(data, true);
    if let Ok(Some(body)) = &open {
        assert!(body.len() <= data.len());
        assert_eq!(closed.as_ref().ok(), Some(&Some(body.clone())), "close changed a whole body");
    }
    if let Ok(Some(body)) = &closed {
        assert!(body.len() <= data.len());
    }
});
