//! Request records: one per answered request that gets a row, pushed by each worker into its
//! own lane of a bounded queue (a vector the writer empties; a shared lock-free queue for
//! pushes without a lane) and written to storage by the control thread in batches. A record
//! is compact (its seven label fields share one allocation, which the records of one route
//! share in turn; the writer maps them to a label id) and its request id is held inline when it
//! is of the usual lengths, so the worker allocates nothing for it, and the queue holds ~170
//! bytes a record.
//! The writer counts a queued record's request in the stats rollups (`record_rollup`); the
//! worker counts the requests whose record is not queued. The writer takes the records in the
//! order their requests ended, across lanes (so rows are numbered in that order: `order`).
//! Invariant: a worker never blocks on the queue (a lane being taken is skipped for the shared
//! queue); a record that does not fit is counted in `dropped` (exported as
//! `rotor_log_dropped_total`), never silently lost. The queue's memory follows what it holds,
//! not its capacity: a lane keeps room for twice what it held at the last take (at least
//! `LANE_KEEP` records, at most its share of the capacity), the shared queue's blocks of 31
//! records come and go.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_queue::SegQueue;
use parking_lot::Mutex;
use smallvec::SmallVec;

use order::Timed;

use super::Usage;
use crate::health::clock::{self, Moment};

/// How a drain orders what it took from the lanes and the shared queue.
#[path = "record_order.rs"]
mod order;

/// Records waiting for the writer in the workers' lanes together: at ~170 bytes each, 64k of
/// them is ~11 MB. The shared queue (pushes that meet the writer taking their lane, or that have
/// no lane) is bounded by the same number on its own, so ~22 MB is the very most.
pub const QUEUE_CAPACITY: usize = 65_536;
/// Records of room a lane keeps after a take however few it held (~170 kB).
const LANE_KEEP: usize = 1024;
/// Longest text field kept (longer ones are cut at a character boundary).
pub const MAX_FIELD_BYTES: usize = 1024;
/// Longest request id a record holds inline: rotor's own ids (16 hex digits), UUIDs (36) and
/// `req_` with 32 hex digits. A request id used to be a box of its own, allocated by the worker
/// and freed by the writer on another thread (a cross-thread free in the allocator): a writer
/// that leaked them saved 0.19 us of CPU a request at 64 connections, though the A/B of this
/// change itself came out within the spread (user 2.71 -> 2.65 us, issue 18), and callgrind
/// counts the same. A longer id (up to `MAX_FIELD_BYTES`, from a client) still takes a box.
const INLINE_ID_BYTES: usize = 40;

/// The text fields of a record, borrowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RecordText<'a> {
    pub request_id: &'a str,
    pub client: &'a str,
    pub endpoint: &'a str,
    pub model: &'a str,
    pub provider: &'a str,
    /// The model asked of the provider; empty = the same as `model`.
    pub upstream_model: &'a str,
    /// Masked to the last 4 characters.
    pub key: &'a str,
    /// Error kind when the request failed (e.g. `upstream_timeout`), else empty.
    pub error: &'a str,
}

impl<'a> RecordText<'a> {
    fn fields(&self) -> [&'a str; 8] {
        [
            self.request_id,
            self.client,
            self.endpoint,
            self.model,
            self.provider,
            self.upstream_model,
            self.key,
            self.error,
        ]
    }
}

/// The label fields of a record (every text field but the request id) in one allocation,
/// shared by the records of one route: a worker whose request has the label of its last one
/// copies no name (`proxy::finish`), and the writer tells records of one label by address
/// before it compares their text.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Label {
    /// The fields back to back; `ends[i]` is where field `i` stops.
    run: Box<str>,
    ends: [u16; 7],
}

impl Label {
    /// `text`'s label fields (each cut to `MAX_FIELD_BYTES`). One pass sums the ends, one
    /// copies: no `map(capped)` array of the fields first.
    pub fn new(text: &RecordText<'_>) -> Label {
        let fields = text.fields();
        let fields = fields.get(1..).unwrap_or(&[]);
        let mut ends = [0u16; 7];
        let mut total = 0;
        for (field, end) in fields.iter().zip(ends.iter_mut()) {
            total += capped(field).len();
            // At most 7 x MAX_FIELD_BYTES: fits.
            *end = total as u16;
        }
        let mut run = String::with_capacity(total);
        for field in fields {
            run.push_str(capped(field));
        }
        Label {
            run: run.into_boxed_str(),
            ends,
        }
    }

    /// The fields as one run of text and where each ends in it (`Texts::label_key`).
    pub fn key(&self) -> (&str, [u16; 7]) {
        (&self.run, self.ends)
    }
}

/// The `RecordText` fields of a record, owned: its request id and its (shared) label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Texts {
    /// ASCII (request ids are), kept as bytes: the worker does not check it again, the file
    /// writer stores the bytes, and only a reader of text (`get`) looks.
    request_id: SmallVec<[u8; INLINE_ID_BYTES]>,
    label: Arc<Label>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestRecord {
    /// Wall-clock time the request arrived, ms since the Unix epoch.
    pub ts_ms: i64,
    pub text: Texts,
    pub status: u16,
    pub attempts: u32,
    pub stream: bool,
    pub latency_ms: u64,
    pub ttfb_ms: u64,
    pub overhead_us: u64,
    pub usage: Usage,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The worker counted this request in its stats rollup shard itself (a label was cut to
    /// fit the record, so the record's labels are not the stats' ones): the writer, which
    /// counts every other record it drains (`usage::record_rollup`), must not count it again.
    pub in_rollups: bool,
}

/// `s` cut to at most `MAX_FIELD_BYTES`, at a character boundary.
fn capped(s: &str) -> &str {
    if s.len() <= MAX_FIELD_BYTES {
        return s;
    }
    let mut end = MAX_FIELD_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

impl Texts {
    /// `text`'s fields, each cut to `MAX_FIELD_BYTES`, with a label of their own.
    pub fn new(text: &RecordText<'_>) -> Texts {
        Texts::with_label(capped(text.request_id).as_bytes(), Arc::new(Label::new(text)))
    }

    /// A record's texts whose label is `label` (shared with other records) and whose request
    /// id is `request_id` (ASCII; cut to `MAX_FIELD_BYTES`; anything but UTF-8 reads as "").
    pub fn with_label(request_id: &[u8], label: Arc<Label>) -> Texts {
        Texts {
            request_id: SmallVec::from_slice(request_id.get(..MAX_FIELD_BYTES).unwrap_or(request_id)),
            label,
        }
    }

    /// The request id field alone (what the writer needs of a record whose label it knows).
    pub fn request_id(&self) -> &str {
        std::str::from_utf8(&self.request_id).unwrap_or("")
    }

    /// The request id's bytes (the file writer stores them as they are).
    pub fn request_id_bytes(&self) -> &[u8] {
        &self.request_id
    }

    /// The label this record shares: records holding the same one have equal labels.
    pub fn label(&self) -> &Arc<Label> {
        &self.label
    }

    /// The label fields (every field but the request id) as one run of text and where each
    /// of them ends in it: two records have equal label fields exactly when both are equal.
    /// (The writer's label cache hashes and compares this instead of seven strings.)
    pub fn label_key(&self) -> (&str, [u16; 7]) {
        self.label.key()
    }

    /// The label fields of a `label_key` run, in `RecordText` order (client, endpoint, model,
    /// provider, upstream model, key, error).
    pub fn split_label<'r>(run: &'r str, ends: &[u16; 7]) -> [&'r str; 7] {
        let mut start = 0;
        ends.map(|end| {
            let end = usize::from(end);
            let field = run.get(start..end).unwrap_or("");
            start = end;
            field
        })
    }

    pub fn get(&self) -> RecordText<'_> {
        let (run, ends) = self.label_key();
        let [client, endpoint, model, provider, upstream_model, key, error] = Self::split_label(run, &ends);
        RecordText {
            request_id: self.request_id(),
            client,
            endpoint,
            model,
            provider,
            upstream_model,
            key,
            error,
        }
    }
}

/// One worker's queued records (`RecordQueue::lane`): vectors only its worker pushes to and
/// the writer empties, so a push is a lock nobody else holds and a move, where a shared
/// lock-free queue paid a contended index and a zeroed block every 31 records (~300
/// instructions a record with the writer's pop, callgrind, issue 18).
#[derive(Default)]
pub struct Lane {
    records: Mutex<Timed>,
    /// `records.len()`, stored under the lock, read without it (`RecordQueue::len`).
    held: AtomicUsize,
}

/// A queued record with the time its request ended (`Moment` nanoseconds, one clock for every
/// thread): the writer orders what it drains by it, so rows are numbered in the order requests
/// ended, across workers, as when every worker pushed to one shared queue.
type Ordered = (u64, RequestRecord);

pub struct RecordQueue {
    /// Records pushed without a lane, or while the writer was taking the lane's.
    queue: SegQueue<Ordered>,
    lanes: Mutex<Vec<Arc<Lane>>>,
    /// Records one lane may hold: `capacity` shared among the lanes.
    lane_capacity: AtomicUsize,
    /// Records taken from a lane that the last `drain` had no room for (writer side).
    taken: Mutex<VecDeque<RequestRecord>>,
    capacity: usize,
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
        let capacity = capacity.max(1);
        RecordQueue {
            queue: SegQueue::new(),
            lanes: Mutex::default(),
            lane_capacity: AtomicUsize::new(capacity),
            taken: Mutex::default(),
            capacity,
            dropped: AtomicU64::new(0),
            last_drop_ms: AtomicU64::new(0),
            warned_at: AtomicU64::new(0),
        }
    }

    /// A lane for one worker (registered once at worker start); the lanes share the capacity.
    pub fn lane(&self) -> Arc<Lane> {
        let lane = Arc::new(Lane::default());
        let mut lanes = self.lanes.lock();
        lanes.push(lane.clone());
        self.lane_capacity
            .store((self.capacity / lanes.len()).max(1), Ordering::Relaxed);
        lane
    }

    /// Queues a record in `lane` (`push`'s contract), `ended` being when its request ended. A
    /// lane the writer is taking at this very moment is not waited for: the record goes to the
    /// shared queue instead.
    #[must_use = "the writer counts only queued records in the stats"]
    pub fn push_to(&self, lane: &Lane, ended: Moment, record: RequestRecord) -> bool {
        let Some(mut lane_records) = lane.records.try_lock() else {
            return self.push_ordered((ended.nanos(), record));
        };
        let Timed { ended: times, records } = &mut *lane_records;
        let lane_capacity = self.lane_capacity.load(Ordering::Relaxed);
        if records.len() >= lane_capacity {
            drop(lane_records);
            self.count_dropped(1, "request log queue full");
            return false;
        }
        if records.len() == records.capacity() {
            // Doubling, but never past the lane's share: the bound holds for memory too.
            let room = records.len().max(16).min(lane_capacity - records.len());
            records.reserve_exact(room);
            times.reserve_exact(room);
        }
        times.push(ended.nanos());
        records.push(record);
        lane.held.store(records.len(), Ordering::Relaxed);
        true
    }

    /// Queues a record; when full, counts it as dropped (and warns once per burst) and returns
    /// false (its request still counts in the stats: the caller adds it to its rollups). The
    /// bound is read without a write to shared memory, so pushes racing on a nearly full queue
    /// can pass it by at most one record each.
    #[must_use = "the writer counts only queued records in the stats"]
    pub fn push(&self, record: RequestRecord) -> bool {
        self.push_ordered((clock::read().nanos(), record))
    }

    fn push_ordered(&self, record: Ordered) -> bool {
        if self.queue.len() >= self.capacity {
            self.count_dropped(1, "request log queue full");
            return false;
        }
        self.queue.push(record);
        true
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

    /// Up to `max` queued records: what an earlier drain left, then the lanes' and the shared
    /// queue's in the order their requests ended. When nothing was left and one lane holds
    /// them all in order (a steady load), its vector is the batch: no record is moved.
    pub fn drain(&self, max: usize) -> Vec<RequestRecord> {
        let mut taken = self.taken.lock();
        let left = taken.len().min(max);
        let mut out: Vec<RequestRecord> = taken.drain(..left).collect();
        if out.len() < max {
            let lanes: Vec<Arc<Lane>> = self.lanes.lock().clone();
            let mut sources: Vec<Timed> = lanes.iter().filter_map(|lane| Self::take(lane)).collect();
            // The shared queue only up to the batch: what stays there is still queued.
            let mut fresh = sources.iter().map(Timed::len).sum::<usize>();
            let mut queued = Timed::default();
            while fresh < max - out.len() {
                match self.queue.pop() {
                    Some(r) => queued.push(r),
                    None => break,
                }
                fresh += 1;
            }
            sources.push(queued);
            let ordered = order::in_order_ended(sources);
            if out.is_empty() {
                out = ordered;
            } else {
                out.extend(ordered);
            }
            if out.len() > max {
                taken.extend(out.drain(max..));
            }
        }
        if taken.is_empty() {
            // What a burst left goes with it.
            *taken = VecDeque::new();
        }
        out
    }

    /// `lane`'s records: the lane hands over its vectors and gets new ones with the room it
    /// had (past twice what it held, and past `LANE_KEEP`, room goes, so after a burst its
    /// memory follows the load again). `None` when it held none.
    fn take(lane: &Lane) -> Option<Timed> {
        let mut lane_records = lane.records.lock();
        let Timed { ended, records } = &mut *lane_records;
        let held = records.len();
        if held == 0 {
            return None;
        }
        lane.held.store(0, Ordering::Relaxed);
        let keep = (2 * held).max(LANE_KEEP);
        let ended = std::mem::replace(ended, Vec::with_capacity(ended.capacity().min(keep)));
        let records = std::mem::replace(records, Vec::with_capacity(records.capacity().min(keep)));
        Some(Timed { ended, records })
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
        let lanes: usize = self.lanes.lock().iter().map(|l| l.held.load(Ordering::Relaxed)).sum();
        self.queue.len() + self.taken.lock().len() + lanes
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
