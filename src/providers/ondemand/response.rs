//! A whole on-demand answer (`responseMode: "sync"`, or any error) -> the client's protocol:
//! `data.answer` as an OpenAI chat completion (then Anthropic for `/v1/messages`), error
//! bodies in the client's envelope with the upstream's status.
//! Invariant: like `providers::WholeBody`, the body is collected up to a bound and its depth
//! checked before it is parsed; the session is committed only for a 2xx with an answer.

use bytes::Bytes;
use sonic_rs::{JsonValueTrait, Value};

use super::dialog::SessionCommit;
use super::{error_message, error_type, estimate, metrics_usage};
use crate::codec::depth::check_depth;
use crate::providers::openai::{self, Answer};
use crate::providers::transform::{Emit, ResponseTransform};
use crate::providers::whole::{error_answer, Collected};
use crate::providers::{anthropic, gemini, Front};
use crate::usage::Usage;

/// A whole on-demand answer, collected (bounded by `whole::Collected`) and mapped to the client.
pub struct WholeAnswer {
    status: u16,
    model: String,
    front: Front,
    max_depth: usize,
    prompt_chars: usize,
    commit: Option<SessionCommit>,
    collected: Collected,
    /// The answer could not be used: the client gets this status instead of the upstream's.
    refused: Option<u16>,
    usage: Usage,
}

impl WholeAnswer {
    pub fn new(
        status: u16,
        model: String,
        front: Front,
        max_depth: usize,
        prompt_chars: usize,
        commit: Option<SessionCommit>,
    ) -> Self {
        WholeAnswer {
            status,
            model,
            front,
            max_depth,
            prompt_chars,
            commit,
            collected: Collected::default(),
            refused: None,
            usage: Usage::default(),
        }
    }

    fn answer(&mut self, status: u16, body: &[u8]) -> String {
        let openai = match self.map_answer(status, body) {
            Ok(chat) => chat,
            Err((status, message)) => {
                if (200..300).contains(&self.status) {
                    self.refused = Some(status);
                }
                if let Some(commit) = self.commit.take() {
                    commit.failed();
                }
                openai::error_body(&message, error_type(status))
            }
        };
        match self.front {
            Front::Messages => {
                let status = self.refused.unwrap_or(status);
                anthropic::response::from_openai(status, openai.as_bytes(), &self.model, self.max_depth).0
            }
            Front::Gemini => {
                let status = self.refused.unwrap_or(status);
                gemini::front_response::from_openai(status, openai.as_bytes(), &self.model, self.max_depth).0
            }
            Front::Chat | Front::Other | Front::Responses => openai,
        }
    }

    /// The OpenAI chat completion, or the status and message of the error the client gets.
    fn map_answer(&mut self, status: u16, body: &[u8]) -> Result<String, (u16, String)> {
        if let Err(e) = check_depth(body, self.max_depth) {
            return Err(match (200..300).contains(&status) {
                true => (502, format!("the upstream answer {e}")),
                false => (status, format!("the upstream answered {status} with a body that {e}")),
            });
        }
        if !(200..300).contains(&status) {
            return Err((status, error_message(status, body)));
        }
        let v: Value = sonic_rs::from_slice(body).map_err(|_| (502, "the on-demand answer is not JSON".to_owned()))?;
        let data = v.get("data").unwrap_or(&v);
        let Some(text) = data.get("answer").and_then(|a| a.as_str()) else {
            return Err((502, "the on-demand answer has no data.answer".to_owned()));
        };
        let metrics = data.get("metrics").or_else(|| data.get("publicMetrics"));
        let (p, c) = ((self.prompt_chars as u64).div_ceil(4), (text.len() as u64).div_ceil(4));
        self.usage = match metrics.and_then(|m| metrics_usage(m, p, c)) {
            Some(u) => u,
            None => estimate(self.prompt_chars, text.len()),
        };
        let id = data.get("messageId").and_then(|m| m.as_str()).unwrap_or("ondemand");
        let out = openai::write_chat_completion(&Answer {
            id: &format!("chatcmpl-{id}"),
            model: &self.model,
            text,
            reasoning: "",
            calls: &[],
            finish: "stop",
            usage: &self.usage,
        });
        if let Some(commit) = self.commit.take() {
            commit.answered(text);
        }
        Ok(out)
    }
}

impl ResponseTransform for WholeAnswer {
    fn content_type(&self) -> Option<&'static [u8]> {
        Some(b"application/json")
    }

    fn full(&mut self, status: u16, body: Bytes) -> Bytes {
        Bytes::from(self.answer(status, &body))
    }

    fn status(&self, upstream: u16) -> u16 {
        self.refused.unwrap_or(upstream)
    }

    fn piece(&mut self, piece: Bytes) -> Emit {
        self.collected.push(&piece);
        Emit::new()
    }

    fn end(&mut self) -> Emit {
        let out = match self.collected.take() {
            Some(body) => self.answer(self.status, &body),
            None => {
                self.refused = Some(502);
                error_answer(self.front, 502, "the on-demand answer is larger than rotor translates")
            }
        };
        let mut e = Emit::new();
        e.push(Bytes::from(out));
        e
    }

    fn fail(&mut self, _message: &str) -> Emit {
        if let Some(commit) = self.commit.take() {
            commit.failed();
        }
        Emit::new()
    }

    fn usage(&self) -> Usage {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(front: Front, status: u16, body: &str) -> (u16, String, Usage) {
        let mut t = WholeAnswer::new(status, "gpt-4o".to_owned(), front, 64, 40, None);
        let out = t.full(status, Bytes::from(body.to_owned()));
        (t.status(status), String::from_utf8(out.to_vec()).unwrap(), t.usage())
    }

    #[test]
    fn sync_answer_becomes_a_chat_completion_with_usage() {
        let body = r#"{"message":"ok","data":{"sessionId":"s","messageId":"m1","answer":"Hello!","status":"completed","metrics":{"inputTokens":7,"outputTokens":2,"totalTokens":9}}}"#;
        let (status, out, usage) = run(Front::Chat, 200, body);
        assert_eq!(status, 200);
        let v: Value = sonic_rs::from_str(&out).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"].as_str(), Some("Hello!"));
        assert_eq!(v["id"].as_str(), Some("chatcmpl-m1"));
        assert_eq!(v["usage"]["prompt_tokens"].as_u64(), Some(7));
        assert!(usage.reported);
        let (_, out, _) = run(Front::Messages, 200, body);
        let v: Value = sonic_rs::from_str(&out).unwrap();
        assert_eq!(v["content"][0]["text"].as_str(), Some("Hello!"));
        assert_eq!(v["usage"]["output_tokens"].as_u64(), Some(2));
    }

    #[test]
    fn missing_metrics_are_estimated_and_errors_keep_their_status() {
        let (_, _, usage) = run(Front::Chat, 200, r#"{"data":{"answer":"12345678"}}"#);
        assert_eq!(
            (usage.prompt_tokens, usage.completion_tokens, usage.reported),
            (10, 2, false)
        );
        let (status, out, _) = run(Front::Chat, 429, r#"{"message":"too many","errorCode":"rate"}"#);
        assert_eq!(status, 429);
        let v: Value = sonic_rs::from_str(&out).unwrap();
        assert_eq!(v["error"]["message"].as_str(), Some("too many"));
        assert_eq!(v["error"]["type"].as_str(), Some("rate_limit_error"));
        let (status, out, _) = run(Front::Messages, 401, r#"{"message":"bad key"}"#);
        assert_eq!(status, 401);
        let v: Value = sonic_rs::from_str(&out).unwrap();
        assert_eq!(v["type"].as_str(), Some("error"));
        let (status, _, _) = run(Front::Chat, 200, r#"{"data":{}}"#);
        assert_eq!(status, 502);
    }
}
