//! A whole Replicate answer -> OpenAI chat completion: a finished prediction's output tokens
//! joined, usage from its metrics; problem-details errors and failed predictions -> the OpenAI
//! envelope with the status the request path chose.
//! Invariant: an answer that cannot be read becomes a well-formed error, never half a reply.

use super::{error_message, Prediction};
use crate::providers::openai;
use crate::usage::Usage;

/// Any status -> OpenAI body, and the usage it reports. The caller bounds the body's depth.
pub fn to_openai(status: u16, body: &[u8], model: &str, _max_depth: usize) -> (String, Usage) {
    if !(200..300).contains(&status) {
        let message = error_message(body).unwrap_or_else(|| crate::providers::openai::unreadable_error(status, body));
        return (openai::error_body(&message, "upstream_error"), Usage::default());
    }
    let Ok(p) = sonic_rs::from_slice::<Prediction>(body) else {
        return (
            openai::error_body("the upstream answer was not a Replicate prediction", "upstream_error"),
            Usage::default(),
        );
    };
    let usage = p.metrics.and_then(|m| m.usage()).unwrap_or_default();
    let id = format!("chatcmpl-{}", if p.id.is_empty() { "replicate" } else { &p.id });
    let text = p.text();
    let out = openai::write_chat_completion(&openai::Answer {
        id: &id,
        model,
        text: &text,
        reasoning: "",
        calls: &[],
        finish: "stop",
        usage: &usage,
    });
    (out, usage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonic_rs::JsonValueTrait;

    #[test]
    fn finished_prediction_is_a_chat_completion_with_usage() {
        let body = br#"{"id":"p1","status":"succeeded","output":["Hel","lo","!"],
          "metrics":{"predict_time":1.2,"input_token_count":5,"output_token_count":3}}"#;
        let (out, usage) = to_openai(200, body, "meta/llama", 128);
        let v: sonic_rs::Value = sonic_rs::from_str(&out).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"].as_str(), Some("Hello!"));
        assert_eq!(v["choices"][0]["finish_reason"].as_str(), Some("stop"));
        assert_eq!(v["model"].as_str(), Some("meta/llama"));
        assert_eq!(v["id"].as_str(), Some("chatcmpl-p1"));
        assert_eq!(v["usage"]["total_tokens"].as_u64(), Some(8));
        assert!(usage.reported && usage.prompt_tokens == 5 && usage.completion_tokens == 3);
        let (out, usage) = to_openai(200, br#"{"status":"succeeded","output":"plain"}"#, "m", 128);
        assert!(out.contains("\"plain\"") && !usage.reported);
    }

    #[test]
    fn errors_keep_their_message() {
        let (out, _) = to_openai(
            422,
            br#"{"title":"Invalid input","detail":"prompt is required","status":422}"#,
            "m",
            128,
        );
        let v: sonic_rs::Value = sonic_rs::from_str(&out).unwrap();
        assert_eq!(v["error"]["message"].as_str(), Some("prompt is required"));
        let (out, _) = to_openai(
            502,
            br#"{"id":"p","status":"failed","error":"CUDA out of memory"}"#,
            "m",
            128,
        );
        assert!(out.contains("CUDA out of memory"), "{out}");
        let (out, _) = to_openai(500, b"<html>oops</html>", "m", 128);
        assert!(out.contains("upstream answered 500"), "{out}");
        let (out, _) = to_openai(200, b"not json", "m", 128);
        assert!(out.contains("not a Replicate prediction"), "{out}");
    }
}
