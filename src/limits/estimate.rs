//! The token estimate reserved against TPM at admission, before the upstream says what the
//! request really used: `ceil(body bytes / 4)` for the prompt (about 4 bytes per token for
//! English text and JSON, an overestimate for the JSON framing) plus `max_tokens` or
//! `max_completion_tokens` when the client gives one (the most the answer can cost).
//! Settled to the real usage when the answer ends and the upstream reported usage.

use sonic_rs::JsonValueTrait;

/// Bytes per prompt token assumed by the estimate.
pub const BYTES_PER_TOKEN: u64 = 4;

/// Estimated tokens of a request body. Cheap: two lazy field lookups, no full parse (the
/// strict inspection already validated the body that routes; a malformed one estimates by size).
pub fn estimate_tokens(body: &[u8]) -> u64 {
    let prompt = (body.len() as u64).div_ceil(BYTES_PER_TOKEN);
    let completion = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|field| sonic_rs::get(body, &[*field]).ok().and_then(|v| v.as_u64()))
        .unwrap_or(0);
    prompt.saturating_add(completion)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_bytes_plus_max_tokens() {
        let body = br#"{"model":"m","max_tokens":100}"#;
        assert_eq!(estimate_tokens(body), (body.len() as u64).div_ceil(4) + 100);
        let body = br#"{"model":"m","max_completion_tokens":7,"max_tokens":100}"#;
        assert_eq!(estimate_tokens(body), (body.len() as u64).div_ceil(4) + 7);
        assert_eq!(estimate_tokens(b"not json"), 2);
    }
}
