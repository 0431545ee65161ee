//! Unit tests for strict inspection, splicing and multipart fields.

use super::*;

use crate::codec::depth::DEFAULT_MAX_DEPTH;

fn inspect(s: &str) -> Result<Inspection, InspectError> {
    inspect_body(s.as_bytes(), DEFAULT_MAX_DEPTH)
}

#[test]
fn plain_body() {
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let i = inspect(body).unwrap();
    assert_eq!(i.model.as_deref(), Some("gpt-4o"));
    assert_eq!(body.get(i.model_span.clone().unwrap()), Some("\"gpt-4o\""));
    assert!(i.stream);
}

#[test]
fn absent_and_null() {
    assert_eq!(inspect("{}").unwrap(), Inspection::default());
    assert_eq!(inspect(" \n{ } \r\n\t").unwrap(), Inspection::default());
    let i = inspect(r#"{"stream":null,"model":"m"}"#).unwrap();
    assert!(!i.stream);
    assert_eq!(i.model.as_deref(), Some("m"));
}

#[test]
fn escaped_model_value() {
    let i = inspect(r#"{"model":"gpt\u002d4"}"#).unwrap();
    assert_eq!(i.model.as_deref(), Some("gpt-4"));
    assert_eq!(i.model_span, Some(9..21));
}

#[test]
fn escaped_key_counts_as_model() {
    assert_eq!(inspect(r#"{"mod\u0065l":"a"}"#).unwrap().model.as_deref(), Some("a"));
    assert!(inspect(r#"{"model":"a","mod\u0065l":"b"}"#).is_err());
    assert!(inspect(r#"{"model":"a","model":"a"}"#).is_err());
    assert!(inspect(r#"{"stream":true,"str\u0065am":false}"#).is_err());
}

#[test]
fn nested_model_keys_ignored() {
    let body = r#"{"messages":[{"model":"x","stream":1}],"meta":{"model":"y"},"model":"z"}"#;
    let i = inspect(body).unwrap();
    assert_eq!(i.model.as_deref(), Some("z"));
    assert!(!i.stream);
}

#[test]
fn types_enforced() {
    assert!(inspect(r#"{"model":4}"#).is_err());
    assert!(inspect(r#"{"model":null}"#).is_err());
    assert!(inspect(r#"{"stream":"true"}"#).is_err());
    assert!(inspect(r#"{"stream":1}"#).is_err());
}

#[test]
fn trailing_garbage_rejected() {
    assert!(inspect(r#"{"model":"a"} x"#).is_err());
    assert!(inspect(r#"{"model":"a"}{}"#).is_err());
    assert!(inspect(r#"{} {}"#).is_err());
    assert!(inspect("{}\0").is_err());
}

#[test]
fn invalid_nested_values_rejected() {
    assert!(inspect(r#"{"model":"a","messages":[1,2,}"#).is_err());
    assert!(inspect(r#"{"model":"a","x":[1,2]]}"#).is_err());
    assert!(inspect(r#"{"model":"a","x":"a\qb"}"#).is_err());
    assert!(inspect(r#"{"model":"a","x":tru}"#).is_err());
    assert!(inspect("{\"model\":\"a\",\"x\":\"\u{1}\"}").is_err());
    assert!(inspect_body(b"{\"model\":\"\xff\"}", DEFAULT_MAX_DEPTH).is_err());
    assert!(inspect(r#"{"model":"a""#).is_err());
}

#[test]
fn non_object_rejected() {
    for body in ["", " ", "[]", "\"model\"", "null", "1", "[{\"model\":\"a\"}]"] {
        assert!(inspect(body).is_err(), "{body:?}");
    }
}

#[test]
fn error_message_has_no_body_bytes() {
    let e = inspect(r#"{"secret-key-sk-123": oops}"#).unwrap_err();
    assert!(!e.0.contains("sk-123"), "{}", e.0);
}

#[test]
fn splice_round_trip() {
    let body = r#"{ "messages":[{"model":"keep"}], "model" : "gpt\u002d4" ,"stream":true }"#;
    let i = inspect(body).unwrap();
    let span = i.model_span.unwrap();
    let out = splice_model(body.as_bytes(), span.clone(), "provider/\"quoted\"\n\u{1}é");
    let j = inspect_body(&out, DEFAULT_MAX_DEPTH).unwrap();
    assert_eq!(j.model.as_deref(), Some("provider/\"quoted\"\n\u{1}é"));
    assert!(j.stream);
    let new_span = j.model_span.unwrap();
    assert_eq!(out.get(..new_span.start), body.as_bytes().get(..span.start));
    assert_eq!(out.get(new_span.end..), body.as_bytes().get(span.end..));
}

#[test]
fn splice_bad_span_is_identity() {
    assert_eq!(splice_model(b"{}", 1..9, "x"), b"{}".to_vec());
}

const FORM: &[u8] = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n--Xy\r\n--XyZ\r\ncontent-disposition: form-data; name=model\r\n\r\nwhisper-1\r\n--XyZ--\r\n";

#[test]
fn multipart_fields() {
    assert_eq!(
        multipart_field(FORM, b"multipart/form-data; boundary=XyZ", "model"),
        Some(&b"whisper-1"[..])
    );
    assert_eq!(
        multipart_field(FORM, b"Multipart/Form-Data;boundary=\"XyZ\"", "model"),
        Some(&b"whisper-1"[..])
    );
    assert_eq!(
        multipart_field(FORM, b"multipart/form-data; boundary=XyZ", "file"),
        Some(&b"RIFF\r\n--Xy"[..])
    );
    assert_eq!(
        multipart_field(FORM, b"multipart/form-data; boundary=XyZ", "nope"),
        None
    );
    assert_eq!(multipart_field(FORM, b"application/json", "model"), None);
    assert_eq!(multipart_field(FORM, b"multipart/form-data", "model"), None);
    // `filename=` must not be mistaken for `name=`.
    let form = b"--b\r\nContent-Disposition: form-data; filename=\"model\"; name=\"x\"\r\n\r\n1\r\n--b--";
    assert_eq!(multipart_field(form, b"multipart/form-data; boundary=b", "model"), None);
    assert_eq!(
        multipart_field(form, b"multipart/form-data; boundary=b", "x"),
        Some(&b"1"[..])
    );
}

#[test]
fn multipart_with_preamble_and_quoted_boundary_with_space() {
    let form = b"preamble\r\n--a b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ntts-1\r\n--a b--\r\n";
    assert_eq!(
        multipart_field(form, b"multipart/form-data; charset=utf-8; boundary=\"a b\"", "model"),
        Some(&b"tts-1"[..])
    );
    assert_eq!(
        multipart_field(b"--a b\r\n", b"multipart/form-data; boundary=\"a b\"", "model"),
        None
    );
}

/// Runs `f` on a thread with a worker's debug stack: sonic-rs unoptimised needs more than a
/// test thread's 2 MiB for 128 levels (see `runtime::workers`).
fn on_worker_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn nesting_is_bounded_before_parsing() {
    on_worker_stack(nesting_is_bounded);
}

fn nesting_is_bounded() {
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    // The object itself is one level: 127 arrays inside it make 128.
    let at_limit = format!(r#"{{"model":"a","x":{}}}"#, nested(127));
    assert_eq!(inspect(&at_limit).unwrap().model.as_deref(), Some("a"));
    let over = format!(r#"{{"model":"a","x":{}}}"#, nested(128));
    let e = inspect(&over).unwrap_err();
    assert_eq!(e.0, "nests deeper than 128 levels (server.max_json_depth)");
    // Far too deep for any parser's stack: refused by the scan alone.
    for depth in [15_000, 100_000] {
        let body = format!(r#"{{"model":"a","x":{}}}"#, nested(depth));
        assert!(inspect(&body).unwrap_err().0.contains("server.max_json_depth"));
    }
    // The limit is the caller's.
    assert!(inspect_body(at_limit.as_bytes(), 127).is_err());
    assert!(inspect_body(b"{\"model\":\"a\"}", 1).is_ok());
}
