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

use memchr::memmem::Finder;

use super::needle::{CHOICES, LETTER_ESCAPE, USAGE};
use super::openai::wire_usage;
use super::Usage;
use crate::codec::depth::check_depth;

/// The compact tail of a chunk asked for with `include_usage`.
const COMPACT_NULL_TAIL: &[u8] = b",\"usage\":null}";

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
    event_usage_after(data, 0, max_depth)
}

/// `event_usage` when the first `clean` bytes of `data` are known to hold neither `"usage"` nor
/// `\u00` (`CleanFront`): both are searched for only from where a match could still start.
/// The same answer as `event_usage` for such data.
pub(crate) fn event_usage_after(data: &[u8], clean: usize, max_depth: usize) -> EventUsage {
    match find_from(&USAGE, data, clean) {
        Some(first) if first + COMPACT_NULL_TAIL.len() == data.len() + 1 && data.ends_with(COMPACT_NULL_TAIL) => {
            EventUsage {
                null_member: Some(first - 1..data.len() - 1),
                ..EventUsage::default()
            }
        }
        None if find_from(&LETTER_ESCAPE, data, clean).is_none() => EventUsage::default(),
        _ => walk(data, max_depth).unwrap_or_default(),
    }
}

/// The first match of `needle` in `data` whose first `clean` bytes hold none.
fn find_from(needle: &Finder<'static>, data: &[u8], clean: usize) -> Option<usize> {
    let from = clean.saturating_sub(needle.needle().len() - 1).min(data.len());
    needle.find(data.get(from..)?).map(|at| at + from)
}

/// Shortest and longest front `CleanFront` keeps (a shorter one saves little and would stop
/// the learning).
const MIN_FRONT: usize = 8;
const MAX_FRONT: usize = 512;
/// Times one stream's front is learnt again after an event that does not start with it.
const MAX_LEARNS: u8 = 4;

/// The front a stream repeats in every event (`{"id":...,"object":...,"created":...,"model":...,`
/// up to `"choices"`), once checked to hold neither `"usage"` nor `\u00`: an event that starts
/// with it (one compare) is searched for those only after it. Issue 18: the `"usage"` search
/// over whole events was ~190 instructions per streamed OpenAI event, half of it over this
/// front. Bounded: at most `MAX_FRONT` bytes, learnt at most `MAX_LEARNS` times per stream.
#[derive(Debug, Default)]
pub(crate) struct CleanFront {
    bytes: Vec<u8>,
    learns: u8,
}

impl CleanFront {
    /// How many bytes at the front of `data` hold neither `"usage"` nor `\u00` (0: unknown).
    pub(crate) fn clean_len(&mut self, data: &[u8]) -> usize {
        if !self.bytes.is_empty() && data.starts_with(&self.bytes) {
            return self.bytes.len();
        }
        if self.learns >= MAX_LEARNS {
            return 0;
        }
        self.learns += 1;
        self.bytes.clear();
        let front = CHOICES.find(data).and_then(|end| data.get(..end)).unwrap_or_default();
        if (MIN_FRONT..=MAX_FRONT).contains(&front.len())
            && USAGE.find(front).is_none()
            && LETTER_ESCAPE.find(front).is_none()
        {
            self.bytes.extend_from_slice(front);
        }
        self.bytes.len()
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

    /// The longest front of `data` that holds neither `"usage"` nor `\u00`.
    fn longest_clean(data: &[u8]) -> usize {
        let end = |needle: &Finder<'static>| {
            needle
                .find(data)
                .map_or(data.len(), |at| at + needle.needle().len() - 1)
        };
        end(&USAGE).min(end(&LETTER_ESCAPE))
    }

    const EVENTS: [&str; 9] = [
        r#"{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"delta":{"role":"assistant"}}],"usage":null}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"delta":{"content":"usage"}}],"usage":null}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"delta":{"content":"\"usage\""}}],"usage":null}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[],"usage":null,"usage":null}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[],"\u0075sage":{"prompt_tokens":1},"usage":null}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","model":"m","usage":{"prompt_tokens":3},"choices":[]}"#,
        r#"{"usage":null,"id":"c1","choices":[{"delta":{}}]}"#,
        r#"{"choices":[{"delta":{"content":"x"}}],"id":"c1","usage":null}"#,
    ];

    /// Differential: searching only after a clean front gives the whole search's answer, for
    /// every front length that is clean, on events with usage anywhere (or spelled by escapes).
    #[test]
    fn search_after_a_clean_front_equals_the_whole_search() {
        for data in EVENTS {
            let data = data.as_bytes();
            let whole = event_usage(data, D);
            for clean in 0..=longest_clean(data) {
                assert_eq!(
                    event_usage_after(data, clean, D),
                    whole,
                    "{} clean {clean}",
                    String::from_utf8_lossy(data)
                );
            }
        }
    }

    /// The front is learnt from the first event, reused while events start with it, never
    /// claims a byte that holds `"usage"` or `\u00`, and is learnt again (a bounded number of
    /// times) when the events change.
    #[test]
    fn clean_front_is_learnt_reused_and_never_too_long() {
        let mut front = CleanFront::default();
        let prefix = r#"{"id":"c1","object":"chat.completion.chunk","model":"m","#.len();
        for (i, data) in EVENTS.iter().chain(EVENTS.iter()).map(|d| d.as_bytes()).enumerate() {
            let clean = front.clean_len(data);
            assert!(clean <= longest_clean(data), "{}", String::from_utf8_lossy(data));
            if i < 6 {
                assert_eq!(clean, prefix, "{i}: the stream's common front");
            }
        }
        let mut front = CleanFront::default();
        assert_eq!(
            front.clean_len(EVENTS[7].as_bytes()),
            0,
            "usage before choices: no front"
        );
        assert_eq!(front.clean_len(EVENTS[8].as_bytes()), 0, "choices first: no front");
        assert_eq!(front.clean_len(EVENTS[0].as_bytes()), prefix, "learnt later");
        let mut front = CleanFront::default();
        for round in 0..10 {
            let data = format!(r#"{{"id":"c{round}","choices":[]}}"#);
            let clean = front.clean_len(data.as_bytes());
            assert_eq!(clean, if round < usize::from(MAX_LEARNS) { 11 } else { 0 }, "{round}");
        }
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
