//! The Gemini front door's addressing and envelope: which paths it owns
//! (`/v1beta/models/{model}:{method}`, and the same under `/v1/models/`, the google-genai SDK's
//! default), the model and method a path names, the plan when no translation is needed
//! (passthrough to Gemini upstreams), and Google's error envelope
//! (`{"error":{"code","message","status"}}`) for rotor's own errors and translated ones.
//! Invariant: under `/v1/models/` only the Gemini method names below are the door, so OpenAI
//! paths with colons in them (`/v1/models/ft:gpt-4o:org:id`) stay OpenAI passthrough.

use std::borrow::Cow;

use bytes::Bytes;

use crate::codec::target::percent_decode;
use crate::providers::{write, PrepareError, Prepared, Protocol};

/// The methods the door answers. `generateContent` and `streamGenerateContent` are served by any
/// provider kind; the others only by Gemini providers (passed through).
const METHODS: &[&str] = &[
    "generateContent",
    "streamGenerateContent",
    "countTokens",
    "embedContent",
    "batchEmbedContents",
];

/// What a door path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoorPath<'a> {
    /// The client's model name, percent-decoded, without the `models/` prefix.
    pub model: Cow<'a, str>,
    pub method: &'a str,
}

impl DoorPath<'_> {
    /// `streamGenerateContent`.
    pub fn stream(&self) -> bool {
        self.method == "streamGenerateContent"
    }

    /// A method any provider kind serves (through the chat hub when the upstream is no Gemini).
    pub fn translatable(&self) -> bool {
        matches!(self.method, "generateContent" | "streamGenerateContent")
    }
}

/// The model and method of a door path, `None` for any other path. A model that does not
/// decode to UTF-8 is `None` too (the path is then not the door, and 404s).
pub fn door_path(path: &str) -> Option<DoorPath<'_>> {
    let rest = path
        .strip_prefix("/v1beta/models/")
        .or_else(|| path.strip_prefix("/v1/models/"))?;
    let (model, method) = rest.rsplit_once(':')?;
    if model.is_empty() || !METHODS.contains(&method) {
        return None;
    }
    let model = match percent_decode(model.as_bytes()) {
        Cow::Borrowed(_) => Cow::Borrowed(model),
        Cow::Owned(bytes) => Cow::Owned(String::from_utf8(bytes).ok()?),
    };
    Some(DoorPath { model, method })
}

/// The Gemini door's plan when it needs no chat hub: passthrough to a Gemini upstream (the body
/// untouched, the model in the path the upstream's), or a method only Gemini serves. `Err(same)`
/// hands the body builder back: the request is translated.
#[allow(clippy::type_complexity)]
pub(crate) fn plan<F: FnOnce() -> Bytes>(
    client_path: &str,
    upstream: Protocol,
    model: &str,
    same: F,
) -> Result<Result<Prepared, F>, PrepareError> {
    let door = door_path(client_path)
        .ok_or_else(|| PrepareError::BadRequest(format!("{client_path} is not a Gemini model method")))?;
    match upstream {
        Protocol::Gemini => Ok(Ok(Prepared {
            body: same(),
            path: super::request::method_path(model, door.method).into(),
            translation: None,
            dialog: None,
            header: None,
        })),
        _ if door.translatable() => Ok(Err(same)),
        _ => Err(PrepareError::Unsupported(format!(
            ":{} is served by Gemini providers only",
            door.method
        ))),
    }
}

/// Paths whose errors are answered in Google's envelope: the door, and anything under `/v1beta/`.
pub fn is_google_path(path: &str) -> bool {
    path.starts_with("/v1beta/") || path == "/v1beta" || door_path(path).is_some()
}

/// The `google.rpc.Code` name Google pairs with an HTTP status.
pub fn status_name(code: u16) -> &'static str {
    match code {
        400 | 405 | 411 | 413 | 422 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        502 | 503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        400..=499 => "FAILED_PRECONDITION",
        _ => "INTERNAL",
    }
}

/// `{"error":{"code":N,"message":"...","status":"NAME"}}`, as the Gemini API and its SDKs expect.
pub fn error_body(code: u16, message: &str) -> String {
    let mut out = String::with_capacity(64 + message.len());
    out.push_str("{\"error\":{\"code\":");
    write::number(&mut out, u64::from(code));
    out.push(',');
    write::field_str(&mut out, "message", message);
    out.push(',');
    write::field_str(&mut out, "status", status_name(code));
    out.push_str("}}");
    out
}

/// The error as one SSE event: google-genai raises a `data:` payload starting `{"error":` as an
/// `APIError` mid-stream.
pub fn error_event(code: u16, message: &str) -> String {
    format!("data: {}\n\n", error_body(code, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn door_paths_name_model_and_method() {
        let p = door_path("/v1beta/models/gemini-2.0-flash:streamGenerateContent").unwrap();
        assert_eq!(
            (p.model.as_ref(), p.method, p.stream()),
            ("gemini-2.0-flash", "streamGenerateContent", true)
        );
        let p = door_path("/v1/models/openai/gpt-4o:generateContent").unwrap();
        assert_eq!((p.model.as_ref(), p.translatable()), ("openai/gpt-4o", true));
        let p = door_path("/v1beta/models/a%2Fb%3Ac:countTokens").unwrap();
        assert_eq!((p.model.as_ref(), p.translatable()), ("a/b:c", false));
        for other in [
            "/v1/models/ft:gpt-4o:org:id",
            "/v1/models/gpt-4o",
            "/v1beta/models",
            "/v1beta/models/:generateContent",
            "/v1/chat/completions",
            "/v1beta/models/%ff:generateContent",
        ] {
            assert_eq!(door_path(other), None, "{other}");
        }
        assert!(is_google_path("/v1beta/anything") && !is_google_path("/v1/models/ft:a:b"));
    }

    #[test]
    fn error_envelope_is_googles() {
        let v: sonic_rs::Value = sonic_rs::from_str(&error_body(429, "slow \"down\"")).unwrap();
        use sonic_rs::JsonValueTrait;
        assert_eq!(v["error"]["code"].as_u64(), Some(429));
        assert_eq!(v["error"]["status"].as_str(), Some("RESOURCE_EXHAUSTED"));
        assert_eq!(v["error"]["message"].as_str(), Some("slow \"down\""));
        assert_eq!(status_name(504), "DEADLINE_EXCEEDED");
    }
}
