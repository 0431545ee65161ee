//! Gemini-shaped answers for the mock (`POST /v1beta/models/{m}:generateContent` and
//! `:streamGenerateContent?alt=sse`), with the OpenAI knobs plus `x-mock-crlf: 1` (CRLF framing,
//! as Vertex sends), `x-mock-tool: 1` (a `functionCall` part, finishReason STOP; `responseId`
//! is unique per answer) and `x-mock-cached-tokens: N`; `:countTokens` answers
//! `{"totalTokens": body bytes / 4}`. Every stream chunk carries cumulative `usageMetadata`, as
//! Gemini's do. 429 bodies carry `RetryInfo.retryDelay` from `x-mock-retry-after`.

use std::io;

use bytes::Bytes;

use super::service::Knobs;
use crate::server::{Request, Responder};

const JSON: (&str, &[u8]) = ("content-type", b"application/json");

pub(super) fn error_body(status: u16, retry_after: Option<&str>) -> Vec<u8> {
    let name = match status {
        400 => "INVALID_ARGUMENT",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    };
    let details = match retry_after {
        Some(s) if status == 429 => format!(
            r#"[{{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"{}s"}}]"#,
            s.trim()
        ),
        _ => "[]".to_owned(),
    };
    format!(r#"{{"error":{{"code":{status},"message":"mock {status}","status":"{name}","details":{details}}}}}"#)
        .into_bytes()
}

pub(super) async fn answer(req: &Request, knobs: &Knobs, res: &mut Responder<'_>) -> io::Result<()> {
    let path = req.head.path();
    // `/v1beta/models/{m}:method` or Vertex's `.../publishers/google/models/{m}:method`.
    let model = path
        .rsplit_once("/models/")
        .and_then(|(_, rest)| rest.split(':').next())
        .unwrap_or("mock-gemini")
        .to_owned();
    let stream = path.ends_with(":streamGenerateContent");
    let prompt = (req.body.len() / 4).max(1) as u64;
    let cached = knobs.cached_tokens;
    let usage = |n: u64| {
        format!(
            r#"{{"promptTokenCount":{prompt},"candidatesTokenCount":{n},"totalTokenCount":{},"cachedContentTokenCount":{cached}}}"#,
            prompt + n
        )
    };
    // Unique per answer, as Gemini's are (tool-call ids are derived from it).
    let rid = {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        format!("mockresp{}", NEXT.fetch_add(1, Ordering::Relaxed))
    };
    let call = r#"{"functionCall":{"name":"get_weather","args":{"city":"Oslo"}}}"#;
    if path.ends_with(":countTokens") {
        let out = format!(r#"{{"totalTokens":{prompt}}}"#);
        return res.send(200, &[JSON], Bytes::from(out)).await;
    }
    if !stream {
        let text = (0..knobs.chunks).map(|i| format!("tok{i} ")).collect::<String>();
        let mut parts = format!(r#"{{"text":{}}}"#, quote(&text));
        if knobs.tool {
            parts.push(',');
            parts.push_str(call);
        }
        let out = format!(
            r#"{{"candidates":[{{"index":0,"content":{{"role":"model","parts":[{parts}]}},"finishReason":"STOP"}}],"usageMetadata":{},"modelVersion":"{model}","responseId":"{rid}"}}"#,
            usage(knobs.chunks as u64)
        );
        return res.send(200, &[JSON], Bytes::from(out)).await;
    }
    let headers: [(&str, &[u8]); 1] = [("content-type", b"text/event-stream")];
    res.start(200, &headers, None).await?;
    let end = if knobs.crlf { "\r\n\r\n" } else { "\n\n" };
    for i in 0..knobs.chunks {
        if knobs.cut_after == Some(i) {
            res.abort();
            return Ok(());
        }
        if !knobs.interval.is_zero() {
            crate::deadline::sleep(knobs.interval).await;
        }
        let data = format!(
            r#"data: {{"candidates":[{{"index":0,"content":{{"role":"model","parts":[{{"text":{}}}]}}}}],"usageMetadata":{},"modelVersion":"{model}","responseId":"{rid}"}}{end}"#,
            quote(&format!("tok{i} ")),
            usage(i as u64 + 1)
        );
        res.piece(data.as_bytes()).await?;
    }
    let parts = if knobs.tool { call } else { r#"{"text":""}"# };
    let last = format!(
        r#"data: {{"candidates":[{{"index":0,"content":{{"role":"model","parts":[{parts}]}},"finishReason":"STOP"}}],"usageMetadata":{},"modelVersion":"{model}","responseId":"{rid}"}}{end}"#,
        usage(knobs.chunks as u64)
    );
    res.piece(last.as_bytes()).await?;
    res.finish().await
}

fn quote(s: &str) -> String {
    sonic_rs::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}
