//! Vertex AI (`kind = "vertex"`): two wire protocols behind one provider, chosen by model.
//! `claude-*` models speak Anthropic Messages at
//! `publishers/anthropic/models/{m}:rawPredict` / `:streamRawPredict` (the body without
//! `model`, with `anthropic_version: "vertex-2023-10-16"`); every other model speaks Gemini at
//! `publishers/google/models/{m}:generateContent` / `:streamGenerateContent?alt=sse`. The
//! provider's base URL already ends in `/projects/{p}/locations/{r}` (config), so paths here
//! start at `/publishers`. The translators are the anthropic and gemini modules' own.
//! Invariant: the model is always one percent-encoded path segment, never a body field.

use sonic_rs::{JsonValueMutTrait, JsonValueTrait};

use bytes::Bytes;

use super::{Front, PrepareError, Prepared, Protocol};
use crate::codec::depth::check_depth;
use crate::codec::target::push_segment;
use crate::config::ProviderKind;

/// The `anthropic_version` Vertex requires in Claude bodies.
pub const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// The protocol a Vertex model speaks: Anthropic for Claude, Gemini for the rest.
pub fn protocol(model: &str) -> Protocol {
    let bare = model.rsplit('/').next().unwrap_or(model);
    if bare.starts_with("claude-") {
        Protocol::Anthropic
    } else {
        Protocol::Gemini
    }
}

/// The path after the base URL for `model` in `protocol`, streamed or not. A
/// `publisher/model` name keeps its publisher; a bare name gets its family's.
pub fn path(protocol: Protocol, model: &str, stream: bool) -> String {
    let (publisher, bare) = match model.split_once('/') {
        Some((publisher, bare)) if !publisher.is_empty() && !bare.is_empty() => (publisher, bare),
        _ if protocol == Protocol::Anthropic => ("anthropic", model),
        _ => ("google", model),
    };
    let mut out = String::with_capacity(model.len() + 64);
    out.push_str("/publishers/");
    push_segment(&mut out, publisher.as_bytes());
    out.push_str("/models/");
    push_segment(&mut out, bare.as_bytes());
    out.push_str(match (protocol, stream) {
        (Protocol::Anthropic, false) => ":rawPredict",
        (Protocol::Anthropic, true) => ":streamRawPredict",
        (_, false) => ":generateContent",
        (_, true) => ":streamGenerateContent?alt=sse",
    });
    out
}

/// `providers::prepare` for Vertex: Anthropic Messages to a Claude model go through with only
/// the Vertex body edit (no model, `anthropic_version`); everything else is translated as for
/// the Anthropic or Gemini kinds, then placed at the Vertex publisher path.
pub fn prepare(
    client: super::ClientPath<'_>,
    body: &Bytes,
    upstream_model: &str,
    client_model: &str,
    max_depth: usize,
) -> Result<Prepared, PrepareError> {
    let model = if upstream_model.is_empty() {
        client_model
    } else {
        upstream_model
    };
    let upstream = protocol(model);
    if client.front == Front::Messages && upstream == Protocol::Anthropic {
        let (body, stream) = anthropic_body(body, max_depth).map_err(PrepareError::BadRequest)?;
        return Ok(Prepared {
            body: Bytes::from(body),
            path: path(upstream, model, stream).into(),
            translation: None,
            dialog: None,
            header: None,
        });
    }
    let kind = match upstream {
        Protocol::Anthropic => ProviderKind::Anthropic,
        _ => ProviderKind::Gemini,
    };
    let mut prepared = super::prepare(
        client,
        kind,
        crate::config::Poll::default(),
        body,
        model,
        client_model,
        max_depth,
        Bytes::new,
    )?;
    let stream = prepared.translation.as_ref().is_some_and(|t| t.stream);
    if upstream == Protocol::Anthropic {
        let (body, _) = anthropic_body(&prepared.body, max_depth).map_err(PrepareError::BadRequest)?;
        prepared.body = Bytes::from(body);
    }
    prepared.path = path(upstream, model, stream).into();
    Ok(prepared)
}

/// An Anthropic Messages body as Vertex takes it: `model` removed (it is in the URL),
/// `anthropic_version` set unless the client named one. Also says whether it streams.
/// Every other field is kept as the client sent it.
pub fn anthropic_body(body: &[u8], max_depth: usize) -> Result<(Vec<u8>, bool), String> {
    check_depth(body, max_depth).map_err(|e| format!("the request body {e}"))?;
    let mut value: sonic_rs::Value =
        sonic_rs::from_slice(body).map_err(|e| format!("the request body is not valid JSON: {e}"))?;
    let Some(object) = value.as_object_mut() else {
        return Err("the request body must be a JSON object".to_owned());
    };
    object.remove(&"model");
    if object.get(&"anthropic_version").is_none() {
        object.insert(&"anthropic_version", sonic_rs::Value::from(ANTHROPIC_VERSION));
    }
    let stream = object.get(&"stream").and_then(|v| v.as_bool()) == Some(true);
    let out = sonic_rs::to_vec(&value).map_err(|e| format!("cannot encode the request: {e}"))?;
    Ok((out, stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_models_go_to_anthropic_and_the_rest_to_google() {
        assert_eq!(protocol("claude-3-5-sonnet@20240620"), Protocol::Anthropic);
        assert_eq!(protocol("gemini-1.5-flash-001"), Protocol::Gemini);
        assert_eq!(
            path(Protocol::Anthropic, "claude-3-5-sonnet@20240620", true),
            "/publishers/anthropic/models/claude-3-5-sonnet@20240620:streamRawPredict"
        );
        assert_eq!(
            path(Protocol::Gemini, "gemini-2.0-flash", false),
            "/publishers/google/models/gemini-2.0-flash:generateContent"
        );
        assert_eq!(
            path(Protocol::Gemini, "meta/llama-3", true),
            "/publishers/meta/models/llama-3:streamGenerateContent?alt=sse"
        );
        // No name adds a segment or a query.
        assert_eq!(
            path(Protocol::Gemini, "a/b/../c?x", false),
            "/publishers/a/models/b%2F..%2Fc%3Fx:generateContent"
        );
    }

    #[test]
    fn anthropic_body_drops_model_and_names_the_vertex_version() {
        let (out, stream) =
            anthropic_body(br#"{"model":"claude-x","stream":true,"max_tokens":5,"x":{"y":1}}"#, 64).unwrap();
        let v: sonic_rs::Value = sonic_rs::from_slice(&out).unwrap();
        assert!(stream);
        assert!(v.get("model").is_none());
        assert_eq!(
            v.get("anthropic_version").and_then(|v| v.as_str()),
            Some(ANTHROPIC_VERSION)
        );
        assert_eq!(v.pointer(["x", "y"]).and_then(|v| v.as_u64()), Some(1));
        assert!(anthropic_body(b"[1]", 64).is_err());
        assert!(anthropic_body(b"{", 64).is_err());
    }
}
