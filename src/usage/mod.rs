//! Token usage of one request, as the upstream reported it. Filled by the response transform
//! while the answer passes through (see `proxy::relay`), so a stream that ends early still has
//! what it saw.

pub mod anthropic;
mod event;
pub mod gemini;
mod needle;
pub mod openai;
mod openai_stream;
pub mod record;
pub mod record_rollup;
pub mod responses;
pub mod rollup;
pub mod writer;

/// Token counts; `partial` when the answer ended before the upstream reported final usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
    /// The upstream reported usage at all.
    pub reported: bool,
    /// The answer was cut (client gone, upstream failed) before it ended normally.
    pub partial: bool,
}

/// The most one token count holds once it leaves the relay (`Usage::bounded`): about 10^12,
/// far above any real request. An upstream's report is whatever bytes it sent (a fuzzer found
/// `"input_tokens":2.2e34`), and the counts are summed into limit windows (atomics, which
/// wrap) and rollups, so an absurd report is clamped here rather than wrapping those.
pub const MAX_TOKENS: u64 = 1 << 40;

impl Usage {
    /// Each count clamped to `MAX_TOKENS`.
    pub fn bounded(self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.min(MAX_TOKENS),
            completion_tokens: self.completion_tokens.min(MAX_TOKENS),
            cached_tokens: self.cached_tokens.min(MAX_TOKENS),
            reasoning_tokens: self.reasoning_tokens.min(MAX_TOKENS),
            ..self
        }
    }

    /// Prompt plus completion, the `total_tokens` answers carry (saturating: a translator
    /// writes counts as the upstream sent them, before any bound).
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::{Usage, MAX_TOKENS};

    #[test]
    fn bounded_clamps_each_count_and_total_saturates() {
        let absurd = Usage {
            prompt_tokens: u64::MAX,
            completion_tokens: 7,
            cached_tokens: MAX_TOKENS + 1,
            reasoning_tokens: 3,
            reported: true,
            partial: true,
        };
        assert_eq!(absurd.total(), u64::MAX);
        let b = absurd.bounded();
        assert_eq!(
            (
                b.prompt_tokens,
                b.completion_tokens,
                b.cached_tokens,
                b.reasoning_tokens
            ),
            (MAX_TOKENS, 7, MAX_TOKENS, 3)
        );
        assert!(b.reported && b.partial);
        assert_eq!(b.total(), MAX_TOKENS + 7);
    }
}
