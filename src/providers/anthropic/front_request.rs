//! Anthropic Messages -> OpenAI chat request: `to_chat`, for the `/v1/messages` front door in
//! front of OpenAI-compatible (and, through the hub, Gemini) upstreams (provider-formats.md
//! 7.2-7.7, reverse direction; `request` maps the other way).
//! Invariant: as `request`'s: no turn is lost, tool uses and results become OpenAI tool calls
//! and tool messages, and a block's `cache_control` stays with what it belonged to.

use sonic_rs::{JsonValueTrait, Value};

use crate::codec::depth::check_depth;

use super::{Block, BlockContent, MessagesRequest};
use crate::providers::openai::{
    ChatRequest, Content, FunctionCall, FunctionDef, Message, StreamOptions, Tool, ToolCall,
};

/// Anthropic Messages body -> OpenAI chat request (the front door's way to other upstreams).
/// `include_usage` is always requested on streams, so output tokens can be reported. A body
/// nesting deeper than `max_depth` is refused before serde reads it.
pub fn to_chat(body: &[u8], model: &str, max_depth: usize) -> Result<ChatRequest, String> {
    check_depth(body, max_depth).map_err(|e| format!("request body {e}"))?;
    let req: MessagesRequest =
        sonic_rs::from_slice(body).map_err(|e| format!("invalid Anthropic Messages request: {e}"))?;
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    if let Some(system) = &req.system {
        let text = system.text("\n\n");
        if !text.is_empty() {
            messages.push(Message {
                role: "system".to_owned(),
                content: Some(Content::Text(text)),
                ..Message::default()
            });
        }
    }
    for m in &req.messages {
        match (&m.content, m.role.as_str()) {
            (BlockContent::Text(text), role) => messages.push(Message {
                role: if role == "assistant" { "assistant" } else { "user" }.to_owned(),
                content: Some(Content::Text(text.clone())),
                ..Message::default()
            }),
            (BlockContent::Blocks(blocks), "assistant") => messages.push(assistant_from_blocks(blocks)),
            (BlockContent::Blocks(blocks), _) => super::user_blocks::to_hub(blocks, &mut messages)?,
        }
    }
    if let Some(t) = req
        .tools
        .iter()
        .flatten()
        .find(|t| t.kind.as_deref().is_some_and(|k| k != "custom"))
    {
        return Err(format!(
            "tool '{}' is an Anthropic server tool ({}); only Anthropic upstreams run it",
            t.name,
            t.kind.as_deref().unwrap_or("")
        ));
    }
    let stream = req.stream == Some(true);
    let tool_choice = req.tool_choice.as_ref().and_then(|c| {
        let text = match c.kind.as_str() {
            "auto" => "\"auto\"".to_owned(),
            "any" => "\"required\"".to_owned(),
            "none" => "\"none\"".to_owned(),
            "tool" => {
                let mut s = String::from("{\"type\":\"function\",\"function\":{");
                crate::providers::write::field_str(&mut s, "name", c.name.as_deref().unwrap_or(""));
                s.push_str("}}");
                s
            }
            _ => return None,
        };
        sonic_rs::from_str::<Value>(&text).ok()
    });
    let parallel = req
        .tool_choice
        .as_ref()
        .and_then(|c| c.disable_parallel_tool_use)
        .filter(|d| *d)
        .map(|_| false);
    Ok(ChatRequest {
        model: model.to_owned(),
        messages,
        max_tokens: (req.max_tokens > 0).then_some(req.max_tokens),
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        thinking_budget: req
            .thinking
            .as_ref()
            .filter(|t| t.get("type").and_then(|k| k.as_str()) == Some("enabled"))
            .and_then(|t| t.get("budget_tokens"))
            .and_then(|b| b.as_u64()),
        response_format: req
            .output_config
            .as_ref()
            .and_then(|c| c.get("format"))
            .and_then(response_format_from_output),
        stop: req.stop_sequences.map(crate::providers::openai::Stop::Many),
        stream: stream.then_some(true),
        stream_options: stream.then_some(StreamOptions {
            include_usage: Some(true),
        }),
        tools: req.tools.map(|tools| {
            tools
                .into_iter()
                .map(|t| Tool {
                    kind: "function".to_owned(),
                    function: FunctionDef {
                        name: t.name,
                        description: t.description,
                        parameters: t.input_schema,
                    },
                    cache_control: None,
                })
                .collect()
        }),
        tool_choice,
        parallel_tool_calls: parallel,
        user: req.metadata.and_then(|m| m.user_id),
        ..ChatRequest::default()
    })
}

/// Anthropic `output_config.format` (json_schema) as an OpenAI `response_format`.
fn response_format_from_output(format: &Value) -> Option<Value> {
    let schema = format.get("schema")?;
    let mut out = String::from(r#"{"type":"json_schema","json_schema":{"name":"output","schema":"#);
    out.push_str(&sonic_rs::to_string(schema).ok()?);
    out.push_str("}}");
    sonic_rs::from_str(&out).ok()
}

fn assistant_from_blocks(blocks: &[Block]) -> Message {
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b.kind.as_str() {
            "text" => text.push_str(b.text.as_deref().unwrap_or("")),
            "tool_use" => calls.push(ToolCall {
                id: b.id.clone().unwrap_or_default(),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: b.name.clone().unwrap_or_default(),
                    arguments: b
                        .input
                        .as_ref()
                        .and_then(|v| sonic_rs::to_string(v).ok())
                        .unwrap_or_else(|| "{}".to_owned()),
                },
            }),
            // Thinking blocks cannot be expressed to an OpenAI-compatible upstream.
            _ => {}
        }
    }
    Message {
        role: "assistant".to_owned(),
        content: (!text.is_empty() || calls.is_empty()).then_some(Content::Text(text)),
        tool_calls: (!calls.is_empty()).then_some(calls),
        ..Message::default()
    }
}
