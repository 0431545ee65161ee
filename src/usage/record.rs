//! Request records: one per answered request, pushed by workers into a bounded lock-free queue
//! and written to storage by the control thread in batches.
//! Invariant: a worker never blocks on the queue; a record that does not fit is counted in
//! `dropped` (exported as `rotor_log_dropped_total`), never silently lost.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;

use super::Usage;

/// Records waiting for the writer; at ~400 bytes each, 64k of them is ~25 MB at most.
pub const QUEUE_CAPACITY: usize = 65_536;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestRecord {
    /// Wall-clock time the request arrived, ms since the Unix epoch.
    pub ts_ms: i64,
    pub request_id: String,
    pub client: String,
    pub endpoint: String,
    pub model: String,
    pub provider: String,
    pub upstream_model: String,
    /// Masked to the last 4 characters.
    pub key: String,
    pub status: u16,
    /// Error kind when the request failed (e.g. `upstream_timeout`), else empty.
    pub error: String,
    pub attempts: u32,
    pub stream: bool,
    pub latency_ms: u64,
    pub ttfb_ms: u64,
    pub overhead_us: u64,
    pub usage: Usage,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

pub struct RecordQueue {
    queue: ArrayQueue<RequestRecord>,
    dropped: AtomicU64,
    /// `storage::health::clock_ms` of the last drop; 0 = never (`/health` looks at it).
    last_drop_ms: AtomicU64,
    /// `dropped` value when the last warning was logged (one warning per burst).
    warned_at: AtomicU64,
}

impl Default for RecordQueue {
    fn default() -> Self {
        Self::with_capacity(QUEUE_CAPACITY)
    }
}

impl RecordQueue {
    pub fn with_capacity(capacity: usize) -> Self {
        RecordQueue {
            queue: ArrayQueue::new(capacity.max(1)),
            dropped: AtomicU64::new(0),
            last_drop_ms: AtomicU64::new(0),
            warned_at: AtomicU64::new(0),
        }
    }

    /// Queues a record; when full, counts it as dropped (and warns once per burst).
    pub fn push(&self, record: RequestRecord) {
        if self.queue.push(record).is_err() {
            self.count_dropped(1, "request log queue full");
        }
    }

    /// Counts records lost elsewhere (e.g. the storage write failed).
    pub fn count_dropped(&self, n: u64, why: &str) {
        let now = self.dropped.fetch_add(n, Ordering::Relaxed) + n;
        self.last_drop_ms
            .store(crate::storage::health::clock_ms(), Ordering::Relaxed);
        let warned = self.warned_at.load(Ordering::Relaxed);
        // Warn on the first drop of a burst: after a quiet period the writer resets `warned_at`.
        if warned == 0
            && self
                .warned_at
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!(
                dropped_total = now,
                "{why}: request records are being dropped (see rotor_log_dropped_total)"
            );
        }
    }

    /// Up to `max` queued records, oldest first.
    pub fn drain(&self, max: usize) -> Vec<RequestRecord> {
        let mut out = Vec::with_capacity(self.queue.len().min(max));
        while out.len() < max {
            match self.queue.pop() {
                Some(r) => out.push(r),
                None => break,
            }
        }
        out
    }

    /// Called by the writer after a clean batch: the next drop starts a new burst (and warns).
    pub fn burst_over(&self) {
        self.warned_at.store(0, Ordering::Relaxed);
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// When a record was last dropped (`storage::health::clock_ms`), 0 = never.
    pub fn last_drop_ms(&self) -> u64 {
        self.last_drop_ms.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_counts_drops_and_keeps_the_oldest() {
        let q = RecordQueue::with_capacity(2);
        for i in 0..5 {
            q.push(RequestRecord {
                status: 200 + i,
                ..Default::default()
            });
        }
        assert_eq!(q.dropped(), 3);
        let drained = q.drain(10);
        assert_eq!(drained.iter().map(|r| r.status).collect::<Vec<_>>(), vec![200, 201]);
        assert!(q.is_empty());
    }
}
