//! The Gemini `generateContent` protocol: wire shapes, finish-reason and usage maps, and the
//! retry delay carried in 429 bodies; the request, response and stream mappings to the OpenAI
//! hub live in the submodules (`request`, `response`, `stream` for Gemini upstreams; `door` and
//! `front_*` for the Gemini front door served by other kinds).
//! Invariant: `usageMetadata` is cumulative on streams; the last one seen wins, never a sum.

pub mod door;
pub mod front_request;
pub mod front_response;
pub mod front_stream;
pub mod request;
pub mod response;
pub mod stream;

use std::time::Duration;

use serde::Deserialize;
use sonic_rs::Value;

use crate::usage::Usage;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateResponse {
    #[serde(default)]
    pub candidates: Vec<Candidate>,
    #[serde(default)]
    pub usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    pub model_version: Option<String>,
    #[serde(default)]
    pub response_id: Option<String>,
    #[serde(default)]
    pub prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    pub error: Option<ErrorDetail>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Content {
    #[serde(default)]
    pub parts: Vec<Part>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub thought: Option<bool>,
    #[serde(default)]
    pub function_call: Option<FunctionCall>,
    #[serde(default)]
    pub thought_signature: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct FunctionCall {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub args: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback {
    #[serde(default)]
    pub block_reason: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    #[serde(default)]
    pub prompt_token_count: u64,
    #[serde(default)]
    pub candidates_token_count: u64,
    #[serde(default)]
    pub thoughts_token_count: u64,
    #[serde(default)]
    pub cached_content_token_count: u64,
    #[serde(default)]
    pub tool_use_prompt_token_count: u64,
}

impl UsageMetadata {
    /// provider-formats.md 7.8: completion = candidates + thoughts; cached is part of prompt.
    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_token_count.saturating_add(self.tool_use_prompt_token_count),
            completion_tokens: self.candidates_token_count.saturating_add(self.thoughts_token_count),
            cached_tokens: self.cached_content_token_count,
            reasoning_tokens: self.thoughts_token_count,
            reported: true,
            partial: false,
        }
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct ErrorDetail {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub details: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorEnvelope {
    #[serde(default)]
    error: Option<ErrorDetail>,
}

/// A tool-call id for a Gemini function call that carries none: unique per answer (the
/// `responseId`, else a process-unique tag) and per call (`k`), so a second tool round never
/// sees the ids of the first again and results map back to the right call.
pub fn call_id(own: Option<String>, response_id: Option<&str>, k: usize) -> String {
    if let Some(id) = own.filter(|i| !i.is_empty()) {
        return id;
    }
    let mut out = String::from("call_");
    match response_id.filter(|r| !r.is_empty()) {
        // Only id-safe characters (Anthropic clients check `^[a-zA-Z0-9_-]+$`).
        Some(r) => out.extend(
            r.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .take(64),
        ),
        None => {
            use std::sync::atomic::{AtomicU64, Ordering};
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            out.push_str(&format!("r{:x}{n:x}", crate::providers::write::unix_now()));
        }
    }
    out.push('_');
    out.push_str(&k.to_string());
    out
}

/// Where a tool-call id carries the call's `thoughtSignature` (URL-safe base64): the hub has
/// no field for it, and Gemini wants it back on the call in the next tool round.
const SIGNATURE_MARK: &str = "__ts_";

/// `id` with Gemini's `thoughtSignature` (standard base64) appended, id-safe.
pub fn with_signature(mut id: String, signature: Option<&str>) -> String {
    if let Some(sig) = signature.filter(|s| !s.is_empty()) {
        id.push_str(SIGNATURE_MARK);
        id.extend(sig.chars().filter(|c| *c != '=').map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        }));
    }
    id
}

/// The `thoughtSignature` a tool-call id carries (standard base64, padded), if any.
pub fn signature_of(id: &str) -> Option<String> {
    let (_, sig) = id.split_once(SIGNATURE_MARK)?;
    let mut out: String = sig
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    (!sig.is_empty()).then_some(out)
}

/// Gemini `finishReason` -> OpenAI `finish_reason` (7.6); `STOP` with function calls is
/// `tool_calls` (edge case 6).
pub fn finish_reason(reason: &str, saw_tool_call: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "LANGUAGE" | "OTHER" => {
            "content_filter"
        }
        r if r.starts_with("IMAGE_") || r == "NO_IMAGE" => "content_filter",
        _ if saw_tool_call => "tool_calls",
        _ => "stop",
    }
}

/// The error message and `status` of a Gemini error body (also accepts the one-element array
/// Vertex sends).
pub fn parse_error(body: &[u8]) -> Option<ErrorDetail> {
    if let Ok(e) = sonic_rs::from_slice::<ErrorEnvelope>(body) {
        return e.error;
    }
    sonic_rs::from_slice::<Vec<ErrorEnvelope>>(body)
        .ok()
        .and_then(|v| v.into_iter().next())
        .and_then(|e| e.error)
}

/// `RetryInfo.retryDelay` ("38.6s") from a 429 body, rounded up to whole seconds. A body
/// nesting deeper than `max_depth` is not read.
pub fn retry_delay(body: &[u8], max_depth: usize) -> Option<Duration> {
    use sonic_rs::JsonValueTrait;
    crate::codec::depth::check_depth(body, max_depth).ok()?;
    let error = parse_error(body)?;
    error.details.iter().find_map(|d| {
        let is_retry_info = d
            .get("@type")
            .and_then(|t| t.as_str())
            .is_some_and(|t| t.ends_with("RetryInfo"));
        let delay = d.get("retryDelay").and_then(|v| v.as_str()).filter(|_| is_retry_info)?;
        let seconds: f64 = delay.trim().strip_suffix('s')?.parse().ok()?;
        (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs(seconds.ceil() as u64))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_sums_saturate() {
        let m = UsageMetadata {
            prompt_token_count: u64::MAX,
            tool_use_prompt_token_count: 5,
            candidates_token_count: u64::MAX - 1,
            thoughts_token_count: 2,
            ..UsageMetadata::default()
        };
        let u = m.usage();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total()),
            (u64::MAX, u64::MAX, u64::MAX)
        );
    }

    #[test]
    fn retry_delay_comes_from_retry_info() {
        let body = br#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED","details":[
          {"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[]},
          {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"38.6s"}]}}"#;
        assert_eq!(retry_delay(body, 128), Some(Duration::from_secs(39)));
        assert_eq!(retry_delay(body, 4), None, "5 levels deep");
        assert_eq!(retry_delay(br#"{"error":{"message":"x"}}"#, 128), None);
        assert_eq!(retry_delay(b"not json", 128), None);
        let deep = format!(r#"{{"error":{{"details":{}}}}}"#, "[".repeat(100_000));
        assert_eq!(retry_delay(deep.as_bytes(), 128), None);
    }

    #[test]
    fn model_is_one_encoded_segment_of_the_path() {
        use request::path;
        assert_eq!(
            path("gemini-1.5-flash", false),
            "/models/gemini-1.5-flash:generateContent"
        );
        assert_eq!(
            path("models/gemini-x", true),
            "/models/gemini-x:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            path("m HTTP/1.1\r\nhost: x\r\n\r\nPOST /x", false),
            "/models/m%20HTTP%2F1.1%0D%0Ahost:%20x%0D%0A%0D%0APOST%20%2Fx:generateContent"
        );
        assert_eq!(path("../a?b#c%", false), "/models/..%2Fa%3Fb%23c%25:generateContent");
    }

    #[test]
    fn thought_signatures_ride_in_the_tool_call_id() {
        let id = with_signature("call_r_0".to_owned(), Some("ab+/cw=="));
        assert_eq!(id, "call_r_0__ts_ab-_cw");
        assert_eq!(signature_of(&id).as_deref(), Some("ab+/cw=="));
        assert_eq!(signature_of("call_r_0"), None);
        assert_eq!(with_signature("x".to_owned(), None), "x");
    }

    #[test]
    fn finish_reasons_map() {
        assert_eq!(finish_reason("STOP", true), "tool_calls");
        assert_eq!(finish_reason("STOP", false), "stop");
        assert_eq!(finish_reason("MAX_TOKENS", false), "length");
        assert_eq!(finish_reason("SAFETY", false), "content_filter");
        assert_eq!(finish_reason("IMAGE_SAFETY", false), "content_filter");
        assert_eq!(finish_reason("MALFORMED_FUNCTION_CALL", false), "stop");
    }
}
