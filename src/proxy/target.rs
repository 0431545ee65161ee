//! Phase `inspect`, for what ends up in upstream URLs: a passthrough path is judged before
//! anything else is read, and the path each adapter builds (with the model in it) is judged
//! again before a provider is tried.
//! Invariant: no upstream request carries a path that a decoding upstream could read as a dot
//! segment or as leaving the provider's base path (`codec::target::check_path`).

use super::error::ProxyError;
use super::Endpoint;
use crate::codec::target::check_path;

/// A passthrough path (`/v1/...`) stays below `/v1/` under every reading, so below the
/// provider's base path once `/v1` is swapped for it; a 400 `invalid_path` otherwise.
/// Paths that pass are forwarded byte for byte (encoded slashes in ids included).
pub(super) fn check_passthrough_path(path: &str) -> Result<(), ProxyError> {
    let below = path.strip_prefix("/v1").unwrap_or(path);
    check_path(below).map_err(|e| ProxyError::bad_request(e.message()).with_code("invalid_path"))
}

/// The path an adapter built for one provider (relative to its base path). Only client text
/// can make it fail (the model name in a Gemini path), so the answer is a 400.
pub(super) fn check_upstream_path(endpoint: Endpoint, path: &str) -> Result<(), ProxyError> {
    check_path(path).map_err(|e| {
        if endpoint == Endpoint::Passthrough {
            return ProxyError::bad_request(e.message()).with_code("invalid_path");
        }
        let message = format!("the model name cannot be used in an upstream URL: {}", e.message());
        ProxyError::bad_request(message)
            .with_param("model")
            .with_code("invalid_model_name")
    })
}
