//! Usage from OpenAI-shaped answers, and the transform that carries it through the relay.
//! Non-streamed: the top-level `usage` object, read without parsing the rest of the body.
//! Streamed: the chunk with `usage`. When the client did not ask for usage, rotor asked the
//! upstream for it (`inject_include_usage`) and `Hide` mode removes the usage-only chunk and
//! the `"usage": null` members, so that client sees the stream it asked for. What an event says
//! about usage is read by `usage::event` on any valid JSON formatting, not by byte patterns.
//! Invariant: in `Observe` mode the bytes the client receives are exactly the upstream's.
//! JSON nesting deeper than `server.max_json_depth` is never parsed: the bytes still pass (the
//! same-protocol path relays what it does not need to understand), and the usage is read only
//! when the bytes that can hold it, the tail from the `usage` member on, nest no deeper.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use smallvec::SmallVec;

use super::event::event_usage;
use super::needle::{LETTER_ESCAPE, USAGE};
use super::Usage;
use crate::codec::depth::check_depth;
use crate::codec::sse::SseSplitter;
use crate::providers::transform::{openai_error_event, Emit, ResponseTransform};

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
    // `needle::may_name_usage` with each search made once.
    let literal = USAGE.find(body);
    let escape = memchr::memchr(b'\\', body).is_some() && LETTER_ESCAPE.find(body).is_some();
    if literal.is_none() && !escape {
        return None;
    }
    // The tail read trusts the one literal `"usage"`; a `\u00XX` escape could spell another key.
    literal
        .filter(|_| !escape)
        .and_then(|first| tail_usage(body, first, max_depth))
        .or_else(|| parse_usage(body, max_depth))
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
    let second = || {
        USAGE
            .find(tail.get(USAGE.needle().len()..).unwrap_or_default())
            .is_some()
    };
    // The plain tail in one pass, without the copy and serde: its common shape byte by byte
    // (which can tell there is no second mention without searching), else the general reader.
    let counts = match crate::codec::scan::usage_tail_quick(tail, max_depth) {
        Some((_, false)) | None if second() => return None,
        Some((counts, _)) => Some(counts),
        None => crate::codec::scan::usage_tail(tail, max_depth),
    };
    if let Some(counts) = counts {
        return Some(Usage {
            prompt_tokens: counts.prompt,
            completion_tokens: counts.completion,
            cached_tokens: counts.cached,
            reasoning_tokens: counts.reasoning,
            reported: true,
            partial: false,
        });
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
    let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
    let mut out = BytesMut::with_capacity(body.len() + 40);
    out.extend_from_slice(body.get(..=open)?);
    out.extend_from_slice(b"\"stream_options\":{\"include_usage\":true}");
    if !empty {
        out.extend_from_slice(b",");
    }
    out.extend_from_slice(rest);
    Some(out.freeze())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Pass bytes through untouched; only read usage.
    Observe,
    /// Remove what rotor added to the stream (usage chunk, `"usage":null`).
    Hide,
}

/// OpenAI-to-OpenAI relay with usage accounting.
pub struct OpenAiUsageTap {
    mode: Mode,
    events: SseSplitter,
    usage: Usage,
    /// `server.max_json_depth`: deeper bodies and events are relayed without reading usage.
    max_depth: usize,
}

impl OpenAiUsageTap {
    pub fn new(mode: Mode, max_depth: usize) -> Self {
        OpenAiUsageTap {
            mode,
            events: SseSplitter::new(),
            usage: Usage::default(),
            max_depth,
        }
    }
}

impl ResponseTransform for OpenAiUsageTap {
    fn full(&mut self, status: u16, body: Bytes) -> Bytes {
        if (200..300).contains(&status) {
            if let Some(usage) = usage_of(&body, self.max_depth) {
                self.usage = usage;
            }
        }
        body
    }

    fn piece(&mut self, piece: Bytes) -> Emit {
        let mut out = Emit::new();
        match self.mode {
            Mode::Observe => {
                let mut seen = None;
                let max_depth = self.max_depth;
                self.events.feed(&piece, &mut |event| {
                    if let Some(usage) = event_usage(event.data, max_depth).usage {
                        seen = Some(usage);
                    }
                });
                if let Some(usage) = seen {
                    self.usage = usage;
                }
                out.push(piece);
            }
            Mode::Hide => {
                // Re-framed events are no longer than the piece, but for `data:` lines that
                // gain a space.
                let mut kept = BytesMut::with_capacity(piece.len() + 64);
                let mut seen = None;
                let max_depth = self.max_depth;
                self.events.feed(&piece, &mut |event| {
                    let facts = event_usage(event.data, max_depth);
                    if facts.usage.is_some() {
                        seen = facts.usage;
                    }
                    // The usage-only chunk rotor asked for is read, not relayed.
                    if !facts.usage_only {
                        write_event(event.event, event.data, facts.null_member, &mut kept);
                    }
                });
                if let Some(usage) = seen {
                    self.usage = usage;
                }
                if !kept.is_empty() {
                    out.push(kept.freeze());
                }
            }
        }
        out
    }

    fn end(&mut self) -> Emit {
        let mut out = Emit::new();
        if self.mode == Mode::Hide {
            let mut kept = BytesMut::new();
            let max_depth = self.max_depth;
            self.events.finish(&mut |event| {
                let facts = event_usage(event.data, max_depth);
                write_event(event.event, event.data, facts.null_member, &mut kept)
            });
            if !kept.is_empty() {
                out.push(kept.freeze());
            }
        }
        out
    }

    fn fail(&mut self, message: &str) -> Emit {
        let mut out = self.end();
        out.push(openai_error_event(message));
        out
    }

    fn usage(&self) -> Usage {
        self.usage
    }
}

/// Re-frames one event for the client (`event:` line if any, `data:` line, blank line) without
/// the bytes of `remove` (the `"usage": null` member the injected option adds). OpenAI streams
/// carry only `data:` lines; upstream comments are not relayed (rotor sends its own keepalives).
fn write_event(name: &[u8], data: &[u8], remove: Option<Range<usize>>, out: &mut BytesMut) {
    if !name.is_empty() {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name);
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"data: ");
    match remove.and_then(|span| Some((data.get(..span.start)?, data.get(span.end..)?))) {
        Some((before, after)) => {
            out.extend_from_slice(before);
            out.extend_from_slice(after);
        }
        None => out.extend_from_slice(data),
    }
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::json::inspect_body;
    use crate::codec::DEFAULT_MAX_DEPTH as D;

    const INJECTED: &[u8] = b"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n\
data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11,\
\"prompt_tokens_details\":{\"cached_tokens\":4},\"completion_tokens_details\":{\"reasoning_tokens\":1}}}\n\n\
data: [DONE]\n\n";

    fn run(mode: Mode, pieces: &[&[u8]]) -> (Vec<u8>, Usage) {
        let mut tap = OpenAiUsageTap::new(mode, D);
        let mut out = Vec::new();
        for p in pieces {
            for b in tap.piece(Bytes::copy_from_slice(p)) {
                out.extend_from_slice(&b);
            }
        }
        for b in tap.end() {
            out.extend_from_slice(&b);
        }
        (out, tap.usage())
    }

    #[test]
    fn hide_removes_the_usage_chunk_and_nulls_but_keeps_the_tokens() {
        for cut in 0..INJECTED.len() {
            let (a, b) = INJECTED.split_at(cut);
            let (out, usage) = run(Mode::Hide, &[a, b]);
            let text = String::from_utf8(out).unwrap();
            assert!(!text.contains("usage"), "cut {cut}: {text}");
            assert!(
                text.contains("\"content\":\"hi\"") && text.ends_with("data: [DONE]\n\n"),
                "cut {cut}: {text}"
            );
            assert_eq!((usage.prompt_tokens, usage.completion_tokens), (9, 2));
            assert_eq!((usage.cached_tokens, usage.reasoning_tokens), (4, 1));
            assert!(usage.reported);
        }
    }

    #[test]
    fn hide_removes_only_top_level_null_members_and_leaves_duplicates() {
        let chunk: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"token \\\"usage\\\" up\"},\
\"usage_hint\":1}],\"usage\":null}\n\ndata: {\"choices\": [], \"usage\": null, \"x\": 1}\n\n\
data: {\"usage\":null,\"x\":1,\"usage\":null}\n\n";
        let (out, usage) = run(Mode::Hide, &[chunk]);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "data: {\"choices\":[{\"delta\":{\"content\":\"token \\\"usage\\\" up\"},\"usage_hint\":1}]}\n\n\
             data: {\"choices\": [], \"x\": 1}\n\n\
             data: {\"usage\":null,\"x\":1,\"usage\":null}\n\n"
        );
        assert!(!usage.reported);
    }

    /// Issue 16 item 4: `"usage": null` with a space once kept the usage chunk in the stream.
    #[test]
    fn hide_reads_python_spaced_streams_in_any_key_order() {
        let spaced: &[u8] = b"data: {\"usage\": null, \"choices\": [{\"delta\": {\"content\": \"hi\"}}]}\n\n\
data: {\"id\": \"c\", \"choices\": [{\"delta\": {}}], \"usage\": null}\n\n\
data: {\"usage\": {\"completion_tokens\": 2, \"prompt_tokens\": 9}, \"choices\": []}\n\n\
data: [DONE]\n\n";
        for cut in 0..spaced.len() {
            let (a, b) = spaced.split_at(cut);
            let (out, usage) = run(Mode::Hide, &[a, b]);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "data: {\"choices\": [{\"delta\": {\"content\": \"hi\"}}]}\n\n\
                 data: {\"id\": \"c\", \"choices\": [{\"delta\": {}}]}\n\ndata: [DONE]\n\n",
                "cut {cut}"
            );
            assert_eq!((usage.prompt_tokens, usage.completion_tokens), (9, 2), "cut {cut}");
            let (out, usage) = run(Mode::Observe, &[a, b]);
            assert_eq!((out.as_slice(), usage.prompt_tokens), (spaced, 9), "cut {cut}");
        }
    }

    /// Whole pieces (events read in place by the splitter) give what single bytes give (events
    /// read line by line): comments and names between, spacing, CRLF, the usage chunk mid-piece.
    #[test]
    fn hide_gives_the_same_bytes_whole_or_byte_by_byte() {
        let mixed: &[u8] = b"data: {\"a\":1,\"usage\":null}\n\n: comment\n\ndata: {\"b\":2,\"usage\":null}\n\n\
data:{\"c\":3}\n\ndata: {\"d\":4}\n\nevent: x\ndata: {\"e\":5}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":9}}\n\n\
data: {\"f\":6,\"usage\":null}\r\n\r\ndata: {\"g\":7, \"usage\": null}\n\ndata: [DONE]\n\n";
        let (whole, usage) = run(Mode::Hide, &[mixed]);
        let bytes: Vec<&[u8]> = mixed.chunks(1).collect();
        let (single, _) = run(Mode::Hide, &bytes);
        assert_eq!(
            String::from_utf8(whole.clone()).unwrap(),
            String::from_utf8(single).unwrap()
        );
        assert_eq!(
            String::from_utf8(whole).unwrap(),
            "data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: {\"c\":3}\n\ndata: {\"d\":4}\n\nevent: x\ndata: {\"e\":5}\n\n\
             data: {\"f\":6}\n\ndata: {\"g\":7}\n\ndata: [DONE]\n\n"
        );
        assert_eq!(usage.prompt_tokens, 9);
    }

    #[test]
    fn observe_passes_bytes_untouched() {
        let (out, usage) = run(Mode::Observe, &[&INJECTED[..50], &INJECTED[50..]]);
        assert_eq!(out, INJECTED);
        assert_eq!(usage.prompt_tokens, 9);
    }

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
    fn too_deep_answers_pass_untouched_with_whole_body_usage_read_from_the_tail_only() {
        let deep = |tail: &str| format!(r#"{{"x":{}{}{tail}}}"#, "[".repeat(100_000), "]".repeat(100_000));
        // The usage member and what follows it nest no deeper: read from there.
        let shallow_tail = deep(r#","usage":{"prompt_tokens":3,"completion_tokens":5}"#);
        // A deep value after the usage member: the tail is deep too, nothing is parsed.
        let deep_tail = format!(
            r#"{{"usage":{{"prompt_tokens":3,"completion_tokens":5}},"x":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        for (body, read) in [(shallow_tail, true), (deep_tail, false)] {
            let mut tap = OpenAiUsageTap::new(Mode::Observe, D);
            assert_eq!(tap.full(200, Bytes::from(body.clone())).as_ref(), body.as_bytes());
            assert_eq!(tap.usage().reported, read);
            let stream = format!("data: {body}\n\ndata: [DONE]\n\n");
            for mode in [Mode::Observe, Mode::Hide] {
                let (out, usage) = run(mode, &[stream.as_bytes()]);
                assert_eq!(out, stream.as_bytes(), "{mode:?}");
                // A stream event is depth-checked whole before any read (`usage::event`).
                assert!(!usage.reported, "{mode:?}");
            }
        }
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
