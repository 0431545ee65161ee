//! OpenAI-shaped bodies for the mock: chat completion (whole and streamed, with
//! `stream_options.include_usage`; `x-mock-tool: 1` adds a `get_weather` tool call),
//! completions, embeddings (float and base64), models; the Responses API in `responses`.
//! Token counts are deterministic (prompt bytes / 4, one token per content chunk) so tests can
//! assert on them.

use std::io;

use base64::Engine as _;
use bytes::Bytes;
use serde::Serialize;
use sonic_rs::JsonValueTrait;

use super::service::Knobs;
use crate::server::{Request, Responder};

const JSON: (&str, &[u8]) = ("content-type", b"application/json");
const TOOL_CALL: &str =
    r#"{"id":"call_mock1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}}"#;

pub(super) fn error_body(status: u16) -> Vec<u8> {
    let (kind, message) = match status {
        401 => ("invalid_request_error", "Incorrect API key provided (mock)"),
        403 => ("permission_error", "This key is not allowed (mock)"),
        404 => ("invalid_request_error", "Not found (mock)"),
        429 => ("rate_limit_error", "Rate limit reached (mock)"),
        400..=499 => ("invalid_request_error", "Bad request (mock)"),
        _ => ("server_error", "The server had an error (mock)"),
    };
    format!(r#"{{"error":{{"message":"{message}","type":"{kind}","param":null,"code":null}}}}"#).into_bytes()
}

pub(super) async fn answer(req: &Request, knobs: &Knobs, res: &mut Responder<'_>) -> io::Result<()> {
    let body = &req.body.to_bytes();
    let model = string_field(body, &["model"]).unwrap_or_else(|| "mock-model".to_owned());
    let prompt_tokens = (body.len() / 4).max(1) as u64;
    let path = openai_path(req.head.path());
    match path {
        p if super::responses::serves(p) => super::responses::answer(req, knobs, res).await,
        "/v1/chat/completions" | "/v1/completions" => {
            let chat = path == "/v1/chat/completions";
            let stream = sonic_rs::get(body.as_ref(), &["stream"])
                .ok()
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            if stream {
                let include_usage = sonic_rs::get(body.as_ref(), &["stream_options", "include_usage"])
                    .ok()
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false);
                stream_completion(res, knobs, &model, chat, include_usage, prompt_tokens).await
            } else {
                let text = (0..knobs.chunks).map(|i| format!("tok{i} ")).collect::<String>();
                let completion = knobs.chunks as u64;
                let (calls, finish) = if knobs.tool {
                    (format!(r#","tool_calls":[{TOOL_CALL}]"#), "tool_calls")
                } else {
                    (String::new(), "stop")
                };
                let out = if chat {
                    format!(
                        r#"{{"id":"chatcmpl-mock","object":"chat.completion","created":1700000000,"model":{},"choices":[{{"index":0,"message":{{"role":"assistant","content":{}{calls}}},"finish_reason":"{finish}"}}],"usage":{}}}"#,
                        quote(&model),
                        quote(&text),
                        usage(prompt_tokens, completion)
                    )
                } else {
                    format!(
                        r#"{{"id":"cmpl-mock","object":"text_completion","created":1700000000,"model":{},"choices":[{{"index":0,"text":{},"finish_reason":"stop"}}],"usage":{}}}"#,
                        quote(&model),
                        quote(&text),
                        usage(prompt_tokens, completion)
                    )
                };
                send_json(res, knobs, out).await
            }
        }
        "/v1/embeddings" => {
            let base64 = string_field(body, &["encoding_format"]).is_some_and(|f| f == "base64");
            let inputs = match sonic_rs::get(body.as_ref(), &["input"]) {
                Ok(v) if v.is_array() => v.as_raw_str().matches(',').count() + 1,
                _ => 1,
            };
            res.send(
                200,
                &[JSON],
                Bytes::from(embeddings(&model, inputs, base64, prompt_tokens)),
            )
            .await
        }
        "/v1/models" => {
            let out = r#"{"object":"list","data":[{"id":"mock-model","object":"model","created":1700000000,"owned_by":"mock"}]}"#;
            res.send(200, &[JSON], Bytes::from_static(out.as_bytes())).await
        }
        _ => {
            // Unknown paths echo what arrived, so passthrough tests can see it.
            let out = format!(
                r#"{{"object":"mock.echo","method":{},"path":{},"model":{},"bytes":{}}}"#,
                quote(&String::from_utf8_lossy(req.head.method_raw())),
                quote(req.head.path()),
                quote(&model),
                body.len()
            );
            res.send(200, &[JSON], Bytes::from(out)).await
        }
    }
}

/// The OpenAI path of a request: Cloudflare Workers AI serves the same API under
/// `/client/v4/accounts/{account_id}/ai/v1/...`.
pub(super) fn openai_path(path: &str) -> &str {
    let Some(rest) = path.strip_prefix("/client/v4/accounts/") else {
        return path;
    };
    match rest.find("/ai/v1/") {
        Some(at) => rest.get(at + 3..).unwrap_or(path),
        None => path,
    }
}

/// A whole JSON answer, sized or (with `x-mock-chunked: 1`) in two chunks; with a cut, the
/// connection closes halfway through the body.
pub(super) async fn send_json(res: &mut Responder<'_>, knobs: &Knobs, out: String) -> io::Result<()> {
    if knobs.cut_after.is_some() {
        res.start(200, &[JSON], Some(out.len() as u64)).await?;
        res.piece(&out.as_bytes()[..out.len() / 2]).await?;
        res.abort();
        return Ok(());
    }
    if !knobs.chunked {
        return res.send(200, &[JSON], Bytes::from(out)).await;
    }
    res.start(200, &[JSON], None).await?;
    let (a, b) = out.split_at(out.len() / 2);
    res.piece(a.as_bytes()).await?;
    res.piece(b.as_bytes()).await?;
    res.finish().await
}

async fn stream_completion(
    res: &mut Responder<'_>,
    knobs: &Knobs,
    model: &str,
    chat: bool,
    include_usage: bool,
    prompt_tokens: u64,
) -> io::Result<()> {
    let headers: [(&str, &[u8]); 2] = [("content-type", b"text/event-stream"), ("cache-control", b"no-cache")];
    res.start(200, &headers, None).await?;
    let usage_null = if include_usage { r#","usage":null"# } else { "" };
    let model = quote(model);
    let (object, id) = if chat {
        ("chat.completion.chunk", "chatcmpl-mock")
    } else {
        ("text_completion", "cmpl-mock")
    };
    let event = |choice: String| {
        let json = if knobs.spaced && include_usage {
            format!("{{\"usage\":null,\"id\":\"{id}\",\"object\":\"{object}\",\"created\":1700000000,\"model\":{model},\"choices\":[{choice}]}}")
        } else {
            format!("{{\"id\":\"{id}\",\"object\":\"{object}\",\"created\":1700000000,\"model\":{model},\"choices\":[{choice}]{usage_null}}}")
        };
        frame(&json, knobs.spaced)
    };
    if chat {
        res.piece(
            event(r#"{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}"#.to_owned())
                .as_bytes(),
        )
        .await?;
    }
    for i in 0..knobs.chunks {
        if knobs.cut_after == Some(i) {
            res.abort();
            return Ok(());
        }
        if !knobs.interval.is_zero() {
            crate::deadline::sleep(knobs.interval).await;
        }
        let text = quote(&format!("tok{i} "));
        let choice = if chat {
            format!(r#"{{"index":0,"delta":{{"content":{text}}},"finish_reason":null}}"#)
        } else {
            format!(r#"{{"index":0,"text":{text},"finish_reason":null}}"#)
        };
        res.piece(event(choice).as_bytes()).await?;
    }
    if chat && knobs.tool {
        let start = r#"{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_mock1","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}"#;
        res.piece(event(start.to_owned()).as_bytes()).await?;
        for part in [r#"{\"city\":"#, r#"\"Oslo\"}"#] {
            let args = format!(
                r#"{{"index":0,"delta":{{"tool_calls":[{{"index":0,"function":{{"arguments":"{part}"}}}}]}},"finish_reason":null}}"#
            );
            res.piece(event(args).as_bytes()).await?;
        }
    }
    let last = if chat && knobs.tool {
        r#"{"index":0,"delta":{},"finish_reason":"tool_calls"}"#
    } else if chat {
        r#"{"index":0,"delta":{},"finish_reason":"stop"}"#
    } else {
        r#"{"index":0,"text":"","finish_reason":"stop"}"#
    };
    res.piece(event(last.to_owned()).as_bytes()).await?;
    if include_usage {
        let usage = usage(prompt_tokens, knobs.chunks as u64);
        let json = if knobs.spaced {
            format!("{{\"usage\":{usage},\"id\":\"{id}\",\"object\":\"{object}\",\"created\":1700000000,\"model\":{model},\"choices\":[]}}")
        } else {
            format!("{{\"id\":\"{id}\",\"object\":\"{object}\",\"created\":1700000000,\"model\":{model},\"choices\":[],\"usage\":{usage}}}")
        };
        res.piece(frame(&json, knobs.spaced).as_bytes()).await?;
    }
    res.piece(b"data: [DONE]\n\n").await?;
    res.finish().await
}

/// One SSE event carrying `json`; `spaced` puts a space after every `:` and `,` outside strings.
fn frame(json: &str, spaced: bool) -> String {
    if !spaced {
        return format!("data: {json}\n\n");
    }
    let mut out = String::with_capacity(json.len() + json.len() / 4 + 8);
    out.push_str("data: ");
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        out.push(c);
        if in_string {
            (escaped, in_string) = (!escaped && c == '\\', in_string && (escaped || c != '"'));
        } else if c == '"' {
            in_string = true;
        } else if c == ':' || c == ',' {
            out.push(' ');
        }
    }
    out.push_str("\n\n");
    out
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: sonic_rs::Value,
}

fn embeddings(model: &str, inputs: usize, base64: bool, prompt_tokens: u64) -> String {
    let data: Vec<Embedding> = (0..inputs)
        .map(|index| {
            let vector: Vec<f32> = (0..8).map(|d| ((index * 8 + d) as f32 * 0.125).sin()).collect();
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                sonic_rs::Value::from(base64::engine::general_purpose::STANDARD.encode(bytes).as_str())
            } else {
                sonic_rs::to_value(&vector).unwrap_or_default()
            };
            Embedding {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    let data = sonic_rs::to_string(&data).unwrap_or_else(|_| "[]".to_owned());
    format!(
        r#"{{"object":"list","data":{data},"model":{},"usage":{{"prompt_tokens":{prompt_tokens},"total_tokens":{prompt_tokens}}}}}"#,
        quote(model)
    )
}

fn usage(prompt: u64, completion: u64) -> String {
    format!(
        r#"{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}}}"#,
        prompt + completion
    )
}

fn string_field(body: &Bytes, path: &[&str]) -> Option<String> {
    sonic_rs::get(body.as_ref(), path)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
}

pub(super) fn quote(s: &str) -> String {
    sonic_rs::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cloudflare_paths_are_openai_paths() {
        use super::openai_path;
        assert_eq!(
            openai_path("/client/v4/accounts/abc/ai/v1/chat/completions"),
            "/v1/chat/completions"
        );
        assert_eq!(openai_path("/client/v4/accounts/abc/ai/v1/models"), "/v1/models");
        assert_eq!(openai_path("/v1/models"), "/v1/models");
        assert_eq!(
            openai_path("/client/v4/accounts/abc/other"),
            "/client/v4/accounts/abc/other"
        );
    }
}
