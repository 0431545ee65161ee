//! OpenAI chat -> Anthropic Messages request (provider-formats.md 7.2-7.7): `from_chat`, for
//! Anthropic upstreams (`front_request` maps the other way, for the `/v1/messages` front door).
//! Invariant: no turn is lost; consecutive same-role turns are merged (Anthropic wants them
//! alternating), tool results become `tool_result` blocks in a user turn and back. A client's
//! `cache_control` (on a content part, a message or a tool) stays on the block or tool it
//! belongs to, so prompt caching works through the translation.

use sonic_rs::{JsonValueTrait, Value};

use crate::codec::depth::{check_depth, TooDeep};

use super::{AMessage, ATool, AToolChoice, Block, BlockContent, ImageSource, MessagesRequest, Metadata};
use crate::providers::openai::{CacheControl, ChatRequest, Content, Message, Part, Tool};

/// `max_tokens` is required by Anthropic; this is used when the OpenAI client set none.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// OpenAI chat -> Anthropic Messages body. Tool-call arguments (JSON inside a string) nesting
/// deeper than `max_depth` are refused.
pub fn from_chat(chat: &ChatRequest, model: &str, max_depth: usize) -> Result<Vec<u8>, String> {
    let mut system: Vec<String> = Vec::new();
    let mut system_blocks_all: Vec<Block> = Vec::new();
    let mut messages: Vec<AMessage> = Vec::new();
    for m in &chat.messages {
        let (role, mut blocks) = match m.role.as_str() {
            "system" | "developer" => {
                if let Some(c) = &m.content {
                    system.push(c.text());
                }
                let mut blocks = system_blocks(m.content.as_ref());
                mark_last(&mut blocks, m.cache_control.as_ref());
                system_blocks_all.extend(blocks);
                continue;
            }
            "assistant" => ("assistant", assistant_blocks(m, max_depth)?),
            "tool" | "function" => ("user", vec![tool_result(m)]),
            _ => ("user", user_blocks(m.content.as_ref())?),
        };
        mark_last(&mut blocks, m.cache_control.as_ref());
        if blocks.is_empty() {
            continue;
        }
        match messages.last_mut() {
            Some(AMessage {
                role: last,
                content: BlockContent::Blocks(prev),
            }) if last == role => prev.extend(blocks),
            _ => messages.push(AMessage {
                role: role.to_owned(),
                content: BlockContent::Blocks(blocks),
            }),
        }
    }
    let mut tool_choice = chat.tool_choice.as_ref().and_then(tool_choice_from_openai);
    if chat.parallel_tool_calls == Some(false) && chat.tools.is_some() {
        let choice = tool_choice.get_or_insert_with(|| AToolChoice {
            kind: "auto".to_owned(),
            ..AToolChoice::default()
        });
        if choice.kind != "none" {
            choice.disable_parallel_tool_use = Some(true);
        }
    }
    let stops = chat.stop_list();
    let max_tokens = chat.output_limit().unwrap_or(DEFAULT_MAX_TOKENS);
    let request = MessagesRequest {
        model: model.to_owned(),
        max_tokens,
        thinking: thinking_from_openai(chat, max_tokens)?,
        output_config: output_config_from_openai(chat)?,
        messages,
        system: system_content(system, system_blocks_all),
        stop_sequences: (!stops.is_empty()).then_some(stops),
        // OpenAI allows 0-2, Anthropic 0-1.
        temperature: chat.temperature, // above 1 is refused (`fidelity::check`), never clamped
        top_p: chat.top_p,
        top_k: chat.top_k,
        stream: chat.stream.filter(|s| *s),
        tools: chat
            .tools
            .as_ref()
            .map(|tools| tools.iter().map(tool_from_openai).collect()),
        tool_choice,
        metadata: chat.user.as_ref().map(|u| Metadata {
            user_id: Some(u.clone()),
        }),
    };
    sonic_rs::to_vec(&request).map_err(|e| format!("cannot encode the Anthropic request: {e}"))
}

/// `reasoning_effort` as extended thinking; its budget must stay below `max_tokens` (which
/// counts thinking, as OpenAI's `max_completion_tokens` counts reasoning).
fn thinking_from_openai(chat: &ChatRequest, max_tokens: u64) -> Result<Option<Value>, String> {
    let Some(budget) = chat.reasoning_budget() else {
        return Ok(None);
    };
    let budget = budget.clamp(1024, max_tokens.saturating_sub(1));
    if budget < 1024 {
        return Err(format!(
            "reasoning_effort needs max_completion_tokens above 1024 for Anthropic models (got {max_tokens})"
        ));
    }
    Ok(sonic_rs::from_str(&format!(r#"{{"type":"enabled","budget_tokens":{budget}}}"#)).ok())
}

/// `response_format` json_schema as `output_config.format`; `json_object` has no Anthropic
/// form (400).
fn output_config_from_openai(chat: &ChatRequest) -> Result<Option<Value>, String> {
    let Some(format) = &chat.response_format else {
        return Ok(None);
    };
    match format.get("type").and_then(|t| t.as_str()) {
        Some("json_schema") => {
            let schema = format.get("json_schema").and_then(|s| s.get("schema"));
            let schema = schema.ok_or("response_format.json_schema.schema is missing")?;
            let mut out = String::from(r#"{"format":{"type":"json_schema","schema":"#);
            out.push_str(&sonic_rs::to_string(schema).map_err(|e| e.to_string())?);
            out.push_str("}}");
            Ok(sonic_rs::from_str(&out).ok())
        }
        Some("text") | None => Ok(None),
        Some(other) => Err(format!(
            "response_format type '{other}' has no Anthropic equivalent; use json_schema"
        )),
    }
}

fn text_block(text: String) -> Block {
    Block {
        kind: "text".to_owned(),
        text: Some(text),
        ..Block::default()
    }
}

/// A message-level `cache_control` marks the message's last block (unless it has its own).
fn mark_last(blocks: &mut [Block], cache_control: Option<&CacheControl>) {
    if let (Some(last), Some(cc)) = (blocks.last_mut(), cache_control) {
        last.cache_control.get_or_insert_with(|| cc.clone());
    }
}

/// A system or developer message as text blocks: one per text part (keeping its
/// `cache_control`), or one for a plain string.
fn system_blocks(content: Option<&Content>) -> Vec<Block> {
    match content {
        None => Vec::new(),
        Some(Content::Text(s)) => vec![text_block(s.clone())],
        Some(Content::Parts(parts)) => parts
            .iter()
            .filter_map(|p| {
                let text = p.text.clone().filter(|t| !t.is_empty() && p.kind == "text")?;
                Some(Block {
                    cache_control: p.cache_control.clone(),
                    ..text_block(text)
                })
            })
            .collect(),
    }
}

/// The top-level `system`: one string (each message's text, joined by blank lines) unless a
/// block carries `cache_control`, which only the block form can hold.
fn system_content(texts: Vec<String>, blocks: Vec<Block>) -> Option<BlockContent> {
    if blocks.iter().any(|b| b.cache_control.is_some()) {
        return Some(BlockContent::Blocks(blocks));
    }
    (!texts.is_empty()).then(|| BlockContent::Text(texts.join("\n\n")))
}

fn user_blocks(content: Option<&Content>) -> Result<Vec<Block>, String> {
    Ok(match content {
        None => Vec::new(),
        Some(Content::Text(s)) if s.is_empty() => Vec::new(),
        Some(Content::Text(s)) => vec![text_block(s.clone())],
        Some(Content::Parts(parts)) => parts
            .iter()
            .map(part_to_block)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect(),
    })
}

/// An OpenAI content part as a block (its `cache_control` kept); a part Anthropic has no block
/// for is a 400.
fn part_to_block(part: &Part) -> Result<Option<Block>, String> {
    let block = part_kind_to_block(part)?;
    Ok(block.map(|block| Block {
        cache_control: part.cache_control.clone(),
        ..block
    }))
}

fn part_kind_to_block(part: &Part) -> Result<Option<Block>, String> {
    Ok(match part.kind.as_str() {
        "text" => part.text.clone().filter(|t| !t.is_empty()).map(text_block),
        "file" => Some(document_block(part)?),
        "input_audio" => return Err("input_audio: Anthropic models do not take audio input".to_owned()),
        "image_url" => {
            let Some(image) = part.image_url.as_ref() else {
                return Ok(None);
            };
            let url = &image.url;
            let source = match parse_data_url(url) {
                Some((media_type, data)) => ImageSource {
                    kind: "base64".to_owned(),
                    media_type: Some(media_type.to_owned()),
                    data: Some(data.to_owned()),
                    url: None,
                },
                None => ImageSource {
                    kind: "url".to_owned(),
                    url: Some(url.clone()),
                    ..ImageSource::default()
                },
            };
            Some(Block {
                kind: "image".to_owned(),
                source: Some(source),
                ..Block::default()
            })
        }
        other => return Err(format!("content part type '{other}' has no Anthropic equivalent")),
    })
}

/// An OpenAI `file` part with inline `file_data` as a base64 `document` block; an uploaded
/// `file_id` means nothing to Anthropic (400).
fn document_block(part: &Part) -> Result<Block, String> {
    let data = part.file.as_ref().and_then(|f| f.file_data.as_deref());
    let Some((media_type, data)) = data.and_then(parse_data_url) else {
        return Err("file: only inline file_data (a base64 data URL) can be sent to Anthropic models".to_owned());
    };
    Ok(Block {
        kind: "document".to_owned(),
        source: Some(ImageSource {
            kind: "base64".to_owned(),
            media_type: Some(media_type.to_owned()),
            data: Some(data.to_owned()),
            url: None,
        }),
        ..Block::default()
    })
}

/// `data:<mime>;base64,<data>` -> (mime, data).
pub fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    Some((mime, data))
}

fn assistant_blocks(m: &Message, max_depth: usize) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    if let Some(text) = m.content.as_ref().map(Content::text).filter(|t| !t.is_empty()) {
        // The texts become one block: it carries the last breakpoint a part asked for.
        blocks.push(Block {
            cache_control: part_cache_control(m.content.as_ref()),
            ..text_block(text)
        });
    }
    for call in m.tool_calls.iter().flatten() {
        let input =
            parse_arguments(&call.function.arguments, max_depth).map_err(|e| too_deep_arguments(&call.id, e))?;
        blocks.push(Block {
            kind: "tool_use".to_owned(),
            id: Some(call.id.clone()),
            name: Some(call.function.name.clone()),
            input: Some(input),
            ..Block::default()
        });
    }
    Ok(blocks)
}

/// Tool-call arguments as an object; invalid or empty JSON becomes `{}` (edge case 4).
/// Arguments nesting deeper than `max_depth` are not parsed: the caller decides (a client's
/// are refused, an upstream's become `{}` like other arguments rotor cannot read).
pub fn parse_arguments(arguments: &str, max_depth: usize) -> Result<Value, TooDeep> {
    check_depth(arguments.as_bytes(), max_depth)?;
    Ok(match sonic_rs::from_str::<Value>(arguments) {
        Ok(v) if v.is_object() => v,
        _ => sonic_rs::from_str("{}").unwrap_or_default(),
    })
}

/// The 400 message for a client's tool call whose arguments nest too deep.
pub fn too_deep_arguments(call_id: &str, e: TooDeep) -> String {
    format!("the arguments JSON of tool call '{call_id}' {e}")
}

fn tool_result(m: &Message) -> Block {
    Block {
        kind: "tool_result".to_owned(),
        tool_use_id: Some(m.tool_call_id.clone().unwrap_or_default()),
        content: Some(BlockContent::Text(
            m.content.as_ref().map(Content::text).unwrap_or_default(),
        )),
        cache_control: part_cache_control(m.content.as_ref()),
        ..Block::default()
    }
}

/// The last `cache_control` among a message's parts (for parts that become one block).
fn part_cache_control(content: Option<&Content>) -> Option<CacheControl> {
    match content {
        Some(Content::Parts(parts)) => parts.iter().rev().find_map(|p| p.cache_control.clone()),
        _ => None,
    }
}

fn tool_from_openai(tool: &Tool) -> ATool {
    let schema = tool
        .function
        .parameters
        .clone()
        .unwrap_or_else(|| sonic_rs::from_str(r#"{"type":"object","properties":{}}"#).unwrap_or_default());
    ATool {
        kind: None,
        name: tool.function.name.clone(),
        description: tool.function.description.clone(),
        input_schema: Some(schema),
        cache_control: tool.cache_control.clone(),
    }
}

fn tool_choice_from_openai(choice: &Value) -> Option<AToolChoice> {
    let kind = |k: &str| AToolChoice {
        kind: k.to_owned(),
        ..AToolChoice::default()
    };
    if let Some(s) = choice.as_str() {
        return match s {
            "auto" => Some(kind("auto")),
            "required" => Some(kind("any")),
            "none" => Some(kind("none")),
            _ => None,
        };
    }
    let name = choice
        .get("function")
        .and_then(|f| f.get("name"))
        .and_then(|n| n.as_str())?;
    Some(AToolChoice {
        kind: "tool".to_owned(),
        name: Some(name.to_owned()),
        disable_parallel_tool_use: None,
    })
}
