//! Exchanges of more than one upstream request (Replicate: create a prediction, poll it until it
//! finishes, or read its stream URL): a protocol says, answer by answer, what comes next; the
//! request path (`proxy::follow`) makes the requests, with the same key, on the same per-core
//! pool and connector, within the provider's `poll_max_wait_ms`.
//! Invariant: a `FollowUp` only decides; it never does IO, so every upstream request of an
//! attempt is made (and bounded) in one place.

use std::time::Duration;

/// What the request path does after an answer the follow-up read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Relay this answer (its body, already read) with this status.
    Deliver { status: u16 },
    /// `GET url` with the same key after `after`, then ask again about its answer. `accept` is
    /// sent as the `accept` header.
    Get {
        url: String,
        after: Duration,
        accept: &'static str,
    },
    /// The exchange cannot go on (an unreadable answer, no URL to follow): the attempt fails
    /// with this message.
    Fail(String),
}

pub trait FollowUp {
    /// Whether an answer with this status is read whole and judged by `next`; otherwise it is
    /// relayed as it arrives (the stream itself, an error answer).
    fn reads(&self, status: u16) -> bool;
    /// The next step after an answer `reads` asked for.
    fn next(&mut self, status: u16, body: &[u8]) -> Step;
    /// Where the finished job's record is read (Replicate's `urls.get`): a stream translator
    /// fetches usage there once the stream ended.
    fn record_url(&self) -> Option<&str>;
    /// The longest the whole exchange may wait for the upstream (`poll_max_wait_ms`).
    fn max_wait(&self) -> Duration;
    /// Where the job is canceled while it may still run (Replicate's `urls.cancel`, `None` once
    /// an answer showed it finished): the request path cancels a job the client no longer
    /// waits for, so it stops running (and billing) upstream.
    fn cancel_url(&self) -> Option<&str>;
}
