//! Anthropic-shaped answers for the mock (`POST /v1/messages`, whole and streamed), with the
//! same knobs as the OpenAI ones plus `x-mock-tool: 1` (answer with a `tool_use` block whose
//! JSON arrives in two `input_json_delta` fragments) and `x-mock-cached-tokens: N` (reported as
//! `cache_read_input_tokens`). Token counts: input = body bytes / 4, output = one per chunk.

use std::io;

use bytes::Bytes;
use sonic_rs::JsonValueTrait;

use super::service::Knobs;
use crate::server::{Request, Responder};

const JSON: (&str, &[u8]) = ("content-type", b"application/json");

pub(super) fn error_body(status: u16) -> Vec<u8> {
    let kind = match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    };
    format!(r#"{{"type":"error","error":{{"type":"{kind}","message":"mock {status}"}}}}"#).into_bytes()
}

pub(super) async fn answer(req: &Request, knobs: &Knobs, res: &mut Responder<'_>) -> io::Result<()> {
    let body = req.body.to_bytes();
    let body: &[u8] = &body;
    // Vertex names the model in the path (`.../models/{m}:rawPredict`), not the body.
    let model = sonic_rs::get(body, &["model"])
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .or_else(|| {
            let (_, rest) = req.head.path().rsplit_once("/models/")?;
            rest.split(':').next().map(str::to_owned)
        })
        .unwrap_or_else(|| "mock-claude".to_owned());
    let model = quote(&model);
    let stream = sonic_rs::get(body, &["stream"]).ok().and_then(|v| v.as_bool()) == Some(true);
    let input = (body.len() / 4).max(1) as u64;
    let cached = knobs.cached_tokens;
    let output = knobs.chunks as u64;
    let stop = if knobs.tool { "tool_use" } else { "end_turn" };
    if !stream {
        let text = (0..knobs.chunks).map(|i| format!("tok{i} ")).collect::<String>();
        let mut content = format!(r#"[{{"type":"text","text":{}}}"#, quote(&text));
        if knobs.tool {
            content.push_str(r#",{"type":"tool_use","id":"toolu_mock1","name":"get_weather","input":{"city":"Oslo"}}"#);
        }
        content.push(']');
        let out = format!(
            r#"{{"id":"msg_mock","type":"message","role":"assistant","model":{model},"content":{content},"stop_reason":"{stop}","stop_sequence":null,"usage":{{"input_tokens":{input},"cache_creation_input_tokens":0,"cache_read_input_tokens":{cached},"output_tokens":{output}}}}}"#
        );
        return res.send(200, &[JSON], Bytes::from(out)).await;
    }
    let headers: [(&str, &[u8]); 2] = [("content-type", b"text/event-stream"), ("cache-control", b"no-cache")];
    res.start(200, &headers, None).await?;
    let event = |name: &str, data: &str| format!("event: {name}\ndata: {data}\n\n");
    let start = format!(
        r#"{{"type":"message_start","message":{{"id":"msg_mock","type":"message","role":"assistant","model":{model},"content":[],"stop_reason":null,"stop_sequence":null,"usage":{{"input_tokens":{input},"cache_creation_input_tokens":0,"cache_read_input_tokens":{cached},"output_tokens":1}}}}}}"#
    );
    res.piece(event("message_start", &start).as_bytes()).await?;
    res.piece(
        event(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        )
        .as_bytes(),
    )
    .await?;
    res.piece(event("ping", r#"{"type":"ping"}"#).as_bytes()).await?;
    for i in 0..knobs.chunks {
        if knobs.cut_after == Some(i) {
            res.abort();
            return Ok(());
        }
        if !knobs.interval.is_zero() {
            crate::deadline::sleep(knobs.interval).await;
        }
        let data = format!(
            r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":{}}}}}"#,
            quote(&format!("tok{i} "))
        );
        res.piece(event("content_block_delta", &data).as_bytes()).await?;
    }
    res.piece(event("content_block_stop", r#"{"type":"content_block_stop","index":0}"#).as_bytes())
        .await?;
    if knobs.tool {
        res.piece(event("content_block_start", r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_mock1","name":"get_weather","input":{}}}"#).as_bytes()).await?;
        for fragment in [r#"{\"city\":"#, r#"\"Oslo\"}"#] {
            let data = format!(
                r#"{{"type":"content_block_delta","index":1,"delta":{{"type":"input_json_delta","partial_json":"{fragment}"}}}}"#
            );
            res.piece(event("content_block_delta", &data).as_bytes()).await?;
        }
        res.piece(event("content_block_stop", r#"{"type":"content_block_stop","index":1}"#).as_bytes())
            .await?;
    }
    let delta = format!(
        r#"{{"type":"message_delta","delta":{{"stop_reason":"{stop}","stop_sequence":null}},"usage":{{"output_tokens":{output}}}}}"#
    );
    res.piece(event("message_delta", &delta).as_bytes()).await?;
    res.piece(event("message_stop", r#"{"type":"message_stop"}"#).as_bytes())
        .await?;
    res.finish().await
}

fn quote(s: &str) -> String {
    sonic_rs::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}
