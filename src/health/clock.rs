//! One monotonic millisecond clock for deadlines shared across threads (cooling, quarantine),
//! and the request path's clock readings (`Moment`s), with their wall-clock times through a
//! per-thread offset (`Moment::unix_ms`).
//! Monotonic so a wall-clock step cannot un-cool every key at once.
//! Invariants: a request reads the clock only at the moments it reports (received, attempt
//! start, upstream head in, answer ready, head out, end: see `proxy::finish::Trace`) and
//! derives every other figure from those readings (`ms_at`); `latest` is never later than the
//! true time, so only figures that may safely be early use it (an idle connection's stamp).
//! A `Moment` becomes an `Instant` only to arm a timer (`Moment::instant`), never later than
//! the moment it stands for.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A reading of the monotonic clock (`CLOCK_MONOTONIC`, the clock `Instant` reads on Linux), in
/// nanoseconds: the difference of two readings is one subtraction. An `Instant` difference
/// cost ~55 instructions and its reading ~28 more than this one (callgrind, issue 18), and the
/// request path takes several of each per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Moment(u64);

impl Moment {
    /// Reads the clock (a vDSO call, no system call).
    #[allow(unsafe_code)]
    pub fn now() -> Moment {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec that outlives the call; clock_gettime
        // only writes it. CLOCK_MONOTONIC exists on every kernel rotor runs on, so the call
        // cannot fail (were it to, `ts` stays zero: an early reading, never a late one).
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        Moment(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
    }

    /// This reading in nanoseconds (for `deadline`'s wheel, which files them as numbers).
    pub fn nanos(self) -> u64 {
        self.0
    }

    /// The reading `nanos` returned.
    pub fn from_nanos(nanos: u64) -> Moment {
        Moment(nanos)
    }

    /// Nanoseconds from `earlier` to this reading (0 when `earlier` is later).
    pub fn nanos_since(self, earlier: Moment) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// The time from `earlier` to this reading (zero when `earlier` is later).
    pub fn since(self, earlier: Moment) -> Duration {
        Duration::from_nanos(self.nanos_since(earlier))
    }

    /// The `Instant` of this moment, for a timer deadline. Both clocks are read, the `Instant`
    /// first: the result is early by the few nanoseconds between the two reads, never late.
    pub fn instant(self) -> Instant {
        let (instant, moment) = (Instant::now(), Moment::now());
        match self.0.checked_sub(moment.0) {
            Some(ahead) => instant.checked_add(Duration::from_nanos(ahead)).unwrap_or(instant),
            None => instant
                .checked_sub(Duration::from_nanos(moment.0 - self.0))
                .unwrap_or(instant),
        }
    }
}

/// How long, in monotonic nanoseconds, a thread's wall-clock offset (`Moment::unix_ms`) serves
/// before the wall clock is read again: a step of the wall clock (NTP, an operator) shows in
/// `unix_ms` within this long.
const WALL_OFFSET_SERVES_NS: u64 = 1_000_000_000;

thread_local! {
    /// This thread's (monotonic reading, wall clock minus monotonic clock in ns), as last taken.
    static WALL_OFFSET: Cell<Option<(u64, i64)>> = const { Cell::new(None) };
}

impl Moment {
    /// The Unix time of this reading in milliseconds (0 before 1970), through this thread's
    /// offset between the wall clock and the monotonic one, taken again once it is a second
    /// older than the later of this reading and the thread's `latest`: most calls read no
    /// clock. A request record's arrival as a wall time and a `Duration` was ~150
    /// instructions a record (callgrind, issue 18).
    pub fn unix_ms(self) -> i64 {
        let now = self.0.max(latest().0);
        let offset = match WALL_OFFSET.get() {
            Some((taken, offset)) if now.saturating_sub(taken) < WALL_OFFSET_SERVES_NS => offset,
            _ => {
                let (offset, taken) = wall_minus_monotonic();
                WALL_OFFSET.set(Some((taken, offset)));
                offset
            }
        };
        // Monotonic nanoseconds (since boot) plus the offset stay far inside an i64.
        (self.0 as i64).saturating_add(offset).max(0) / 1_000_000
    }
}

/// The wall clock minus the monotonic one, in ns, and the monotonic reading it was taken at.
fn wall_minus_monotonic() -> (i64, u64) {
    let monotonic = Moment::now();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    (wall.saturating_sub(monotonic.0 as i64), monotonic.0)
}

/// `d` after a reading (saturating: a limit past any clock stays in the far future).
impl std::ops::Add<Duration> for Moment {
    type Output = Moment;

    fn add(self, d: Duration) -> Moment {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Moment(self.0.saturating_add(nanos))
    }
}

static START: OnceLock<Moment> = OnceLock::new();

thread_local! {
    /// This thread's latest `read`.
    static LATEST: Cell<Option<Moment>> = const { Cell::new(None) };
}

/// Milliseconds since the first call in this process (never 0 after the first ms).
pub fn now_ms() -> u64 {
    ms_at(read())
}

/// `now_ms` of a reading already taken: no clock read.
pub fn ms_at(at: Moment) -> u64 {
    let start = START.get_or_init(|| at);
    at.nanos_since(*start) / 1_000_000 + 1
}

/// Reads the clock (a moment of a request worth reporting) and remembers it for `latest`.
pub fn read() -> Moment {
    let now = Moment::now();
    LATEST.set(Some(now));
    now
}

/// This thread's latest `read`, without a clock read: at most the true time, older by however
/// long the thread went without a `read` (reads the clock when there was none yet).
pub fn latest() -> Moment {
    LATEST.get().unwrap_or_else(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits until `d` past `from` without sleeping a thread (clippy bars `thread::sleep`).
    fn spin(from: Moment, d: Duration) {
        while Moment::now().since(from) < d {
            std::hint::spin_loop();
        }
    }

    /// `unix_ms` agrees with the wall clock read around it, for a fresh offset and for one
    /// taken earlier, and for a reading older than the offset's life (taken again then).
    #[test]
    fn unix_ms_agrees_with_the_wall_clock() {
        let wall_ms = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_millis() as i64
        };
        let before = wall_ms();
        let first = Moment::now().unix_ms();
        spin(Moment::now(), Duration::from_millis(20));
        let second = Moment::now().unix_ms();
        let after = wall_ms();
        // 1 ms of slack at either end: the offset is read a few nanoseconds after the
        // monotonic clock, and the wall clock may be slewed meanwhile.
        assert!(
            before <= first + 1 && first <= second && second <= after + 1,
            "{before} {first} {second} {after}"
        );
        assert!(second - first >= 20, "20 ms apart: {first} then {second}");
        let old = Moment(Moment::now().0 - 3 * WALL_OFFSET_SERVES_NS);
        let old_ms = old.unix_ms();
        assert!((wall_ms() - 3_000 - old_ms).abs() <= 5, "3 s ago: {old_ms}");
        // An offset younger than its life serves as it is (here a wrong one, to tell)...
        let now = read();
        WALL_OFFSET.set(Some((now.0, 0)));
        assert_eq!(now.unix_ms(), now.0 as i64 / 1_000_000, "the kept offset served");
        // ...and one older than that is taken again.
        WALL_OFFSET.set(Some((now.0 - WALL_OFFSET_SERVES_NS, 0)));
        let fresh = now.unix_ms();
        assert!((wall_ms() - fresh).abs() <= 5, "taken again: {fresh}");
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
        assert!(latest() < Moment::now(), "latest is a past reading, not a new one");
        let second = read();
        assert!(second > first);
        assert_eq!(latest(), second);
    }

    /// A `Moment` is monotonic and measures what `Instant` measures: over a 20 ms wait, the
    /// `Instant` span lies between the spans of the `Moment`s read around its two ends, however
    /// the scheduler delayed any read.
    #[test]
    fn moments_are_monotonic_and_agree_with_instant() {
        let (m0, i0, m0_after) = (Moment::now(), Instant::now(), Moment::now());
        let mut last = m0_after;
        while i0.elapsed() < Duration::from_millis(20) {
            let m = Moment::now();
            assert!(m >= last, "the clock went back: {last:?} then {m:?}");
            last = m;
        }
        let (m1, i1, m1_after) = (Moment::now(), Instant::now(), Moment::now());
        let by_instant = i1.duration_since(i0);
        assert!(by_instant >= Duration::from_millis(20));
        let (narrowest, widest) = (m1.since(m0_after), m1_after.since(m0));
        assert!(
            narrowest <= by_instant && by_instant <= widest,
            "{by_instant:?} not within {narrowest:?}..={widest:?}"
        );
        assert_eq!(m0.since(m1), Duration::ZERO, "an earlier reading minus a later is zero");
        assert_eq!(m1.nanos_since(m0), widest.as_nanos() as u64 - m1_after.nanos_since(m1));
    }

    /// A deadline made of a `Moment` becomes the `Instant` it stands for, never later (and
    /// early only by the reads' gap, bounded loosely here: a busy test machine may preempt).
    #[test]
    fn instant_of_a_moment_is_never_late() {
        let (before, now, after) = (Instant::now(), Moment::now(), Instant::now());
        let at = now.instant();
        assert!(at <= after, "late: {at:?} after {after:?}");
        assert!(before.duration_since(at) < Duration::from_secs(1), "too early");
        let later = now + Duration::from_secs(3);
        assert_eq!(later.since(now), Duration::from_secs(3));
        let at = later.instant();
        assert!(at <= after + Duration::from_secs(3), "late");
        assert!(at > before + Duration::from_secs(2), "too early");
        let past = Moment(now.0 - 1_000_000);
        assert!(past.instant() <= after - Duration::from_millis(1), "late");
        assert_eq!(
            now + Duration::MAX,
            Moment(u64::MAX),
            "a limit past any clock saturates"
        );
    }
}
