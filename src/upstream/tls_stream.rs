//! `TlsStream`: a rustls client session over an upstream TCP stream, driven through rustls's
//! unbuffered API, so every byte it holds is in buffers of this stream's own.
//! Invariant: between operations the connection holds no buffer beyond rustls's session state
//! but bytes still to be handed on: ciphertext after the record a read returned (or a
//! record's start, waiting for its end) and plaintext the caller had no room for. Each buffer
//! is freed once emptied. What rustls encrypts is on the socket before a write returns; a
//! read takes from the socket only once nothing received is left to decrypt or hand over.
//!
//! Written here rather than taken from monoio-rustls (0.4), which keeps two 16 KiB buffers per
//! connection for the connection's life, without a setting for their size (an open stream over
//! TLS held 33.7 KB with no prompt and 58.7 KB with 64 KB prompts, against 15.3 and 17.5 KB
//! over plain TCP; `benches/memory.sh`, release, issue 18). rustls's own buffered
//! `ClientConnection` was the next step and still kept a deframing buffer of at least 4 KiB
//! per connection once it had read anything (26.8-30.4 KB a stream); with the unbuffered API
//! the ciphertext is read into the caller's buffer (a stream's lean 2 KiB, an exchange's
//! 8 KiB) and decrypted there (21.4-23.4 KB). A write takes a buffer the size of its records.

use std::io;
use std::mem::MaybeUninit;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut, RawBuf, SliceMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError, UnbufferedStatus, WriteTraffic,
};

/// Ciphertext taken from the socket in one read: what the caller offers for plaintext, within
/// these bounds (the upper one is a TLS record's most).
const MIN_READ_BYTES: usize = 1024;
const MAX_READ_BYTES: usize = 16 * 1024;
/// Plaintext taken in one write: at most a TLS record's worth, so a long request is encrypted
/// and sent a record at a time (the caller's `write_all` comes back for the rest) instead of
/// all at once into a buffer as large as itself.
const MAX_WRITE_BYTES: usize = 16 * 1024;
/// What a record adds to its plaintext (header, content type, tag), with room to spare; a
/// record that needs more is encrypted again into a buffer of the size rustls asks for.
const RECORD_OVERHEAD_BYTES: usize = 64;
/// Ciphertext kept while it holds no complete message: rustls joins a handshake message of up
/// to 64 KiB from several records, and a record is at most 16 KiB and a bit. More than both
/// is a peer that is not speaking TLS.
const MAX_UNPROCESSED_BYTES: usize = 0xffff + 17 * 1024;

pub struct TlsStream {
    tcp: TcpStream,
    session: Session,
    /// Ciphertext from the socket; from `processed` on, not yet handed to rustls for good.
    incoming: Vec<u8>,
    processed: usize,
    /// The peer's `close_notify` was read: every read from now on is the end.
    peer_closed: bool,
}

/// The rustls session and what it produced that is not yet taken.
struct Session {
    tls: UnbufferedClientConnection,
    /// Decrypted bytes the caller has not taken yet, from `taken` on.
    plaintext: Vec<u8>,
    taken: usize,
    /// Records encoded and not yet sent.
    outgoing: Vec<u8>,
}

/// What a turn offers rustls to send once it can send application data.
#[derive(Clone, Copy)]
enum Offer<'a> {
    Nothing,
    Plaintext(&'a [u8]),
    CloseNotify,
}

/// What one turn of the session over the unprocessed ciphertext came to.
enum Turn {
    /// A record's plaintext: this many bytes of it went to the caller, the rest to `plaintext`.
    Plaintext(usize),
    /// A record is decrypted and waits in the session: the caller's room was too small for it
    /// and asked for whole records only.
    Decrypted,
    /// A handshake message or an alert went into `outgoing`; more may follow.
    Encoded,
    /// `outgoing` is to be sent now.
    Transmit,
    /// The offer went into `outgoing` (this many bytes of plaintext).
    Sealed(usize),
    /// Nothing more to do without more ciphertext.
    NeedsInput,
    /// The peer's `close_notify` was read.
    PeerClosed,
    /// Both sides have sent `close_notify`.
    Closed,
}

impl TlsStream {
    /// Runs the handshake of `session` over `tcp` (bounded by the caller's connect timeout).
    pub async fn connect(tcp: TcpStream, session: UnbufferedClientConnection) -> io::Result<TlsStream> {
        let session = Session {
            tls: session,
            plaintext: Vec::new(),
            taken: 0,
            outgoing: Vec::new(),
        };
        let mut stream = TlsStream {
            tcp,
            session,
            incoming: Vec::new(),
            processed: 0,
            peer_closed: false,
        };
        loop {
            match stream.turn_or_alert(&mut [], Offer::Nothing).await? {
                Turn::Encoded | Turn::Plaintext(_) | Turn::Decrypted => {}
                Turn::Transmit => stream.transmit().await?,
                Turn::NeedsInput if stream.session.tls.is_handshaking() => {
                    if stream.receive(MAX_READ_BYTES).await? == 0 {
                        return Err(eof("tls handshake eof"));
                    }
                }
                Turn::NeedsInput | Turn::Sealed(_) => return Ok(stream),
                Turn::PeerClosed | Turn::Closed => return Err(eof("tls handshake eof")),
            }
        }
    }

    /// Check-in (see `idle`): nothing received is left, no close and no error, found without
    /// any IO. A record still in the session is kept, not taken: the connection is closed then.
    pub fn nothing_buffered(&mut self) -> bool {
        if self.peer_closed || self.session.has_plaintext() || self.processed < self.incoming.len() {
            return false;
        }
        matches!(self.turn(&mut [], Offer::Nothing), Ok(Turn::NeedsInput))
    }

    /// Bytes of buffer this stream holds of its own (not rustls's session state).
    #[cfg(test)]
    pub fn held_bytes(&self) -> usize {
        self.incoming.capacity() + self.session.plaintext.capacity() + self.session.outgoing.capacity()
    }

    /// `Session::turn` over the unprocessed ciphertext in `incoming`, which is let go of once
    /// all of it is processed.
    fn turn(&mut self, room: &mut [MaybeUninit<u8>], offer: Offer<'_>) -> io::Result<Turn> {
        let (discard, turn) = self
            .session
            .turn(&mut self.incoming[self.processed..], room, offer, Fit::Part);
        self.processed += discard;
        if self.processed == self.incoming.len() {
            self.incoming = Vec::new();
            self.processed = 0;
        }
        turn
    }

    /// `turn`, and on an error the alert rustls queued for the peer, sent on a best-effort
    /// basis (the connection is done either way).
    async fn turn_or_alert(&mut self, room: &mut [MaybeUninit<u8>], offer: Offer<'_>) -> io::Result<Turn> {
        let error = match self.turn(room, offer) {
            Ok(turn) => return Ok(turn),
            Err(e) => e,
        };
        self.send_alert().await;
        Err(error)
    }

    /// After an error, the alert rustls queued for the peer, sent on a best-effort basis.
    async fn send_alert(&mut self) {
        while let Ok(Turn::Encoded) = self.turn(&mut [], Offer::Nothing) {}
        if !self.session.outgoing.is_empty() {
            let _ = self.transmit().await;
        }
    }

    /// Sends `outgoing` whole, and lets go of it.
    async fn transmit(&mut self) -> io::Result<()> {
        let records = std::mem::take(&mut self.session.outgoing);
        self.tcp.write_all(records).await.0.map(|_| ())
    }

    /// One socket read of up to `size` bytes after the ciphertext not yet processed.
    /// `Ok(0)` is the socket's end.
    async fn receive(&mut self, size: usize) -> io::Result<usize> {
        let mut incoming = std::mem::take(&mut self.incoming);
        incoming.drain(..std::mem::take(&mut self.processed));
        if incoming.len() > MAX_UNPROCESSED_BYTES {
            return Err(invalid("tls: no complete message in the ciphertext received"));
        }
        incoming.reserve_exact(size);
        let (len, total) = (incoming.len(), incoming.capacity());
        let (read, filled) = self.tcp.read(SliceMut::new(incoming, len, total)).await;
        self.incoming = filled.into_inner();
        read
    }

    /// The next plaintext into `room` (not empty): `Ok(0)` is the peer's clean close, a close
    /// without `close_notify` is `UnexpectedEof` once every record before it was read.
    async fn read_into(&mut self, room: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        loop {
            if self.session.has_plaintext() {
                return Ok(self.session.take_plaintext(room));
            }
            if self.peer_closed {
                return Ok(0);
            }
            match self.turn_or_alert(room, Offer::Nothing).await? {
                Turn::Plaintext(0) | Turn::Decrypted | Turn::Encoded | Turn::Sealed(_) => {}
                Turn::Plaintext(n) => return Ok(n),
                Turn::Transmit => self.transmit().await?,
                Turn::PeerClosed | Turn::Closed => {
                    // What follows a close is dropped.
                    self.peer_closed = true;
                    self.incoming = Vec::new();
                    self.processed = 0;
                }
                Turn::NeedsInput if self.incoming.is_empty() && room.len() >= MIN_READ_BYTES => {
                    let n = self.read_in_place(room).await?;
                    if n > 0 {
                        return Ok(n);
                    }
                }
                Turn::NeedsInput => {
                    if self.receive(room.len().clamp(MIN_READ_BYTES, MAX_READ_BYTES)).await? == 0 {
                        return Err(eof(UNCLOSED));
                    }
                }
            }
        }
    }

    /// One socket read straight into the caller's `room`, decrypted there: a record's
    /// plaintext (shorter than its ciphertext) goes to the part of `room` already processed,
    /// so a pending read holds no buffer but the caller's. A record's start at the end is kept
    /// in `incoming` until the rest arrives. How many plaintext bytes `room` now starts with.
    async fn read_in_place(&mut self, room: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        // SAFETY: `room` is valid for writes of its length and outlives the read, which only
        // writes to it.
        #[allow(unsafe_code)]
        let target = unsafe { RawBuf::new(room.as_mut_ptr().cast::<u8>(), room.len()) };
        let n = self.tcp.read(target).await.0?;
        if n == 0 {
            return Err(eof(UNCLOSED));
        }
        // SAFETY: the read initialised the first `n` bytes of `room`.
        #[allow(unsafe_code)]
        let received = unsafe { std::slice::from_raw_parts_mut(room.as_mut_ptr().cast::<u8>(), n) };
        let (mut processed, mut written, mut transmit, mut fit) = (0, 0, false, Fit::Whole);
        let result = loop {
            let (done, unprocessed) = received.split_at_mut(processed);
            let free = as_uninit(&mut done[written..]);
            let (discard, turn) = self.session.turn(unprocessed, free, Offer::Nothing, fit);
            processed += discard;
            // A record that did not fit waits a turn, after which its ciphertext is processed
            // room; `Part` then, so no record can wait twice.
            fit = Fit::Whole;
            match turn {
                Ok(Turn::Plaintext(k)) => {
                    written += k;
                    // Part of a record kept aside: what follows must come after it.
                    if self.session.has_plaintext() {
                        break Ok(written);
                    }
                }
                Ok(Turn::Decrypted) => fit = Fit::Part,
                Ok(Turn::Encoded | Turn::Sealed(_)) => {}
                Ok(Turn::Transmit) => transmit = true,
                Ok(Turn::PeerClosed | Turn::Closed) => {
                    self.peer_closed = true;
                    processed = n;
                    break Ok(written);
                }
                Ok(Turn::NeedsInput) => break Ok(written),
                Err(e) => break Err(e),
            }
        };
        self.incoming = received[processed..].to_vec();
        if let Err(e) = result {
            self.send_alert().await;
            return Err(e);
        }
        if transmit {
            self.transmit().await?;
        }
        result
    }

    /// Seals and sends `offer`; how many plaintext bytes that was.
    async fn send(&mut self, offer: Offer<'_>) -> io::Result<usize> {
        loop {
            match self.turn_or_alert(&mut [], offer).await? {
                Turn::Sealed(n) => {
                    self.transmit().await?;
                    return Ok(n);
                }
                Turn::Transmit => self.transmit().await?,
                // A record that arrived meanwhile waits for the next read.
                Turn::Encoded | Turn::Plaintext(_) | Turn::Decrypted => {}
                Turn::PeerClosed => self.peer_closed = true,
                Turn::Closed => return Err(io::Error::new(io::ErrorKind::BrokenPipe, "tls session closed")),
                Turn::NeedsInput => return Err(invalid("tls: sending before the handshake ended")),
            }
        }
    }
}

/// How a turn hands over a decrypted record.
#[derive(Clone, Copy)]
enum Fit {
    /// What fits into the room, the rest to the session's `plaintext`.
    Part,
    /// Into the room if it fits whole; else it waits in rustls.
    Whole,
}

impl Session {
    fn has_plaintext(&self) -> bool {
        self.taken < self.plaintext.len()
    }

    /// Plaintext kept from an earlier record, as much as fits into `room`.
    fn take_plaintext(&mut self, room: &mut [MaybeUninit<u8>]) -> usize {
        let n = copy_into(room, &self.plaintext[self.taken..]);
        self.taken += n;
        if self.taken == self.plaintext.len() {
            self.plaintext = Vec::new();
            self.taken = 0;
        }
        n
    }

    /// Hands rustls `unprocessed` once: decrypts a record (into `room` as `fit` says),
    /// encodes a message to send, seals `offer`, or finds it needs more. With how many bytes
    /// from the front of `unprocessed` are done with, whatever the outcome.
    fn turn(
        &mut self,
        unprocessed: &mut [u8],
        room: &mut [MaybeUninit<u8>],
        offer: Offer<'_>,
        fit: Fit,
    ) -> (usize, io::Result<Turn>) {
        let UnbufferedStatus { mut discard, state } = self.tls.process_tls_records(unprocessed);
        let turn = match state {
            Ok(ConnectionState::ReadTraffic(traffic))
                if matches!(fit, Fit::Whole) && traffic.peek_len().is_some_and(|n| n.get() > room.len()) =>
            {
                Ok(Turn::Decrypted)
            }
            Ok(ConnectionState::ReadTraffic(mut traffic)) => match traffic.next_record() {
                Some(Ok(record)) => {
                    discard += record.discard;
                    let copied = copy_into(room, record.payload);
                    self.plaintext.extend_from_slice(&record.payload[copied..]);
                    Ok(Turn::Plaintext(copied))
                }
                Some(Err(e)) => Err(invalid(e)),
                None => Ok(Turn::Encoded),
            },
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                encode_into(&mut encode, &mut self.outgoing).map(|()| Turn::Encoded)
            }
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                // Marked sent before it is: the caller sends `outgoing` before it offers
                // anything more, and a failed send ends the connection.
                transmit.done();
                Ok(Turn::Transmit)
            }
            Ok(ConnectionState::WriteTraffic(mut traffic)) => match offer {
                Offer::Nothing => Ok(Turn::NeedsInput),
                Offer::Plaintext(bytes) => seal_into(&mut traffic, bytes, &mut self.outgoing).map(Turn::Sealed),
                Offer::CloseNotify => close_into(&mut traffic, &mut self.outgoing).map(|()| Turn::Sealed(0)),
            },
            Ok(ConnectionState::BlockedHandshake) => Ok(Turn::NeedsInput),
            Ok(ConnectionState::PeerClosed) => Ok(Turn::PeerClosed),
            Ok(ConnectionState::Closed) => Ok(Turn::Closed),
            // Early data is a server's; the enum may grow.
            Ok(_) => Err(invalid("unexpected tls state")),
            Err(e) => Err(invalid(e)),
        };
        (discard, turn)
    }
}

/// `bytes` as room to write into (every byte of it may be overwritten).
fn as_uninit(bytes: &mut [u8]) -> &mut [MaybeUninit<u8>] {
    // SAFETY: `MaybeUninit<u8>` has `u8`'s layout, and every value written through the result
    // is an initialised byte, so `bytes` stays initialised.
    #[allow(unsafe_code)]
    unsafe {
        std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<MaybeUninit<u8>>(), bytes.len())
    }
}

/// Encodes the handshake message or alert rustls has ready at the end of `out`.
fn encode_into(encode: &mut EncodeTlsData<'_, ClientConnectionData>, out: &mut Vec<u8>) -> io::Result<()> {
    let needed = match encode.encode(&mut []) {
        Ok(_) => return Ok(()),
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => required_size,
        Err(e) => return Err(invalid(e)),
    };
    let start = out.len();
    out.resize(start + needed, 0);
    let n = encode.encode(&mut out[start..]).map_err(invalid)?;
    out.truncate(start + n);
    Ok(())
}

/// Encrypts `plaintext` at the end of `out`; its length.
fn seal_into(
    traffic: &mut WriteTraffic<'_, ClientConnectionData>,
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<usize> {
    let start = out.len();
    out.resize(start + plaintext.len() + RECORD_OVERHEAD_BYTES, 0);
    let n = match traffic.encrypt(plaintext, &mut out[start..]) {
        Ok(n) => n,
        Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
            out.resize(start + required_size, 0);
            traffic.encrypt(plaintext, &mut out[start..]).map_err(invalid)?
        }
        Err(e) => return Err(invalid(e)),
    };
    out.truncate(start + n);
    Ok(plaintext.len())
}

/// Encodes a `close_notify` alert at the end of `out`.
fn close_into(traffic: &mut WriteTraffic<'_, ClientConnectionData>, out: &mut Vec<u8>) -> io::Result<()> {
    let start = out.len();
    out.resize(start + RECORD_OVERHEAD_BYTES, 0);
    let n = traffic.queue_close_notify(&mut out[start..]).map_err(invalid)?;
    out.truncate(start + n);
    Ok(())
}

/// Copies as much of `bytes` as fits to the start of `room`; how much. (`write_copy_of_slice`
/// would do it without `unsafe` from Rust 1.93; the crate's floor is 1.87.)
fn copy_into(room: &mut [MaybeUninit<u8>], bytes: &[u8]) -> usize {
    let n = bytes.len().min(room.len());
    // SAFETY: both are valid for `n` bytes (`n` is at most either length), and `bytes` is
    // initialised; they do not overlap, `room` being borrowed mutably.
    #[allow(unsafe_code)]
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), room.as_mut_ptr().cast::<u8>(), n);
    }
    n
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// A socket's end before the peer's `close_notify`: a truncation, never taken for an end.
const UNCLOSED: &str = "tls: the peer closed without close_notify";

fn eof(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, what)
}

impl AsyncReadRent for TlsStream {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        let size = buf.bytes_total();
        if size == 0 {
            return (Ok(0), buf);
        }
        // SAFETY: `write_ptr` is valid for `bytes_total` bytes by `IoBufMut`'s contract, and
        // `buf` is neither moved nor touched while `room` lives; `MaybeUninit` makes no claim
        // that they are initialised.
        #[allow(unsafe_code)]
        let room = unsafe { std::slice::from_raw_parts_mut(buf.write_ptr().cast::<MaybeUninit<u8>>(), size) };
        let read = self.read_into(room).await;
        if let Ok(n) = read {
            // SAFETY: `read_into` wrote the first `n` bytes of `room`.
            #[allow(unsafe_code)]
            unsafe {
                buf.set_init(n)
            };
        }
        (read, buf)
    }

    async fn readv<T: IoVecBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        // SAFETY: the raw buffer is the first of `buf`'s own slices, which `buf` (kept here)
        // outlives; it is used only within this call.
        #[allow(unsafe_code)]
        let first = unsafe { RawBuf::new_from_iovec_mut(&mut buf) };
        let read = match first {
            Some(raw) => self.read(raw).await.0,
            None => Ok(0),
        };
        if let Ok(n) = read {
            // SAFETY: `n` bytes were written at the start of `buf`'s first slice.
            #[allow(unsafe_code)]
            unsafe {
                buf.set_init(n)
            };
        }
        (read, buf)
    }
}

impl AsyncWriteRent for TlsStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: `read_ptr` is valid for `bytes_init` initialised bytes by `IoBuf`'s contract,
        // and `buf` is neither moved nor changed while the slice lives.
        #[allow(unsafe_code)]
        let plaintext = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        let plaintext = &plaintext[..plaintext.len().min(MAX_WRITE_BYTES)];
        if plaintext.is_empty() {
            return (Ok(0), buf);
        }
        let written = self.send(Offer::Plaintext(plaintext)).await;
        (written, buf)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: as in `readv`: the first of `buf`'s slices, used only within this call.
        #[allow(unsafe_code)]
        let first = unsafe { RawBuf::new_from_iovec(&buf) };
        let written = match first {
            Some(raw) => self.write(raw).await.0,
            None => Ok(0),
        };
        (written, buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        // Every write's records are on the socket before it returns.
        self.tcp.flush().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.send(Offer::CloseNotify).await?;
        self.tcp.shutdown().await
    }
}
