use super::*;

fn seg(raw: &str) -> String {
    let mut out = String::new();
    push_segment(&mut out, raw.as_bytes());
    out
}

#[test]
fn model_names() {
    assert_eq!(check_model_name("gpt-4o-mini"), Ok(()));
    assert_eq!(check_model_name("meta-llama/Llama-3 70b é"), Ok(()));
    assert_eq!(check_model_name(&"m".repeat(MAX_MODEL_NAME_BYTES)), Ok(()));
    assert_eq!(
        check_model_name(&"m".repeat(MAX_MODEL_NAME_BYTES + 1)),
        Err(NameError::TooLong(MAX_MODEL_NAME_BYTES + 1))
    );
    for bad in ["a\r\nb", "a\nb", "nul\0", "tab\t", "del\u{7f}", "c1\u{85}"] {
        assert_eq!(check_model_name(bad), Err(NameError::Control), "{bad:?}");
    }
}

#[test]
fn segments_are_encoded_whole() {
    assert_eq!(seg("gemini-1.5-flash"), "gemini-1.5-flash");
    assert_eq!(seg("llama3:8b@v1_x~"), "llama3:8b@v1_x~");
    assert_eq!(seg("../a/b?c#d%e f\\"), "..%2Fa%2Fb%3Fc%23d%25e%20f%5C");
    assert_eq!(seg("a\r\nb\0"), "a%0D%0Ab%00");
    assert_eq!(seg("é"), "%C3%A9");
    // Round trip: decoding gives the name back.
    let name = "x/../?#%2e\u{1}é ;=+";
    assert_eq!(percent_decode(seg(name).as_bytes()).as_ref(), name.as_bytes());
}

#[test]
fn paths_inside_the_base_pass() {
    for ok in [
        "/files/file-abc",
        "/files/file-abc/content",
        "/models/meta-llama%2FLlama-3",
        "/models/ft:gpt-4o:org::id",
        "/files",
        "/",
        "",
        "/a..b/...",
        "/batches?after=batch_..x&limit=2",
        "/models/gemini-x:streamGenerateContent?alt=sse",
        "/x//y",
    ] {
        assert_eq!(check_path(ok), Ok(()), "{ok}");
    }
}

#[test]
fn paths_that_climb_out_are_refused() {
    for bad in [
        "/../../x",
        "/..",
        "/%2e%2e/x",
        "/%2E%2E/x",
        "/..%2fx",
        "/..%2Fx",
        "/files/..%2f..%2fadmin",
        "/files/..%5c..%5cadmin",
        "/files/../../admin",
        "/..;/admin",
        "/%252e%252e/x",
        "/.%2e/x",
        "/files/x/../../../y",
    ] {
        assert_eq!(check_path(bad), Err(PathError::Escapes), "{bad}");
    }
}

#[test]
fn dot_segments_inside_are_refused_too() {
    for bad in [
        "/files/./file-abc",
        "/files/x/../file-abc",
        "/files/%2e/x",
        "/files/a%2f..%2fb",
        "/models/..%2F..:generateContent",
        "/files/.;x/y",
    ] {
        assert_eq!(check_path(bad), Err(PathError::DotSegment), "{bad}");
    }
}

#[test]
fn encoded_controls_are_refused() {
    for bad in ["/files/a%00", "/files/a%0d%0aHost:x", "/files/%7f", "/files/%2500"] {
        assert_eq!(check_path(bad), Err(PathError::Control), "{bad}");
    }
}

#[test]
fn targets() {
    assert!(target_is_clean(b"/v1/files/file-abc?x=1"));
    for bad in [&b"/a b"[..], b"/a\r\n", b"/a\0", b"/a\t", b"/a\x7f"] {
        assert!(!target_is_clean(bad), "{bad:?}");
    }
}

#[test]
fn the_quick_pass_for_plain_paths_judges_as_the_segment_walk_does() {
    let mut rng = fastrand::Rng::with_seed(18);
    let parts = [
        "/", "a", "chat", ".", "..", "%2e", "%2f", "%5c", "%00", "%", "\\", "?", ";x", "\u{1}", "\u{7f}", "é",
    ];
    for _ in 0..20_000 {
        let path: String = (0..rng.usize(0..8)).map(|_| parts[rng.usize(..parts.len())]).collect();
        let walked = judge(path.split_once('?').map_or(path.as_str(), |(p, _)| p));
        assert_eq!(check_path(&path), walked, "{path:?}");
    }
}

#[test]
fn the_quick_pass_for_printable_names_judges_as_the_character_walk_does() {
    for name in [
        "gpt-4o-mini",
        "",
        " ",
        "~",
        "a\u{7f}",
        "a\u{1f}",
        "é",
        "a\u{85}b",
        "\u{a0}",
        "中文",
    ] {
        let control = name.chars().any(char::is_control);
        assert_eq!(check_model_name(name).is_err(), control, "{name:?}");
    }
}
