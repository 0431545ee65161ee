//! What a translation target cannot express, refused before anything is sent: each rule here
//! is a 400 in the client's envelope naming the parameter, instead of an answer that quietly
//! lost part of the request (issue 16 item 8).
//! Invariant: a request that passes `check` keeps every field rotor read from it on the way to
//! `upstream` (or the README says why a field is dropped).

use super::openai::ChatRequest;
use super::Protocol;

/// Refuses what `upstream` cannot express of `chat` (the hub form of the client's request).
pub fn check(chat: &ChatRequest, upstream: Protocol) -> Result<(), String> {
    let n = chat.n.unwrap_or(1);
    let logprobs = chat.logprobs == Some(true) || chat.top_logprobs.is_some();
    match upstream {
        Protocol::OpenAi => Ok(()),
        Protocol::Anthropic => {
            if n > 1 {
                return Err(format!(
                    "n = {n}: Anthropic models answer one choice per request; send n = 1"
                ));
            }
            if let Some(t) = chat.temperature.filter(|t| *t > 1.0) {
                return Err(format!(
                    "temperature = {t}: Anthropic models accept 0 to 1 (rotor does not rescale it)"
                ));
            }
            if logprobs {
                return Err("logprobs: Anthropic models do not return log probabilities".to_owned());
            }
            Ok(())
        }
        Protocol::Gemini => {
            if n > 1 && chat.stream == Some(true) {
                return Err(format!(
                    "n = {n} with stream: rotor streams one Gemini candidate; send n = 1 or stream: false"
                ));
            }
            if logprobs {
                return Err("logprobs: not translated to Gemini's logprobsResult yet".to_owned());
            }
            Ok(())
        }
        Protocol::Replicate | Protocol::Cohere | Protocol::OnDemand => {
            if n > 1 {
                return Err(format!(
                    "n = {n}: this provider answers one choice per request; send n = 1"
                ));
            }
            if logprobs {
                return Err("logprobs: not translated for this provider kind".to_owned());
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(json: &str) -> ChatRequest {
        sonic_rs::from_str(json).unwrap()
    }

    #[test]
    fn what_a_target_cannot_express_is_refused() {
        let n2 = chat(r#"{"n":2}"#);
        assert!(check(&n2, Protocol::Anthropic).unwrap_err().contains("n = 2"));
        assert!(
            check(&n2, Protocol::Gemini).is_ok(),
            "Gemini returns candidateCount choices"
        );
        assert!(check(&chat(r#"{"n":2,"stream":true}"#), Protocol::Gemini).is_err());
        assert!(check(&chat(r#"{"temperature":1.5}"#), Protocol::Anthropic)
            .unwrap_err()
            .contains("temperature"));
        assert!(check(&chat(r#"{"temperature":1.0}"#), Protocol::Anthropic).is_ok());
        assert!(check(&chat(r#"{"temperature":1.5}"#), Protocol::Gemini).is_ok());
        assert!(check(&chat(r#"{"logprobs":true}"#), Protocol::Anthropic)
            .unwrap_err()
            .contains("logprobs"));
        assert!(check(&chat(r#"{"top_logprobs":3}"#), Protocol::Gemini).is_err());
        assert!(check(&n2, Protocol::OpenAi).is_ok());
        for one_choice in [Protocol::Replicate, Protocol::Cohere, Protocol::OnDemand] {
            assert!(check(&n2, one_choice).unwrap_err().contains("n = 2"));
            assert!(check(&chat(r#"{"logprobs":true}"#), one_choice).is_err());
        }
    }
}
