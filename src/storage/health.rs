//! Storage health as `/health` and `/metrics` show it: whether the database is open, when it
//! last failed or lost a record, and the counters of what the log pruned or could not keep.
//! Written by the control thread (and by workers only when the record queue overflows), read by
//! any worker. Invariant: `/health` says `failing` while the last failure or dropped record is
//! more recent than `storage.health_window_ms`, so a flapping store never looks healthy between
//! two failures; every row the log deletes or loses is counted here or in
//! `rotor_log_dropped_total`.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Milliseconds on a process-wide monotonic clock, never 0 (0 means "never" in the atomics).
pub fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Why request rows were deleted (the `reason` label of `rotor_log_pruned_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneReason {
    MaxRecords,
    MaxDbBytes,
    Retention,
}

impl PruneReason {
    const ALL: [PruneReason; 3] = [PruneReason::MaxRecords, PruneReason::MaxDbBytes, PruneReason::Retention];

    fn label(self) -> &'static str {
        match self {
            PruneReason::MaxRecords => "max_records",
            PruneReason::MaxDbBytes => "max_db_bytes",
            PruneReason::Retention => "retention",
        }
    }
}

#[derive(Default)]
pub struct StorageHealth {
    open: AtomicBool,
    /// `clock_ms` of the last failed write, failed open or lost file; 0 = never.
    last_failure_ms: AtomicU64,
    last_error: Mutex<String>,
    pruned: [AtomicU64; 3],
    /// Times the database was opened again after it failed to open or its file vanished.
    reopened: AtomicU64,
    /// Requests whose stats rollups were given up (storage down so long that the pending cells
    /// passed their bound, or still down at exit).
    rollups_dropped: AtomicU64,
    /// Gauges the writer refreshes: rows in the request log, database bytes (file + WAL, or
    /// the in-memory pages).
    rows: AtomicU64,
    bytes: AtomicU64,
    /// The control thread writes in the idle scheduling class while CPUs have room
    /// (`storage::idle_class`), and the times its watchdog found it starved there.
    idle_class: AtomicBool,
    idle_class_starved: AtomicU64,
}

/// What `/health` shows about storage.
pub struct StorageState {
    pub ok: bool,
    pub error: Option<String>,
}

impl StorageHealth {
    pub fn opened(&self, again: bool) {
        self.open.store(true, Ordering::Relaxed);
        if again {
            self.reopened.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The database is closed (failed to open, or its file vanished) until it opens again.
    pub fn closed(&self, error: String) {
        self.open.store(false, Ordering::Relaxed);
        self.failed(error);
    }

    /// A write or open failed now.
    pub fn failed(&self, error: String) {
        *self.last_error.lock() = error;
        self.last_failure_ms.store(clock_ms(), Ordering::Relaxed);
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// Healthy = open, and neither a failure nor a dropped record (`last_drop_ms`, from the
    /// record queue) within `window`.
    pub fn state(&self, window: Duration, last_drop_ms: u64) -> StorageState {
        let now = clock_ms();
        let window = window.as_millis() as u64;
        let recent = |at: u64| at != 0 && now.saturating_sub(at) < window;
        let failure = self.last_failure_ms.load(Ordering::Relaxed);
        if !self.is_open() || recent(failure) {
            return StorageState {
                ok: false,
                error: Some(self.last_error.lock().clone()),
            };
        }
        if recent(last_drop_ms) {
            return StorageState {
                ok: false,
                error: Some(format!(
                    "request records were dropped in the last {} s (record queue full)",
                    window / 1000
                )),
            };
        }
        StorageState { ok: true, error: None }
    }

    pub fn count_pruned(&self, reason: PruneReason, n: u64) {
        if let Some(c) = self.pruned.get(reason as usize) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn pruned(&self, reason: PruneReason) -> u64 {
        self.pruned
            .get(reason as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    pub fn count_rollups_dropped(&self, n: u64) {
        self.rollups_dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set_size(&self, rows: u64, bytes: u64) {
        self.rows.store(rows, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
    }

    /// Whether the control thread's writes use the idle scheduling class now, and how often it
    /// was found starved there (so went back to the normal class for a while).
    pub fn set_idle_class(&self, used: bool, starved: u64) {
        self.idle_class.store(used, Ordering::Relaxed);
        self.idle_class_starved.store(starved, Ordering::Relaxed);
    }

    /// (rows in the request log, database bytes) as last measured.
    pub fn size(&self) -> (u64, u64) {
        (self.rows.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }

    /// The storage families of `/metrics` (Prometheus text), appended to `out`.
    pub fn render(&self, out: &mut String, rollup_overflow: u64) {
        let mut family = |name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            "rotor_log_pruned_total",
            "counter",
            "Request rows deleted to keep the log bounded, by reason (stats rollups keep counting them).",
        );
        for reason in PruneReason::ALL {
            let _ = writeln!(
                out,
                "rotor_log_pruned_total{{reason=\"{}\"}} {}",
                reason.label(),
                self.pruned(reason)
            );
        }
        let (rows, bytes) = self.size();
        let lines = [
            ("rotor_log_rows", "gauge", "Request rows in the log now.", rows),
            (
                "rotor_storage_bytes",
                "gauge",
                "Database size now: file plus WAL, or the in-memory pages.",
                bytes,
            ),
            (
                "rotor_storage_reopened_total",
                "counter",
                "Times the database was opened again (it failed to open, or its file vanished).",
                self.reopened.load(Ordering::Relaxed),
            ),
            (
                "rotor_rollups_dropped_total",
                "counter",
                "Requests whose stats were lost: storage stayed down past the pending rollups' bound, or at exit.",
                self.rollups_dropped.load(Ordering::Relaxed),
            ),
            (
                "rotor_storage_idle_class",
                "gauge",
                "1 when the request log's writes run in the idle scheduling class while CPUs have room (storage.writer_class), 0 when in the normal class.",
                u64::from(self.idle_class.load(Ordering::Relaxed)),
            ),
            (
                "rotor_storage_idle_class_starved_total",
                "counter",
                "Times the log writer waited for a CPU in the idle class (the CPUs were full) and went back to the normal class for 5 s.",
                self.idle_class_starved.load(Ordering::Relaxed),
            ),
            (
                "rotor_rollup_overflow_total",
                "counter",
                "Requests whose stats were counted under model \"(other)\" (too many label sets in one flush).",
                rollup_overflow,
            ),
        ];
        for (name, kind, help, value) in lines {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // ages a failure past a 1 ms window
    fn a_recent_failure_or_drop_keeps_it_failing_for_the_window() {
        let h = StorageHealth::default();
        let long = Duration::from_secs(60);
        let short = Duration::from_millis(1);
        assert!(!h.state(long, 0).ok, "not open yet");
        h.opened(false);
        assert!(h.state(long, 0).ok);
        h.failed("disk full".into());
        let s = h.state(long, 0);
        assert_eq!((s.ok, s.error.as_deref()), (false, Some("disk full")));
        std::thread::sleep(Duration::from_millis(5));
        assert!(h.state(short, 0).ok, "the failure aged out of a short window");
        assert!(!h.state(long, 0).ok, "and is still inside a long one");
        let s = h.state(short, clock_ms());
        assert!(!s.ok && s.error.unwrap().contains("queue full"));
        h.closed("gone".into());
        std::thread::sleep(Duration::from_millis(5));
        assert!(!h.state(short, 0).ok, "closed stays failing past the window");
        h.opened(true);
        assert!(h.state(short, 0).ok);
        let mut text = String::new();
        h.count_pruned(PruneReason::MaxDbBytes, 7);
        h.render(&mut text, 0);
        assert!(
            text.contains("rotor_log_pruned_total{reason=\"max_db_bytes\"} 7"),
            "{text}"
        );
        assert!(text.contains("rotor_storage_reopened_total 1"), "{text}");
        assert!(text.contains("rotor_storage_idle_class 0\n"), "{text}");
        h.set_idle_class(true, 3);
        let mut text = String::new();
        h.render(&mut text, 0);
        assert!(text.contains("rotor_storage_idle_class 1\n"), "{text}");
        assert!(text.contains("rotor_storage_idle_class_starved_total 3\n"), "{text}");
    }
}
