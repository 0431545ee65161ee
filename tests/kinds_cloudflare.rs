//! `kind = "cloudflare"` end to end over real sockets: Workers AI's OpenAI-compatible endpoint
//! built from `account_id` (`{base}/accounts/{account_id}/ai/v1/chat/completions`), both front
//! doors streamed or not, usage. Its 429 failover, 401 quarantine, refusal out of attempts and
//! cut stream's error event are checked with every kind's in `kinds_shared.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod common;

use common::*;
use sonic_rs::{JsonValueTrait, Value};

const MODEL: &str = "@cf/meta/llama-3.1-8b-instruct";
const KEY_A: &str = "cf_token_aaaa_0001";
const PATH: &str = "/client/v4/accounts/acct0123/ai/v1/chat/completions";

fn harness(keys: &[&str], retry: &str) -> Harness {
    let mock = start_mock();
    let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    let body = format!(
        r#"
[[clients]]
name = "tester"
key = "{CLIENT_KEY}"

[[providers]]
name = "cf"
kind = "cloudflare"
account_id = "acct0123"
base_url = "http://{}/client/v4"
keys = [{}]
models = ["{MODEL}"]
"#,
        mock.addr,
        keys.join(", ")
    );
    Harness::with_mock(
        mock,
        Conf {
            workers: 1,
            retry: retry.to_owned(),
            ..Conf::with_body(&body)
        },
    )
}

fn chats(h: &Harness) -> Vec<rotor::mock::Recorded> {
    h.recorded().into_iter().filter(|r| r.target == PATH).collect()
}

#[test]
fn chat_goes_to_the_account_url_with_usage() {
    let h = harness(&[KEY_A], "");
    let r = h.post("/v1/chat/completions", &chat(MODEL), &[("x-mock-chunks", "3")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["content"].as_str(), Some("tok0 tok1 tok2 "));
    assert_eq!(v["usage"]["completion_tokens"].as_u64(), Some(3));
    let sent = &chats(&h)[0];
    assert_eq!(sent.bearer(), Some(KEY_A));
    let up: Value = sonic_rs::from_slice(&sent.body).unwrap();
    assert_eq!(up["model"].as_str(), Some(MODEL));
}

#[test]
fn stream_with_usage_and_without() {
    let h = harness(&[KEY_A], "");
    let body = format!(
        r#"{{"model":"{MODEL}","stream":true,"stream_options":{{"include_usage":true}},"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    let (status, text, done) = h.client().stream_chat(&body, &[("x-mock-chunks", "2")]);
    assert_eq!(status, 200);
    assert!(done && text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(
        text.contains("tok0 ") && text.contains("\"completion_tokens\":2"),
        "{text}"
    );
    // Without include_usage rotor still asks upstream (and hides the chunk).
    let (_, text, _) = h.client().stream_chat(&chat_stream(MODEL), &[]);
    assert!(!text.contains("\"usage\":{"), "{text}");
    let up: Value = sonic_rs::from_slice(&chats(&h)[1].body).unwrap();
    assert_eq!(up["stream_options"]["include_usage"].as_bool(), Some(true));
}

#[test]
fn anthropic_front_door_whole_and_streamed() {
    let h = harness(&[KEY_A], "");
    let headers = [
        ("x-api-key", CLIENT_KEY),
        ("anthropic-version", "2023-06-01"),
        ("x-mock-chunks", "2"),
    ];
    let req = format!(r#"{{"model":"{MODEL}","max_tokens":16,"messages":[{{"role":"user","content":"hi"}}]}}"#);
    let r = h.client().request("POST", "/v1/messages", &headers, req.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["content"][0]["text"].as_str(), Some("tok0 tok1 "));
    assert_eq!(v["usage"]["output_tokens"].as_u64(), Some(2));
    let req = req.replace("\"max_tokens\"", "\"stream\":true,\"max_tokens\"");
    let r = h.client().request("POST", "/v1/messages", &headers, req.as_bytes());
    let text = r.text();
    assert!(text.contains("event: message_stop"), "{text}");
    assert!(text.contains("\"output_tokens\":2"), "{text}");
}
