//! What one OpenAI stream event (or whole body) says about usage, read from its top-level
//! members however the upstream formatted them: spaces after `:` and `,` (Python servers), any
//! key order, keys spelled with `\u` escapes, `usage` text inside string values.
//!
//! Invariant: the answer equals a full JSON parse's. Two byte checks decide the common cases
//! without parsing: rotor's compact chunk ending in `,"usage":null}` whose only `"usage"` is that
//! member, and an event with no `"usage"` and no `\u00` escape (the only escape that can spell a
//! letter of `usage`), which has no usage member. Everything else is walked with
//! `sonic_rs::to_object_iter` (values skipped, no DOM), after the depth bound.

use std::ops::Range;

use sonic_rs::JsonValueTrait;

use super::needle::{LETTER_ESCAPE, USAGE};
use super::openai::wire_usage;
use super::Usage;
use crate::codec::depth::check_depth;

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
        _ => walk(data, max_depth).unwrap_or_default(),
    }
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
