//! The on-demand SSE fixture, fed whole and split at every byte (`stream_tests::run_all_splits`):
//! the same chunks every time, to OpenAI and through the hub to Anthropic.

use sonic_rs::JsonValueTrait;

use super::stream::OnDemandToOpenAi;
use crate::codec::DEFAULT_MAX_DEPTH as D;
use crate::providers::anthropic::front_stream::OpenAiToAnthropic;
use crate::providers::stream_tests::{chunks, run_all_splits};
use crate::providers::{Chain, SseTranslator};

/// No space after `data:`, `event:` names that must not matter, a heartbeat, a thinking event
/// named `thinking`, CRLF framing in the middle, status and plugin output events, metricsLog,
/// then `data:[DONE]`.
const ONDEMAND: &str = "event:message\ndata:{\"sessionId\":\"s\",\"messageId\":\"m7\",\"eventIndex\":0,\"eventType\":\"fulfillment_thinking\",\"thinking\":{\"delta\":\"let me \"}}\n\n\
event:thinking\ndata:{\"eventType\":\"planning_thinking\",\"thinking\":{\"delta\":\"see\"}}\n\n\
event:heartbeat\ndata:{\"time\":\"2026-01-01T00:00:00Z\"}\n\n\
event:message\r\ndata:{\"sessionId\":\"s\",\"messageId\":\"m7\",\"eventIndex\":1,\"eventType\":\"fulfillment\",\"answer\":\"Hel\",\"status\":\"processing\"}\r\n\r\n\
: keep-alive comment\n\n\
event:message\ndata:{\"eventType\":\"step_output\",\"output\":{\"delta\":\"{\\\"tool\\\":1}\"}}\n\n\
event:message\ndata:{\"eventType\":\"fulfillment\",\"answer\":\"lo \\\"wörld\\\"\"}\n\n\
event:message\ndata:{\"eventType\":\"statusLog\",\"currentStatusLog\":{\"statusType\":\"fulfillment_completed\"},\"answer\":\"Hello \\\"wörld\\\"\"}\n\n\
event:message\ndata:{\"eventType\":\"metricsLog\",\"publicMetrics\":{\"inputTokens\":12,\"outputTokens\":4,\"totalTokens\":16}}\n\n\
event:message\ndata:[DONE]\n\n";

#[test]
fn ondemand_stream_to_openai_chunks_at_every_split() {
    let out = run_all_splits(
        || SseTranslator::new(OnDemandToOpenAi::new("gpt-4o", true, 40, None), D),
        ONDEMAND,
    );
    let (values, done) = chunks(&out);
    assert!(done, "{out}");
    assert_eq!(out.matches("[DONE]").count(), 1);
    let delta = |field: &str| -> String {
        values
            .iter()
            .filter_map(|v| v["choices"][0]["delta"][field].as_str())
            .collect()
    };
    assert_eq!(delta("content"), "Hello \"wörld\"");
    assert_eq!(delta("reasoning_content"), "let me see");
    assert_eq!(values[0]["id"].as_str(), Some("chatcmpl-m7"));
    assert_eq!(values[0]["choices"][0]["delta"]["role"].as_str(), Some("assistant"));
    let finish: Vec<&str> = values
        .iter()
        .filter_map(|v| v["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["stop"]);
    let usage = &values.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"].as_u64(), Some(12));
    assert_eq!(usage["completion_tokens"].as_u64(), Some(4));
}

#[test]
fn ondemand_stream_to_anthropic_events_at_every_split() {
    let out = run_all_splits(
        || Chain {
            first: SseTranslator::new(OnDemandToOpenAi::new("gpt-4o", true, 40, None), D),
            second: SseTranslator::new(OpenAiToAnthropic::new("gpt-4o"), D),
        },
        ONDEMAND,
    );
    assert!(out.contains("\"text\":\"Hel\""), "{out}");
    assert!(out.contains("\"output_tokens\":4"), "{out}");
    assert!(out.contains("event: message_stop"), "{out}");
    assert!(!out.contains("[DONE]"));
}

#[test]
fn ondemand_stream_without_done_or_with_an_error_ends_in_one_error_event() {
    let cut = &ONDEMAND[..ONDEMAND.find("event:message\ndata:[DONE]").unwrap()];
    let out = run_all_splits(
        || SseTranslator::new(OnDemandToOpenAi::new("gpt-4o", false, 0, None), D),
        cut,
    );
    assert!(out.contains("without [DONE]"), "{out}");
    assert!(!out.contains("[DONE]\n"), "{out}");
    let failed = "event:message\ndata:{\"eventType\":\"fulfillment\",\"answer\":\"a\"}\n\nevent:error\ndata:{\"eventType\":\"error\",\"message\":\"quota exceeded\"}\n\nevent:message\ndata:[DONE]\n\n";
    let out = run_all_splits(
        || SseTranslator::new(OnDemandToOpenAi::new("gpt-4o", false, 0, None), D),
        failed,
    );
    assert_eq!(out.matches("\"error\"").count(), 1, "{out}");
    assert!(out.contains("quota exceeded"), "{out}");
    assert!(!out.contains("[DONE]"), "nothing after the error: {out}");
}
