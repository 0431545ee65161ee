//! Cohere Chat v2-shaped answers for the mock (`POST /v2/chat`, whole and streamed), with the
//! usual knobs plus `x-mock-tool: 1` (answer with a tool call whose arguments arrive in two
//! `tool-call-delta` fragments) and `x-mock-cached-tokens: N`. Stream events carry an `event:`
//! line and the type again inside the data, as Cohere sends them. Token counts: input = body
//! bytes / 4, output = one per chunk.

use std::io;

use bytes::Bytes;
use sonic_rs::JsonValueTrait;

use super::service::Knobs;
use crate::server::{Request, Responder};

const JSON: (&str, &[u8]) = ("content-type", b"application/json");

pub(super) fn serves(path: &str) -> bool {
    path == "/v2/chat"
}

/// Cohere's error body: `{"id", "message"}`.
pub(super) fn error_body(status: u16) -> Vec<u8> {
    let message = match status {
        401 => "invalid api token",
        429 => "You are using a Trial key, which is limited (mock)",
        400..=499 => "invalid request (mock)",
        _ => "internal server error (mock)",
    };
    format!(r#"{{"id":"mock-error","message":"{message}"}}"#).into_bytes()
}

fn usage(input: u64, output: u64, cached: u64) -> String {
    format!(
        r#"{{"billed_units":{{"input_tokens":{input},"output_tokens":{output}}},"tokens":{{"input_tokens":{input}.0,"output_tokens":{output}.0}},"cached_tokens":{cached}}}"#
    )
}

pub(super) async fn answer(req: &Request, knobs: &Knobs, res: &mut Responder<'_>) -> io::Result<()> {
    let body = req.body.to_bytes();
    let body: &[u8] = &body;
    let stream = sonic_rs::get(body, &["stream"]).ok().and_then(|v| v.as_bool()) == Some(true);
    let input = (body.len() / 4).max(1) as u64;
    let output = knobs.chunks as u64;
    let usage = usage(input, output, knobs.cached_tokens);
    if stream {
        return answer_stream(res, knobs, &usage).await;
    }
    let text: String = (0..knobs.chunks).map(|i| format!("tok{i} ")).collect();
    let (tool_calls, finish) = if knobs.tool {
        (
            r#","tool_plan":"I will call get_weather.","tool_calls":[{"id":"get_weather_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}}]"#,
            "TOOL_CALL",
        )
    } else {
        ("", "COMPLETE")
    };
    let out = format!(
        r#"{{"id":"mock-cohere-1","finish_reason":"{finish}","message":{{"role":"assistant","content":[{{"type":"text","text":{}}}]{tool_calls}}},"usage":{usage}}}"#,
        sonic_rs::to_string(&text).unwrap_or_default()
    );
    if knobs.cut_after.is_some() {
        res.start(200, &[JSON], Some(out.len() as u64)).await?;
        res.piece(&out.as_bytes()[..out.len() / 2]).await?;
        res.abort();
        return Ok(());
    }
    res.send(200, &[JSON], Bytes::from(out)).await
}

async fn answer_stream(res: &mut Responder<'_>, knobs: &Knobs, usage: &str) -> io::Result<()> {
    let headers: [(&str, &[u8]); 2] = [("content-type", b"text/event-stream"), ("cache-control", b"no-cache")];
    res.start(200, &headers, None).await?;
    let event = |kind: &str, rest: &str| format!("event: {kind}\ndata: {{\"type\":\"{kind}\"{rest}}}\n\n");
    res.piece(event("message-start", r#","id":"mock-cohere-1","delta":{"message":{"role":"assistant","content":[],"tool_plan":"","tool_calls":[],"citations":[]}}"#).as_bytes())
        .await?;
    res.piece(
        event(
            "content-start",
            r#","index":0,"delta":{"message":{"content":{"type":"text","text":""}}}"#,
        )
        .as_bytes(),
    )
    .await?;
    for i in 0..knobs.chunks {
        if knobs.cut_after == Some(i) {
            res.abort();
            return Ok(());
        }
        if !knobs.interval.is_zero() {
            crate::deadline::sleep(knobs.interval).await;
        }
        let delta = format!(r#","index":0,"delta":{{"message":{{"content":{{"text":"tok{i} "}}}}}}"#);
        res.piece(event("content-delta", &delta).as_bytes()).await?;
    }
    res.piece(event("content-end", r#","index":0"#).as_bytes()).await?;
    let finish = if knobs.tool {
        res.piece(
            event(
                "tool-plan-delta",
                r#","delta":{"message":{"tool_plan":"I will call get_weather."}}"#,
            )
            .as_bytes(),
        )
        .await?;
        res.piece(event("tool-call-start", r#","index":0,"delta":{"message":{"tool_calls":{"id":"get_weather_1","type":"function","function":{"name":"get_weather","arguments":""}}}}"#).as_bytes())
            .await?;
        for fragment in [r#"{\"city\":"#, r#"\"Oslo\"}"#] {
            let delta = format!(
                r#","index":0,"delta":{{"message":{{"tool_calls":{{"function":{{"arguments":"{fragment}"}}}}}}}}"#
            );
            res.piece(event("tool-call-delta", &delta).as_bytes()).await?;
        }
        res.piece(event("tool-call-end", r#","index":0"#).as_bytes()).await?;
        "TOOL_CALL"
    } else {
        "COMPLETE"
    };
    let end = format!(r#","id":"mock-cohere-1","delta":{{"finish_reason":"{finish}","usage":{usage}}}"#);
    res.piece(event("message-end", &end).as_bytes()).await?;
    res.finish().await
}
