//! The on-demand.io chat protocol (provider-formats.md section 6, third-party derived: shapes
//! marked [U] there are read tolerantly). A conversation lives in an upstream session: `dialog`
//! opens one (`POST {base}/sessions`) or continues a live one with its creating key
//! (`sessions`), `request` maps the hub request to a query, `response` and `stream` map the
//! sync answer and the SSE events back to OpenAI chat, and commit the grown conversation to the
//! session table when the answer ended well.
//! Invariant: usage is what `metrics`/`publicMetrics` reported; without them it is a local
//! estimate (characters / 4) marked as not reported and logged as estimated.

pub mod dialog;
pub mod request;
pub mod response;
pub mod sessions;
pub mod stream;
#[cfg(test)]
mod stream_tests;

use sonic_rs::{JsonValueTrait, Value};

use super::anthropic::front_stream::OpenAiToAnthropic;
use super::transform::ResponseTransform;
use super::{Chain, Front, SseTranslator, Translation};
use crate::usage::Usage;

pub use dialog::{Dialog, SessionCommit, Turn};
pub use request::Conversation;
pub use sessions::SessionRegistry;

/// The client-side transform of an on-demand answer with this status: the stream translator
/// (through the OpenAI hub to Anthropic for `/v1/messages`) or the whole-answer mapping. The
/// commit, when the answer came from a session, records the grown conversation.
pub fn transform(
    translation: &Translation,
    status: u16,
    prompt_chars: usize,
    commit: Option<SessionCommit>,
) -> Box<dyn ResponseTransform> {
    let ok = (200..300).contains(&status);
    let model = &translation.model;
    let depth = translation.max_depth;
    match (translation.front, ok && translation.stream) {
        (Front::Messages, true) => Box::new(Chain {
            first: SseTranslator::new(stream::OnDemandToOpenAi::new(model, true, prompt_chars, commit), depth),
            second: SseTranslator::new(OpenAiToAnthropic::new(model), depth),
        }),
        (Front::Gemini, true) => Box::new(Chain {
            first: SseTranslator::new(stream::OnDemandToOpenAi::new(model, true, prompt_chars, commit), depth),
            second: SseTranslator::new(crate::providers::gemini::front_stream::OpenAiToGemini::new(model, depth), depth),
        }),
        (_, true) => Box::new(SseTranslator::new(
            stream::OnDemandToOpenAi::new(model, translation.include_usage, prompt_chars, commit),
            depth,
        )),
        (front, false) => Box::new(response::WholeAnswer::new(
            status,
            model.clone(),
            front,
            depth,
            prompt_chars,
            commit,
        )),
    }
}

/// A token count that may be a number or a string holding one.
fn count(v: &Value, names: &[&str]) -> Option<u64> {
    names.iter().find_map(|n| {
        let f = v.get(n)?;
        f.as_u64()
            .or_else(|| f.as_f64().map(|x| x.max(0.0) as u64))
            .or_else(|| f.as_str()?.trim().parse().ok())
    })
}

/// Usage from a `metrics` / `publicMetrics` object, read tolerantly (the field names are [U]):
/// input/prompt, output/completion and total tokens in camel or snake case. `None` when it
/// names no count at all. A missing side is the total minus the other, else the estimate.
pub fn metrics_usage(metrics: &Value, prompt_estimate: u64, completion_estimate: u64) -> Option<Usage> {
    if !metrics.is_object() {
        return None;
    }
    let input = count(
        metrics,
        &["inputTokens", "promptTokens", "input_tokens", "prompt_tokens"],
    );
    let output = count(
        metrics,
        &["outputTokens", "completionTokens", "output_tokens", "completion_tokens"],
    );
    let total = count(metrics, &["totalTokens", "total_tokens"]);
    if input.is_none() && output.is_none() && total.is_none() {
        return None;
    }
    let prompt = input.unwrap_or_else(|| match (total, output) {
        (Some(t), Some(o)) => t.saturating_sub(o),
        (Some(t), None) => prompt_estimate.min(t),
        _ => prompt_estimate,
    });
    let completion = output.unwrap_or_else(|| total.map_or(completion_estimate, |t| t.saturating_sub(prompt)));
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        reported: true,
        ..Usage::default()
    })
}

/// The local estimate when on-demand reported no counts: about four characters a token.
pub fn estimate(prompt_chars: usize, completion_chars: usize) -> Usage {
    tracing::info!(
        prompt_chars,
        completion_chars,
        "on-demand reported no token counts: usage estimated locally"
    );
    Usage {
        prompt_tokens: (prompt_chars as u64).div_ceil(4),
        completion_tokens: (completion_chars as u64).div_ceil(4),
        reported: false,
        ..Usage::default()
    }
}

/// The message of an on-demand error body, read tolerantly: `{"message"}`,
/// `{"error":{"message"}}`, `{"error":"..."}`, else the start of the raw text.
pub fn error_message(status: u16, body: &[u8]) -> String {
    if let Ok(v) = sonic_rs::from_slice::<Value>(body) {
        let found = v
            .get("error")
            .and_then(|e| e.get("message").and_then(|m| m.as_str()).or_else(|| e.as_str()))
            .or_else(|| v.get("message").and_then(|m| m.as_str()));
        if let Some(message) = found.filter(|m| !m.is_empty()) {
            return message.to_owned();
        }
    }
    let text = String::from_utf8_lossy(body.get(..512).unwrap_or(body)).into_owned();
    if text.trim().is_empty() {
        format!("on-demand answered {status}")
    } else {
        format!("on-demand answered {status}: {text}")
    }
}

/// The OpenAI error `type` for an on-demand error status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 404 | 422 => "invalid_request_error",
        401 | 403 => "authentication_error",
        429 => "rate_limit_error",
        _ => "upstream_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_in_any_spelling_and_estimated_when_absent() {
        let v: Value = sonic_rs::from_str(r#"{"inputTokens":10,"outputTokens":"5"}"#).unwrap();
        let u = metrics_usage(&v, 99, 99).unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.reported), (10, 5, true));
        let v: Value = sonic_rs::from_str(r#"{"totalTokens":30,"completion_tokens":8}"#).unwrap();
        let u = metrics_usage(&v, 99, 99).unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (22, 8));
        let v: Value = sonic_rs::from_str(r#"{"totalTokens":30}"#).unwrap();
        let u = metrics_usage(&v, 4, 99).unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (4, 26));
        let v: Value = sonic_rs::from_str(r#"{"latencyMs":3}"#).unwrap();
        assert!(metrics_usage(&v, 1, 1).is_none());
        let e = estimate(9, 4);
        assert_eq!((e.prompt_tokens, e.completion_tokens, e.reported), (3, 1, false));
    }

    #[test]
    fn error_messages_in_every_shape() {
        assert_eq!(
            error_message(429, br#"{"message":"slow down","errorCode":"x"}"#),
            "slow down"
        );
        assert_eq!(error_message(500, br#"{"error":{"message":"boom"}}"#), "boom");
        assert_eq!(error_message(401, br#"{"error":"no key"}"#), "no key");
        assert_eq!(error_message(502, b""), "on-demand answered 502");
    }
}
