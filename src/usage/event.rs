//! What one OpenAI stream event (or whole body) says about usage, read from its top-level
//! members however the upstream formatted them: spaces after `:` and `,` (Python servers), any
//! key order, keys spelled with `\u` escapes, `usage` text inside string values.
//!
//! Invariant: the answer equals a full JSON parse's. Two byte checks decide the common cases
//! without parsing: rotor's compact chunk ending in `,"usage":null}` whose only `"usage"` is that
//! member, and an event with no `"usage"` and no `\u00` escape (the only escape that can spell a
//! letter of `usage`), which has no usage member. Everything else is read in one pass by
//! `codec::scan`'s reader when it is plain (whatever that reader accepts, sonic-rs reads the
//! same), else walked with `sonic_rs::to_object_iter` (values skipped, no DOM), after the depth
//! bound.

use std::ops::Range;

use sonic_rs::JsonValueTrait;

use super::needle::{LETTER_ESCAPE, USAGE};
use super::openai::{counted, wire_usage};
use super::Usage;
use crate::codec::depth::check_depth;
use crate::codec::scan::{usage_object, usage_object_quick, Cursor};

/// The compact tail of a chunk asked for with `include_usage`.
pub(super) const COMPACT_NULL_TAIL: &[u8] = b",\"usage\":null}";

/// The usage facts of one event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct EventUsage {
    /// The top-level `usage` object.
    pub usage: Option<Usage>,
    /// A usage chunk whose top-level `choices` is `[]` or absent: what `include_usage` adds.
    pub usage_only: bool,
    /// Bytes of a top-level `"usage": null` member with one separating comma: removing them
    /// leaves valid JSON with the other members as they were.
    pub null_member: Option<Range<usize>>,
}

/// The usage facts of `data`, one JSON object. Not an object, invalid JSON or nesting deeper
/// than `max_depth`: no facts (the bytes then pass as they came).
pub(crate) fn event_usage(data: &[u8], max_depth: usize) -> EventUsage {
    match USAGE.find(data) {
        Some(first) if first + COMPACT_NULL_TAIL.len() == data.len() + 1 && data.ends_with(COMPACT_NULL_TAIL) => {
            EventUsage {
                null_member: Some(first - 1..data.len() - 1),
                ..EventUsage::default()
            }
        }
        None if LETTER_ESCAPE.find(data).is_none() => EventUsage::default(),
        _ => read_plain(data, max_depth)
            .or_else(|| walk(data, max_depth))
            .unwrap_or_default(),
    }
}

/// `walk` for the plain event (rotor's usage chunk, `{"id":...,"choices":[],"usage":{...}}`),
/// in one pass of `codec::scan`'s reader instead of a depth scan, a sonic-rs walk and a serde
/// parse of the usage (~4 k instructions, a third of a short stream's cost: callgrind, issue
/// 18). `None` = not decided here, and `walk` decides: anything outside the reader's subset
/// (an escaped key, an exponent, bytes after the object), a repeated `usage` or `choices`, a
/// `usage` that is neither an object nor null, one serde would read otherwise.
fn read_plain(data: &[u8], max_depth: usize) -> Option<EventUsage> {
    let mut c = Cursor::new(data, max_depth);
    c.open_object()?;
    let open = c.at() - 1;
    let mut out = EventUsage::default();
    let (mut saw_usage, mut saw_choices, mut choices_empty) = (false, false, true);
    let mut prev_end = None;
    if !c.take(b'}') {
        loop {
            let key = c.chunk_key()?;
            c.ws();
            let start = c.at();
            match key {
                b"usage" if std::mem::replace(&mut saw_usage, true) => return None,
                b"usage" => match c.literal() {
                    Some(None) => {
                        let end = c.at();
                        out.null_member = Some(match prev_end {
                            Some(prev) => prev..end,
                            None => open + 1..after_comma(data, end),
                        });
                    }
                    Some(Some(_)) => return None,
                    None => {
                        let counts = usage_object_quick(&mut c).or_else(|| usage_object(&mut c));
                        out.usage = Some(counted(counts?));
                    }
                },
                b"choices" if std::mem::replace(&mut saw_choices, true) => return None,
                b"choices" => {
                    c.skip()?;
                    choices_empty = is_empty_array(data.get(start..c.at())?);
                }
                _ => c.skip()?,
            }
            prev_end = Some(c.at());
            if !c.take(b',') {
                break;
            }
        }
        c.eat(b'}')?;
    }
    c.finish()?;
    out.usage_only = out.usage.is_some() && choices_empty;
    Some(out)
}

/// The full reading: every top-level member, in order.
fn walk(data: &[u8], max_depth: usize) -> Option<EventUsage> {
    check_depth(data, max_depth).ok()?;
    let base = data.as_ptr() as usize;
    let open = data.iter().position(|&b| !is_ws(b))?;
    let mut out = EventUsage::default();
    let mut saw_usage = false;
    let mut choices_empty = true;
    let mut prev_end: Option<usize> = None;
    for entry in sonic_rs::to_object_iter(data) {
        let (key, value) = entry.ok()?;
        let raw = value.as_raw_str();
        let start = (raw.as_ptr() as usize).wrapping_sub(base);
        let end = start.wrapping_add(raw.len());
        data.get(start..end)?;
        match &*key {
            // Parsers disagree on which duplicate wins: read neither.
            "usage" if saw_usage => return None,
            "usage" => {
                saw_usage = true;
                if value.is_null() {
                    out.null_member = Some(match prev_end {
                        Some(prev) => prev..end,
                        None => open + 1..after_comma(data, end),
                    });
                } else if value.is_object() {
                    out.usage = wire_usage(raw.as_bytes());
                }
            }
            "choices" => choices_empty = is_empty_array(raw.as_bytes()),
            _ => {}
        }
        prev_end = Some(end);
    }
    out.usage_only = out.usage.is_some() && choices_empty;
    Some(out)
}

/// Past the whitespace, the comma and the whitespace after `end` (the first member's value), or
/// `end` itself when the object closes there.
fn after_comma(data: &[u8], end: usize) -> usize {
    let rest = data.get(end..).unwrap_or_default();
    let skip = |from: usize| from + rest.iter().skip(from).take_while(|&&b| is_ws(b)).count();
    let at = skip(0);
    if rest.get(at) == Some(&b',') {
        end + skip(at + 1)
    } else {
        end
    }
}

/// `[]` with any whitespace inside.
fn is_empty_array(raw: &[u8]) -> bool {
    let inner = raw.strip_prefix(b"[").and_then(|r| r.strip_suffix(b"]"));
    inner.is_some_and(|inner| inner.iter().all(|&b| is_ws(b)))
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::DEFAULT_MAX_DEPTH as D;

    fn without(data: &str) -> String {
        let facts = event_usage(data.as_bytes(), D);
        let mut out = data.to_owned();
        if let Some(span) = facts.null_member {
            out.replace_range(span, "");
        }
        out
    }

    #[test]
    fn null_usage_is_found_in_any_format_and_removed_cleanly() {
        for (data, want) in [
            (r#"{"a":1,"usage":null}"#, r#"{"a":1}"#),
            (r#"{"a": 1, "usage": null}"#, r#"{"a": 1}"#),
            (r#"{ "usage" : null , "a": 1 }"#, r#"{"a": 1 }"#),
            (r#"{"usage":null}"#, r#"{}"#),
            (r#"{"\u0075sage":null,"a":[1]}"#, r#"{"a":[1]}"#),
            (r#"{"a":{"usage":null},"usage":null}"#, r#"{"a":{"usage":null}}"#),
            (
                r#"{"c":"x,\"usage\":null}","usage": null}"#,
                r#"{"c":"x,\"usage\":null}"}"#,
            ),
        ] {
            assert_eq!(without(data), want, "{data}");
            let facts = event_usage(data.as_bytes(), D);
            assert!(facts.usage.is_none() && !facts.usage_only, "{data}");
        }
        assert_eq!(without(r#"{"a":{"usage":null}}"#), r#"{"a":{"usage":null}}"#);
    }

    #[test]
    fn usage_chunk_is_found_in_any_key_order_and_spacing() {
        for data in [
            r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}"#,
            r#"{"usage": {"completion_tokens": 2, "prompt_tokens": 9}, "choices": [ ]}"#,
            r#"{"id": "c", "usage": {"prompt_tokens": 9, "completion_tokens": 2}}"#,
            r#"{"\u0075\u0073age":{"prompt_tokens":9,"completion_tokens":2},"choices":[]}"#,
        ] {
            let facts = event_usage(data.as_bytes(), D);
            let usage = facts.usage.unwrap_or_else(|| panic!("{data}"));
            assert_eq!((usage.prompt_tokens, usage.completion_tokens), (9, 2), "{data}");
            assert!(facts.usage_only && facts.null_member.is_none(), "{data}");
        }
        let last = r#"{"choices": [{"delta": {}}], "usage": {"prompt_tokens": 1}}"#;
        let facts = event_usage(last.as_bytes(), D);
        assert!(facts.usage.is_some() && !facts.usage_only);
    }

    /// Events `read_plain` decides, each read exactly as `walk` reads it.
    const PLAIN: &[&str] = &[
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"x"}}],"usage":{"prompt_tokens":1,"prompt_tokens_details":{"cached_tokens":3,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":null}}}"#,
        r#"{"usage":null,"id":"c","choices":[{"delta":{}}]}"#,
        r#"{ "usage" : null , "a": 1 }"#,
        r#"{"a":1, "usage": null}"#,
        r#"{"usage":null}"#,
        r#"{"usage": {"completion_tokens": 2, "prompt_tokens": 9}, "choices": [ ]}"#,
        r#"{"usage":{},"choices":[1]}"#,
        r#"{"usage":{"prompt_tokens_details":null,"x":[{"y":"\"usage\""}]}}"#,
        r#"{"c":"x,\"usage\":null}","usage": null}"#,
        r#"{}"#,
        r#"{"choices":[],"model":"mödel"}"#,
    ];

    /// Events left to `walk`.
    const UNDECIDED: &[&str] = &[
        r#"{"\u0075sage":null,"a":[1]}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":5},"usage":{"prompt_tokens":6}}"#,
        r#"{"choices":[],"choices":[1],"usage":{}}"#,
        r#"{"usage":1}"#,
        r#"{"usage":true}"#,
        r#"{"usage":{"prompt_tokens":1.5}}"#,
        r#"{"usage":{"prompt_tokens":null}}"#,
        r#"{"usage":{"prompt_tokens":1,"prompt_tokens":1}}"#,
        r#"{"usage":{"prompt_tokens_details":{"cached_tokens":1,"cached_tokens":2}}}"#,
        r#"{"usage":{"prompt_tokens_details":true}}"#,
        r#"{"usage":null} x"#,
        r#"{"usage":null,}"#,
        r#"{"a":1e3,"usage":null}"#,
        r#"not json "usage""#,
        r#"[{"usage":null}]"#,
    ];

    #[test]
    fn plain_events_are_read_in_one_pass_exactly_as_the_walk_reads_them() {
        for data in PLAIN {
            let fast = read_plain(data.as_bytes(), D);
            assert!(fast.is_some(), "not decided: {data}");
            assert_eq!(fast, walk(data.as_bytes(), D), "{data}");
        }
        for data in UNDECIDED {
            assert_eq!(read_plain(data.as_bytes(), D), None, "decided: {data}");
        }
        // Nesting at the caller's limit is left to `walk` (and its depth bound).
        let nested = br#"{"choices":[{"delta":{}}],"usage":null}"#;
        assert!(read_plain(nested, 5).is_some());
        assert_eq!(read_plain(nested, 4), None);
        assert!(walk(nested, 4).is_some() && walk(nested, 3).is_none());
    }

    /// A random event near the shapes streams carry: members of every kind the two readers
    /// tell apart, in any order, with spacing.
    fn random_event(rng: &mut fastrand::Rng) -> String {
        let ws = |rng: &mut fastrand::Rng| ["", "", "", " ", "\n "][rng.usize(..5)];
        let members = [
            r#""id":"chatcmpl-1""#,
            r#""created":1700000000"#,
            r#""choices":[]"#,
            r#""choices":[ ]"#,
            r#""choices":[{"index":0,"delta":{"content":"tok \"usage\""},"finish_reason":null}]"#,
            r#""usage":null"#,
            r#""usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}"#,
            r#""usage":{"prompt_tokens_details":{"cached_tokens":3},"completion_tokens_details":null}"#,
            r#""usage":{"prompt_tokens":-1}"#,
            r#""usage":7"#,
            r#""\u0075sage":null"#,
            r#""x":[1.5,true,{"a":null}]"#,
            r#""object":"chat.completion.chunk""#,
            r#""model":"gpt-4o-mini""#,
            // Near misses of the names `Cursor::chunk_key` compares as one word.
            r#""ids":"x""#,
            r#""objects":1"#,
            r#""create":2"#,
            r#""choice":[]"#,
            r#""usages":null"#,
            r#""\u0063hoices":[]"#,
        ];
        let mut out = format!("{}{{", ws(rng));
        for i in 0..rng.usize(0..5) {
            if i > 0 {
                out.push_str(&format!("{},{}", ws(rng), ws(rng)));
            }
            let member = members[rng.usize(..members.len())];
            out.push_str(&member.replacen(':', &format!("{}:{}", ws(rng), ws(rng)), 1));
        }
        out.push_str(&format!("{}}}{}", ws(rng), ws(rng)));
        out
    }

    #[test]
    fn random_events_and_their_mutations_are_undecided_or_read_as_the_walk_reads_them() {
        let mut rng = fastrand::Rng::with_seed(18);
        let (mut decided, mut mutated_decided) = (0, 0);
        for _ in 0..20_000 {
            let data = random_event(&mut rng).into_bytes();
            let depth = [2, 3, 4, D][rng.usize(..4)];
            let mut bytes = data.clone();
            crate::codec::mutate_one_byte(&mut rng, &mut bytes, crate::codec::USAGE_MUTATIONS);
            for (input, count) in [(&data, &mut decided), (&bytes, &mut mutated_decided)] {
                if let Some(fast) = read_plain(input, depth) {
                    *count += 1;
                    assert_eq!(Some(fast), walk(input, depth), "{}", String::from_utf8_lossy(input));
                }
            }
        }
        assert!(
            decided > 5_000 && mutated_decided > 1_000,
            "decided {decided}, mutated {mutated_decided}"
        );
    }

    #[test]
    fn text_that_looks_like_usage_is_not_usage() {
        for data in [
            r#"{"choices":[{"delta":{"content":"\"usage\":{\"prompt_tokens\":5}"}}]}"#,
            r#"{"choices":[{"delta":{"usage":{"prompt_tokens":5}}}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":5},"usage":{"prompt_tokens":6}}"#,
            r#"not json "usage""#,
        ] {
            assert_eq!(event_usage(data.as_bytes(), D), EventUsage::default(), "{data}");
        }
    }
}
