//! One downstream connection: read a request (head, then body, within limits and deadlines),
//! hand it to the service, repeat while keep-alive holds.
//! Invariant: bytes of the next pipelined request stay in `buf` between requests; on any framing
//! error the connection is answered once and closed, never resynchronised.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use monoio::net::TcpStream;

use super::body::{buffered, read_body, BodyBudget};
use super::respond::{write_error, Responder};
use super::stop::StopSignal;
use super::{HeldBody, InFlight, Limits, Request, Service};
use crate::codec::head::{parse_request_head, HeadLimits};
use crate::health::clock::Moment;
use crate::net::{read_before, read_more_reserving_within, read_more_until, reclaim_small, ReadTimer};

const MAX_HEADERS: usize = 100;
/// Buffer offered to the kernel while a connection idles: most request heads fit, and 10,000
/// idle connections pin 10 MB rather than 80 MB.
const IDLE_READ_BYTES: usize = 1024;
/// After refusing a request, how long (and how many bytes) the client's unread bytes are read
/// and dropped before closing (see `linger`).
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;

/// Why reading a request stopped without a request.
pub(super) enum ReadStop {
    /// Peer closed or went idle between requests: close quietly.
    Quiet,
    /// Answer with this status and reason, then close.
    Reject(u16, &'static str),
}

/// Worker-wide state a connection reports to and reads.
pub(super) struct Counters {
    pub in_flight: Rc<Cell<usize>>,
    pub stopping: StopSignal,
    pub body_budget: BodyBudget,
}

pub(super) async fn serve_connection<S: Service>(
    mut stream: TcpStream,
    peer: SocketAddr,
    service: Rc<S>,
    counters: Counters,
) {
    // Buffers start empty and are given back while the connection idles: an idle keep-alive
    // connection then holds only the read buffer of its pending read (load.sh `idle` part).
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    // One timer for every timed read of the connection (the idle wait and the head).
    let mut timer = ReadTimer::new();
    let mut first = true;
    loop {
        if counters.stopping.is_stopped() {
            return;
        }
        let limits = service.limits();
        // Idle wait for the first byte, kept small: the keep-alive timeout between requests, the
        // header timeout on a fresh connection (one that never speaks is a slowloris).
        if buf.is_empty() {
            let idle = if first {
                limits.header_read_timeout
            } else {
                limits.keepalive_timeout
            };
            // Shutdown while idle fires this wait's deadline (`StopSignal::trigger`): the read
            // ends as timed out and the connection closes (a read cancelled here loses nothing
            // we would have served).
            let group = counters.stopping.idle_group();
            let got = read_before!(&mut stream, &mut buf, IDLE_READ_BYTES, timer.arm_in(idle, group));
            if !matches!(got, Ok(n) if n > 0) {
                return;
            }
        }
        if out.capacity() == 0 {
            // A kept buffer of this worker, any size: it grows to the answers this worker sends
            // (up to `spare`'s bound), so answering allocates none.
            out = crate::spare::take();
        }
        // Boxed: reading, serving and answering one request is a state machine of tens of KiB
        // (forward, retries, relay); inline it would make every idle connection's task that
        // large. One block per request keeps an idle connection at a few KiB; the future is
        // built in it, not copied into it, and the worker keeps the block for the next request
        // (`heap::recycled`: no allocation and free per request).
        let one = crate::heap::pin_recycled(|| {
            serve_one(
                &mut stream,
                &mut buf,
                &mut out,
                &mut timer,
                &*service,
                &counters,
                &limits,
                peer,
            )
        });
        first = false;
        if !one.await {
            return;
        }
        if buf.is_empty() {
            // Nothing pipelined: hand the answer's buffer back before the idle wait, and the read
            // buffer unless it is the idle read's own small one and the request's bytes are all
            // released: then it is rewound for the next request in place (no allocation per
            // request, and an idle connection holds what its read would allocate anyway).
            if !reclaim_small(&mut buf, IDLE_READ_BYTES) {
                buf = BytesMut::new();
            }
            crate::spare::give(std::mem::take(&mut out));
        }
    }
}

/// Reads one request whose first bytes are in `buf`, has the service answer it, and says
/// whether the connection may carry another. The head and body are read here, not in a
/// `read_request` returning the `Request` (320 bytes) by value: that result was copied out of
/// its future and again out of the `Result`, about 150 instructions per request (callgrind).
/// The head is parsed straight into the request for the same reason: returned by a
/// `read_head` future, it was copied out of it, out of its `Result` and into the request.
#[allow(clippy::too_many_arguments)]
async fn serve_one<S: Service>(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    timer: &mut ReadTimer,
    service: &S,
    counters: &Counters,
    limits: &Limits,
    peer: SocketAddr,
) -> bool {
    let head_limits = HeadLimits {
        max_head_bytes: limits.max_header_bytes,
        max_headers: MAX_HEADERS,
    };
    // Set at the first read: a head that arrived whole (the usual case) reads no clock.
    let mut deadline: Option<Moment> = None;
    let mut request = loop {
        let stop = match parse_request_head(buf, &head_limits) {
            Ok(Some(head)) => {
                let received_at = crate::health::clock::read();
                let body = HeldBody::default();
                break Request {
                    head,
                    body,
                    peer,
                    received_at,
                };
            }
            Ok(None) => {
                let at = *deadline.get_or_insert_with(|| Moment::now() + limits.header_read_timeout);
                match read_more_until(stream, buf, timer, at).await {
                    Ok(n) if n > 0 => continue,
                    result => head_read_stopped(result),
                }
            }
            Err(e) => ReadStop::Reject(e.status, e.reason),
        };
        return match stop {
            ReadStop::Quiet => false,
            ReadStop::Reject(status, reason) => Box::pin(refuse(stream, buf, out, status, reason)).await,
        };
    };
    let budget = &counters.body_budget;
    let body = match buffered(buf, &request.head, limits, budget) {
        Some(body) => body,
        None => read_body(stream, buf, out, timer, &request.head, limits, budget).await,
    };
    request.body = match body {
        Ok(body) => HeldBody::new(body),
        Err(ReadStop::Quiet) => return false,
        Err(ReadStop::Reject(status, reason)) => return Box::pin(refuse(stream, buf, out, status, reason)).await,
    };
    let head_only = request.head.method == crate::codec::head::Method::Head;
    let _guard = InFlight::enter(&counters.in_flight);
    let keep_alive = request.head.keep_alive && !counters.stopping.is_stopped();
    let http10 = request.head.http10;
    let mut res = Responder::new(stream, std::mem::take(out), keep_alive, head_only, http10);
    service.call(&request, &mut res).await;
    let reusable = res.complete_and_reusable().await;
    *out = res.into_buffer();
    reusable
}

/// Why a read for more of a head brought nothing: the peer closed or failed (close quietly),
/// or the header timeout passed (a 408).
fn head_read_stopped(result: io::Result<usize>) -> ReadStop {
    match result {
        Err(e) if e.kind() == io::ErrorKind::TimedOut => ReadStop::Reject(408, "request header not received in time"),
        _ => ReadStop::Quiet,
    }
}

/// A refused request: answered once, then the connection closes (always false). Boxed by its
/// callers: the rare path's write and linger would otherwise widen every request's future.
async fn refuse(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    status: u16,
    reason: &'static str,
) -> bool {
    // The connection closes: a partly read body's buffer goes now, not after the linger.
    *buf = BytesMut::new();
    if write_error(stream, out, status, reason).await.is_ok() {
        linger(stream).await;
    }
    false
}

/// After an error answer to a request the client may still be sending (a refused body, a bad
/// head): end our side, so the client sees the answer and then EOF, and read and drop what it
/// still sends for a moment. Closing with unread bytes would make the kernel reset the
/// connection, and a reset can destroy the answer before the client reads it.
async fn linger(stream: &mut TcpStream) {
    use monoio::io::AsyncWriteRent;
    if stream.shutdown().await.is_err() {
        return;
    }
    let until = Instant::now() + LINGER;
    let mut scratch = BytesMut::new();
    let mut dropped = 0;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || dropped >= LINGER_BYTES {
            return;
        }
        scratch.clear();
        match read_more_reserving_within(stream, &mut scratch, 4096, left).await {
            Ok(n) if n > 0 => dropped += n,
            _ => return,
        }
    }
}
