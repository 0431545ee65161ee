//! Responses request -> OpenAI chat request, for upstreams that do not serve the Responses API
//! (provider-formats.md 1.8): `instructions` and `system`/`developer` items become system
//! messages, `input` items become turns (a `function_call` item an assistant tool call, a
//! `function_call_output` item a `tool` message), flat function tools become chat tools, and
//! `max_output_tokens`, `temperature`, `top_p`, `reasoning.effort`, `text.format`,
//! `tool_choice` and `parallel_tool_calls` are mapped.
//! Invariant: nothing the client asked for is dropped silently. What needs state rotor does not
//! keep (`previous_response_id`, `store: true`, `conversation`, `background`) or what chat
//! cannot express (built-in tools, file inputs, item references) is a 400 naming the field.

use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

use crate::codec::depth::check_depth;
use crate::providers::openai::{
    ChatRequest, Content, FunctionCall, FunctionDef, ImageUrl, Message, Part, StreamOptions, Tool, ToolCall,
};

type Result<T> = std::result::Result<T, String>;

/// A client's Responses body -> the chat request it means. A body nesting deeper than
/// `max_depth` is refused before it is parsed.
pub fn to_chat(body: &[u8], max_depth: usize) -> Result<ChatRequest> {
    check_depth(body, max_depth).map_err(|e| format!("request body {e}"))?;
    let req: Value = sonic_rs::from_slice(body).map_err(|e| format!("invalid Responses request: {e}"))?;
    if !req.is_object() {
        return Err("the Responses request must be a JSON object".to_owned());
    }
    refuse_stateful(&req)?;
    let mut messages = Vec::new();
    if let Some(instructions) = req.get("instructions").and_then(|v| v.as_str()) {
        if !instructions.is_empty() {
            messages.push(text_message("system", instructions.to_owned()));
        }
    }
    match req.get("input") {
        Some(v) if v.is_str() => messages.push(text_message("user", v.as_str().unwrap_or("").to_owned())),
        Some(v) if v.is_array() => {
            for (i, item) in v.as_array().into_iter().flatten().enumerate() {
                push_item(&mut messages, item, i)?;
            }
        }
        Some(v) if !v.is_null() => return Err("'input' must be a string or an array of items".to_owned()),
        _ => {}
    }
    let stream = req.get("stream").and_then(|v| v.as_bool()) == Some(true);
    Ok(ChatRequest {
        model: str_of(&req, "model").unwrap_or_default(),
        messages,
        max_tokens: req.get("max_output_tokens").and_then(|v| v.as_u64()),
        temperature: req.get("temperature").and_then(|v| v.as_f64()),
        top_p: req.get("top_p").and_then(|v| v.as_f64()),
        stream: stream.then_some(true),
        // Usage is always asked for: `response.completed` carries it.
        stream_options: stream.then_some(StreamOptions {
            include_usage: Some(true),
        }),
        tools: tools(&req)?,
        tool_choice: tool_choice(&req)?,
        parallel_tool_calls: req.get("parallel_tool_calls").and_then(|v| v.as_bool()),
        user: str_of(&req, "user"),
        response_format: response_format(&req)?,
        reasoning_effort: req
            .get("reasoning")
            .and_then(|r| r.get("effort"))
            .and_then(|e| e.as_str())
            .map(str::to_owned),
        ..ChatRequest::default()
    })
}

/// Fields that need a stored response or conversation: only an upstream that serves the
/// Responses API itself keeps them.
fn refuse_stateful(req: &Value) -> Result<()> {
    let set = |name: &str| req.get(name).is_some_and(|v| !v.is_null());
    let needs = if set("previous_response_id") {
        Some("previous_response_id")
    } else if req.get("store").and_then(|v| v.as_bool()) == Some(true) {
        Some("store: true")
    } else if set("conversation") {
        Some("conversation")
    } else if req.get("background").and_then(|v| v.as_bool()) == Some(true) {
        Some("background: true")
    } else {
        None
    };
    match needs {
        Some(what) => Err(format!(
            "'{what}' needs an upstream that serves the Responses API itself (a provider with responses = \"native\"); this model's provider is reached by translation to chat completions, which keeps no stored responses: send the whole conversation in 'input' instead"
        )),
        None => Ok(()),
    }
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(|s| s.as_str()).map(str::to_owned)
}

fn text_message(role: &str, text: String) -> Message {
    Message {
        role: role.to_owned(),
        content: Some(Content::Text(text)),
        ..Message::default()
    }
}

/// One input item -> a chat message (or a tool call merged into the assistant turn before it).
fn push_item(messages: &mut Vec<Message>, item: &Value, i: usize) -> Result<()> {
    let kind = item.get("type").and_then(|t| t.as_str());
    match kind {
        // An `EasyInputMessage` has a role and no type.
        None | Some("message") => {
            let role = match item.get("role").and_then(|r| r.as_str()).unwrap_or("user") {
                "developer" | "system" => "system",
                "assistant" => "assistant",
                _ => "user",
            };
            let content = content(item.get("content"), i)?;
            messages.push(Message {
                role: role.to_owned(),
                content: Some(content),
                ..Message::default()
            });
        }
        Some("function_call") => {
            let call = ToolCall {
                id: str_of(item, "call_id").unwrap_or_default(),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: str_of(item, "name").unwrap_or_default(),
                    arguments: str_of(item, "arguments").unwrap_or_default(),
                },
            };
            match messages.last_mut() {
                Some(last) if last.role == "assistant" => last.tool_calls.get_or_insert_with(Vec::new).push(call),
                _ => messages.push(Message {
                    role: "assistant".to_owned(),
                    tool_calls: Some(vec![call]),
                    ..Message::default()
                }),
            }
        }
        Some("function_call_output") => {
            let output = match item.get("output") {
                Some(o) if o.is_str() => Content::Text(o.as_str().unwrap_or("").to_owned()),
                other => content(other, i)?,
            };
            messages.push(Message {
                role: "tool".to_owned(),
                content: Some(output),
                tool_call_id: str_of(item, "call_id"),
                ..Message::default()
            });
        }
        // The model's own reasoning from an earlier turn: chat has no place to send it back.
        Some("reasoning") => {}
        Some(other) => {
            return Err(format!(
                "input[{i}]: items of type '{other}' cannot be translated to chat completions; only message, function_call and function_call_output items can"
            ))
        }
    }
    Ok(())
}

/// A message's content: a string, or parts (`input_text`/`output_text`, `input_image`).
fn content(value: Option<&Value>, i: usize) -> Result<Content> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(Content::Text(String::new()));
    };
    if let Some(s) = value.as_str() {
        return Ok(Content::Text(s.to_owned()));
    }
    let Some(parts) = value.as_array() else {
        return Err(format!("input[{i}].content must be a string or an array of parts"));
    };
    let mut out = Vec::with_capacity(parts.len());
    for part in parts.iter() {
        match part.get("type").and_then(|t| t.as_str()).unwrap_or("") {
            "input_text" | "output_text" | "text" | "refusal" => out.push(Part {
                kind: "text".to_owned(),
                text: str_of(part, "text").or_else(|| str_of(part, "refusal")),
                ..Part::default()
            }),
            "input_image" => {
                let Some(url) = str_of(part, "image_url") else {
                    return Err(format!(
                        "input[{i}]: an input_image by file_id cannot be translated to chat completions; send image_url"
                    ));
                };
                out.push(Part {
                    kind: "image_url".to_owned(),
                    image_url: Some(ImageUrl { url }),
                    ..Part::default()
                });
            }
            other => {
                return Err(format!(
                    "input[{i}]: content parts of type '{other}' cannot be translated to chat completions"
                ))
            }
        }
    }
    // A single text part is sent as plain text: every chat server accepts that.
    if let [Part {
        kind, text: Some(text), ..
    }] = out.as_slice()
    {
        if kind == "text" {
            return Ok(Content::Text(text.clone()));
        }
    }
    Ok(Content::Parts(out))
}

/// Flat function tools -> chat tools. Built-in tools (web search, file search, ...) run on
/// OpenAI's side only.
fn tools(req: &Value) -> Result<Option<Vec<Tool>>> {
    let Some(list) = req.get("tools").and_then(|t| t.as_array()) else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, tool) in list.iter().enumerate() {
        match tool.get("type").and_then(|t| t.as_str()).unwrap_or("") {
            "function" => out.push(Tool {
                kind: "function".to_owned(),
                function: FunctionDef {
                    name: str_of(tool, "name").unwrap_or_default(),
                    description: str_of(tool, "description"),
                    parameters: tool.get("parameters").filter(|p| !p.is_null()).cloned(),
                },
                cache_control: None,
            }),
            other => {
                return Err(format!(
                    "tools[{i}]: the built-in tool '{other}' needs an upstream that serves the Responses API itself; only function tools can be translated to chat completions"
                ))
            }
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

/// `"auto" | "none" | "required"` pass; `{"type":"function","name"}` becomes chat's nested form.
fn tool_choice(req: &Value) -> Result<Option<Value>> {
    let Some(choice) = req.get("tool_choice").filter(|c| !c.is_null()) else {
        return Ok(None);
    };
    if choice.is_str() {
        return Ok(Some(choice.clone()));
    }
    match (choice.get("type").and_then(|t| t.as_str()), str_of(choice, "name")) {
        (Some("function"), Some(name)) => {
            let mut out = String::from("{\"type\":\"function\",\"function\":{");
            crate::providers::write::field_str(&mut out, "name", &name);
            out.push_str("}}");
            sonic_rs::from_str(&out).map(Some).map_err(|e| e.to_string())
        }
        _ => Err("tool_choice: only \"auto\", \"none\", \"required\" and {\"type\":\"function\",\"name\":...} can be translated to chat completions".to_owned()),
    }
}

/// `text.format` -> `response_format`: `json_schema` moves its flat fields under `json_schema`.
fn response_format(req: &Value) -> Result<Option<Value>> {
    let Some(format) = req.get("text").and_then(|t| t.get("format")).filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(|t| t.as_str()).unwrap_or("") {
        "text" => Ok(None),
        "json_object" => sonic_rs::from_str("{\"type\":\"json_object\"}")
            .map(Some)
            .map_err(|e| e.to_string()),
        "json_schema" => {
            let mut schema = sonic_rs::Object::new();
            for key in ["name", "description", "schema", "strict"] {
                if let Some(v) = format.get(key).filter(|v| !v.is_null()) {
                    schema.insert(&key, v.clone());
                }
            }
            let mut out = sonic_rs::Object::new();
            out.insert(&"type", Value::from("json_schema"));
            out.insert(&"json_schema", Value::from(schema));
            Ok(Some(Value::from(out)))
        }
        other => Err(format!(
            "text.format: the type '{other}' cannot be translated to chat completions"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::DEFAULT_MAX_DEPTH as D;

    #[test]
    fn items_tools_and_options_map_to_chat() {
        let body = br#"{"model":"m","instructions":"Be brief.","max_output_tokens":64,"temperature":0.5,"top_p":0.9,
          "reasoning":{"effort":"low"},"text":{"format":{"type":"json_schema","name":"w","schema":{"type":"object"},"strict":true}},
          "tools":[{"type":"function","name":"get_weather","description":"d","parameters":{"type":"object"},"strict":true}],
          "tool_choice":{"type":"function","name":"get_weather"},"parallel_tool_calls":false,"stream":true,
          "input":[{"role":"developer","content":"dev"},{"type":"message","role":"user","content":[{"type":"input_text","text":"weather?"},{"type":"input_image","image_url":"data:image/png;base64,AA"}]},
            {"type":"reasoning","id":"rs_1","summary":[]},
            {"type":"function_call","call_id":"call_1","name":"get_weather","arguments":"{\"city\":\"Oslo\"}"},
            {"type":"function_call_output","call_id":"call_1","output":"5C"}]}"#;
        let chat = to_chat(body, D).unwrap();
        let v: Value = sonic_rs::from_str(&sonic_rs::to_string(&chat).unwrap()).unwrap();
        assert_eq!(v["messages"][0]["role"].as_str(), Some("system"));
        assert_eq!(v["messages"][0]["content"].as_str(), Some("Be brief."));
        assert_eq!(v["messages"][1]["role"].as_str(), Some("system"));
        assert_eq!(
            v["messages"][2]["content"][1]["image_url"]["url"].as_str(),
            Some("data:image/png;base64,AA")
        );
        assert_eq!(v["messages"][3]["role"].as_str(), Some("assistant"));
        assert_eq!(v["messages"][3]["tool_calls"][0]["id"].as_str(), Some("call_1"));
        assert_eq!(v["messages"][4]["role"].as_str(), Some("tool"));
        assert_eq!(v["messages"][4]["tool_call_id"].as_str(), Some("call_1"));
        assert_eq!(v["messages"][4]["content"].as_str(), Some("5C"));
        assert_eq!(v["max_tokens"].as_u64(), Some(64));
        assert_eq!(v["reasoning_effort"].as_str(), Some("low"));
        assert_eq!(v["tools"][0]["function"]["name"].as_str(), Some("get_weather"));
        assert_eq!(v["tool_choice"]["function"]["name"].as_str(), Some("get_weather"));
        assert_eq!(v["parallel_tool_calls"].as_bool(), Some(false));
        assert_eq!(v["response_format"]["json_schema"]["name"].as_str(), Some("w"));
        assert_eq!(v["response_format"]["json_schema"]["strict"].as_bool(), Some(true));
        assert_eq!(v["stream_options"]["include_usage"].as_bool(), Some(true));
        let plain = to_chat(br#"{"model":"m","input":"hi"}"#, D).unwrap();
        assert_eq!(plain.messages.len(), 1);
        assert_eq!(plain.stream, None);
    }

    #[test]
    fn stateful_and_untranslatable_requests_are_refused_by_name() {
        for (body, needle) in [
            (
                r#"{"model":"m","input":"hi","previous_response_id":"resp_1"}"#,
                "previous_response_id",
            ),
            (r#"{"model":"m","input":"hi","store":true}"#, "store: true"),
            (
                r#"{"model":"m","input":"hi","tools":[{"type":"web_search"}]}"#,
                "web_search",
            ),
            (
                r#"{"model":"m","input":[{"type":"item_reference","id":"x"}]}"#,
                "item_reference",
            ),
            (
                r#"{"model":"m","input":[{"role":"user","content":[{"type":"input_file","file_id":"f"}]}]}"#,
                "input_file",
            ),
            (r#"{"model":"m","input":5}"#, "'input'"),
        ] {
            let e = to_chat(body.as_bytes(), D).unwrap_err();
            assert!(e.contains(needle), "{body}: {e}");
        }
        assert!(to_chat(
            br#"{"model":"m","input":"hi","store":false,"previous_response_id":null}"#,
            D
        )
        .is_ok());
        let deep = format!("{{\"input\":{}}}", "[".repeat(200) + &"]".repeat(200));
        assert!(to_chat(deep.as_bytes(), D).unwrap_err().contains("deeper"));
    }
}
