//! A Gemini client's `GenerateContentRequest` -> OpenAI chat, for the Gemini front door served by
//! upstreams that do not speak Gemini (provider-formats.md 3.2, 7.2-7.7 read backwards):
//! `systemInstruction` into a system message, `model` turns into assistant messages with
//! `functionCall` parts as tool calls, `functionResponse` parts into tool messages,
//! `functionDeclarations` into tools, `generationConfig` into the sampling options.
//! Invariant: nothing that changes the answer is dropped quietly. What the hub cannot carry
//! (non-image media, code execution, Google's own tools, cached content, logprobs, non-text
//! modalities) is a 400 naming the field; `safetySettings` and `thinkingConfig` are dropped, as
//! the README says (no OpenAI-compatible equivalent; they change filtering and effort, not
//! the request's meaning). Tool-call ids: Gemini's own when present, else `call_<n>` counted over
//! the whole history, and each `functionResponse` answers its call by id or, without one, the
//! oldest unanswered call of the same name.

use serde::Deserialize;
use sonic_rs::{JsonContainerTrait, JsonValueMutTrait, JsonValueTrait, Value};

use crate::codec::depth::check_depth;
use crate::providers::openai::{
    ChatRequest, Content, FunctionCall, FunctionDef, ImageUrl, Message, Part as ChatPart, Stop, StreamOptions, Tool,
    ToolCall,
};

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerateRequest {
    #[serde(default)]
    contents: Vec<WireContent>,
    #[serde(default)]
    system_instruction: Option<WireContent>,
    #[serde(default)]
    tools: Vec<Value>,
    #[serde(default)]
    tool_config: Option<Value>,
    #[serde(default)]
    generation_config: Option<GenerationConfig>,
    #[serde(default)]
    cached_content: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireContent {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    parts: Vec<WirePart>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WirePart {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default)]
    inline_data: Option<Blob>,
    #[serde(default)]
    file_data: Option<FileData>,
    #[serde(default)]
    function_call: Option<WireCall>,
    #[serde(default)]
    function_response: Option<WireResponse>,
    #[serde(default)]
    executable_code: Option<Value>,
    #[serde(default)]
    code_execution_result: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Blob {
    #[serde(default)]
    mime_type: String,
    #[serde(default)]
    data: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct FileData {
    #[serde(default)]
    mime_type: String,
    #[serde(default)]
    file_uri: String,
}

#[derive(Deserialize, Default)]
struct WireCall {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Deserialize, Default)]
struct WireResponse {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    response: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    top_k: Option<f64>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    frequency_penalty: Option<f64>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    candidate_count: Option<u32>,
    #[serde(default)]
    response_mime_type: Option<String>,
    #[serde(default)]
    response_schema: Option<Value>,
    #[serde(default)]
    response_json_schema: Option<Value>,
    #[serde(default)]
    response_logprobs: Option<bool>,
    #[serde(default)]
    response_modalities: Option<Vec<String>>,
}

/// The tool calls seen so far in the history, to name and id the responses.
#[derive(Default)]
struct Calls {
    /// (id, name, answered)
    seen: Vec<(String, String, bool)>,
}

impl Calls {
    fn add(&mut self, id: Option<String>, name: &str) -> String {
        let id = id
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| format!("call_{}", self.seen.len()));
        self.seen.push((id.clone(), name.to_owned(), false));
        id
    }

    fn answer(&mut self, id: Option<&str>, name: &str) -> String {
        let found = match id.filter(|i| !i.is_empty()) {
            Some(id) => self.seen.iter_mut().find(|(i, _, _)| i == id),
            None => self.seen.iter_mut().find(|(_, n, done)| n == name && !done),
        };
        match found {
            Some(call) => {
                call.2 = true;
                call.0.clone()
            }
            None => id.map_or_else(|| format!("call_{name}"), str::to_owned),
        }
    }
}

/// The client's Gemini body -> OpenAI chat for `model`. A body nesting deeper than `max_depth`
/// is refused before serde reads it; streams always ask for the usage chunk.
pub fn to_chat(body: &[u8], model: &str, stream: bool, max_depth: usize) -> Result<ChatRequest, String> {
    check_depth(body, max_depth).map_err(|e| format!("request body {e}"))?;
    let req: GenerateRequest =
        sonic_rs::from_slice(body).map_err(|e| format!("invalid Gemini generateContent request: {e}"))?;
    if req.cached_content.is_some() {
        return Err(untranslatable("cachedContent"));
    }
    let mut messages = Vec::with_capacity(req.contents.len() + 1);
    if let Some(system) = &req.system_instruction {
        let text: String = system.parts.iter().filter_map(|p| p.text.as_deref()).collect();
        if !text.is_empty() {
            messages.push(message("system", Content::Text(text)));
        }
    }
    let mut calls = Calls::default();
    for content in &req.contents {
        match content.role.as_deref() {
            Some("model") => messages.push(model_turn(content, &mut calls)?),
            _ => user_turn(content, &mut calls, &mut messages)?,
        }
    }
    let mut chat = ChatRequest {
        model: model.to_owned(),
        messages,
        stream: stream.then_some(true),
        stream_options: stream.then_some(StreamOptions {
            include_usage: Some(true),
        }),
        tools: tools(&req.tools)?,
        tool_choice: req.tool_config.as_ref().and_then(tool_choice),
        ..ChatRequest::default()
    };
    if let Some(config) = req.generation_config {
        apply_config(&mut chat, config)?;
    }
    Ok(chat)
}

fn untranslatable(field: &str) -> String {
    format!("'{field}' cannot be translated for this model's provider (it does not speak the Gemini API)")
}

fn message(role: &str, content: Content) -> Message {
    Message {
        role: role.to_owned(),
        content: Some(content),
        ..Message::default()
    }
}

fn check_part(part: &WirePart) -> Result<(), String> {
    if part.executable_code.is_some() || part.code_execution_result.is_some() {
        return Err(untranslatable("executableCode"));
    }
    Ok(())
}

/// A `model` turn: text as content (thoughts are not sent back), calls as tool calls.
fn model_turn(content: &WireContent, calls: &mut Calls) -> Result<Message, String> {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for part in &content.parts {
        check_part(part)?;
        if let Some(call) = &part.function_call {
            let arguments = call
                .args
                .as_ref()
                .and_then(|a| sonic_rs::to_string(a).ok())
                .unwrap_or_else(|| "{}".to_owned());
            tool_calls.push(ToolCall {
                id: calls.add(call.id.clone(), &call.name),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: call.name.clone(),
                    arguments,
                },
            });
        } else if let (Some(t), false) = (&part.text, part.thought == Some(true)) {
            text.push_str(t);
        }
    }
    Ok(Message {
        role: "assistant".to_owned(),
        content: (!text.is_empty() || tool_calls.is_empty()).then_some(Content::Text(text)),
        tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
        ..Message::default()
    })
}

/// A `user` (or `function`/`tool`) turn: function responses as tool messages first, then the
/// rest as one user message.
fn user_turn(content: &WireContent, calls: &mut Calls, out: &mut Vec<Message>) -> Result<(), String> {
    let mut parts = Vec::new();
    for part in &content.parts {
        check_part(part)?;
        if let Some(r) = &part.function_response {
            let response = r.response.as_ref().and_then(|v| sonic_rs::to_string(v).ok());
            out.push(Message {
                role: "tool".to_owned(),
                content: Some(Content::Text(response.unwrap_or_else(|| "{}".to_owned()))),
                tool_call_id: Some(calls.answer(r.id.as_deref(), &r.name)),
                ..Message::default()
            });
        } else if let Some(t) = &part.text {
            parts.push(text_part(t));
        } else if let Some(blob) = &part.inline_data {
            parts.push(image_part(
                &blob.mime_type,
                format!("data:{};base64,{}", blob.mime_type, blob.data),
            )?);
        } else if let Some(file) = &part.file_data {
            parts.push(image_part(&file.mime_type, file.file_uri.clone())?);
        }
    }
    let images = parts.iter().any(|p| p.kind == "image_url");
    match parts.len() {
        0 => {}
        1 if !images => {
            let text = parts.pop().and_then(|p| p.text).unwrap_or_default();
            out.push(message("user", Content::Text(text)));
        }
        _ => out.push(message("user", Content::Parts(parts))),
    }
    Ok(())
}

fn text_part(text: &str) -> ChatPart {
    ChatPart {
        kind: "text".to_owned(),
        text: Some(text.to_owned()),
        ..ChatPart::default()
    }
}

/// Images travel as `image_url`; other media have no place in the hub's chat parts.
fn image_part(mime: &str, url: String) -> Result<ChatPart, String> {
    if !mime.starts_with("image/") {
        return Err(format!(
            "a '{mime}' part cannot be translated for this model's provider (only images can)"
        ));
    }
    Ok(ChatPart {
        kind: "image_url".to_owned(),
        image_url: Some(ImageUrl { url }),
        ..ChatPart::default()
    })
}

/// `functionDeclarations` as function tools; Google's own tools (search, code execution, URL
/// context) are refused.
fn tools(tools: &[Value]) -> Result<Option<Vec<Tool>>, String> {
    let mut out = Vec::new();
    for tool in tools {
        let Some(object) = tool.as_object() else { continue };
        for (key, value) in object.iter() {
            if key != "functionDeclarations" && key != "function_declarations" {
                return Err(untranslatable(&format!("tools[].{key}")));
            }
            for d in value.as_array().into_iter().flatten() {
                let parameters = d
                    .get("parametersJsonSchema")
                    .cloned()
                    .or_else(|| d.get("parameters").cloned().map(lower_types));
                out.push(Tool {
                    kind: "function".to_owned(),
                    function: FunctionDef {
                        name: d.get("name").and_then(|n| n.as_str()).unwrap_or_default().to_owned(),
                        description: d.get("description").and_then(|n| n.as_str()).map(str::to_owned),
                        parameters,
                    },
                    cache_control: None,
                });
            }
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

/// Gemini's schema `type` names are upper case (`OBJECT`); JSON Schema's are lower case. Walks
/// with its own stack (the schema is client input; its depth was bounded with the body).
fn lower_types(mut schema: Value) -> Value {
    let mut pending: Vec<&mut Value> = vec![&mut schema];
    while let Some(v) = pending.pop() {
        if v.is_object() {
            let Some(o) = v.as_object_mut() else { continue };
            let lowered = o.get(&"type").and_then(|t| t.as_str()).map(str::to_ascii_lowercase);
            if let Some(t) = lowered {
                o.insert("type", Value::from(t.as_str()));
            }
            pending.extend(o.iter_mut().map(|(_, child)| child));
        } else if v.is_array() {
            let Some(a) = v.as_array_mut() else { continue };
            pending.extend(a.iter_mut());
        }
    }
    schema
}

/// `functionCallingConfig.mode`: AUTO, ANY (one allowed name: that function), NONE.
fn tool_choice(config: &Value) -> Option<Value> {
    let calling = config.get("functionCallingConfig")?;
    let names = calling.get("allowedFunctionNames").and_then(|n| n.as_array());
    let text = match calling.get("mode").and_then(|m| m.as_str())? {
        "AUTO" => "\"auto\"".to_owned(),
        "NONE" => "\"none\"".to_owned(),
        "ANY" | "VALIDATED" => match names.filter(|n| n.len() == 1).and_then(|n| n.first()?.as_str()) {
            Some(name) => {
                let mut s = String::from("{\"type\":\"function\",\"function\":{");
                crate::providers::write::field_str(&mut s, "name", name);
                s.push_str("}}");
                s
            }
            None => "\"required\"".to_owned(),
        },
        _ => return None,
    };
    sonic_rs::from_str(&text).ok()
}

fn apply_config(chat: &mut ChatRequest, c: GenerationConfig) -> Result<(), String> {
    if c.response_logprobs == Some(true) {
        return Err(untranslatable("generationConfig.responseLogprobs"));
    }
    if c.response_modalities
        .iter()
        .flatten()
        .any(|m| !m.eq_ignore_ascii_case("text"))
    {
        return Err(untranslatable("generationConfig.responseModalities"));
    }
    chat.max_tokens = c.max_output_tokens;
    chat.temperature = c.temperature;
    chat.top_p = c.top_p;
    chat.top_k = c.top_k.filter(|k| k.is_finite() && *k >= 0.0).map(|k| k.round() as u64);
    chat.stop = c.stop_sequences.filter(|s| !s.is_empty()).map(Stop::Many);
    chat.presence_penalty = c.presence_penalty;
    chat.frequency_penalty = c.frequency_penalty;
    chat.seed = c.seed;
    chat.n = c.candidate_count;
    let schema = c.response_json_schema.or_else(|| c.response_schema.map(lower_types));
    chat.response_format = match (c.response_mime_type.as_deref(), schema) {
        (None | Some("text/plain"), None) => None,
        (Some("application/json"), None) => sonic_rs::from_str(r#"{"type":"json_object"}"#).ok(),
        (Some("application/json") | None, Some(schema)) => {
            let mut format: Value = sonic_rs::from_str(r#"{"type":"json_schema","json_schema":{"name":"response"}}"#)
                .map_err(|e| e.to_string())?;
            if let Some(inner) = format.get_mut("json_schema").and_then(|j| j.as_object_mut()) {
                inner.insert("schema", schema);
            }
            Some(format)
        }
        (Some(other), _) => return Err(untranslatable(&format!("generationConfig.responseMimeType {other}"))),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::DEFAULT_MAX_DEPTH as D;

    #[test]
    fn a_tool_round_maps_ids_roles_and_config() {
        let body = br#"{"systemInstruction":{"parts":[{"text":"Be brief."}]},
          "contents":[{"role":"user","parts":[{"text":"Weather?"},{"inlineData":{"mimeType":"image/png","data":"AAA"}}]},
            {"role":"model","parts":[{"text":"hm","thought":true},{"functionCall":{"name":"get_weather","args":{"city":"Oslo"}}}]},
            {"role":"user","parts":[{"functionResponse":{"name":"get_weather","response":{"t":5}}}]}],
          "tools":[{"functionDeclarations":[{"name":"get_weather","parameters":{"type":"OBJECT","properties":{"city":{"type":"STRING"}}}}]}],
          "toolConfig":{"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["get_weather"]}},
          "generationConfig":{"maxOutputTokens":64,"topK":40,"stopSequences":["END"],"responseMimeType":"application/json"}}"#;
        let chat = to_chat(body, "gpt-x", true, D).unwrap();
        let v: Value = sonic_rs::from_str(&sonic_rs::to_string(&chat).unwrap()).unwrap();
        assert_eq!(v["messages"][0]["role"].as_str(), Some("system"));
        assert_eq!(
            v["messages"][1]["content"][1]["image_url"]["url"].as_str(),
            Some("data:image/png;base64,AAA")
        );
        assert_eq!(v["messages"][2]["tool_calls"][0]["id"].as_str(), Some("call_0"));
        assert_eq!(
            v["messages"][2]["tool_calls"][0]["function"]["arguments"].as_str(),
            Some(r#"{"city":"Oslo"}"#)
        );
        assert!(v["messages"][2]["content"].is_null(), "thoughts are not sent back");
        assert_eq!(v["messages"][3]["tool_call_id"].as_str(), Some("call_0"));
        assert_eq!(v["messages"][3]["content"].as_str(), Some(r#"{"t":5}"#));
        assert_eq!(
            v["tools"][0]["function"]["parameters"]["properties"]["city"]["type"].as_str(),
            Some("string")
        );
        assert_eq!(v["tool_choice"]["function"]["name"].as_str(), Some("get_weather"));
        assert_eq!((v["max_tokens"].as_u64(), v["top_k"].as_u64()), (Some(64), Some(40)));
        assert_eq!(v["stop"][0].as_str(), Some("END"));
        assert_eq!(v["response_format"]["type"].as_str(), Some("json_object"));
        assert_eq!(v["stream_options"]["include_usage"].as_bool(), Some(true));
        assert_eq!(v["model"].as_str(), Some("gpt-x"));
    }

    #[test]
    fn what_the_hub_cannot_carry_is_a_clear_error() {
        for (body, field) in [
            (
                r#"{"contents":[{"parts":[{"inlineData":{"mimeType":"application/pdf","data":"x"}}]}]}"#,
                "application/pdf",
            ),
            (r#"{"contents":[],"tools":[{"googleSearch":{}}]}"#, "googleSearch"),
            (r#"{"contents":[],"cachedContent":"cachedContents/1"}"#, "cachedContent"),
            (
                r#"{"contents":[],"generationConfig":{"responseLogprobs":true}}"#,
                "responseLogprobs",
            ),
            (
                r#"{"contents":[{"parts":[{"executableCode":{"code":"1"}}]}]}"#,
                "executableCode",
            ),
        ] {
            let err = to_chat(body.as_bytes(), "m", false, D).unwrap_err();
            assert!(err.contains(field), "{err}");
        }
        let deep = format!(r#"{{"contents":{}{}}}"#, "[".repeat(200), "]".repeat(200));
        assert!(to_chat(deep.as_bytes(), "m", false, D).unwrap_err().contains("deep"));
    }
}
