//! What can go wrong talking to an upstream, classified once so the proxy can decide between
//! retrying elsewhere and answering the client.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    Dns,
    Connect,
    ConnectTimeout,
    Tls,
    /// Writing the request failed.
    Send,
    /// No response head within `first_byte_timeout`.
    FirstByteTimeout,
    /// The connection closed before a complete response head.
    ClosedBeforeHead,
    /// Silence mid-body longer than `stream_idle_timeout`.
    IdleTimeout,
    /// The body ended early or had broken framing.
    BrokenBody,
    /// The response head was malformed.
    Protocol,
    /// The request head was refused by the writer (a CR, LF or NUL in it); nothing was sent,
    /// and another key or provider would be refused the same way.
    Encode,
}

#[derive(Debug, Clone)]
pub struct UpstreamError {
    pub kind: UpstreamErrorKind,
    pub message: String,
}

impl UpstreamError {
    pub fn new(kind: UpstreamErrorKind, message: impl Into<String>) -> Self {
        UpstreamError {
            kind,
            message: message.into(),
        }
    }

    /// Whether the failure happened before the upstream could have acted on the request, so a
    /// retry cannot duplicate work (used for the stale pooled connection rule).
    pub fn before_response(&self) -> bool {
        matches!(
            self.kind,
            UpstreamErrorKind::Dns
                | UpstreamErrorKind::Connect
                | UpstreamErrorKind::ConnectTimeout
                | UpstreamErrorKind::Tls
                | UpstreamErrorKind::Send
                | UpstreamErrorKind::ClosedBeforeHead
        )
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}
