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
