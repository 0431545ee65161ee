//! One monotonic millisecond clock for deadlines shared across threads (cooling, quarantine).
//! Monotonic so a wall-clock step cannot un-cool every key at once.

use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the first call in this process (never 0 after the first ms).
pub fn now_ms() -> u64 {
    let start = START.get_or_init(Instant::now);
    start.elapsed().as_millis() as u64 + 1
}
