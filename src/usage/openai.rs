//! Usage from OpenAI-shaped answers. Non-streamed: the top-level `usage` object, read without
//! parsing the rest of the body. Streamed answers go through `usage::openai_stream`'s tap; the
//! request asks the upstream for stream usage here (`inject_include_usage`).
//! Invariant: JSON nesting deeper than `server.max_json_depth` is never parsed; the usage is read
//! only when the bytes that can hold it, the tail from the `usage` member on, nest no deeper.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use smallvec::SmallVec;

use super::needle::{first_mention, Mention, USAGE};
use super::Usage;
use crate::codec::depth::check_depth;
use crate::codec::scan::UsageCounts;

/// The one top-level member read from a whole OpenAI body.
#[derive(Deserialize)]
struct WireBody {
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize, Default)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

/// The top-level `usage` of an OpenAI JSON body (chat, completions, embeddings), if present
/// and the body nests no deeper than `max_depth`.
pub fn usage_of(body: &[u8], max_depth: usize) -> Option<Usage> {
    match first_mention(body) {
        // The tail read trusts the one literal `"usage"`; a `\u00XX` escape could spell another key.
        Mention::Usage(first) => tail_usage(body, first, max_depth).or_else(|| parse_usage(body, max_depth)),
        Mention::Escape => parse_usage(body, max_depth),
        Mention::None => None,
    }
}

/// Longest tail `tail_usage` copies; a body with `usage` earlier than this from its end is read
/// whole.
const MAX_USAGE_TAIL: usize = 1024;

/// The usage read from the end of the body only. OpenAI answers put `usage` at or near the end
/// (`...,"usage":{...},"system_fingerprint":"fp_1"}`), so parsing the whole body to skip its
/// `choices` to reach it cost 4.6 k instructions per request (callgrind, issue 18).
/// When `"usage"` occurs once and follows `{` or `,` it opens a member (an escaped quote would
/// follow `\`; a closing one leaves `usage"` outside a string, which is no JSON). Then `{`
/// plus the bytes from there is a valid JSON object exactly when the member is top-level: one
/// nested deeper is followed by more closers than that one `{` opens. Parsing that copy also
/// validates every member after `usage`. `None` = not decided here (no usage, a second
/// mention, a nested or malformed tail): the caller reads the whole body.
fn tail_usage(body: &[u8], first: usize, max_depth: usize) -> Option<Usage> {
    let tail = body.get(first..)?;
    if tail.len() > MAX_USAGE_TAIL {
        return None;
    }
    let before = body.get(..first)?.iter().rev().find(|b| !b.is_ascii_whitespace())?;
    if !matches!(before, b'{' | b',') {
        return None;
    }
    // The bytes after this `"usage"` hold no other one and no `\u00` (`usage_of` read the body
    // only up to here). The quick reader tells without a search when it read every byte: its
    // grammar has no `\` and quotes only keys.
    let alone = || first_mention(tail.get(USAGE.needle().len()..).unwrap_or_default()) == Mention::None;
    // The plain tail in one pass, without the copy and serde: its common shape byte by byte,
    // else the general reader.
    let counts = match crate::codec::scan::usage_tail_quick(tail, max_depth) {
        Some((counts, true)) => Some(counts),
        _ if !alone() => return None,
        Some((counts, false)) => Some(counts),
        None => crate::codec::scan::usage_tail(tail, max_depth),
    };
    if let Some(counts) = counts {
        return Some(counted(counts));
    }
    let mut object: SmallVec<[u8; MAX_USAGE_TAIL + 1]> = SmallVec::new();
    object.push(b'{');
    object.extend_from_slice(tail);
    parse_usage(&object, max_depth)
}

/// `usage_of` without the `"usage"` pre-check (callers that made it already). One serde pass
/// that skips the other members: on a 277-byte chat answer 4.8 k instructions against 5.8 k for
/// a `get` of the member and a second parse of it (callgrind, issue 7). A body with two `usage`
/// members is refused (no usage) rather than read by whichever a parser prefers.
fn parse_usage(body: &[u8], max_depth: usize) -> Option<Usage> {
    check_depth(body, max_depth).ok()?;
    let wire = sonic_rs::from_slice::<WireBody>(body).ok()?.usage?;
    Some(to_usage(wire))
}

/// One `usage` object (its raw JSON, depth already bounded by the caller).
pub(super) fn wire_usage(raw: &[u8]) -> Option<Usage> {
    sonic_rs::from_slice::<WireUsage>(raw).ok().map(to_usage)
}

/// The usage `codec::scan` read, as serde would have read it.
pub(super) fn counted(counts: UsageCounts) -> Usage {
    Usage {
        prompt_tokens: counts.prompt,
        completion_tokens: counts.completion,
        cached_tokens: counts.cached,
        reasoning_tokens: counts.reasoning,
        reported: true,
        partial: false,
    }
}

fn to_usage(wire: WireUsage) -> Usage {
    Usage {
        prompt_tokens: wire.prompt_tokens,
        completion_tokens: wire.completion_tokens,
        cached_tokens: wire.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0),
        reasoning_tokens: wire
            .completion_tokens_details
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0),
        reported: true,
        partial: false,
    }
}

/// The request body with `stream_options.include_usage = true`; `None` if the body could not be
/// rewritten (it is then sent as it was, and usage may be missing).
/// `has_stream_options` comes from the strict inspection (no second scan of the body). A body
/// nesting deeper than `max_depth` is not parsed (the inspection refuses those anyway).
pub fn inject_include_usage(body: &[u8], has_stream_options: bool, max_depth: usize) -> Option<Bytes> {
    use sonic_rs::JsonValueMutTrait;
    if has_stream_options {
        // Rare: the client sent stream_options without include_usage. Rewrite the object.
        check_depth(body, max_depth).ok()?;
        let mut value: sonic_rs::Value = sonic_rs::from_slice(body).ok()?;
        let options = sonic_rs::json!({"include_usage": true});
        let object = value.as_object_mut()?;
        match object.get_mut(&"stream_options").and_then(|o| o.as_object_mut()) {
            Some(existing) => {
                existing.insert("include_usage", true);
            }
            None => {
                object.insert("stream_options", options);
            }
        }
        return sonic_rs::to_vec(&value).ok().map(Bytes::from);
    }
    // Common case: splice the member in right after the opening brace, bytes otherwise intact.
    let open = body.iter().position(|&b| b == b'{')?;
    let rest = body.get(open + 1..)?;
    let opening = usage_opening(rest);
    let mut out = BytesMut::with_capacity(body.len() + opening.len());
    out.extend_from_slice(body.get(..open)?);
    out.extend_from_slice(opening);
    out.extend_from_slice(rest);
    Some(out.freeze())
}

/// What takes the place of a body's opening `{` to ask for usage: the brace and rotor's
/// member, and a comma when other members follow (`rest`: the body after that brace).
fn usage_opening(rest: &[u8]) -> &'static [u8] {
    const MEMBER: &[u8] = b"{\"stream_options\":{\"include_usage\":true}";
    const MEMBER_THEN_MORE: &[u8] = b"{\"stream_options\":{\"include_usage\":true},";
    let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
    if empty {
        MEMBER
    } else {
        MEMBER_THEN_MORE
    }
}

/// [`inject_include_usage`]'s common case without a copy: a body that opens with `{` (and
/// has no `stream_options`) goes upstream as this prefix, then the body after its `{`.
/// `None` for a body that starts any other way (whitespace first): that one is rewritten.
pub fn include_usage_prefix(body: &[u8]) -> Option<&'static [u8]> {
    body.strip_prefix(b"{").map(usage_opening)
}

pub use super::openai_stream::{Mode, OpenAiUsageTap};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::json::inspect_body;
    use crate::codec::DEFAULT_MAX_DEPTH as D;

    #[test]
    fn include_usage_is_injected_once_and_keeps_the_rest() {
        let body = br#"{"model":"m","stream":true,"messages":[]}"#;
        let out = inject_include_usage(body, false, D).unwrap();
        assert!(inspect_body(&out, D).unwrap().include_usage);
        assert_eq!(inspect_body(&out, D).unwrap().model.as_deref(), Some("m"));
        let with_options = br#"{"model":"m","stream":true,"stream_options":{"include_usage":false}}"#;
        assert!(
            inspect_body(&inject_include_usage(with_options, true, D).unwrap(), D)
                .unwrap()
                .include_usage
        );
        assert!(inject_include_usage(with_options, true, 1).is_none(), "2 levels deep");
    }

    /// The prefix and the rest of the body are, byte for byte, what `inject_include_usage`
    /// writes, for an empty object, a full body and one with whitespace inside; a body that
    /// does not open with `{` has no prefix (it is rewritten instead).
    #[test]
    fn the_usage_prefix_and_the_rest_are_the_injected_body() {
        for body in [
            &br#"{"model":"m","stream":true,"messages":[]}"#[..],
            b"{}",
            b"{ \n }",
            b"{\n  \"model\": \"m\",\n  \"stream\": true\n}",
        ] {
            let prefix = include_usage_prefix(body).unwrap();
            let mut sent = prefix.to_vec();
            sent.extend_from_slice(&body[1..]);
            assert_eq!(sent, inject_include_usage(body, false, D).unwrap().to_vec(), "{body:?}");
            assert!(inspect_body(&sent, D).unwrap().include_usage);
        }
        assert_eq!(include_usage_prefix(b" {}"), None);
        assert_eq!(
            &inject_include_usage(b" {}", false, D).unwrap()[..],
            b" {\"stream_options\":{\"include_usage\":true}}",
            "rewritten, what comes before the brace kept"
        );
        assert_eq!(include_usage_prefix(b""), None);
    }

    #[test]
    fn non_stream_usage_is_read_from_the_body() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"{\"usage\":1}"}}],"usage":{"prompt_tokens":3,"completion_tokens":5}}"#;
        let usage = usage_of(body, D).unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (3, 5));
        // Only the tail from `"usage"` on is parsed: its depth (2) is what counts.
        assert!(usage_of(body, 3).is_some(), "the body is 4 levels deep, the tail 2");
        assert_eq!(usage_of(body, 1), None, "the tail is 2 levels deep");
    }

    #[test]
    fn usage_is_read_only_from_a_top_level_member() {
        let read = |body: &str| usage_of(body.as_bytes(), D).map(|u| (u.prompt_tokens, u.completion_tokens));
        // The common shape: usage near the end, read from the tail.
        let answer = r#"{"id":"c","choices":[{"message":{"content":"a \"usage\": {}"}}],"usage":{"prompt_tokens":3,"completion_tokens":1},"system_fingerprint":"fp"}"#;
        assert_eq!(read(answer), Some((3, 1)));
        assert_eq!(read(r#"{ "usage" : {"prompt_tokens":2} }"#), Some((2, 0)));
        // Nested members are not the answer's usage, at any depth.
        assert_eq!(read(r#"{"data":{"usage":{"prompt_tokens":5}}}"#), None);
        assert_eq!(read(r#"{"data":[{"usage":{"prompt_tokens":5}}],"n":1}"#), None);
        // A key that only ends in usage (an escaped quote before it) is another member.
        assert_eq!(read(r#"{"x\"usage":{"prompt_tokens":9}}"#), None);
        // Two mentions: the whole body decides (a nested one and the real one; true duplicates).
        let nested_and_top = r#"{"d":{"usage":{"prompt_tokens":5}},"usage":{"prompt_tokens":7}}"#;
        assert_eq!(read(nested_and_top), Some((7, 0)));
        assert_eq!(
            read(r#"{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2}}"#),
            None
        );
        // Usage first in a long body: read whole.
        let long = format!(r#"{{"usage":{{"prompt_tokens":4}},"pad":"{}"}}"#, "p".repeat(2000));
        assert_eq!(read(&long), Some((4, 0)));
        // Malformed after the usage member: no usage.
        assert_eq!(read(r#"{"usage":{"prompt_tokens":4},"x":}"#), None);
        // A `usage` key inside the usage object is a second mention: the whole body decides.
        assert_eq!(read(r#"{"usage":{"usage":1,"prompt_tokens":2}}"#), Some((2, 0)));
        assert_eq!(read(r#"{"x":,"usage":{"usage":1,"prompt_tokens":2}}"#), None);
        assert_eq!(
            read(r#"{"x":,"usage":{"prompt_tokens":2}}"#),
            Some((2, 0)),
            "the tail alone"
        );
    }
}

#[cfg(test)]
#[path = "openai_quick_tests.rs"]
mod quick_tests;
