//! Attempts the upstream answers over more than one exchange: an on-demand turn opens a
//! session (`setup`) before its query when no live one continues the conversation. `proxy/`
//! drives a `Turn` without knowing the kind: it sends each `Step` on the same pool and
//! connector, hands a setup's answer back, lets the turn replace an answer that says the
//! upstream state is gone (at most once), and relays the final answer through
//! `Turn::transform`.
//! Invariant: a turn is bound to one key; upstream state it uses was created with that key.

use bytes::Bytes;

pub use super::ondemand::{Conversation as Plan, Dialog, Turn};

/// One upstream request of a turn.
#[derive(Debug)]
pub struct Step {
    /// After the provider's base URL path.
    pub path: String,
    pub body: Bytes,
    /// A setup request: its successful answer goes back to `Turn::setup_answered`; a failed
    /// one is the attempt's answer.
    pub setup: bool,
}

/// At most this many upstream requests in one turn (setup, query, after a lost session one
/// more setup and query, and one setup retried).
pub const MAX_STEPS: usize = 5;
