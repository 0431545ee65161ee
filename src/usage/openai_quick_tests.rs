//! `usage_of` against the path it took before the quick tail reader (`usage_tail_quick`):
//! random answers and their one-byte mutations get exactly the usage they got before.

use super::*;
use crate::codec::DEFAULT_MAX_DEPTH as D;
use crate::usage::needle::LETTER_ESCAPE;

/// `usage_of` as it read bodies before the quick tail reader (`usage_tail_quick`).
fn usage_of_before(body: &[u8], max_depth: usize) -> Option<Usage> {
    let literal = USAGE.find(body);
    let escape = memchr::memchr(b'\\', body).is_some() && LETTER_ESCAPE.find(body).is_some();
    if literal.is_none() && !escape {
        return None;
    }
    let tail_read = |first: usize| {
        let tail = body.get(first..)?;
        if tail.len() > MAX_USAGE_TAIL || USAGE.find(tail.get(7..)?).is_some() {
            return None;
        }
        let before = body.get(..first)?.iter().rev().find(|b| !b.is_ascii_whitespace())?;
        if !matches!(before, b'{' | b',') {
            return None;
        }
        if let Some(c) = crate::codec::scan::usage_tail(tail, max_depth) {
            return Some((c.prompt, c.completion, c.cached, c.reasoning));
        }
        let mut object = b"{".to_vec();
        object.extend_from_slice(tail);
        parse_usage(&object, max_depth).map(|u| {
            (
                u.prompt_tokens,
                u.completion_tokens,
                u.cached_tokens,
                u.reasoning_tokens,
            )
        })
    };
    match literal.filter(|_| !escape).and_then(tail_read) {
        Some((prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens)) => Some(Usage {
            prompt_tokens,
            completion_tokens,
            cached_tokens,
            reasoning_tokens,
            reported: true,
            partial: false,
        }),
        None => parse_usage(body, max_depth),
    }
}

#[test]
fn random_answers_and_their_mutations_get_the_usage_they_got_before_the_quick_reader() {
    let mut rng = fastrand::Rng::with_seed(1802);
    let heads = [
        r#"{"id":"c","choices":[{"message":{"content":"hi"}}],"#,
        r#"{"choices":[{"message":{"content":"a \"usage\": {}"}}], "#,
        r#"{"d":{"usage":{"prompt_tokens":5}},"#,
        r#"{"usage":{"prompt_tokens":1},"#,
        r#"{"x":,"#,
        r#"{"x":"\u0075sage","#,
        "{\n  ",
    ];
    let members = [
        r#""prompt_tokens":3"#,
        r#""completion_tokens": 4"#,
        r#""total_tokens":7"#,
        r#""usage":1"#,
        r#""prompt_tokens_details":{"cached_tokens":2}"#,
        r#""completion_tokens_details":{"reasoning_tokens":null}"#,
        r#""x":"s""#,
        r#""prompt_tokens":1.5"#,
    ];
    let ends = [
        "}",
        " }\n",
        r#","system_fingerprint":"fp"}"#,
        r#","usage":null}"#,
        "}}",
        "",
    ];
    let mut read = 0;
    for _ in 0..20_000 {
        let mut body = heads[rng.usize(..heads.len())].to_owned();
        body.push_str(r#""usage":{"#);
        for i in 0..rng.usize(0..5) {
            if i > 0 {
                body.push(',');
            }
            body.push_str(members[rng.usize(..members.len())]);
        }
        body.push('}');
        body.push_str(ends[rng.usize(..ends.len())]);
        let depth = [3, 4, D][rng.usize(..3)];
        let now = usage_of(body.as_bytes(), depth);
        assert_eq!(now, usage_of_before(body.as_bytes(), depth), "{body}");
        read += usize::from(now.is_some());
        let mut bytes = body.into_bytes();
        let at = rng.usize(..bytes.len());
        bytes[at] = b"{}[],:\"\\ 0u"[rng.usize(..11)];
        assert_eq!(
            usage_of(&bytes, depth),
            usage_of_before(&bytes, depth),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
    }
    assert!(read > 2_000, "read {read}");
}
