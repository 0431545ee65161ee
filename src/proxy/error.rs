//! The one error shape of the request path, and the one place it becomes an HTTP response.
//! Invariant: error messages never contain secrets (keys appear only masked), and every error a
//! client can see has its status, an OpenAI-style `type` and, where useful, a `code`.

use std::borrow::Cow;

use bytes::Bytes;

use crate::server::Responder;
use crate::upstream::{UpstreamError, UpstreamErrorKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Downstream,
    Upstream,
    Internal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    NoRoute,
    MethodNotAllowed,
    /// Every candidate key is rate limited (or the client's own limit is hit).
    RateLimited,
    UpstreamFailed,
    /// The upstream said it is overloaded (503, Anthropic's 529) and no other key could answer;
    /// the client sees the upstream's status and, on `/v1/messages`, `overloaded_error`.
    UpstreamOverloaded,
    UpstreamTimeout,
    NoUsableKey,
    Internal,
}

#[derive(Debug)]
struct Inner {
    kind: ErrorKind,
    side: Side,
    message: Cow<'static, str>,
    code: Option<&'static str>,
    param: Option<&'static str>,
    /// Seconds for the `Retry-After` header.
    retry_after: Option<u64>,
    /// The upstream's own status, kept by `UpstreamOverloaded` (503 or 529).
    upstream_status: Option<u16>,
}

/// Boxed so `Result<T, ProxyError>` stays one pointer wide on the hot path.
#[derive(Debug)]
pub struct ProxyError(Box<Inner>);

impl ProxyError {
    pub fn new(kind: ErrorKind, side: Side, message: impl Into<Cow<'static, str>>) -> Self {
        ProxyError(Box::new(Inner {
            kind,
            side,
            message: message.into(),
            code: None,
            param: None,
            retry_after: None,
            upstream_status: None,
        }))
    }

    /// The upstream answered 503 or 529 (overloaded) and nothing else could serve the request.
    pub fn overloaded(status: u16, message: impl Into<Cow<'static, str>>) -> Self {
        let mut e = Self::new(ErrorKind::UpstreamOverloaded, Side::Upstream, message).with_code("upstream_overloaded");
        e.0.upstream_status = Some(status);
        e
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::BadRequest, Side::Downstream, message)
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.0.code = Some(code);
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.0.retry_after = Some(seconds);
        self
    }

    pub fn retry_after(&self) -> Option<u64> {
        self.0.retry_after
    }

    pub fn with_param(mut self, param: &'static str) -> Self {
        self.0.param = Some(param);
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    pub fn side(&self) -> Side {
        self.0.side
    }

    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// Snake-case name of the kind, for request records.
    pub fn kind_name(&self) -> &'static str {
        match self.0.kind {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::NoRoute => "no_route",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::UpstreamFailed => "upstream_failed",
            ErrorKind::UpstreamOverloaded => "upstream_overloaded",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::NoUsableKey => "no_usable_key",
            ErrorKind::Internal => "internal",
        }
    }

    pub fn status(&self) -> u16 {
        match self.0.kind {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound | ErrorKind::NoRoute => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::RateLimited => 429,
            ErrorKind::UpstreamFailed => 502,
            ErrorKind::UpstreamOverloaded => self.0.upstream_status.unwrap_or(503),
            ErrorKind::NoUsableKey => 503,
            ErrorKind::UpstreamTimeout => 504,
            ErrorKind::Internal => 500,
        }
    }

    fn openai_type(&self) -> &'static str {
        match self.0.kind {
            ErrorKind::BadRequest | ErrorKind::NotFound | ErrorKind::NoRoute | ErrorKind::MethodNotAllowed => {
                "invalid_request_error"
            }
            ErrorKind::Unauthorized => "authentication_error",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::Forbidden => "permission_error",
            ErrorKind::UpstreamFailed
            | ErrorKind::UpstreamOverloaded
            | ErrorKind::UpstreamTimeout
            | ErrorKind::NoUsableKey => "upstream_error",
            ErrorKind::Internal => "server_error",
        }
    }

    /// The OpenAI error envelope.
    pub fn body(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(96 + self.0.message.len());
        body.extend_from_slice(b"{\"error\":{\"message\":");
        push_json_string(&mut body, &self.0.message);
        body.extend_from_slice(b",\"type\":\"");
        body.extend_from_slice(self.openai_type().as_bytes());
        body.extend_from_slice(b"\",\"param\":");
        push_optional(&mut body, self.0.param);
        body.extend_from_slice(b",\"code\":");
        push_optional(&mut body, self.0.code);
        body.extend_from_slice(b"}}");
        body
    }
}

impl From<UpstreamError> for ProxyError {
    fn from(e: UpstreamError) -> Self {
        let kind = match e.kind {
            UpstreamErrorKind::ConnectTimeout
            | UpstreamErrorKind::FirstByteTimeout
            | UpstreamErrorKind::IdleTimeout => ErrorKind::UpstreamTimeout,
            _ => ErrorKind::UpstreamFailed,
        };
        ProxyError::new(kind, Side::Upstream, format!("upstream error: {}", e.message))
    }
}

fn push_json_string(out: &mut Vec<u8>, s: &str) {
    match sonic_rs::to_string(s) {
        Ok(quoted) => out.extend_from_slice(quoted.as_bytes()),
        Err(_) => out.extend_from_slice(b"\"\""),
    }
}

fn push_optional(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_json_string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// Which API's error shape the client expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    OpenAi,
    /// `{"type":"error","error":{"type","message"}}` on `/v1/messages`.
    Anthropic,
    /// `{"error":{"code","message","status"}}` on the Gemini front door and `/v1beta/*`.
    Google,
}

impl Envelope {
    pub fn for_path(path: &str) -> Envelope {
        if path == "/v1/messages" {
            Envelope::Anthropic
        } else if crate::providers::gemini::door::is_google_path(path) {
            Envelope::Google
        } else {
            Envelope::OpenAi
        }
    }
}

impl ProxyError {
    fn anthropic_type(&self) -> &'static str {
        match self.0.kind {
            ErrorKind::BadRequest | ErrorKind::MethodNotAllowed => "invalid_request_error",
            ErrorKind::NotFound | ErrorKind::NoRoute => "not_found_error",
            ErrorKind::Unauthorized => "authentication_error",
            ErrorKind::Forbidden => "permission_error",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::UpstreamTimeout => "timeout_error",
            ErrorKind::NoUsableKey | ErrorKind::UpstreamOverloaded => "overloaded_error",
            ErrorKind::UpstreamFailed | ErrorKind::Internal => "api_error",
        }
    }

    /// The Anthropic error envelope.
    pub fn anthropic_body(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(80 + self.0.message.len());
        body.extend_from_slice(b"{\"type\":\"error\",\"error\":{\"type\":\"");
        body.extend_from_slice(self.anthropic_type().as_bytes());
        body.extend_from_slice(b"\",\"message\":");
        push_json_string(&mut body, &self.0.message);
        body.extend_from_slice(b"}}");
        body
    }
}

/// Answers `err` to the client in the OpenAI envelope.
pub async fn render(err: &ProxyError, res: &mut Responder<'_>, request_id: &[u8]) {
    render_as(err, res, request_id, Envelope::OpenAi).await
}

/// Answers `err` to the client, unless a response already started (then the connection is cut
/// so the client sees the failure rather than a clean-looking end).
pub async fn render_as(err: &ProxyError, res: &mut Responder<'_>, request_id: &[u8], envelope: Envelope) {
    if res.started() {
        res.abort();
        return;
    }
    let body = Bytes::from(match envelope {
        Envelope::OpenAi => err.body(),
        Envelope::Anthropic => err.anthropic_body(),
        Envelope::Google => crate::providers::gemini::door::error_body(err.status(), err.message()).into_bytes(),
    });
    let mut digits = itoa::Buffer::new();
    let mut headers: smallvec::SmallVec<[(&str, &[u8]); 3]> = smallvec::smallvec![
        ("content-type", b"application/json".as_slice()),
        ("x-request-id", request_id)
    ];
    if let Some(seconds) = err.retry_after() {
        headers.push(("retry-after", digits.format(seconds).as_bytes()));
    }
    let _ = res.send(err.status(), &headers, body).await;
}
