//! OpenAI chat request -> Cohere Chat v2 request: messages keep their roles (`developer`
//! becomes `system`), text and image parts, assistant tool calls and tool results; tools are the
//! same function shape; `top_p`/`top_k` become `p`/`k`, `stop` `stop_sequences`,
//! `tool_choice` `"required"`/`"none"` become `REQUIRED`/`NONE` (auto is the default).
//! Invariant: what Cohere cannot express (several choices, a named tool choice) is refused with
//! a 400 naming it, never silently changed.

use serde::Serialize;
use sonic_rs::{JsonValueTrait, Value};

use crate::providers::openai::{ChatRequest, Content, Tool};

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    messages: Vec<Message>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a Vec<Tool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    k: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
}

#[derive(Serialize)]
struct Message {
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<String>,
}

/// The v2 `/chat` body for `model`.
pub fn from_chat(chat: &ChatRequest, model: &str) -> Result<Vec<u8>, String> {
    if chat.n.is_some_and(|n| n > 1) {
        return Err("Cohere gives one answer per request: n must be 1".to_owned());
    }
    let mut messages = Vec::with_capacity(chat.messages.len());
    for m in &chat.messages {
        messages.push(message(m)?);
    }
    let request = Request {
        model,
        messages,
        stream: chat.stream.filter(|s| *s),
        tools: chat.tools.as_ref().filter(|t| !t.is_empty()),
        tool_choice: tool_choice(chat.tool_choice.as_ref())?,
        max_tokens: chat.output_limit(),
        stop_sequences: chat.stop_list(),
        temperature: chat.temperature,
        p: chat.top_p,
        k: chat.top_k,
        seed: chat.seed,
        frequency_penalty: chat.frequency_penalty,
        presence_penalty: chat.presence_penalty,
        response_format: response_format(chat.response_format.as_ref()),
    };
    sonic_rs::to_vec(&request).map_err(|e| format!("cannot encode the Cohere request: {e}"))
}

fn message(m: &crate::providers::openai::Message) -> Result<Message, String> {
    let role = match m.role.as_str() {
        "system" | "developer" => "system",
        "user" => "user",
        "assistant" => "assistant",
        "tool" => "tool",
        other => return Err(format!("unknown message role {other:?}")),
    };
    let content = match (&m.content, role) {
        (None, _) => None,
        (Some(Content::Text(t)), "assistant") if t.is_empty() => None,
        (Some(Content::Text(t)), _) => Some(Value::from(t.as_str())),
        // System, assistant and tool turns take text; user turns text and image parts.
        (Some(c), r) if r != "user" => Some(Value::from(c.text().as_str())),
        (Some(Content::Parts(parts)), _) => {
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                let part = match (p.kind.as_str(), &p.text, &p.image_url) {
                    ("text", Some(text), _) => format!(r#"{{"type":"text","text":{}}}"#, quote(text)),
                    ("image_url", _, Some(image)) => {
                        format!(r#"{{"type":"image_url","image_url":{{"url":{}}}}}"#, quote(&image.url))
                    }
                    (kind, _, _) => return Err(format!("Cohere does not take a {kind:?} content part")),
                };
                out.push(sonic_rs::from_str::<Value>(&part).map_err(|e| e.to_string())?);
            }
            Some(Value::from(out))
        }
    };
    let tool_calls = match m.tool_calls.as_ref().filter(|c| !c.is_empty()) {
        Some(calls) => Some(sonic_rs::to_value(calls).map_err(|e| e.to_string())?),
        None => None,
    };
    Ok(Message {
        role,
        content,
        tool_calls,
        tool_call_id: m.tool_call_id.clone().filter(|_| role == "tool"),
    })
}

fn tool_choice(choice: Option<&Value>) -> Result<Option<&'static str>, String> {
    let Some(choice) = choice else { return Ok(None) };
    match choice.as_str() {
        None if choice.is_null() => Ok(None),
        Some("auto") => Ok(None),
        Some("required") => Ok(Some("REQUIRED")),
        Some("none") => Ok(Some("NONE")),
        _ => Err("Cohere's tool_choice is \"auto\", \"required\" or \"none\"; it cannot name one tool".to_owned()),
    }
}

/// `json_object` passes; `json_schema` becomes Cohere's `json_object` with its schema.
fn response_format(format: Option<&Value>) -> Option<Value> {
    let format = format?;
    match format.get("type").and_then(|t| t.as_str()) {
        Some("json_object") => sonic_rs::from_str(r#"{"type":"json_object"}"#).ok(),
        Some("json_schema") => {
            let schema = format.get("json_schema").and_then(|s| s.get("schema"))?;
            let schema = sonic_rs::to_string(schema).ok()?;
            sonic_rs::from_str(&format!(r#"{{"type":"json_object","json_schema":{schema}}}"#)).ok()
        }
        _ => None,
    }
}

fn quote(s: &str) -> String {
    sonic_rs::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::openai::read_chat;
    use sonic_rs::JsonContainerTrait;

    fn map(body: &str) -> Result<Value, String> {
        let chat = read_chat(body.as_bytes(), 128)?;
        Ok(sonic_rs::from_slice(&from_chat(&chat, "command-r")?).unwrap())
    }

    #[test]
    fn messages_tools_and_parameters_map() {
        let v = map(
            r#"{"model":"x","stream":true,"messages":[
              {"role":"developer","content":"Be brief."},
              {"role":"user","content":[{"type":"text","text":"weather?"},{"type":"image_url","image_url":{"url":"https://i/x.png"}}]},
              {"role":"assistant","content":"","tool_calls":[{"id":"c1","type":"function","function":{"name":"w","arguments":"{\"city\":\"Oslo\"}"}}]},
              {"role":"tool","tool_call_id":"c1","content":"sunny"}],
              "tools":[{"type":"function","function":{"name":"w","parameters":{"type":"object"}}}],
              "tool_choice":"required","max_completion_tokens":50,"top_p":0.5,"top_k":3,"stop":"END","temperature":0.1,
              "response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"type":"object"}}}}"#,
        )
        .unwrap();
        assert_eq!(v["model"].as_str(), Some("command-r"));
        assert_eq!(v["stream"].as_bool(), Some(true));
        let m = v["messages"].as_array().unwrap();
        assert_eq!(m[0]["role"].as_str(), Some("system"));
        assert_eq!(m[1]["content"][1]["image_url"]["url"].as_str(), Some("https://i/x.png"));
        assert!(m[2].get("content").is_none(), "empty assistant text dropped");
        assert_eq!(
            m[2]["tool_calls"][0]["function"]["arguments"].as_str(),
            Some("{\"city\":\"Oslo\"}")
        );
        assert_eq!(
            (m[3]["role"].as_str(), m[3]["tool_call_id"].as_str()),
            (Some("tool"), Some("c1"))
        );
        assert_eq!(v["tools"][0]["function"]["name"].as_str(), Some("w"));
        assert_eq!(v["tool_choice"].as_str(), Some("REQUIRED"));
        assert_eq!(v["max_tokens"].as_u64(), Some(50));
        assert_eq!((v["p"].as_f64(), v["k"].as_u64()), (Some(0.5), Some(3)));
        assert_eq!(v["stop_sequences"][0].as_str(), Some("END"));
        assert_eq!(v["response_format"]["json_schema"]["type"].as_str(), Some("object"));
    }

    #[test]
    fn what_cohere_cannot_express_is_refused() {
        let named =
            r#"{"messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"function","function":{"name":"f"}}}"#;
        assert!(map(named).unwrap_err().contains("tool_choice"));
        assert!(map(r#"{"messages":[{"role":"user","content":"x"}],"n":2}"#)
            .unwrap_err()
            .contains("n must be 1"));
        assert!(map(r#"{"messages":[{"role":"wizard","content":"x"}]}"#).is_err());
        let plain = map(r#"{"messages":[{"role":"user","content":"x"}]}"#).unwrap();
        assert!(plain.get("stream").is_none() && plain.get("tool_choice").is_none());
    }
}
