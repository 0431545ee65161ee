//! One upstream exchange on one connection: write the request, read the response head, then
//! the body piece by piece as it arrives (Content-Length, chunked, or until close).
//! Invariant: `reusable()` is true only after the request was written whole and the body was
//! completely framed with nothing left over, so a pooled connection always starts at a message
//! boundary; an exchange returns its connection to its pool only in `release`, and only when
//! `reusable()` and the TLS session agree; an exchange dropped unreleased closes it. A pooled
//! connection keeps its read buffer (at most `READ_BUFFER_BYTES`), so the next exchange on it
//! reads on from where the last answer ended.

use std::borrow::Cow;
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::connect::Io;
use super::error::{UpstreamError, UpstreamErrorKind};
use super::pool::{Pool, Shelf};
use super::{Connector, PoolKey};
use crate::codec::chunked::{Chunk, ChunkedDecoder, ChunkedLimits};
use crate::codec::head::HeadLimits;
use crate::codec::response::{parse_response_head, ResponseFraming, ResponseHead};
use crate::health::clock::Moment;
use crate::net::{read_before, write_all_buf, write_in_place, ReadTimer};

const RESPONSE_HEAD_LIMITS: HeadLimits = HeadLimits {
    max_head_bytes: 64 * 1024,
    max_headers: 128,
};

/// A connection's read buffer, allocated at its first exchange and kept with it in the pool.
const READ_BUFFER_BYTES: usize = 8 * 1024;
/// Least free space offered to the kernel per read. Half the buffer, so one buffer serves
/// answers from its free end one after another (a chat answer takes ~400 bytes of it) and is
/// rewound or replaced only when less than this is left: then at once if nothing shares it any
/// more, else a new one is allocated and the old one freed with the last piece of an answer
/// read into it. Each exchange took a kept buffer of the worker and gave it back (`spare`,
/// through a thread-local), and rewound it first, still shared with the last answer's head
/// and body as it mostly was: ~330 instructions a chat request (callgrind, issue 18).
const READ_MIN: usize = 4 * 1024;
/// An SSE stream's read buffer once it is relayed (`Exchange::lean_reads`), and the least
/// free space each of its reads is offered. A model's events are a few hundred bytes each and
/// come apart; the connection's 8 KiB buffer held for a stream's whole length was its largest
/// allocation (8 KiB of ~20 KiB a stream, DHAT, issue 18). A larger event grows it.
const STREAM_BUFFER_BYTES: usize = 2 * 1024;
const STREAM_READ_MIN: usize = 512;

/// Request bodies up to this size are copied behind the head and sent in one write; larger ones
/// go as a second, zero-copy write. Whoever builds the head reserves room for such a body.
pub const COALESCE_BODY_BYTES: usize = 64 * 1024;

/// [`Exchange::round_trip`] written out where it is awaited: one state machine for the whole
/// round trip, its write and reads pinned in place (`net::write_in_place!`,
/// `net::read_before!`). As `send` and `read_head`, each an `async fn` around
/// `net::write_all_buf` or a read, every poll of an attempt resumed two or three nested
/// futures more, each set up and dropped per request. `$exchange: &mut Exchange`, `$out: &mut
/// BytesMut`, `$body: &Bytes`, `$timeout: Duration`, `$head_request: bool`; evaluates to
/// `Result<ResponseHead, UpstreamError>`.
macro_rules! round_trip {
    ($exchange:expr, $out:expr, $body:expr, $timeout:expr, $head_request:expr) => {
        'trip: {
            let exchange: &mut Exchange = $exchange;
            let out: &mut BytesMut = $out;
            let body: &Bytes = $body;
            let timeout: Duration = $timeout;
            let send_err = |e: std::io::Error| UpstreamError::new(UpstreamErrorKind::Send, e.to_string());
            let Some(io) = exchange.io.as_deref_mut() else {
                out.clear();
                break 'trip Err(send_err(released()));
            };
            let sent = if body.len() <= COALESCE_BODY_BYTES {
                out.extend_from_slice(body);
                write_in_place!(&mut *io, out)
            } else {
                // Rare (a body over 64 KiB): boxed, so its second write stays out of every
                // attempt's state.
                Box::pin(write_apart(io, out, body)).await
            };
            if let Err(e) = sent {
                break 'trip Err(send_err(e));
            }
            exchange.written = true;
            let mut deadline = None;
            loop {
                match parse_response_head(&mut exchange.buf, &RESPONSE_HEAD_LIMITS, $head_request) {
                    Ok(Some(head)) => {
                        exchange.keep_alive = head.keep_alive;
                        exchange.body = BodyState::of(head.framing);
                        break 'trip Ok(head);
                    }
                    Ok(None) => {}
                    Err(e) => break 'trip Err(UpstreamError::new(UpstreamErrorKind::Protocol, e.reason)),
                }
                // Set at the first read: one clock read for the whole head.
                let at = *deadline.get_or_insert_with(|| Moment::now() + timeout);
                room(&mut exchange.buf, &mut exchange.not_kept, READ_MIN);
                let read = read_before!(&mut *io, &mut exchange.buf, READ_MIN, exchange.timer.arm_at(at));
                match read {
                    Ok(0) => {
                        break 'trip Err(UpstreamError::new(
                            UpstreamErrorKind::ClosedBeforeHead,
                            "upstream closed the connection before responding",
                        ))
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                        break 'trip Err(UpstreamError::new(
                            UpstreamErrorKind::FirstByteTimeout,
                            format!("no response within {} ms", timeout.as_millis()),
                        ))
                    }
                    Err(e) if exchange.buf.is_empty() => {
                        break 'trip Err(UpstreamError::new(UpstreamErrorKind::ClosedBeforeHead, e.to_string()))
                    }
                    Err(e) => break 'trip Err(UpstreamError::new(UpstreamErrorKind::Protocol, e.to_string())),
                }
            }
        }
    };
}

/// Where and how one request goes upstream, for [`send_pooled`].
pub struct Trip<'a> {
    pub pool: &'a Rc<Pool>,
    pub connector: &'a Connector,
    pub key: Cow<'a, PoolKey>,
    pub connect_timeout: Duration,
    /// Bounds the wait for the answer's head (see [`Exchange::round_trip`]).
    pub first_byte_timeout: Duration,
    /// The request is a HEAD (its answer has no body whatever it says).
    pub head_request: bool,
}

/// One attempt's exchange: a pooled connection (a new one when none is idle), the request
/// `build` writes into `out` sent with `body`, and the answer's head read. A failure before
/// any answer byte on a reused connection (probably closed by the upstream while idle) is
/// tried once more on a fresh connection, with the head built again. The head is built before
/// a connection is taken: one the writer refuses never touches one. `out` is left empty.
/// The answer (exchange and head) is handed to `land`, which writes it where its caller keeps
/// it (returned, it was moved out of this future and once more into the caller's state).
///
/// The request path's whole upstream exchange in one state machine (checkout, write, reads
/// and the stale-connection retry): awaited through `proxy::send`'s `async fn` and
/// `Exchange::round_trip`, each poll of an attempt resumed two nested futures, and the answer
/// (exchange and head) was moved out of one into the other.
pub async fn send_pooled<B, L>(
    trip: Trip<'_>,
    out: &mut BytesMut,
    body: Bytes,
    mut build: B,
    land: L,
) -> Result<(), UpstreamError>
where
    B: FnMut(&mut BytesMut) -> Result<(), UpstreamError>,
    L: FnOnce(Exchange, ResponseHead),
{
    build(out)?;
    let mut exchange = match super::pooled(trip.pool, &trip.key) {
        Some(exchange) => exchange,
        None => match super::connect_fresh(trip.pool, trip.connector, &trip.key, trip.connect_timeout).await {
            Ok(exchange) => exchange,
            Err(error) => {
                // Not sent: the lent buffer goes back empty.
                out.clear();
                return Err(error);
            }
        },
    };
    let mut built = true;
    loop {
        if !std::mem::take(&mut built) {
            build(out)?;
        }
        // The head goes straight into the answer (kept in a `Result` first and matched after,
        // it was copied once more).
        let error = match round_trip!(&mut exchange, out, &body, trip.first_byte_timeout, trip.head_request) {
            Ok(head) => {
                land(exchange, head);
                return Ok(());
            }
            Err(e) => e,
        };
        if !(exchange.reused && error.before_response()) {
            return Err(error);
        }
        exchange = super::connect_fresh(trip.pool, trip.connector, &trip.key, trip.connect_timeout).await?;
    }
}

pub struct Exchange {
    /// `None` once `release` handed it back to the pool (or closed it). Boxed once per
    /// connection (it stays boxed in the pool): an exchange moves through every phase of an
    /// attempt by value, and the socket inline made each move a 200-byte copy.
    io: Option<Box<Io>>,
    /// The pool the connection goes back to, and its key's shelf there (held from checkout, so
    /// a release looks nothing up).
    home: Weak<Pool>,
    shelf: Shelf,
    /// Came from the pool (a failure before any response byte may be a stale connection).
    pub reused: bool,
    /// The connection's read buffer while the exchange holds the connection (see `READ_MIN`).
    buf: BytesMut,
    /// `buf` is not the connection's usual one (it grew past `READ_BUFFER_BYTES`, or it is
    /// a stream's smaller one): it is freed at release, not kept with the connection.
    not_kept: bool,
    /// The least free space each body read is offered: `READ_MIN`, or `STREAM_READ_MIN`
    /// once `lean_reads` was asked (`lean_pending` until the next read swaps the buffer).
    read_min: usize,
    lean_pending: bool,
    /// Times the head and every body read. Kept with the connection in the pool (disarmed,
    /// without a waker), so an exchange on a pooled connection takes no new deadline entry: its
    /// waker follows whichever task polls it (see `ReadTimer`).
    timer: ReadTimer,
    body: BodyState,
    /// What chunked data is gathered into (`gather_chunks`), reused piece after piece: a piece
    /// handed out shares it, and once the relay has written that piece and dropped it, the next
    /// one is gathered from its start again. A new buffer per piece was a `malloc`, a `free`
    /// and a `Vec` conversion per streamed event, ~300 of its ~5.8k instructions (callgrind).
    pieces: BytesMut,
    keep_alive: bool,
    /// The whole request (head and body) was written.
    written: bool,
}

enum BodyState {
    NotStarted,
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
    Failed,
    /// Bad chunked framing found after data that was already handed out.
    Broken(&'static str),
}

impl BodyState {
    /// Where a body of this framing starts.
    fn of(framing: ResponseFraming) -> BodyState {
        match framing {
            ResponseFraming::Empty | ResponseFraming::Length(0) => BodyState::Done,
            ResponseFraming::Length(n) => BodyState::Length(n),
            ResponseFraming::Chunked => BodyState::Chunked(ChunkedDecoder::new(ChunkedLimits {
                max_line_bytes: 4096,
                max_trailer_bytes: 16 * 1024,
            })),
            ResponseFraming::UntilClose => BodyState::UntilClose,
        }
    }
}

impl Exchange {
    pub(super) fn new(mut io: Box<Io>, timer: ReadTimer, reused: bool, home: Weak<Pool>, shelf: Shelf) -> Self {
        // The connection's own buffer (no allocation, no look-up per exchange); a new one at
        // its first exchange.
        let mut buf = std::mem::take(&mut io.buf);
        if buf.capacity() == 0 {
            buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
        }
        Exchange {
            io: Some(io),
            home,
            shelf,
            reused,
            buf,
            not_kept: false,
            read_min: READ_MIN,
            lean_pending: false,
            timer,
            body: BodyState::NotStarted,
            pieces: BytesMut::new(),
            keep_alive: false,
            written: false,
        }
    }

    /// Writes the request (the head in `out`, then `body`: one write when the body is small)
    /// and reads the answer's head; `timeout` bounds the wait for that head (time to first
    /// byte), from the first read after the request went out. `out` is left empty, its
    /// capacity kept, sent or not: the buffer is lent (see `proxy::headers`). The request
    /// path's attempts take [`send_pooled`] instead, with this written out in its own state.
    pub async fn round_trip(
        &mut self,
        out: &mut BytesMut,
        body: &Bytes,
        timeout: Duration,
        head_request: bool,
    ) -> Result<ResponseHead, UpstreamError> {
        round_trip!(self, out, body, timeout, head_request)
    }

    /// The body is an SSE stream being relayed: from its next read on, it is read into a
    /// buffer of `STREAM_BUFFER_BYTES` (what is unread moves there), freed at release, so an
    /// open stream no longer holds the connection's 8 KiB one. A head parsed from that buffer
    /// still shares it: detach it too (`Headers::detach`).
    pub fn lean_reads(&mut self) {
        self.read_min = STREAM_READ_MIN;
        self.lean_pending = true;
    }

    #[cold]
    fn take_stream_buffer(&mut self) {
        self.lean_pending = false;
        let mut lean = BytesMut::with_capacity(STREAM_BUFFER_BYTES.max(self.buf.len() + STREAM_READ_MIN));
        lean.extend_from_slice(&self.buf);
        self.buf = lean;
        self.not_kept = true;
    }

    /// The body's end was read (the next `next_piece` returns `None` without reading).
    pub fn body_done(&self) -> bool {
        matches!(self.body, BodyState::Done)
    }

    /// The whole body when it is sized, shorter than `below` bytes and already in the read
    /// buffer (the head's read brought it along, as it does a chat answer): taken as
    /// `next_piece` would take it, without its future, and the body is done. `None` (nothing
    /// taken): read it with `next_piece`.
    pub fn buffered_body(&mut self, below: u64) -> Option<Bytes> {
        let BodyState::Length(n) = self.body else {
            return None;
        };
        if n >= below || (self.buf.len() as u64) < n {
            return None;
        }
        self.body = BodyState::Done;
        Some(self.buf.split_to(n as usize).freeze())
    }

    /// The next piece of the body as it arrives; `None` at its end. `idle` bounds each silence.
    pub async fn next_piece(&mut self, idle: Duration) -> Result<Option<Bytes>, UpstreamError> {
        loop {
            match &mut self.body {
                BodyState::Done => return Ok(None),
                BodyState::NotStarted | BodyState::Failed => {
                    return Err(UpstreamError::new(UpstreamErrorKind::BrokenBody, "no body to read"))
                }
                BodyState::Broken(reason) => {
                    let reason = *reason;
                    self.body = BodyState::Failed;
                    return Err(UpstreamError::new(UpstreamErrorKind::BrokenBody, reason));
                }
                BodyState::Length(owed) => {
                    if !self.buf.is_empty() {
                        let n = (*owed).min(self.buf.len() as u64) as usize;
                        let piece = self.buf.split_to(n).freeze();
                        *owed -= n as u64;
                        if *owed == 0 {
                            self.body = BodyState::Done;
                        }
                        return Ok(Some(piece));
                    }
                }
                BodyState::Chunked(decoder) if decoder.inside_chunk(self.buf.len()) => {
                    // Part of one large chunk: handed on without a copy.
                    if let Ok(Some(Chunk::Data(data))) = decoder.decode(&mut self.buf) {
                        return Ok(Some(data));
                    }
                }
                BodyState::Chunked(_) => {
                    if let Some(result) = self.gather_chunks() {
                        return result;
                    }
                }
                BodyState::UntilClose => {
                    if !self.buf.is_empty() {
                        return Ok(Some(self.buf.split().freeze()));
                    }
                }
            }
            self.fill(idle).await?;
        }
    }

    /// The data of every chunk already buffered, in one piece: an upstream that sent several
    /// SSE events back to back gets them relayed in one downstream write instead of one per
    /// chunk. Nothing waits for more bytes, so no event is delayed. The terminator, if
    /// buffered, ends the body here (the next call returns `None`); bad framing after some
    /// data is reported by the next call. `None`: nothing yet, read more.
    fn gather_chunks(&mut self) -> Option<Result<Option<Bytes>, UpstreamError>> {
        let BodyState::Chunked(decoder) = &mut self.body else {
            return None;
        };
        match decoder.decode_into(&mut self.buf, &mut self.pieces) {
            Ok(true) => self.body = BodyState::Done,
            Ok(false) => {}
            Err(e) if self.pieces.is_empty() => {
                self.body = BodyState::Failed;
                return Some(Err(UpstreamError::new(UpstreamErrorKind::BrokenBody, e.0)));
            }
            Err(e) => self.body = BodyState::Broken(e.0),
        }
        if !self.pieces.is_empty() {
            return Some(Ok(Some(self.pieces.split().freeze())));
        }
        matches!(self.body, BodyState::Done).then_some(Ok(None))
    }

    /// Reads the rest of a body into one buffer, bounded by `max` bytes.
    pub async fn read_to_end(&mut self, idle: Duration, max: usize) -> Result<Bytes, UpstreamError> {
        let mut all = BytesMut::new();
        while let Some(piece) = self.next_piece(idle).await? {
            if all.len() + piece.len() > max {
                self.body = BodyState::Failed;
                return Err(UpstreamError::new(
                    UpstreamErrorKind::BrokenBody,
                    "upstream body too large",
                ));
            }
            if all.is_empty() {
                all = BytesMut::from(&piece[..]);
            } else {
                all.extend_from_slice(&piece);
            }
        }
        Ok(all.freeze())
    }

    async fn fill(&mut self, idle: Duration) -> Result<(), UpstreamError> {
        if self.lean_pending {
            self.take_stream_buffer();
        }
        room(&mut self.buf, &mut self.not_kept, self.read_min);
        let read = match self.io.as_deref_mut() {
            Some(io) => read_before!(io, &mut self.buf, self.read_min, self.timer.arm(idle)),
            None => Err(released()),
        };
        match read {
            Ok(0) => {
                if matches!(self.body, BodyState::UntilClose) {
                    self.body = BodyState::Done;
                    self.keep_alive = false;
                    return Ok(());
                }
                self.body = BodyState::Failed;
                Err(UpstreamError::new(
                    UpstreamErrorKind::BrokenBody,
                    "upstream closed mid-body",
                ))
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                self.body = BodyState::Failed;
                Err(UpstreamError::new(
                    UpstreamErrorKind::IdleTimeout,
                    format!("upstream silent for {} ms", idle.as_millis()),
                ))
            }
            Err(e) => {
                self.body = BodyState::Failed;
                Err(UpstreamError::new(UpstreamErrorKind::BrokenBody, e.to_string()))
            }
        }
    }

    /// True when the connection can carry another request: the request was written whole, the
    /// response body was read exactly to the end of its framing (Content-Length consumed, or
    /// the last chunk and its trailers), the upstream did not ask to close, and not one byte
    /// beyond the response sits in the read buffer. (Bytes still in the TLS session or the
    /// socket are checked by `checkin` and the pool.)
    pub fn reusable(&self) -> bool {
        self.written && matches!(self.body, BodyState::Done) && self.keep_alive && self.buf.is_empty()
    }

    /// The caller is done with this exchange at a message boundary: the connection goes back
    /// to its pool now if `reusable()` and the TLS session agree, and is closed otherwise; the
    /// exchange is spent (any later read or write fails as released). Dropping an exchange
    /// without `release` always closes it. By `&mut`, so an answer's exchange stays in the
    /// attempt's future while the relay borrows it instead of being moved through each layer.
    pub fn release(&mut self) {
        let reusable = self.reusable();
        let io = self.io.take();
        let (true, Some(pool), Some(mut io)) = (reusable, self.home.upgrade(), io) else {
            self.buf = BytesMut::new();
            return;
        };
        if io.nothing_buffered() {
            // Idle in the pool: no deadline, and no waker keeping this task alive. Its read
            // buffer goes with it, unless it grew (freed here).
            self.timer.idle();
            io.buf = std::mem::take(&mut self.buf);
            if self.not_kept {
                io.buf = BytesMut::new();
            }
            pool.put(&self.shelf, io, std::mem::take(&mut self.timer));
            // Nothing left to free: the buffer went with the connection.
            return;
        }
        self.buf = BytesMut::new();
    }
}

/// Room in an exchange's `buf` for a read (at least `free` bytes), and `not_kept` set when
/// that grew it past its usual size (a large head or chunk): such a buffer is freed at release,
/// not kept with the connection, so an idle connection never pins more than
/// `READ_BUFFER_BYTES`. (A buffer is only ever reallocated here: `read_before!`'s own reserve
/// then finds the room.)
#[inline(always)]
fn room(buf: &mut BytesMut, not_kept: &mut bool, free: usize) {
    buf.reserve(free);
    *not_kept |= buf.capacity() > READ_BUFFER_BYTES;
}

/// A request whose body is sent apart from its head (over `COALESCE_BODY_BYTES`): the head,
/// then the body without a copy.
async fn write_apart(io: &mut Io, head: &mut BytesMut, body: &Bytes) -> std::io::Result<()> {
    write_all_buf(io, head).await?;
    let (result, _) = monoio::io::AsyncWriteRentExt::write_all(io, body.clone()).await;
    result.map(drop)
}

/// The error of an exchange used after `release` handed its connection back or closed it.
fn released() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotConnected, "connection already released")
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "client_lean_tests.rs"]
mod lean_tests;
