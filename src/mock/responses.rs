//! The mock's OpenAI Responses API (`POST /v1/responses`, whole and streamed as named events,
//! and `GET`/`DELETE /v1/responses/{id}`, `GET .../input_items` for passthrough tests), so a
//! native Responses upstream can be tested without OpenAI. Same knobs as chat (chunks, interval,
//! cut) plus `x-mock-tool: 1` (a `function_call` item), `x-mock-cached-tokens: N` and
//! `x-mock-reasoning-tokens: N`. Usage is deterministic: input = body bytes / 4, output = one
//! token per chunk; only the terminal `response.completed` event carries it, as OpenAI's does.

use std::io;

use bytes::Bytes;
use sonic_rs::JsonValueTrait;

use super::openai::{quote, send_json};
use super::service::Knobs;
use crate::server::{Request, Responder};

const JSON: (&str, &[u8]) = ("content-type", b"application/json");
const CALL: &str = r#"{"id":"fc_mock","type":"function_call","status":"completed","call_id":"call_mock1","name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}"#;

/// The Responses API's paths.
pub(super) fn serves(path: &str) -> bool {
    path == "/v1/responses" || path.starts_with("/v1/responses/")
}

pub(super) async fn answer(req: &Request, knobs: &Knobs, res: &mut Responder<'_>) -> io::Result<()> {
    let path = req.head.path();
    if let Some(rest) = path.strip_prefix("/v1/responses/") {
        return stored(req, rest, res).await;
    }
    let body = req.body.to_bytes();
    let body: &[u8] = &body;
    let model = sonic_rs::get(body, &["model"])
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "mock-model".to_owned());
    let stream = sonic_rs::get(body, &["stream"]).ok().and_then(|v| v.as_bool()) == Some(true);
    let usage = usage(knobs, (body.len() / 4).max(1) as u64);
    if stream {
        return stream_answer(res, knobs, &model, &usage).await;
    }
    let text = (0..knobs.chunks).map(|i| format!("tok{i} ")).collect::<String>();
    let mut output = message("completed", &text);
    if knobs.tool {
        output.push(',');
        output.push_str(CALL);
    }
    send_json(res, knobs, response(&model, "completed", &output, &usage)).await
}

/// `GET /v1/responses/{id}` (a stored response), `DELETE` (deleted), `.../input_items` (a list).
async fn stored(req: &Request, rest: &str, res: &mut Responder<'_>) -> io::Result<()> {
    let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let out = match (req.head.method_raw(), tail) {
        (b"DELETE", "") => format!(r#"{{"id":{},"object":"response","deleted":true}}"#, quote(id)),
        (_, "input_items") => format!(
            r#"{{"object":"list","data":[{{"id":"msg_in","type":"message","role":"user","content":[{{"type":"input_text","text":"hello"}}]}}],"first_id":"msg_in","last_id":"msg_in","has_more":false,"response_id":{}}}"#,
            quote(id)
        ),
        _ => {
            let usage = r#"{"input_tokens":3,"output_tokens":2,"total_tokens":5}"#;
            response("mock-model", "completed", &message("completed", "stored"), usage).replacen(
                "\"resp_mock\"",
                &quote(id),
                1,
            )
        }
    };
    res.send(200, &[JSON], Bytes::from(out)).await
}

fn usage(knobs: &Knobs, input: u64) -> String {
    let output = knobs.chunks as u64;
    format!(
        r#"{{"input_tokens":{input},"input_tokens_details":{{"cached_tokens":{}}},"output_tokens":{output},"output_tokens_details":{{"reasoning_tokens":{}}},"total_tokens":{}}}"#,
        knobs.cached_tokens,
        knobs.reasoning_tokens,
        input + output
    )
}

fn message(status: &str, text: &str) -> String {
    let content = if status == "completed" {
        format!(r#"{{"type":"output_text","text":{},"annotations":[]}}"#, quote(text))
    } else {
        String::new()
    };
    format!(r#"{{"id":"msg_mock","type":"message","status":"{status}","role":"assistant","content":[{content}]}}"#)
}

fn response(model: &str, status: &str, output: &str, usage: &str) -> String {
    format!(
        r#"{{"id":"resp_mock","object":"response","created_at":1700000000,"status":"{status}","error":null,"incomplete_details":null,"model":{},"output":[{output}],"parallel_tool_calls":true,"tool_choice":"auto","tools":[],"usage":{usage}}}"#,
        quote(model)
    )
}

async fn stream_answer(res: &mut Responder<'_>, knobs: &Knobs, model: &str, usage: &str) -> io::Result<()> {
    let headers: [(&str, &[u8]); 2] = [("content-type", b"text/event-stream"), ("cache-control", b"no-cache")];
    res.start(200, &headers, None).await?;
    let mut seq = 0u64;
    let mut event = |kind: &str, fields: &str| {
        let out = format!("event: {kind}\ndata: {{\"type\":\"{kind}\",\"sequence_number\":{seq}{fields}}}\n\n");
        seq += 1;
        out
    };
    let started = format!(r#","response":{}"#, response(model, "in_progress", "", "null"));
    let mut head = event("response.created", &started);
    head.push_str(&event("response.in_progress", &started));
    head.push_str(&event(
        "response.output_item.added",
        &format!(r#","output_index":0,"item":{}"#, message("in_progress", "")),
    ));
    head.push_str(&event(
        "response.content_part.added",
        r#","item_id":"msg_mock","output_index":0,"content_index":0,"part":{"type":"output_text","text":"","annotations":[]}"#,
    ));
    res.piece(head.as_bytes()).await?;
    let mut text = String::new();
    for i in 0..knobs.chunks {
        if knobs.cut_after == Some(i) {
            res.abort();
            return Ok(());
        }
        if !knobs.interval.is_zero() {
            crate::deadline::sleep(knobs.interval).await;
        }
        let delta = format!("tok{i} ");
        text.push_str(&delta);
        let fields = format!(
            r#","item_id":"msg_mock","output_index":0,"content_index":0,"delta":{}"#,
            quote(&delta)
        );
        res.piece(event("response.output_text.delta", &fields).as_bytes())
            .await?;
    }
    let done = message("completed", &text);
    let mut tail = event(
        "response.output_text.done",
        &format!(
            r#","item_id":"msg_mock","output_index":0,"content_index":0,"text":{}"#,
            quote(&text)
        ),
    );
    tail.push_str(&event(
        "response.output_item.done",
        &format!(r#","output_index":0,"item":{done}"#),
    ));
    let mut output = done;
    if knobs.tool {
        tail.push_str(&event(
            "response.output_item.added",
            &format!(r#","output_index":1,"item":{CALL}"#),
        ));
        tail.push_str(&event(
            "response.function_call_arguments.delta",
            r#","item_id":"fc_mock","output_index":1,"delta":"{\"city\":\"Oslo\"}""#,
        ));
        tail.push_str(&event(
            "response.output_item.done",
            &format!(r#","output_index":1,"item":{CALL}"#),
        ));
        output.push(',');
        output.push_str(CALL);
    }
    let completed = format!(r#","response":{}"#, response(model, "completed", &output, usage));
    tail.push_str(&event("response.completed", &completed));
    res.piece(tail.as_bytes()).await?;
    res.finish().await
}
