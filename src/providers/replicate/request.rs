//! OpenAI chat request -> Replicate prediction input (sections 4.4 and 7.2): system messages
//! become `system_prompt`, the conversation is rendered into `prompt`; `max_tokens`,
//! `temperature`, `top_p` and `stop` (as the comma-joined `stop_sequences`) are mapped.
//! Invariant: what a prompt cannot carry (tools, images, several choices) is refused with a 400
//! naming it, never silently dropped.

use crate::providers::openai::{ChatRequest, Content, Message};
use crate::providers::write;

/// The prediction's path and body for `model` (`owner/name`, or `owner/name:version` for a
/// pinned version).
pub fn from_chat(chat: &ChatRequest, model: &str, stream: bool) -> Result<(Vec<u8>, String), String> {
    let (path, version) = path(model)?;
    if chat.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err("Replicate models take a prompt: tools are not supported".to_owned());
    }
    if chat.n.is_some_and(|n| n > 1) {
        return Err("Replicate predictions give one answer: n must be 1".to_owned());
    }
    let (system, prompt) = render(&chat.messages)?;
    let mut out = String::with_capacity(128 + prompt.len() + system.len());
    out.push('{');
    if let Some(version) = version {
        write::field_str(&mut out, "version", version);
        out.push(',');
    }
    out.push_str("\"input\":{");
    write::field_str(&mut out, "prompt", &prompt);
    if !system.is_empty() {
        out.push(',');
        write::field_str(&mut out, "system_prompt", &system);
    }
    if let Some(n) = chat.output_limit() {
        out.push_str(",\"max_tokens\":");
        write::number(&mut out, n);
    }
    for (name, value) in [("temperature", chat.temperature), ("top_p", chat.top_p)] {
        if let Some(v) = value.filter(|v| v.is_finite()) {
            out.push_str(",\"");
            out.push_str(name);
            out.push_str("\":");
            out.push_str(&sonic_rs::to_string(&v).unwrap_or_else(|_| "null".to_owned()));
        }
    }
    let stops = chat.stop_list();
    if !stops.is_empty() {
        out.push(',');
        write::field_str(&mut out, "stop_sequences", &stops.join(","));
    }
    out.push('}');
    if stream {
        out.push_str(",\"stream\":true");
    }
    out.push('}');
    Ok((out.into_bytes(), path))
}

/// `owner/name` -> `/models/owner/name/predictions`; `owner/name:version` -> `/predictions`
/// with the version id in the body. Each segment is checked, so a model name can never change
/// the path's shape.
pub fn path(model: &str) -> Result<(String, Option<&str>), String> {
    let (name, version) = match model.split_once(':') {
        Some((name, version)) => (name, Some(version)),
        None => (model, None),
    };
    let segment =
        |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) && s.bytes().any(|b| b != b'.');
    let well_formed = match name.split_once('/') {
        Some((owner, model)) => segment(owner) && segment(model),
        None => false,
    };
    if !well_formed || version.is_some_and(|v| !segment(v)) {
        return Err(format!(
            "Replicate model names are owner/name or owner/name:version; {model:?} is neither"
        ));
    }
    Ok(match version {
        Some(v) => ("/predictions".to_owned(), Some(v)),
        None => (format!("/models/{name}/predictions"), None),
    })
}

/// (`system_prompt`, `prompt`). A lone user turn is the prompt as it is; a conversation is
/// rendered as `User:` / `Assistant:` turns ending with `Assistant:` for the model to go on.
fn render(messages: &[Message]) -> Result<(String, String), String> {
    let mut system = Vec::new();
    let mut turns: Vec<(&str, String)> = Vec::new();
    for m in messages {
        let text = text_of(m)?;
        match m.role.as_str() {
            "system" | "developer" => system.push(text),
            "user" => turns.push(("User", text)),
            "assistant" => {
                if m.tool_calls.as_ref().is_some_and(|c| !c.is_empty()) {
                    return Err("Replicate models take a prompt: tool calls are not supported".to_owned());
                }
                turns.push(("Assistant", text));
            }
            "tool" | "function" => {
                return Err("Replicate models take a prompt: tool results are not supported".to_owned())
            }
            other => return Err(format!("unknown message role {other:?}")),
        }
    }
    let prompt = match turns.as_slice() {
        [] => return Err("the request has no user message".to_owned()),
        [("User", only)] => only.clone(),
        _ => {
            let mut p = String::new();
            for (who, text) in &turns {
                p.push_str(who);
                p.push_str(": ");
                p.push_str(text);
                p.push_str("\n\n");
            }
            p.push_str("Assistant:");
            p
        }
    };
    Ok((system.join("\n\n"), prompt))
}

fn text_of(m: &Message) -> Result<String, String> {
    match &m.content {
        None => Ok(String::new()),
        Some(Content::Text(t)) => Ok(t.clone()),
        Some(Content::Parts(parts)) => {
            if let Some(p) = parts.iter().find(|p| p.kind != "text") {
                return Err(format!(
                    "Replicate models take text only; a {:?} part is not supported",
                    p.kind
                ));
            }
            Ok(parts.iter().filter_map(|p| p.text.as_deref()).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::openai::read_chat;
    use sonic_rs::JsonValueTrait;

    fn map(body: &str, stream: bool) -> Result<(sonic_rs::Value, String), String> {
        let chat = read_chat(body.as_bytes(), 128)?;
        let (out, path) = from_chat(&chat, "meta/llama-3", stream)?;
        Ok((sonic_rs::from_slice(&out).unwrap(), path))
    }

    #[test]
    fn conversation_renders_into_prompt_and_system_prompt() {
        let (v, path) = map(
            r#"{"model":"x","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},
              {"role":"assistant","content":"Hello"},{"role":"user","content":[{"type":"text","text":"Again"}]}],
              "max_tokens":64,"temperature":0.5,"top_p":0.9,"stop":["END","STOP"]}"#,
            false,
        )
        .unwrap();
        assert_eq!(path, "/models/meta/llama-3/predictions");
        let input = &v["input"];
        assert_eq!(input["system_prompt"].as_str(), Some("Be brief."));
        assert_eq!(
            input["prompt"].as_str(),
            Some("User: Hi\n\nAssistant: Hello\n\nUser: Again\n\nAssistant:")
        );
        assert_eq!(input["max_tokens"].as_u64(), Some(64));
        assert_eq!(input["temperature"].as_f64(), Some(0.5));
        assert_eq!(input["top_p"].as_f64(), Some(0.9));
        assert_eq!(input["stop_sequences"].as_str(), Some("END,STOP"));
        assert!(v.get("stream").is_none());
    }

    #[test]
    fn a_lone_question_is_the_prompt_and_streams_ask_for_a_stream() {
        let (v, _) = map(r#"{"messages":[{"role":"user","content":"Hi"}],"stream":true}"#, true).unwrap();
        assert_eq!(v["input"]["prompt"].as_str(), Some("Hi"));
        assert!(v["input"].get("system_prompt").is_none());
        assert_eq!(v["stream"].as_bool(), Some(true));
    }

    #[test]
    fn what_a_prompt_cannot_carry_is_refused() {
        let tools =
            r#"{"messages":[{"role":"user","content":"Hi"}],"tools":[{"type":"function","function":{"name":"f"}}]}"#;
        assert!(map(tools, false).unwrap_err().contains("tools"));
        let image = r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#;
        assert!(map(image, false).unwrap_err().contains("image_url"));
        assert!(map(r#"{"messages":[]}"#, false)
            .unwrap_err()
            .contains("no user message"));
    }

    #[test]
    fn model_names_shape_the_path_or_are_refused() {
        assert_eq!(path("a/b").unwrap(), ("/models/a/b/predictions".to_owned(), None));
        assert_eq!(
            path("a/b:0123abc").unwrap(),
            ("/predictions".to_owned(), Some("0123abc"))
        );
        for bad in [
            "ab", "a/b/c", "a/../b", "a/..", "./b", "a/b?x", "/b", "a/b:", "a b/c", "a/b\r\n",
        ] {
            assert!(path(bad).is_err(), "{bad}");
        }
    }
}
