//! The token estimate reserved against TPM at admission, before the upstream says what the
//! request really used: `ceil(body bytes / 4)` for the prompt (about 4 bytes per token for
//! English text and JSON, an overestimate for the JSON framing) plus `max_tokens` or
//! `max_completion_tokens` when the client gives one (the most the answer can cost).
//! Settled to the real usage when the answer ends and the upstream reported usage.

use crate::codec::json::Inspection;

/// Bytes per prompt token assumed by the estimate.
pub const BYTES_PER_TOKEN: u64 = 4;

/// Estimated tokens of a request body, from its size and the token caps the strict inspection
/// already read (no second pass over the body).
pub fn estimate_tokens(body_len: usize, inspection: &Inspection) -> u64 {
    let prompt = (body_len as u64).div_ceil(BYTES_PER_TOKEN);
    let completion = inspection.max_completion_tokens.or(inspection.max_tokens).unwrap_or(0);
    prompt.saturating_add(completion)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::json::inspect_body;

    #[test]
    fn prompt_bytes_plus_max_tokens() {
        let estimate = |body: &[u8]| estimate_tokens(body.len(), &inspect_body(body, 128).unwrap_or_default());
        let body = br#"{"model":"m","max_tokens":100}"#;
        assert_eq!(estimate(body), (body.len() as u64).div_ceil(4) + 100);
        let body = br#"{"model":"m","max_completion_tokens":7,"max_tokens":100}"#;
        assert_eq!(estimate(body), (body.len() as u64).div_ceil(4) + 7);
        assert_eq!(estimate(b"not json"), 2);
    }
}
