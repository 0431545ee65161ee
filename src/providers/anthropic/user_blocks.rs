//! An Anthropic user turn -> OpenAI hub messages (for non-Anthropic upstreams): tool results
//! become `tool` messages (first, as OpenAI wants them right after the assistant's calls), the
//! rest one user message with text, image and document (`file`) parts.
//! Invariant: nothing is dropped quietly. A tool result's images follow it in the user message,
//! `is_error` is kept as a marker in its text, and a block the hub cannot express is a 400.

use super::Block;
use crate::providers::openai::{Content, FilePart, ImageUrl, Message, Part};

/// The text an errored tool result starts with (the hub has no `is_error`).
pub const TOOL_ERROR_MARK: &str = "[tool error] ";

pub(super) fn to_hub(blocks: &[Block], out: &mut Vec<Message>) -> Result<(), String> {
    let mut parts = Vec::new();
    for b in blocks {
        match b.kind.as_str() {
            "tool_result" => {
                let mut text = String::new();
                if b.is_error == Some(true) {
                    text.push_str(TOOL_ERROR_MARK);
                }
                match &b.content {
                    Some(super::BlockContent::Text(t)) => text.push_str(t),
                    Some(super::BlockContent::Blocks(inner)) => {
                        let mut first = true;
                        for c in inner {
                            match c.kind.as_str() {
                                "text" => {
                                    if !first {
                                        text.push('\n');
                                    }
                                    first = false;
                                    text.push_str(c.text.as_deref().unwrap_or(""));
                                }
                                // OpenAI tool messages carry text only: the images follow in the
                                // user message right after the results.
                                _ => parts.extend(part(c)?),
                            }
                        }
                    }
                    None => {}
                }
                out.push(Message {
                    role: "tool".to_owned(),
                    tool_call_id: b.tool_use_id.clone(),
                    content: Some(Content::Text(text)),
                    ..Message::default()
                });
            }
            _ => parts.extend(part(b)?),
        }
    }
    if parts.is_empty() {
        return Ok(());
    }
    let content = match parts.as_slice() {
        [Part {
            kind, text: Some(t), ..
        }] if kind == "text" => Content::Text(t.clone()),
        _ => Content::Parts(parts),
    };
    out.push(Message {
        role: "user".to_owned(),
        content: Some(content),
        ..Message::default()
    });
    Ok(())
}

fn part(b: &Block) -> Result<Option<Part>, String> {
    let mut p = Part {
        kind: "text".to_owned(),
        ..Part::default()
    };
    match b.kind.as_str() {
        "text" => p.text = b.text.clone(),
        "image" => {
            let Some(source) = &b.source else { return Ok(None) };
            let url = match (&source.url, &source.data) {
                (Some(url), _) => url.clone(),
                (None, Some(data)) => format!(
                    "data:{};base64,{data}",
                    source.media_type.as_deref().unwrap_or("image/png")
                ),
                (None, None) => return Ok(None),
            };
            p.kind = "image_url".to_owned();
            p.image_url = Some(ImageUrl { url });
        }
        "document" => {
            let source = b.source.as_ref();
            match (source.map(|s| s.kind.as_str()), source.and_then(|s| s.data.as_deref())) {
                (Some("base64"), Some(data)) => {
                    let mime = source.and_then(|s| s.media_type.as_deref()).unwrap_or("application/pdf");
                    p.kind = "file".to_owned();
                    p.file = Some(FilePart {
                        file_data: Some(format!("data:{mime};base64,{data}")),
                        ..FilePart::default()
                    });
                }
                (Some("text"), Some(data)) => p.text = Some(data.to_owned()),
                (kind, _) => {
                    return Err(format!(
                        "a document block with a {} source cannot be translated for this upstream; send it as base64 or text",
                        kind.unwrap_or("missing")
                    ))
                }
            }
        }
        // Earlier reasoning in a user turn has no hub form and no meaning to another model.
        "thinking" | "redacted_thinking" => return Ok(None),
        other => {
            return Err(format!(
                "content block type '{other}' cannot be translated for this upstream"
            ))
        }
    }
    Ok(Some(p))
}

#[cfg(test)]
mod tests {
    use crate::codec::DEFAULT_MAX_DEPTH as D;
    use sonic_rs::JsonValueTrait;

    fn hub(body: &str) -> Result<crate::providers::openai::ChatRequest, String> {
        super::super::front_request::to_chat(body.as_bytes(), "m", D)
    }

    #[test]
    fn documents_tool_errors_and_tool_images_survive_the_hub() {
        let chat = hub(r#"{"max_tokens":5,"top_k":7,"messages":[{"role":"user","content":[
            {"type":"tool_result","tool_use_id":"t1","is_error":true,"content":[{"type":"text","text":"boom"},
              {"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}}]},
            {"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBE"}}]}]}"#)
        .unwrap();
        assert_eq!(chat.top_k, Some(7));
        let v: sonic_rs::Value = sonic_rs::from_str(&sonic_rs::to_string(&chat).unwrap()).unwrap();
        let m = &v["messages"];
        assert_eq!(m[0]["role"].as_str(), Some("tool"));
        assert_eq!(m[0]["content"].as_str(), Some("[tool error] boom"));
        assert_eq!(
            m[1]["content"][0]["image_url"]["url"].as_str(),
            Some("data:image/png;base64,AAAA")
        );
        assert_eq!(m[1]["content"][1]["type"].as_str(), Some("file"));
        assert_eq!(
            m[1]["content"][1]["file"]["file_data"].as_str(),
            Some("data:application/pdf;base64,JVBE")
        );
    }

    #[test]
    fn what_the_hub_cannot_express_is_refused() {
        let e = hub(r#"{"max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"type":"web_search_20250305","name":"web_search"}]}"#)
            .unwrap_err();
        assert!(e.contains("server tool"), "{e}");
        assert!(hub(
            r#"{"max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"type":"custom","name":"f"}]}"#
        )
        .is_ok());
        let e =
            hub(r#"{"max_tokens":5,"messages":[{"role":"user","content":[{"type":"search_result","content":[]}]}]}"#)
                .unwrap_err();
        assert!(e.contains("search_result"), "{e}");
        let e = hub(r#"{"max_tokens":5,"messages":[{"role":"user","content":[{"type":"document","source":{"type":"url","url":"https://x/a.pdf"}}]}]}"#)
            .unwrap_err();
        assert!(e.contains("url source"), "{e}");
    }
}
