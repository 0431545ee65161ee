//! One downstream connection: read a request (head, then body, within limits and deadlines),
//! hand it to the service, repeat while keep-alive holds.
//! Invariant: bytes of the next pipelined request stay in `buf` between requests; on any framing
//! error the connection is answered once and closed, never resynchronised.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use monoio::net::TcpStream;

use super::respond::{write_error, Responder};
use super::stop::StopSignal;
use super::{InFlight, Limits, Request, Service};
use crate::codec::chunked::{Chunk, ChunkedDecoder, ChunkedLimits};
use crate::codec::head::{parse_request_head, BodyFraming, HeadLimits, RequestHead};
use crate::net::{read_more_reserving_within, read_more_within, time_left, write_all_buf};

const MAX_HEADERS: usize = 100;
/// Buffer offered to the kernel while a connection idles: most request heads fit, and 10,000
/// idle connections pin 10 MB rather than 80 MB.
const IDLE_READ_BYTES: usize = 1024;
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Why reading a request stopped without a request.
enum ReadStop {
    /// Peer closed or went idle between requests: close quietly.
    Quiet,
    /// Answer with this status and reason, then close.
    Reject(u16, &'static str),
}

/// Worker-wide state a connection reports to and reads.
pub(super) struct Counters {
    pub in_flight: Rc<Cell<usize>>,
    pub stopping: StopSignal,
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
            let got = monoio::select! {
                // Shutdown while idle: close now (a read cancelled here loses nothing we would
                // have served).
                _ = counters.stopping.wait() => return,
                got = read_more_reserving_within(&mut stream, &mut buf, IDLE_READ_BYTES, idle) => got,
            };
            if !matches!(got, Ok(n) if n > 0) {
                return;
            }
        }
        // Boxed: reading, serving and answering one request is a state machine of tens of KiB
        // (forward, retries, relay); inline it would make every idle connection's task that
        // large. One allocation per request keeps an idle connection at a few KiB; the future
        // is built in it, not copied into it.
        let one = crate::heap::pin_in_place(|| {
            serve_one(&mut stream, &mut buf, &mut out, &*service, &counters, &limits, peer)
        });
        first = false;
        if !one.await {
            return;
        }
        if buf.is_empty() {
            // Nothing pipelined: free both buffers before the idle wait (one small allocation
            // per request buys back up to 16 KiB per idle connection).
            buf = BytesMut::new();
            out = BytesMut::new();
        }
    }
}

/// Reads one request whose first bytes are in `buf`, has the service answer it, and says
/// whether the connection may carry another.
async fn serve_one<S: Service>(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    service: &S,
    counters: &Counters,
    limits: &Limits,
    peer: SocketAddr,
) -> bool {
    let request = match read_request(stream, buf, out, limits, peer).await {
        Ok(r) => r,
        Err(ReadStop::Quiet) => return false,
        Err(ReadStop::Reject(status, reason)) => {
            let _ = write_error(stream, out, status, reason).await;
            return false;
        }
    };
    let head_only = request.head.method == crate::codec::head::Method::Head;
    let _guard = InFlight::enter(&counters.in_flight);
    let keep_alive = request.head.keep_alive && !counters.stopping.is_stopped();
    let http10 = request.head.http10;
    let mut res = Responder::new(stream, std::mem::take(out), keep_alive, head_only, http10);
    service.call(request, &mut res).await;
    let reusable = res.complete_and_reusable().await;
    *out = res.into_buffer();
    reusable
}

async fn read_request(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    limits: &Limits,
    peer: SocketAddr,
) -> Result<Request, ReadStop> {
    let head = read_head(stream, buf, limits).await?;
    let received_at = Instant::now();
    let body = read_body(stream, buf, out, &head, limits).await?;
    Ok(Request {
        head,
        body,
        peer,
        received_at,
    })
}

/// Reads the rest of a head whose first bytes are in `buf`.
async fn read_head(stream: &mut TcpStream, buf: &mut BytesMut, limits: &Limits) -> Result<RequestHead, ReadStop> {
    let head_limits = HeadLimits {
        max_head_bytes: limits.max_header_bytes,
        max_headers: MAX_HEADERS,
    };
    // Set at the first read: a head that arrived whole (the usual case) reads no clock.
    let mut deadline: Option<Instant> = None;
    loop {
        match parse_request_head(buf, &head_limits) {
            Ok(Some(head)) => return Ok(head),
            Ok(None) => {}
            Err(e) => return Err(ReadStop::Reject(e.status, e.reason)),
        }
        let left = time_left(&mut deadline, limits.header_read_timeout);
        match read_more_within(stream, buf, left).await {
            Ok(0) => return Err(ReadStop::Quiet),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(ReadStop::Reject(408, "request header not received in time"))
            }
            Err(_) => return Err(ReadStop::Quiet),
        }
    }
}

async fn read_body(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    head: &RequestHead,
    limits: &Limits,
) -> Result<Bytes, ReadStop> {
    let too_large = ReadStop::Reject(413, "request body exceeds server.max_body_bytes");
    match head.framing {
        BodyFraming::Empty => Ok(Bytes::new()),
        BodyFraming::Length(n) => {
            let n = usize::try_from(n).map_err(|_| ReadStop::Reject(413, "request body too large"))?;
            if n > limits.max_body_bytes {
                return Err(too_large);
            }
            send_continue(stream, out, head).await?;
            if buf.capacity() < n {
                buf.reserve(n - buf.len());
            }
            while buf.len() < n {
                fill(stream, buf, limits).await?;
            }
            Ok(buf.split_to(n).freeze())
        }
        BodyFraming::Chunked => {
            send_continue(stream, out, head).await?;
            let mut decoder = ChunkedDecoder::new(ChunkedLimits {
                max_line_bytes: 4096,
                max_trailer_bytes: 16 * 1024,
            });
            let mut body = BytesMut::new();
            loop {
                match decoder.decode(buf) {
                    Ok(Some(Chunk::Data(data))) => {
                        if body.len() + data.len() > limits.max_body_bytes {
                            return Err(too_large);
                        }
                        body.extend_from_slice(&data);
                    }
                    Ok(Some(Chunk::Done)) => return Ok(body.freeze()),
                    Ok(None) => fill(stream, buf, limits).await?,
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

/// Reads more body bytes; the header timeout bounds each silence so a stalled upload ends.
async fn fill(stream: &mut TcpStream, buf: &mut BytesMut, limits: &Limits) -> Result<(), ReadStop> {
    match read_more_within(stream, buf, limits.header_read_timeout).await {
        Ok(0) => Err(ReadStop::Quiet),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            Err(ReadStop::Reject(408, "request body not received in time"))
        }
        Err(_) => Err(ReadStop::Quiet),
    }
}
