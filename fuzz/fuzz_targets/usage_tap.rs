//! The OpenAI usage tap against a full sonic-rs parse, on stream events the fuzzer formats:
//! compact, Python-spaced or with spaces and tabs anywhere between tokens, members in any
//! order, key letters written as `\u00XX` escapes, content text that spells usage members.
//! `Observe` relays the bytes untouched; `Hide` drops exactly the usage-only chunks and the
//! top-level `"usage": null` members and changes nothing else; both read the last usage object.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rotor::codec::DEFAULT_MAX_DEPTH as D;
use rotor::providers::transform::ResponseTransform;
use rotor::usage::openai::{Mode, OpenAiUsageTap};
use sonic_rs::{JsonContainerTrait, JsonValueMutTrait, JsonValueTrait, Value};

/// Bytes the fuzzer hands out one at a time (zeros once they run out).
struct Draw<'a>(&'a [u8]);

impl Draw<'_> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }
    /// Whitespace between two tokens in the event's style (never CR or LF: one `data:` line).
    fn gap(&mut self, style: u8, after: u8) -> &'static str {
        match style {
            0 => "",
            1 if after == b':' || after == b',' => " ",
            1 => "",
            _ => ["", " ", "\t", "  ", " \t "][usize::from(self.byte() % 5)],
        }
    }
}

fn key(name: &str, escape: u8) -> String {
    let mut out = String::from("\"");
    for (i, c) in name.chars().enumerate() {
        match escape & (1 << (i % 8)) {
            0 => out.push(c),
            _ => out.push_str(&format!("\\u{:04x}", c as u32)),
        }
    }
    out + "\""
}

/// One event's JSON text, built from the fuzzer's bytes.
fn event(d: &mut Draw) -> String {
    let (flags, order, escape) = (d.byte(), d.byte(), d.byte());
    let style = (flags >> 4) % 3;
    let n = usize::from(d.byte() % 24);
    let text: Vec<u8> = (0..n).map(|_| d.byte()).collect();
    let content = sonic_rs::to_string(&String::from_utf8_lossy(&text)).unwrap_or_default();
    let (p, c, r) = (d.byte(), d.byte(), d.byte());
    let usage = match flags % 4 {
        0 => None,
        1 => Some("null".to_owned()),
        2 => Some(format!(r#"{{"prompt_tokens":{p},"completion_tokens":{c}}}"#)),
        _ => Some(format!(
            r#"{{"completion_tokens_details":{{"reasoning_tokens":{r}}},"completion_tokens":{c},"prompt_tokens":{p},"usage":null}}"#
        )),
    };
    let choices = match (flags >> 2) % 4 {
        0 => None,
        1 => Some("[]".to_owned()),
        _ => Some(format!(r#"[{{"delta":{{"content":{content}}},"usage":null}}]"#)),
    };
    let mut members: Vec<(&str, String)> = vec![("id", content.clone())];
    members.extend(choices.map(|v| ("choices", v)));
    members.extend(usage.map(|v| ("usage", v)));
    let len = members.len();
    members.rotate_left(usize::from(order) % len);
    if order & 0x80 != 0 {
        members.reverse();
    }
    let mut json = String::from("{");
    for (i, (name, value)) in members.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(d.gap(style, if i > 0 { b',' } else { b'{' }));
        json.push_str(&key(name, escape));
        json.push_str(d.gap(style, b'"'));
        json.push(':');
        json.push_str(d.gap(style, b':'));
        json.push_str(&respace(value, style, d));
    }
    json.push_str(d.gap(style, b'"'));
    json.push('}');
    json
}

/// `value` (compact JSON) with the style's whitespace after every `:` and `,` outside strings.
fn respace(value: &str, style: u8, d: &mut Draw) -> String {
    let (mut out, mut in_string, mut escaped) = (String::new(), false, false);
    for ch in value.chars() {
        out.push(ch);
        if in_string {
            (escaped, in_string) = (!escaped && ch == '\\', escaped || ch != '"');
        } else if ch == '"' {
            in_string = true;
        } else if ch == ':' || ch == ',' {
            out.push_str(d.gap(style, ch as u8));
        }
    }
    out
}

fn run(mode: Mode, stream: &[u8], step: usize) -> (Vec<u8>, rotor::usage::Usage) {
    let mut tap = OpenAiUsageTap::new(mode, D);
    let mut out = Vec::new();
    for piece in stream.chunks(step.max(1)) {
        tap.piece(Bytes::copy_from_slice(piece)).iter().for_each(|b| out.extend_from_slice(b));
    }
    tap.end().iter().for_each(|b| out.extend_from_slice(b));
    (out, tap.usage())
}

fuzz_target!(|input: &[u8]| {
    let mut d = Draw(input);
    let step = usize::from(d.byte()) + 1;
    let (mut stream, mut kept, mut want) = (String::new(), Vec::<Value>::new(), (0, 0, 0, false));
    for _ in 0..1 + d.byte() % 4 {
        let json = event(&mut d);
        let mut v: Value = sonic_rs::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
        stream.push_str(&format!("data: {json}\n\n"));
        let n = |v: &Value, path: &[&str]| path.iter().fold(Some(v), |v, k| v?.get(*k)).and_then(|v| v.as_u64());
        if v["usage"].is_object() {
            let u = &v["usage"];
            let r = n(u, &["completion_tokens_details", "reasoning_tokens"]).unwrap_or(0);
            want = (n(u, &["prompt_tokens"]).unwrap_or(0), n(u, &["completion_tokens"]).unwrap_or(0), r, true);
            if v["choices"].as_array().is_none_or(|c| c.is_empty()) {
                continue;
            }
        }
        if v["usage"].is_null() {
            v.as_object_mut().map(|o| o.remove(&"usage"));
        }
        kept.push(v);
    }
    stream.push_str("data: [DONE]\n\n");
    let (out, usage) = run(Mode::Observe, stream.as_bytes(), step);
    assert_eq!(out, stream.as_bytes());
    assert_eq!((usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens, usage.reported), want);
    let (out, usage) = run(Mode::Hide, stream.as_bytes(), step);
    assert_eq!((usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens, usage.reported), want);
    let text = String::from_utf8(out).expect("UTF-8");
    let got: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| sonic_rs::from_str(data).unwrap_or_else(|e| panic!("{data}: {e}")))
        .collect();
    assert_eq!(got, kept, "{stream}\n=>\n{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
});
