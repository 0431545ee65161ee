//! A whole Gemini `generateContent` answer -> OpenAI chat completion, and Gemini error bodies ->
//! the OpenAI envelope (the Google `status`, e.g. `RESOURCE_EXHAUSTED`, kept as `type`).
//! Invariant: function calls Gemini sends without an id get one unique to the answer
//! (`call_<responseId>_<n>`), never a `call_0` that repeats across tool rounds.

use super::{call_id, finish_reason, parse_error, with_signature, Candidate, GenerateResponse};
use crate::providers::openai::{self, FunctionCall, ToolCall};
use crate::usage::Usage;

/// Any status -> OpenAI body, and the usage it reports. The caller bounds the body's depth
/// (`WholeBody`); nothing inside it is parsed again, so `_max_depth` is unused.
pub fn to_openai(status: u16, body: &[u8], model: &str, _max_depth: usize) -> (String, Usage) {
    if !(200..300).contains(&status) {
        let message = match parse_error(body) {
            Some(e) => {
                return (
                    openai::error_body(&e.message, e.status.as_deref().unwrap_or("upstream_error")),
                    Usage::default(),
                )
            }
            None => crate::providers::openai::unreadable_error(status, body),
        };
        return (openai::error_body(&message, "upstream_error"), Usage::default());
    }
    let Ok(r) = sonic_rs::from_slice::<GenerateResponse>(body) else {
        return (
            openai::error_body("the upstream answer was not a valid Gemini response", "upstream_error"),
            Usage::default(),
        );
    };
    let usage = r.usage_metadata.map(|u| u.usage()).unwrap_or_default();
    let response_id = r.response_id.clone().unwrap_or_else(|| call_id(None, None, 0));
    let blocked = r.prompt_feedback.and_then(|f| f.block_reason).is_some();
    // Every candidate (`n > 1` asks for candidateCount) is a choice; tool-call ids count on
    // across candidates so they stay unique in the answer.
    let mut candidates: Vec<Choice> = Vec::with_capacity(r.candidates.len().max(1));
    let mut k = 0;
    for candidate in r.candidates {
        candidates.push(choice(candidate, &response_id, &mut k, blocked));
    }
    if candidates.is_empty() {
        candidates.push(choice(Candidate::default(), &response_id, &mut k, blocked));
    }
    let id = format!("chatcmpl-{}", r.response_id.as_deref().unwrap_or("gemini"));
    let model = r.model_version.as_deref().unwrap_or(model);
    let answers: Vec<openai::Answer<'_>> = candidates
        .iter()
        .map(|c| openai::Answer {
            id: &id,
            model,
            text: &c.text,
            reasoning: &c.reasoning,
            calls: &c.calls,
            finish: c.finish,
            usage: &usage,
        })
        .collect();
    let out = match answers.split_first() {
        Some((first, more)) => openai::write_chat_completion_choices(first, more),
        None => String::new(), // unreachable: one choice at least
    };
    (out, usage)
}

#[derive(Default)]
struct Choice {
    text: String,
    reasoning: String,
    calls: Vec<ToolCall>,
    finish: &'static str,
}

fn choice(candidate: Candidate, response_id: &str, k: &mut usize, blocked: bool) -> Choice {
    let mut c = Choice::default();
    for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
        if let Some(fc) = part.function_call {
            c.calls.push(ToolCall {
                id: with_signature(call_id(fc.id, Some(response_id), *k), part.thought_signature.as_deref()),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: fc.name,
                    arguments: fc
                        .args
                        .and_then(|a| sonic_rs::to_string(&a).ok())
                        .unwrap_or_else(|| "{}".to_owned()),
                },
            });
            *k += 1;
        } else if let Some(t) = part.text {
            if part.thought == Some(true) {
                c.reasoning.push_str(&t);
            } else {
                c.text.push_str(&t);
            }
        }
    }
    c.finish = match candidate.finish_reason.as_deref() {
        Some(reason) => finish_reason(reason, !c.calls.is_empty()),
        None if blocked => "content_filter",
        None => finish_reason("STOP", !c.calls.is_empty()),
    };
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::DEFAULT_MAX_DEPTH as D;
    use sonic_rs::JsonValueTrait;

    #[test]
    fn function_call_turn_is_tool_calls_with_usage() {
        let body = br#"{"candidates":[{"index":0,"content":{"role":"model","parts":[{"text":"thinking","thought":true},{"functionCall":{"name":"get_weather","args":{"city":"Oslo"}}}]},"finishReason":"STOP"}],
          "usageMetadata":{"promptTokenCount":20,"candidatesTokenCount":6,"totalTokenCount":40,"thoughtsTokenCount":14,"cachedContentTokenCount":4},"modelVersion":"gemini-x","responseId":"abc"}"#;
        let (out, usage) = to_openai(200, body, "m", D);
        let v: sonic_rs::Value = sonic_rs::from_str(&out).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"].as_str(), Some("tool_calls"));
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["id"].as_str(),
            Some("call_abc_0")
        );
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"].as_str(),
            Some(r#"{"city":"Oslo"}"#)
        );
        assert_eq!(
            v["choices"][0]["message"]["reasoning_content"].as_str(),
            Some("thinking")
        );
        assert_eq!(v["usage"]["completion_tokens"].as_u64(), Some(20));
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64(), Some(4));
        assert_eq!(
            v["usage"]["completion_tokens_details"]["reasoning_tokens"].as_u64(),
            Some(14)
        );
        assert_eq!(usage.prompt_tokens, 20);
    }

    #[test]
    fn blocked_prompt_is_content_filter_and_errors_keep_status_name() {
        let (out, _) = to_openai(200, br#"{"promptFeedback":{"blockReason":"SAFETY"}}"#, "m", D);
        let v: sonic_rs::Value = sonic_rs::from_str(&out).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"].as_str(), Some("content_filter"));
        let (out, _) = to_openai(
            429,
            br#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}"#,
            "m",
            D,
        );
        let v: sonic_rs::Value = sonic_rs::from_str(&out).unwrap();
        assert_eq!(v["error"]["type"].as_str(), Some("RESOURCE_EXHAUSTED"));
        assert_eq!(v["error"]["message"].as_str(), Some("quota"));
    }

    #[test]
    fn tool_call_ids_are_unique_per_answer() {
        let id = |body: &[u8]| {
            let (out, _) = to_openai(200, body, "m", D);
            let v: sonic_rs::Value = sonic_rs::from_str(&out).unwrap();
            let calls = v["choices"][0]["message"]["tool_calls"].clone();
            (
                calls[0]["id"].as_str().unwrap().to_owned(),
                calls[1]["id"].as_str().unwrap().to_owned(),
            )
        };
        let call = r#"{"functionCall":{"name":"f","args":{}}}"#;
        let with = |rid: &str| format!(r#"{{"candidates":[{{"content":{{"parts":[{call},{call}]}}}}]{rid}}}"#);
        let (a0, a1) = id(with(r#","responseId":"r1""#).as_bytes());
        let (b0, _) = id(with(r#","responseId":"r2""#).as_bytes());
        assert_eq!(
            (a0.as_str(), a1.as_str(), b0.as_str()),
            ("call_r1_0", "call_r1_1", "call_r2_0")
        );
        let (c0, c1) = id(with("").as_bytes());
        let (d0, _) = id(with("").as_bytes());
        assert_ne!(c0, c1);
        assert_ne!(c0, d0, "no responseId: still unique per answer");
        let (e0, _) = id(with(r#","responseId":"a/b+c=""#).as_bytes());
        assert_eq!(e0, "call_abc_0", "only id-safe characters");
        let own = r#"{"candidates":[{"content":{"parts":[{"functionCall":{"id":"g1","name":"f"}},{"functionCall":{"id":"g2","name":"f"}}]}}]}"#;
        assert_eq!(id(own.as_bytes()), ("g1".to_owned(), "g2".to_owned()));
    }

    #[test]
    fn every_candidate_is_a_choice() {
        let body = br#"{"candidates":[{"index":0,"content":{"parts":[{"text":"a"}]},"finishReason":"STOP"},
          {"index":1,"content":{"parts":[{"text":"b"}]},"finishReason":"MAX_TOKENS"}],"responseId":"r"}"#;
        let (out, _) = to_openai(200, body, "m", D);
        let v: sonic_rs::Value = sonic_rs::from_str(&out).unwrap();
        let c = &v["choices"];
        assert_eq!(
            (c[0]["index"].as_u64(), c[0]["message"]["content"].as_str()),
            (Some(0), Some("a"))
        );
        assert_eq!(
            (c[1]["index"].as_u64(), c[1]["message"]["content"].as_str()),
            (Some(1), Some("b"))
        );
        assert_eq!(c[1]["finish_reason"].as_str(), Some("length"));
    }

    #[test]
    fn a_thought_signature_comes_back_on_its_call_in_the_next_round() {
        let body = br#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{}},"thoughtSignature":"c2lnbmF0dXJl+/8="}]}}],"responseId":"r"}"#;
        let (out, _) = to_openai(200, body, "m", D);
        let v: sonic_rs::Value = sonic_rs::from_str(&out).unwrap();
        let id = v["choices"][0]["message"]["tool_calls"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "{id}"
        );
        let chat = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"go"}},{{"role":"assistant","tool_calls":[{{"id":"{id}","type":"function","function":{{"name":"f","arguments":"{{}}"}}}}]}},{{"role":"tool","tool_call_id":"{id}","content":"ok"}}]}}"#
        );
        let chat: crate::providers::openai::ChatRequest = sonic_rs::from_str(&chat).unwrap();
        let sent: sonic_rs::Value = sonic_rs::from_slice(&super::super::request::from_chat(&chat, D).unwrap()).unwrap();
        assert_eq!(
            sent["contents"][1]["parts"][0]["thoughtSignature"].as_str(),
            Some("c2lnbmF0dXJl+/8=")
        );
        assert_eq!(
            sent["contents"][2]["parts"][0]["functionResponse"]["name"].as_str(),
            Some("f")
        );
    }
}
