//! Writing responses to the downstream client: whole bodies in one write, streamed bodies one
//! write per piece so SSE events leave as soon as they arrive.
//! Invariant: the connection is reused only after a response was completely framed; anything
//! else (service forgot to answer, stream cut, write failed) closes it.

use std::io;

use bytes::{Bytes, BytesMut};
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use crate::codec::encode::{write_chunk, write_last_chunk};
use crate::codec::head::BodyFraming;
use crate::codec::response_head::{write_head, write_response_head, HeadFields, Pair};
use crate::net::write_all_buf;

/// Bodies up to this size are copied behind the head and sent in one write; larger ones are
/// sent as a second, zero-copy write.
const COALESCE_LIMIT: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Fresh,
    /// Head sent with chunked framing; pieces follow.
    Chunked,
    /// Head sent without framing to an HTTP/1.0 client: pieces follow raw, closing ends it.
    UntilClose,
    /// Head sent with a content-length; this many body bytes are still owed.
    Sized(u64),
    Done,
    Broken,
}

/// The most write buffer a streamed answer keeps from its request (see `Responder::lean_writes`).
const STREAM_WRITE_KEEP_BYTES: usize = 4 * 1024;

pub struct Responder<'a> {
    io: &'a mut TcpStream,
    out: BytesMut,
    keep_alive: bool,
    head_only: bool,
    http10: bool,
    state: State,
    bytes_out: u64,
    /// Status of the response head sent (0 before).
    status: u16,
}

impl<'a> Responder<'a> {
    pub(crate) fn new(io: &'a mut TcpStream, out: BytesMut, keep_alive: bool, head_only: bool, http10: bool) -> Self {
        Responder {
            io,
            out,
            keep_alive,
            head_only,
            http10,
            state: State::Fresh,
            bytes_out: 0,
            status: 0,
        }
    }

    /// Body bytes written so far (for accounting).
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out
    }

    /// The status sent, 0 if no head went out yet.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether anything has been sent; after that, errors can no longer become a status code.
    pub fn started(&self) -> bool {
        self.state != State::Fresh
    }

    /// Whether the client closed or reset its connection, asked of the socket with one
    /// non-blocking `recv(MSG_PEEK)` (no IO is waited for, no byte consumed: a pipelined next
    /// request stays where it is). For a handler that waits long without writing (a polled
    /// Replicate prediction). A client that only half-closed after its request counts as gone.
    #[allow(unsafe_code)]
    pub fn peer_closed(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut byte = 0u8;
        // SAFETY: the fd belongs to the connection borrowed by this responder, so it is open;
        // `recv` writes at most one byte into `byte`, which outlives the call. MSG_DONTWAIT
        // keeps it from blocking; MSG_PEEK leaves any byte where it is.
        let n = unsafe {
            libc::recv(
                self.io.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => true,
            n if n > 0 => false,
            _ => io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock,
        }
    }

    /// The answer's write buffer, lent while nothing was written to the client: the upstream
    /// request is built and sent from it (one buffer per request, where the request's own was
    /// an allocation and a free, ~90 instructions). Emptied when it comes back, so no byte
    /// written into it while lent ever reaches the client. Once an answer started (never, on
    /// the proxy's path), a buffer of its own is lent instead.
    pub fn lend(&mut self) -> Lent<'_> {
        if self.state == State::Fresh && self.out.is_empty() {
            Lent::Answer(&mut self.out)
        } else {
            Lent::Own(BytesMut::new())
        }
    }

    /// Frees the write buffer when a request grew it (the upstream request is sent from it, see
    /// [`Responder::lend`]; one over `KEEP_LENT` is freed already) and nothing is in it: an
    /// answer that streams writes small pieces for as long as it lasts and would hold the
    /// request's size all that time (an 8 KB prompt: about 8 KB more an open stream). The next
    /// write allocates what it needs.
    pub fn lean_writes(&mut self) {
        if self.out.is_empty() && self.out.capacity() > STREAM_WRITE_KEEP_BYTES {
            self.out = BytesMut::new();
        }
    }

    /// Asks for the connection to close after this response (`Connection: close` is sent if the
    /// head has not gone yet).
    pub fn close_after(&mut self) {
        self.keep_alive = false;
    }

    /// Sends a complete response with a content-length.
    pub async fn send(&mut self, status: u16, headers: &[Pair<'_>], body: Bytes) -> io::Result<()> {
        self.send_fields(status, HeadFields::checked(headers), body).await
    }

    /// [`Responder::send`] with rotor's own fields apart (they skip the line-break check).
    pub async fn send_fields(&mut self, status: u16, fields: HeadFields<'_>, body: Bytes) -> io::Result<()> {
        let staged = self.stage_whole(status, fields, body)?;
        let mut result = write_all_buf(self.io, &mut self.out).await;
        if let (Ok(()), Some(body)) = (&result, staged.apart) {
            result = write_apart(self.io, body).await;
        }
        self.sent_whole(result, staged.len)
    }

    /// The first half of [`Responder::send_fields`], which awaits nothing: the head, and the
    /// body behind it when it is coalesced, written into the answer's buffer. The caller
    /// writes the buffer ([`Responder::wire`]), then a body kept apart, then reports how that
    /// went with [`Responder::sent_whole`]; [`send_whole!`] does all three where it is awaited.
    pub(crate) fn stage_whole(&mut self, status: u16, fields: HeadFields<'_>, body: Bytes) -> io::Result<Staged> {
        self.expect_fresh()?;
        self.status = status;
        let sent = if self.head_only { 0 } else { body.len() };
        // Head and a coalesced body in one allocation (the head alone, then growing for the
        // body, allocated twice).
        let coalesced = if sent <= COALESCE_LIMIT { sent } else { 0 };
        let framing = Some(BodyFraming::Length(body.len() as u64));
        write_head(&mut self.out, status, fields, framing, self.keep_alive, coalesced);
        let apart = if sent <= COALESCE_LIMIT {
            self.out.extend_from_slice(&body[..sent]);
            None
        } else {
            Some(body)
        };
        Ok(Staged {
            apart,
            len: sent as u64,
        })
    }

    /// The connection and the answer's buffer, for a caller that writes a staged answer in
    /// its own state (`net::write_in_place!`).
    pub(crate) fn wire(&mut self) -> (&mut TcpStream, &mut BytesMut) {
        (&mut *self.io, &mut self.out)
    }

    /// How the write of a staged whole answer went: done, or the connection broken.
    pub(crate) fn sent_whole(&mut self, result: io::Result<()>, len: u64) -> io::Result<()> {
        self.settle(result, State::Done, len)
    }

    /// Sends the head of a streamed response. `length` = Some(n) keeps the upstream's
    /// content-length (pieces are then raw), None uses chunked framing.
    pub async fn start(&mut self, status: u16, headers: &[Pair<'_>], length: Option<u64>) -> io::Result<()> {
        self.start_fields(status, HeadFields::checked(headers), length).await
    }

    /// [`Responder::start`] with rotor's own fields apart (they skip the line-break check).
    pub async fn start_fields(&mut self, status: u16, fields: HeadFields<'_>, length: Option<u64>) -> io::Result<()> {
        self.start_held_fields(status, fields, length)?;
        let next = self.state;
        let result = write_all_buf(self.io, &mut self.out).await;
        self.settle(result, next, 0)
    }

    /// Prepares the head of a streamed response without sending it: it leaves with the first
    /// piece (or `finish`), one write instead of two. For SSE, whose failures always end in a
    /// written error event, so a held head is never lost.
    pub fn start_held(&mut self, status: u16, headers: &[Pair<'_>], length: Option<u64>) -> io::Result<()> {
        self.start_held_fields(status, HeadFields::checked(headers), length)
    }

    /// [`Responder::start_held`] with rotor's own fields apart (they skip the line-break check).
    pub fn start_held_fields(&mut self, status: u16, fields: HeadFields<'_>, length: Option<u64>) -> io::Result<()> {
        self.expect_fresh()?;
        self.status = status;
        let (framing, next) = match length {
            Some(n) => (Some(BodyFraming::Length(n)), State::Sized(n)),
            None if self.http10 => {
                self.keep_alive = false;
                (None, State::UntilClose)
            }
            None => (Some(BodyFraming::Chunked), State::Chunked),
        };
        write_head(&mut self.out, status, fields, framing, self.keep_alive, 0);
        self.state = if self.head_only { State::Done } else { next };
        Ok(())
    }

    /// Sends the last piece of a chunked body and its terminator in one write.
    pub async fn piece_and_finish(&mut self, data: &[u8]) -> io::Result<()> {
        if self.state != State::Chunked {
            self.piece(data).await?;
            return self.finish().await;
        }
        write_chunk(&mut self.out, data);
        write_last_chunk(&mut self.out);
        let result = write_all_buf(self.io, &mut self.out).await;
        self.settle(result, State::Done, data.len() as u64)
    }

    /// Sends one piece of a streamed body, at once.
    pub async fn piece(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let next = match self.state {
            State::Chunked => {
                write_chunk(&mut self.out, data);
                State::Chunked
            }
            State::UntilClose => {
                self.out.extend_from_slice(data);
                State::UntilClose
            }
            State::Sized(owed) => {
                let n = data.len() as u64;
                if n > owed {
                    self.state = State::Broken;
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "body longer than its content-length",
                    ));
                }
                self.out.extend_from_slice(data);
                if n == owed {
                    State::Done
                } else {
                    State::Sized(owed - n)
                }
            }
            State::Done if self.head_only => return Ok(()),
            _ => return Err(self.misuse()),
        };
        let result = write_all_buf(self.io, &mut self.out).await;
        self.settle(result, next, data.len() as u64)
    }

    /// Ends a streamed body (the chunked terminator). A sized body must already be complete.
    pub async fn finish(&mut self) -> io::Result<()> {
        match self.state {
            State::Chunked => {
                write_last_chunk(&mut self.out);
                let result = write_all_buf(self.io, &mut self.out).await;
                self.settle(result, State::Done, 0)
            }
            State::UntilClose => {
                self.state = State::Done;
                Ok(())
            }
            // A held head of a head-only answer still has to go out.
            State::Done if !self.out.is_empty() => {
                let result = write_all_buf(self.io, &mut self.out).await;
                self.settle(result, State::Done, 0)
            }
            State::Done => Ok(()),
            _ => Err(self.misuse()),
        }
    }

    /// Marks the response as cut: the connection will close without a terminator, so the client
    /// sees the truncation instead of a clean-looking end.
    pub fn abort(&mut self) {
        self.state = State::Broken;
    }

    /// After the service returns: true when the connection may carry another request. A service
    /// that sent nothing gets a 500 here, so no client ever waits on an empty reply.
    pub(super) async fn complete_and_reusable(&mut self) -> bool {
        if self.state == State::Fresh {
            tracing::error!("service returned without a response; answering 500");
            self.keep_alive = false;
            let _ = write_error_into(self.io, &mut self.out, 500, "internal error: no response produced").await;
            return false;
        }
        if self.state == State::Done && !self.out.is_empty() {
            // A held head nobody flushed (a head-only answer): send it now.
            let result = write_all_buf(self.io, &mut self.out).await;
            if self.settle(result, State::Done, 0).is_err() {
                return false;
            }
        }
        self.state == State::Done && self.keep_alive
    }

    pub(super) fn into_buffer(self) -> BytesMut {
        self.out
    }

    fn expect_fresh(&mut self) -> io::Result<()> {
        if self.state == State::Fresh {
            Ok(())
        } else {
            Err(self.misuse())
        }
    }

    fn misuse(&mut self) -> io::Error {
        self.state = State::Broken;
        io::Error::other("response written out of order")
    }

    fn settle(&mut self, result: io::Result<()>, next: State, body_bytes: u64) -> io::Result<()> {
        match result {
            Ok(()) => {
                self.state = next;
                self.bytes_out += body_bytes;
                Ok(())
            }
            Err(e) => {
                self.state = State::Broken;
                Err(e)
            }
        }
    }
}

/// A whole answer staged in the answer's buffer ([`Responder::stage_whole`]).
pub(crate) struct Staged {
    /// A body over `COALESCE_LIMIT`, written after the buffer without a copy.
    pub apart: Option<Bytes>,
    /// Body bytes the answer sends (none for a HEAD request).
    pub len: u64,
}

/// The body of a large whole answer, after its head: rare, and boxed by [`send_whole!`], so
/// its write stays out of every caller's state.
pub(crate) async fn write_apart(io: &mut TcpStream, body: Bytes) -> io::Result<()> {
    io.write_all(body).await.0.map(drop)
}

/// [`Responder::send_fields`] written out where it is awaited (the relay of every whole
/// answer): the head and body staged, the buffer's write pinned in the caller's own state
/// (`net::write_in_place!`), with no `send_fields` and `write_all_buf` futures between them,
/// each built, resumed at every poll and dropped per answer. `$res: &mut Responder`,
/// `$fields: HeadFields`, `$body: Bytes`; evaluates to `io::Result<()>`.
macro_rules! send_whole {
    ($res:expr, $status:expr, $fields:expr, $body:expr) => {{
        let res: &mut $crate::server::Responder<'_> = $res;
        match res.stage_whole($status, $fields, $body) {
            Err(e) => Err(e),
            Ok(staged) => $crate::server::write_staged!(res, staged),
        }
    }};
}
pub(crate) use send_whole;

/// The second half of [`send_whole!`]: a whole answer [`Responder::stage_whole`] staged,
/// written where it is awaited and settled. `$res: &mut Responder`, `$staged: Staged`;
/// evaluates to `io::Result<()>`.
macro_rules! write_staged {
    ($res:expr, $staged:expr) => {{
        let res: &mut $crate::server::Responder<'_> = $res;
        let staged: $crate::server::Staged = $staged;
        let (io, out) = res.wire();
        let mut result = $crate::net::write_in_place!(&mut *io, out);
        if let (Ok(()), Some(body)) = (&result, staged.apart) {
            result = Box::pin($crate::server::write_apart(io, body)).await;
        }
        res.sent_whole(result, staged.len)
    }};
}
pub(crate) use write_staged;

/// What [`Responder::lend`] lends: the answer's buffer, or one of its own.
pub enum Lent<'r> {
    Answer(&'r mut BytesMut),
    Own(BytesMut),
}

impl std::ops::Deref for Lent<'_> {
    type Target = BytesMut;

    fn deref(&self) -> &BytesMut {
        match self {
            Lent::Answer(buf) => buf,
            Lent::Own(buf) => buf,
        }
    }
}

impl std::ops::DerefMut for Lent<'_> {
    fn deref_mut(&mut self) -> &mut BytesMut {
        match self {
            Lent::Answer(buf) => buf,
            Lent::Own(buf) => buf,
        }
    }
}

/// A lent buffer grown past this (a large request body sent from it) is not kept for the
/// answer: a long stream would hold it to its end, where the request's own buffer was freed
/// once sent. The same bound as the worker's kept buffers (`spare`).
const KEEP_LENT: usize = 16 * 1024;

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if self.capacity() > KEEP_LENT {
            **self = BytesMut::new();
        } else {
            self.clear();
        }
    }
}

/// A protocol-level error (before any service ran), in the OpenAI error envelope, with
/// `Connection: close`.
pub(super) async fn write_error(io: &mut TcpStream, out: &mut BytesMut, status: u16, reason: &str) -> io::Result<()> {
    write_error_into(io, out, status, reason).await
}

async fn write_error_into(io: &mut TcpStream, out: &mut BytesMut, status: u16, reason: &str) -> io::Result<()> {
    // A 5xx is the server's own state, not the request's fault; a 503 (busy) passes soon.
    let kind = if status >= 500 {
        "server_error"
    } else {
        "invalid_request_error"
    };
    let headers: &[(&str, &[u8])] = if status == 503 {
        &[("content-type", b"application/json"), ("retry-after", b"1")]
    } else {
        &[("content-type", b"application/json")]
    };
    let body = error_body(reason, kind);
    out.clear();
    write_response_head(out, status, headers, BodyFraming::Length(body.len() as u64), false);
    out.extend_from_slice(&body);
    write_all_buf(io, out).await
}

/// `{"error":{"message":..,"type":..,"param":null,"code":null}}`: the OpenAI envelope, written by
/// the OpenAI wire module (one writer for every place rotor speaks OpenAI errors).
pub fn error_body(message: &str, kind: &str) -> Vec<u8> {
    crate::providers::openai::error_body(message, kind).into_bytes()
}

#[cfg(test)]
#[path = "respond_tests.rs"]
mod tests;
