//! One monotonic millisecond clock for deadlines shared across threads (cooling, quarantine),
//! and the request path's clock readings.
//! Monotonic so a wall-clock step cannot un-cool every key at once.
//! Invariants: a request reads the clock only at the moments it reports (received, attempt
//! start, upstream head in, answer ready, head out, end: see `proxy::finish::Trace`) and
//! derives every other figure from those readings (`ms_at`); `latest` is never later than the
//! true time, so only figures that may safely be early use it (an idle connection's stamp).

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

thread_local! {
    /// This thread's latest `read`.
    static LATEST: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Milliseconds since the first call in this process (never 0 after the first ms).
pub fn now_ms() -> u64 {
    ms_at(read())
}

/// `now_ms` of a reading already taken: no clock read.
pub fn ms_at(at: Instant) -> u64 {
    let start = START.get_or_init(|| at);
    at.saturating_duration_since(*start).as_millis() as u64 + 1
}

/// Reads the clock (a moment of a request worth reporting) and remembers it for `latest`.
pub fn read() -> Instant {
    let now = Instant::now();
    LATEST.set(Some(now));
    now
}

/// This thread's latest `read`, without a clock read: at most the true time, older by however
/// long the thread went without a `read` (reads the clock when there was none yet).
pub fn latest() -> Instant {
    LATEST.get().unwrap_or_else(read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Waits until `d` past `from` without sleeping a thread (clippy bars `thread::sleep`).
    fn spin(from: Instant, d: Duration) {
        while from.elapsed() < d {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn ms_at_matches_now_ms_and_orders_readings() {
        let a = read();
        let a_ms = ms_at(a);
        spin(a, Duration::from_millis(5));
        let b_ms = now_ms();
        assert!(a_ms >= 1);
        assert!(b_ms >= a_ms + 5, "{a_ms} then {b_ms}");
        assert_eq!(ms_at(a), a_ms, "the same reading, the same ms");
    }

    #[test]
    fn latest_is_the_last_read_and_never_ahead() {
        let first = read();
        assert_eq!(latest(), first);
        spin(first, Duration::from_millis(2));
        assert!(latest() < Instant::now(), "latest is a past reading, not a new one");
        let second = read();
        assert!(second > first);
        assert_eq!(latest(), second);
    }
}
