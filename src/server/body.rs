//! Request bodies: read within `max_body_bytes` per body, within `body_read_timeout` for the
//! whole body, and within each worker's budget of body bytes in flight
//! (`max_body_bytes_in_flight`); refusals are counted for `/metrics`.
//!
//! Invariant: a body's buffer grows only as its bytes arrive, never from the length a client
//! declares, and every byte of buffer a body holds beyond its first `UNCHARGED_BYTES` is charged
//! to its worker's budget from allocation until the body is complete or its reading stops. A
//! body that would take the worker past the budget is refused at once (503), never queued.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use monoio::net::TcpStream;

use super::conn::ReadStop;
use super::{ConnectionGate, Limits};
use crate::codec::chunked::{Chunk, ChunkedDecoder, ChunkedLimits};
use crate::codec::head::{BodyFraming, RequestHead};
use crate::net::{read_more_timed, write_all_buf, ReadTimer};

/// Body bytes a connection may hold without charge: about one read buffer, which every
/// connection has anyway. Small bodies therefore never wait on, or fail for, the budget.
const UNCHARGED_BYTES: usize = 8 * 1024;
/// The least free space offered to the kernel per body read (less only at the body's end).
const READ_CHUNK: usize = 8 * 1024;
/// Smallest buffer a chunked body starts with.
const CHUNKED_START: usize = 1024;
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Body accounting of every worker of one server, read at scrape time.
#[derive(Debug, Default)]
pub struct BodyStats {
    /// One gauge per worker (written only by its worker): bytes charged to its budget now.
    workers: parking_lot::Mutex<Vec<Arc<AtomicUsize>>>,
    timeouts: AtomicU64,
    too_large: AtomicU64,
    busy: AtomicU64,
}

impl BodyStats {
    /// Buffer bytes held now by bodies being received, all workers.
    pub fn bytes_in_flight(&self) -> usize {
        self.workers.lock().iter().map(|w| w.load(Ordering::Relaxed)).sum()
    }

    /// Bodies refused so far, by reason: `timeout` (408), `too_large` (413), `busy` (503).
    pub fn refused(&self) -> [(&'static str, u64); 3] {
        [
            ("timeout", self.timeouts.load(Ordering::Relaxed)),
            ("too_large", self.too_large.load(Ordering::Relaxed)),
            ("busy", self.busy.load(Ordering::Relaxed)),
        ]
    }

    /// The Prometheus lines for request bodies.
    pub fn write_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP rotor_request_body_bytes_in_flight Buffer bytes held by request bodies still being received, all workers.\n\
             # TYPE rotor_request_body_bytes_in_flight gauge\n\
             rotor_request_body_bytes_in_flight {}",
            self.bytes_in_flight()
        );
        let _ = writeln!(
            out,
            "# HELP rotor_request_bodies_refused_total Requests refused while reading their body: timeout (408), too_large (413), busy (503, the worker's body budget was spent).\n\
             # TYPE rotor_request_bodies_refused_total counter"
        );
        for (reason, n) in self.refused() {
            let _ = writeln!(out, "rotor_request_bodies_refused_total{{reason=\"{reason}\"}} {n}");
        }
    }
}

/// One worker's body budget. Per worker, so a worker never waits on another; the gauge is an
/// atomic only so `/metrics` can read it from any core.
#[derive(Clone)]
pub(super) struct BodyBudget {
    used: Arc<AtomicUsize>,
    gate: Arc<ConnectionGate>,
}

impl BodyBudget {
    /// A new worker's budget, registered for `/metrics`.
    pub(super) fn register(gate: &Arc<ConnectionGate>) -> Self {
        let used = Arc::new(AtomicUsize::new(0));
        gate.body.workers.lock().push(used.clone());
        BodyBudget {
            used,
            gate: gate.clone(),
        }
    }

    /// Answers `why` (and counts it).
    fn refuse(&self, why: Refusal) -> ReadStop {
        let stats = &self.gate.body;
        let (counter, status, reason) = match why {
            Refusal::Timeout => (&stats.timeouts, 408, "request body not received in time"),
            Refusal::TooLarge => (&stats.too_large, 413, "request body exceeds server.max_body_bytes"),
            Refusal::Busy => (
                &stats.busy,
                503,
                "server busy: too many request bodies are being received; retry shortly",
            ),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        ReadStop::Reject(status, reason)
    }
}

#[derive(Debug, Clone, Copy)]
enum Refusal {
    Timeout,
    TooLarge,
    Busy,
}

/// The bytes one body holds against its worker's budget; given back when dropped, so every way
/// out of a body read (done, refused, peer gone, task panicked) returns them.
struct Charge<'a> {
    used: &'a AtomicUsize,
    bytes: usize,
}

impl Charge<'_> {
    /// Makes this body's charge `bytes`; false, changing nothing, when growing to it would take
    /// the worker past `limit`.
    fn set(&mut self, bytes: usize, limit: usize) -> bool {
        if bytes > self.bytes {
            let others = self.used.load(Ordering::Relaxed).saturating_sub(self.bytes);
            if others.saturating_add(bytes) > limit {
                return false;
            }
            self.used.fetch_add(bytes - self.bytes, Ordering::Relaxed);
        } else {
            self.used.fetch_sub(self.bytes - bytes, Ordering::Relaxed);
        }
        self.bytes = bytes;
        true
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// One body being read: its deadline and its charge.
struct BodyRead<'a> {
    budget: &'a BodyBudget,
    charge: Charge<'a>,
    limit: usize,
    deadline: Instant,
    /// The longest silence allowed between two reads.
    silence: Duration,
}

impl<'a> BodyRead<'a> {
    fn new(budget: &'a BodyBudget, limits: &Limits) -> Self {
        BodyRead {
            budget,
            charge: Charge {
                used: &budget.used,
                bytes: 0,
            },
            limit: limits.max_body_bytes_in_flight,
            deadline: Instant::now() + limits.body_read_timeout,
            silence: limits.header_read_timeout,
        }
    }

    /// Makes sure `buf` can take `extra` more bytes, growing it (doubling, never past `cap`)
    /// as far as the budget allows.
    fn room(&mut self, buf: &mut BytesMut, extra: usize, floor: usize, cap: usize) -> Result<(), ReadStop> {
        let len = buf.len();
        if buf.capacity() - len >= extra {
            return Ok(());
        }
        let mut new_cap = (buf.capacity() * 2).max(floor).min(cap).max(len + extra);
        if len + extra <= UNCHARGED_BYTES {
            // A small body stays within what is free.
            new_cap = new_cap.min(UNCHARGED_BYTES);
        }
        if !self.charge.set(new_cap.saturating_sub(UNCHARGED_BYTES), self.limit) {
            return Err(self.budget.refuse(Refusal::Busy));
        }
        // Grown by hand, not `reserve`: that doubles past the body's end.
        let mut bigger = BytesMut::with_capacity(new_cap);
        bigger.extend_from_slice(buf);
        *buf = bigger;
        Ok(())
    }

    /// One read into the free space of `buf` (after `reserve` more), bounded by the body's
    /// deadline and the silence limit (timed by the connection's `timer`).
    async fn fill(
        &self,
        stream: &mut TcpStream,
        buf: &mut BytesMut,
        timer: &mut ReadTimer,
        reserve: usize,
    ) -> Result<(), ReadStop> {
        let left = self
            .deadline
            .saturating_duration_since(Instant::now())
            .min(self.silence);
        if left.is_zero() {
            return Err(self.budget.refuse(Refusal::Timeout));
        }
        match read_more_timed(stream, buf, reserve, timer, left).await {
            Ok(0) => Err(ReadStop::Quiet),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(self.budget.refuse(Refusal::Timeout)),
            Err(_) => Err(ReadStop::Quiet),
        }
    }
}

/// The body when it takes no read: none announced, or all of it already in `buf` (the usual
/// request, whose body came with its head). `None` when it must be read ([`read_body`]). A plain
/// function, called before `read_body`: the `async fn` alone (its future built, polled once
/// and dropped) cost about as much as taking the body out of the buffer.
pub(super) fn buffered(
    buf: &mut BytesMut,
    head: &RequestHead,
    limits: &Limits,
    budget: &BodyBudget,
) -> Option<Result<Bytes, ReadStop>> {
    match head.framing {
        BodyFraming::Empty => Some(Ok(Bytes::new())),
        BodyFraming::Length(n) => match usize::try_from(n).ok().filter(|&n| n <= limits.max_body_bytes) {
            Some(n) => (buf.len() >= n).then(|| Ok(buf.split_to(n).freeze())),
            None => Some(Err(budget.refuse(Refusal::TooLarge))),
        },
        BodyFraming::Chunked => None,
    }
}

/// Reads the body `head` announces; its first bytes may already be in `buf`.
pub(super) async fn read_body(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    timer: &mut ReadTimer,
    head: &RequestHead,
    limits: &Limits,
    budget: &BodyBudget,
) -> Result<Bytes, ReadStop> {
    match head.framing {
        BodyFraming::Empty => Ok(Bytes::new()),
        BodyFraming::Length(n) => {
            if let Some(body) = buffered(buf, head, limits, budget) {
                return body;
            }
            // `buffered` refused a length past the limit: it fits a usize.
            let n = n as usize;
            let needs_budget = n > UNCHARGED_BYTES.max(buf.capacity());
            if needs_budget && budget.used.load(Ordering::Relaxed) >= limits.max_body_bytes_in_flight {
                // Refused before the client is told to send (no 100 Continue).
                return Err(budget.refuse(Refusal::Busy));
            }
            send_continue(stream, out, head).await?;
            let mut read = BodyRead::new(budget, limits);
            while buf.len() < n {
                read.room(buf, (n - buf.len()).min(READ_CHUNK), 0, n)?;
                read.fill(stream, buf, timer, 0).await?;
            }
            // All of the buffer (the usual case: `room` sizes it to the body): taken whole,
            // so the connection keeps no share of it, and a stream's `release` frees it.
            if buf.len() == n {
                return Ok(std::mem::take(buf).freeze());
            }
            Ok(buf.split_to(n).freeze())
        }
        BodyFraming::Chunked => {
            send_continue(stream, out, head).await?;
            let mut decoder = ChunkedDecoder::new(ChunkedLimits {
                max_line_bytes: 4096,
                max_trailer_bytes: 16 * 1024,
            });
            let mut read = BodyRead::new(budget, limits);
            let mut body = BytesMut::new();
            loop {
                match decoder.decode(buf) {
                    Ok(Some(Chunk::Data(data))) => {
                        if body.len() + data.len() > limits.max_body_bytes {
                            return Err(budget.refuse(Refusal::TooLarge));
                        }
                        read.room(&mut body, data.len(), CHUNKED_START, limits.max_body_bytes)?;
                        body.extend_from_slice(&data);
                    }
                    Ok(Some(Chunk::Done)) => return Ok(body.freeze()),
                    // The framing buffer stays about one read long: the decoder hands data on
                    // as it arrives, so only `body` grows.
                    Ok(None) => read.fill(stream, buf, timer, READ_CHUNK).await?,
                    Err(e) => return Err(ReadStop::Reject(400, e.0)),
                }
            }
        }
    }
}

/// `Expect: 100-continue` is answered at once: curl waits a second for it on bodies over 1 KB.
async fn send_continue(stream: &mut TcpStream, out: &mut BytesMut, head: &RequestHead) -> Result<(), ReadStop> {
    if !head.expect_continue || head.http10 {
        return Ok(());
    }
    out.clear();
    out.extend_from_slice(CONTINUE);
    write_all_buf(stream, out).await.map_err(|_| ReadStop::Quiet)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head of `raw` parsed off `buf`, which keeps what follows it.
    fn head_of(buf: &mut BytesMut) -> RequestHead {
        let limits = crate::codec::head::HeadLimits {
            max_head_bytes: 4096,
            max_headers: 16,
        };
        crate::codec::head::parse_request_head(buf, &limits)
            .expect("a valid head")
            .expect("a whole head")
    }

    /// `buffered` answers without a read exactly when no read is needed: no body, or all of a
    /// sized body buffered (bytes after it stay for the next request); a partial or chunked
    /// body is left to `read_body` untouched, and a length past the limit is a counted 413.
    #[test]
    fn buffered_takes_a_whole_body_and_leaves_the_rest_to_read_body() {
        let gate = Arc::new(ConnectionGate::default());
        let budget = BodyBudget::register(&gate);
        let limits = Limits {
            max_body_bytes: 10,
            ..Limits::default()
        };
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nhost: a\r\n\r\nGET"[..]);
        let head = head_of(&mut buf);
        let body = buffered(&mut buf, &head, &limits, &budget)
            .expect("no read")
            .ok()
            .expect("a body");
        assert!(body.is_empty());
        assert_eq!(&buf[..], b"GET", "a pipelined request stays");

        let mut buf = BytesMut::from(&b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhelloPOST"[..]);
        let head = head_of(&mut buf);
        let body = buffered(&mut buf, &head, &limits, &budget)
            .expect("no read")
            .ok()
            .expect("a body");
        assert_eq!(&body[..], b"hello");
        assert_eq!(&buf[..], b"POST");

        let mut buf = BytesMut::from(&b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhel"[..]);
        let head = head_of(&mut buf);
        assert!(
            buffered(&mut buf, &head, &limits, &budget).is_none(),
            "two bytes to read"
        );
        assert_eq!(&buf[..], b"hel", "left as it was");

        let mut buf = BytesMut::from(
            &b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
        );
        let head = head_of(&mut buf);
        assert!(
            buffered(&mut buf, &head, &limits, &budget).is_none(),
            "chunked is decoded by read_body"
        );
        assert_eq!(buf.len(), 15);

        let mut buf = BytesMut::from(&b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 11\r\n\r\nhello world"[..]);
        let head = head_of(&mut buf);
        let refused = buffered(&mut buf, &head, &limits, &budget).expect("no read");
        assert!(matches!(refused, Err(ReadStop::Reject(413, _))));
        assert_eq!(gate.body.refused()[1], ("too_large", 1));
    }

    #[test]
    fn a_charge_stops_at_the_limit_and_gives_everything_back() {
        let used = AtomicUsize::new(0);
        let mut a = Charge { used: &used, bytes: 0 };
        let mut b = Charge { used: &used, bytes: 0 };
        assert!(a.set(600, 1000));
        assert!(!b.set(500, 1000), "600 + 500 is past 1000");
        assert_eq!(used.load(Ordering::Relaxed), 600, "a refused growth changes nothing");
        assert!(b.set(400, 1000));
        assert!(a.set(100, 1000), "shrinking always works");
        assert!(b.set(900, 1000));
        drop(a);
        drop(b);
        assert_eq!(used.load(Ordering::Relaxed), 0);
    }

    fn limits(in_flight: usize) -> Limits {
        Limits {
            max_body_bytes_in_flight: in_flight,
            ..Limits::default()
        }
    }

    /// Grows `buf` the way the chunked path does, `step` bytes at a time, up to `total`.
    fn grow(read: &mut BodyRead<'_>, buf: &mut BytesMut, step: usize, total: usize) -> Result<(), ReadStop> {
        while buf.len() < total {
            let n = step.min(total - buf.len());
            read.room(buf, n, CHUNKED_START, 1 << 30)?;
            buf.extend_from_slice(&vec![b'x'; n]);
        }
        Ok(())
    }

    #[test]
    fn small_bodies_are_free_and_large_ones_are_charged_what_they_hold() {
        let budget = BodyBudget::register(&Arc::new(ConnectionGate::default()));
        for step in [1, 100, 3000, 5000] {
            let mut read = BodyRead::new(&budget, &limits(1 << 20));
            let mut buf = BytesMut::new();
            assert!(grow(&mut read, &mut buf, step, UNCHARGED_BYTES).is_ok());
            assert_eq!(
                read.charge.bytes, 0,
                "an 8 KiB body read {step} bytes at a time is free"
            );
            assert!(buf.capacity() <= UNCHARGED_BYTES);
        }
        let mut read = BodyRead::new(&budget, &limits(1 << 20));
        let mut buf = BytesMut::new();
        assert!(grow(&mut read, &mut buf, 7000, 300_000).is_ok());
        assert_eq!(read.charge.bytes, buf.capacity() - UNCHARGED_BYTES);
        assert!(buf.capacity() < 2 * 300_000, "grows by doubling at most");
        assert_eq!(budget.used.load(Ordering::Relaxed), read.charge.bytes);
        drop(read);
        assert_eq!(budget.used.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn growth_past_the_budget_is_refused_and_counted() {
        let gate = Arc::new(ConnectionGate::default());
        let budget = BodyBudget::register(&gate);
        let mut first = BodyRead::new(&budget, &limits(100_000));
        let mut a = BytesMut::new();
        assert!(grow(&mut first, &mut a, 8192, 60_000).is_ok());
        let mut second = BodyRead::new(&budget, &limits(100_000));
        let mut b = BytesMut::new();
        let refused = grow(&mut second, &mut b, 8192, 60_000);
        assert!(matches!(refused, Err(ReadStop::Reject(503, _))));
        assert!(budget.used.load(Ordering::Relaxed) <= 100_000);
        assert_eq!(gate.body.refused()[2], ("busy", 1));
        assert_eq!(gate.body.bytes_in_flight(), budget.used.load(Ordering::Relaxed));
        drop((first, second));
        assert_eq!(gate.body.bytes_in_flight(), 0);
    }
}
