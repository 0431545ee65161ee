//! OpenAI chat -> Gemini `generateContent` body and path (provider-formats.md 3.2, 7.2-7.7):
//! system turns into `systemInstruction`, `assistant` into `model`, tool results into
//! `functionResponse` parts (named by looking up the call id earlier in the same history),
//! sampling options into `generationConfig`, tools into `functionDeclarations`.
//! Invariant: roles alternate (consecutive same-role contents are merged) and every
//! `functionResponse.response` is an object (strings are wrapped as `{"content": ...}`).

use serde::Serialize;
use sonic_rs::{JsonValueMutTrait, JsonValueTrait, Value};

use crate::codec::depth::check_depth;
use crate::codec::target::push_segment;
use crate::providers::anthropic::request::{parse_arguments, parse_data_url, too_deep_arguments};
use crate::providers::openai::{ChatRequest, Content as ChatContent, Part as ChatPart};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    contents: Vec<Content>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<Content>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tools>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<Value>,
    generation_config: GenerationConfig,
}

#[derive(Serialize)]
struct Content {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    parts: Vec<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Tools {
    function_declarations: Vec<Value>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_json_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_config: Option<Value>,
}

/// `/models/{model}:generateContent`, or the SSE streaming method. The model is one
/// percent-encoded segment, so no name can add a path segment, a query or a request line.
pub fn path(model: &str, stream: bool) -> String {
    let model = model.strip_prefix("models/").unwrap_or(model);
    let mut out = String::with_capacity(model.len() + 48);
    out.push_str("/models/");
    push_segment(&mut out, model.as_bytes());
    out.push_str(if stream {
        ":streamGenerateContent?alt=sse"
    } else {
        ":generateContent"
    });
    out
}

/// `/models/{model}:{method}` for any method (the Gemini door's passthrough), with
/// `streamGenerateContent` as SSE.
pub fn method_path(model: &str, method: &str) -> String {
    match method {
        "generateContent" => path(model, false),
        "streamGenerateContent" => path(model, true),
        _ => {
            let mut out = path(model, false);
            out.truncate(out.len() - "generateContent".len());
            out.push_str(method);
            out
        }
    }
}

fn json(text: &str) -> Value {
    sonic_rs::from_str(text).unwrap_or_default()
}

fn text_part(text: &str) -> Value {
    let mut v = json("{}");
    v.as_object_mut().map(|o| o.insert("text", Value::from(text)));
    v
}

/// OpenAI chat -> Gemini body. Tool-call arguments (JSON inside a string) nesting deeper than
/// `max_depth` are refused; a tool result that deep is sent as text.
pub fn from_chat(chat: &ChatRequest, max_depth: usize) -> Result<Vec<u8>, String> {
    let mut system: Vec<Value> = Vec::new();
    let mut contents: Vec<Content> = Vec::new();
    for (at, m) in chat.messages.iter().enumerate() {
        let (role, parts) = match m.role.as_str() {
            "system" | "developer" => {
                if let Some(c) = &m.content {
                    system.push(text_part(&c.text()));
                }
                continue;
            }
            "assistant" => ("model", assistant_parts(m, max_depth)?),
            "tool" | "function" => ("user", vec![function_response(chat, at, m, max_depth)]),
            _ => ("user", user_parts(m.content.as_ref())?),
        };
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some(last) if last.role == Some(role) => last.parts.extend(parts),
            _ => contents.push(Content {
                role: Some(role),
                parts,
            }),
        }
    }
    let mut config = GenerationConfig {
        max_output_tokens: chat.output_limit(),
        temperature: chat.temperature,
        top_p: chat.top_p,
        top_k: chat.top_k,
        stop_sequences: chat.stop_list(),
        presence_penalty: chat.presence_penalty,
        frequency_penalty: chat.frequency_penalty,
        seed: chat.seed,
        candidate_count: chat.n.filter(|n| *n > 1),
        thinking_config: chat
            .reasoning_budget()
            .and_then(|b| sonic_rs::from_str(&format!(r#"{{"thinkingBudget":{b},"includeThoughts":true}}"#)).ok()),
        ..GenerationConfig::default()
    };
    if let Some(format) = &chat.response_format {
        match format.get("type").and_then(|t| t.as_str()) {
            Some("json_object") => config.response_mime_type = Some("application/json"),
            Some("json_schema") => {
                config.response_mime_type = Some("application/json");
                config.response_json_schema = format.get("json_schema").and_then(|s| s.get("schema")).cloned();
            }
            _ => {}
        }
    }
    let declarations: Vec<Value> = chat
        .tools
        .iter()
        .flatten()
        .map(|t| {
            let mut d = json("{}");
            if let Some(o) = d.as_object_mut() {
                o.insert("name", Value::from(t.function.name.as_str()));
                if let Some(desc) = &t.function.description {
                    o.insert("description", Value::from(desc.as_str()));
                }
                if let Some(p) = &t.function.parameters {
                    o.insert("parameters", clean_schema(p.clone()));
                }
            }
            d
        })
        .collect();
    let body = Body {
        contents,
        system_instruction: (!system.is_empty()).then_some(Content {
            role: None,
            parts: system,
        }),
        tools: if declarations.is_empty() {
            Vec::new()
        } else {
            vec![Tools {
                function_declarations: declarations,
            }]
        },
        tool_config: chat.tool_choice.as_ref().and_then(tool_config),
        generation_config: config,
    };
    sonic_rs::to_vec(&body).map_err(|e| format!("cannot encode the Gemini request: {e}"))
}

fn user_parts(content: Option<&ChatContent>) -> Result<Vec<Value>, String> {
    Ok(match content {
        None => Vec::new(),
        Some(ChatContent::Text(s)) => vec![text_part(s)],
        Some(ChatContent::Parts(parts)) => parts
            .iter()
            .map(|p| match p.kind.as_str() {
                "file" | "input_audio" => inline_part(p).map(Some),
                "text" | "image_url" => Ok(part(p)),
                other => Err(format!("content part type '{other}' has no Gemini equivalent")),
            })
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect(),
    })
}

/// A `file` part with inline `file_data`, or an `input_audio` part, as `inlineData`; an
/// uploaded OpenAI `file_id` means nothing to Gemini (400).
fn inline_part(p: &ChatPart) -> Result<Value, String> {
    let (mime, data) = if p.kind == "file" {
        let url = p.file.as_ref().and_then(|f| f.file_data.as_deref());
        let (mime, data) = url
            .and_then(parse_data_url)
            .ok_or_else(|| "file: only inline file_data (a base64 data URL) can be sent to Gemini models".to_owned())?;
        (mime.to_owned(), data)
    } else {
        let audio = p.input_audio.as_ref().filter(|a| !a.data.is_empty());
        let audio = audio.ok_or("input_audio: data is missing")?;
        (
            format!("audio/{}", audio.format.as_deref().unwrap_or("wav")),
            audio.data.as_str(),
        )
    };
    let mut inline = json("{}");
    inline.as_object_mut().map(|i| {
        i.insert("mimeType", Value::from(mime.as_str()));
        i.insert("data", Value::from(data))
    });
    let mut v = json("{}");
    v.as_object_mut().map(|o| o.insert("inlineData", inline));
    Ok(v)
}

fn part(p: &ChatPart) -> Option<Value> {
    match p.kind.as_str() {
        "text" => p.text.as_deref().map(text_part),
        "image_url" => {
            let url = &p.image_url.as_ref()?.url;
            let mut v = json("{}");
            let o = v.as_object_mut()?;
            match parse_data_url(url) {
                Some((mime, data)) => {
                    let mut inline = json("{}");
                    inline.as_object_mut().map(|i| {
                        i.insert("mimeType", Value::from(mime));
                        i.insert("data", Value::from(data))
                    });
                    o.insert("inlineData", inline);
                }
                None => {
                    // File-API / GCS URIs work as fileData; other URLs are passed the same way and
                    // may be refused by the upstream (provider-formats.md 7.3 [U]).
                    let mut file = json("{}");
                    file.as_object_mut().map(|f| {
                        f.insert("mimeType", Value::from(guess_mime(url)));
                        f.insert("fileUri", Value::from(url.as_str()))
                    });
                    o.insert("fileData", file);
                }
            }
            Some(v)
        }
        _ => None,
    }
}

fn guess_mime(url: &str) -> &'static str {
    let lower = url.to_ascii_lowercase();
    if lower.ends_with(".png") {
        "image/png"
    } else if lower.ends_with(".webp") {
        "image/webp"
    } else if lower.ends_with(".gif") {
        "image/gif"
    } else {
        "image/jpeg"
    }
}

fn assistant_parts(m: &crate::providers::openai::Message, max_depth: usize) -> Result<Vec<Value>, String> {
    let mut parts = Vec::new();
    if let Some(text) = m.content.as_ref().map(ChatContent::text).filter(|t| !t.is_empty()) {
        parts.push(text_part(&text));
    }
    for call in m.tool_calls.iter().flatten() {
        let mut fc = json("{}");
        if let Some(o) = fc.as_object_mut() {
            o.insert("name", Value::from(call.function.name.as_str()));
            let args =
                parse_arguments(&call.function.arguments, max_depth).map_err(|e| too_deep_arguments(&call.id, e))?;
            o.insert("args", args);
        }
        let mut p = json("{}");
        if let Some(o) = p.as_object_mut() {
            o.insert("functionCall", fc);
            // The signature Gemini gave this call, carried in its id (`with_signature`).
            if let Some(sig) = super::signature_of(&call.id) {
                o.insert("thoughtSignature", Value::from(sig.as_str()));
            }
        }
        parts.push(p);
    }
    Ok(parts)
}

/// The tool message at `at` as a `functionResponse`; its name comes from the nearest assistant
/// call with the same id before it (Gemini requires it; the nearest, so a history that reused
/// an id, as rotor's `call_0` once did, still names the right function). Content that is not
/// a JSON object, or nests deeper than `max_depth`, is wrapped as text.
fn function_response(chat: &ChatRequest, at: usize, m: &crate::providers::openai::Message, max_depth: usize) -> Value {
    let id = m.tool_call_id.as_deref().unwrap_or("");
    let name = chat
        .messages
        .get(..at)
        .unwrap_or_default()
        .iter()
        .rev()
        .flat_map(|x| x.tool_calls.iter().flatten())
        .find(|c| c.id == id)
        .map(|c| c.function.name.clone())
        .or_else(|| m.name.clone())
        .unwrap_or_default();
    let text = m.content.as_ref().map(ChatContent::text).unwrap_or_default();
    let parsed = check_depth(text.as_bytes(), max_depth).map(|()| sonic_rs::from_str::<Value>(&text));
    let response = match parsed {
        Ok(Ok(v)) if v.is_object() => v,
        _ => {
            let mut w = json("{}");
            w.as_object_mut()
                .map(|o| o.insert("content", Value::from(text.as_str())));
            w
        }
    };
    let mut fr = json("{}");
    if let Some(o) = fr.as_object_mut() {
        o.insert("name", Value::from(name.as_str()));
        o.insert("response", response);
    }
    let mut p = json("{}");
    p.as_object_mut().map(|o| o.insert("functionResponse", fr));
    p
}

/// JSON-schema keywords Gemini's OpenAPI subset rejects, removed at every depth. Only keywords:
/// the keys of a `properties` (or `patternProperties`, `$defs`, `definitions`) map are names,
/// so a property called `strict` or `additionalProperties` stays, as `required` lists it.
/// Walks with its own stack, not recursion: the schema is client input (its depth is bounded by
/// `server.max_json_depth`, and this walk would not need that bound).
fn clean_schema(mut schema: Value) -> Value {
    // (value, is a map of names to schemas)
    let mut pending: Vec<(&mut Value, bool)> = vec![(&mut schema, false)];
    while let Some((v, names)) = pending.pop() {
        if v.is_object() {
            let Some(o) = v.as_object_mut() else { continue };
            if !names {
                for key in ["$schema", "additionalProperties", "strict"] {
                    o.remove(&key);
                }
            }
            pending.extend(o.iter_mut().map(|(k, child)| {
                let is_map = !names && matches!(k, "properties" | "patternProperties" | "$defs" | "definitions");
                (child, is_map)
            }));
        } else if v.is_array() {
            let Some(a) = v.as_array_mut() else { continue };
            pending.extend(a.iter_mut().map(|c| (c, false)));
        }
    }
    schema
}

fn tool_config(choice: &Value) -> Option<Value> {
    let (mode, name) = match choice.as_str() {
        Some("auto") => ("AUTO", None),
        Some("required") => ("ANY", None),
        Some("none") => ("NONE", None),
        Some(_) => return None,
        None => (
            "ANY",
            choice
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(|n| n.as_str()),
        ),
    };
    let mut text = format!(r#"{{"functionCallingConfig":{{"mode":"{mode}""#);
    if let Some(name) = name {
        text.push_str(",\"allowedFunctionNames\":[");
        crate::providers::write::string(&mut text, name);
        text.push(']');
    }
    text.push_str("}}");
    sonic_rs::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::DEFAULT_MAX_DEPTH as D;

    fn gemini(chat: &str) -> Value {
        let chat: ChatRequest = sonic_rs::from_str(chat).unwrap();
        sonic_rs::from_slice(&from_chat(&chat, D).unwrap()).unwrap()
    }

    #[test]
    fn tool_results_are_named_by_the_nearest_call_with_their_id() {
        // Two rounds that (as rotor's old `call_0` did) reuse an id for different functions.
        let v = gemini(
            r#"{"model":"m","messages":[{"role":"user","content":"go"},
            {"role":"assistant","tool_calls":[{"id":"call_0","type":"function","function":{"name":"first","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"call_0","content":"1"},
            {"role":"assistant","tool_calls":[{"id":"call_0","type":"function","function":{"name":"second","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"call_0","content":"2"}]}"#,
        );
        let names: Vec<&str> = [2, 4]
            .iter()
            .map(|i| {
                v["contents"][*i]["parts"][0]["functionResponse"]["name"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(names, ["first", "second"]);
    }

    #[test]
    fn schema_clean_up_drops_keywords_never_properties_of_that_name() {
        let v = gemini(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","strict":true,"parameters":
            {"type":"object","additionalProperties":false,"required":["strict","additionalProperties"],
             "properties":{"strict":{"type":"boolean"},"additionalProperties":{"type":"object","additionalProperties":false,"properties":{}}}}}}]}"#,
        );
        let p = &v["tools"][0]["functionDeclarations"][0]["parameters"];
        assert!(p.get("additionalProperties").is_none());
        assert_eq!(p["properties"]["strict"]["type"].as_str(), Some("boolean"));
        let inner = &p["properties"]["additionalProperties"];
        assert_eq!(inner["type"].as_str(), Some("object"));
        assert!(
            inner.get("additionalProperties").is_none(),
            "the keyword inside it still goes"
        );
        assert_eq!(p["required"][1].as_str(), Some("additionalProperties"));
    }
}
