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
use rustls::client::UnbufferedClientConnection;

use super::tls_session::{as_uninit, invalid, Fit, Offer, Session, Turn};

/// Ciphertext taken from the socket in one read: what the caller offers for plaintext, within
/// these bounds (the upper one is a TLS record's most).
const MIN_READ_BYTES: usize = 1024;
const MAX_READ_BYTES: usize = 16 * 1024;
/// Plaintext taken in one write: at most a TLS record's worth, so a long request is encrypted
/// and sent a record at a time (the caller's `write_all` comes back for the rest) instead of
/// all at once into a buffer as large as itself.
const MAX_WRITE_BYTES: usize = 16 * 1024;
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

impl TlsStream {
    /// Runs the handshake of `session` over `tcp` (bounded by the caller's connect timeout).
    pub async fn connect(tcp: TcpStream, session: UnbufferedClientConnection) -> io::Result<TlsStream> {
        let mut stream = TlsStream {
            tcp,
            session: Session::new(session),
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
        // Exactly `size` into an empty buffer; doubling while a record arrives over several
        // reads, so a 16 KiB record read 2 KiB at a time is not copied at every read.
        incoming.reserve(size);
        let (len, total) = (incoming.len(), incoming.capacity());
        let (read, filled) = self.tcp.read(SliceMut::new(incoming, len, total)).await;
        self.incoming = filled.into_inner();
        read
    }

    /// The next plaintext into `buf`: `Ok(0)` is the peer's clean close (or a buffer with no
    /// room), a close without `close_notify` is `UnexpectedEof` once every record before it
    /// was read. With `in_place`, a socket read goes straight into `buf`, an owned buffer the
    /// runtime keeps alive if this read is dropped while the kernel holds it (`readv`'s raw
    /// view of the caller's buffer is not one, so it reads through the stream's own).
    async fn read_plaintext<T: IoBufMut>(&mut self, mut buf: T, in_place: bool) -> BufResult<usize, T> {
        let size = buf.bytes_total();
        if size == 0 {
            return (Ok(0), buf);
        }
        loop {
            match self.ready_plaintext(room_of(&mut buf)).await {
                Ok(Some(n)) => return (Ok(n), set_init(buf, n)),
                Ok(None) => {}
                Err(e) => return (Err(e), buf),
            }
            if in_place && self.incoming.is_empty() && size >= MIN_READ_BYTES {
                let (read, filled) = self.read_in_place(buf).await;
                buf = filled;
                match read {
                    Ok(0) => {}
                    Ok(n) => return (Ok(n), set_init(buf, n)),
                    Err(e) => return (Err(e), buf),
                }
            } else {
                match self.receive(size.clamp(MIN_READ_BYTES, MAX_READ_BYTES)).await {
                    Ok(0) => return (Err(eof(UNCLOSED)), buf),
                    Ok(_) => {}
                    Err(e) => return (Err(e), buf),
                }
            }
        }
    }

    /// Plaintext that needs no socket read, into `room`: kept from before, or decrypted from
    /// ciphertext already here (`Some(0)` after the peer's close). `None`: a read is needed.
    async fn ready_plaintext(&mut self, room: &mut [MaybeUninit<u8>]) -> io::Result<Option<usize>> {
        loop {
            if self.session.has_plaintext() {
                return Ok(Some(self.session.take_plaintext(room)));
            }
            if self.peer_closed {
                return Ok(Some(0));
            }
            match self.turn_or_alert(room, Offer::Nothing).await? {
                Turn::Plaintext(0) | Turn::Decrypted | Turn::Encoded | Turn::Sealed(_) => {}
                Turn::Plaintext(n) => return Ok(Some(n)),
                Turn::Transmit => self.transmit().await?,
                Turn::PeerClosed | Turn::Closed => {
                    // What follows a close is dropped.
                    self.peer_closed = true;
                    self.incoming = Vec::new();
                    self.processed = 0;
                }
                Turn::NeedsInput => return Ok(None),
            }
        }
    }

    /// One socket read straight into `buf`, decrypted there: a record's plaintext (shorter
    /// than its ciphertext) goes to the part of `buf` already processed, so a pending read
    /// holds no buffer but the caller's. A record's start at the end is kept in `incoming`
    /// until the rest arrives. How many plaintext bytes `buf` now starts with (its init is
    /// for the caller to set).
    async fn read_in_place<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        let (read, Ciphertext(mut buf)) = self.tcp.read(Ciphertext(buf)).await;
        let n = match read {
            Ok(0) => return (Err(eof(UNCLOSED)), buf),
            Ok(n) => n,
            Err(e) => return (Err(e), buf),
        };
        // SAFETY: the read initialised the first `n` bytes at `write_ptr`, and `buf` is
        // neither moved nor touched while the slice lives.
        #[allow(unsafe_code)]
        let received = unsafe { std::slice::from_raw_parts_mut(buf.write_ptr(), n) };
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
            return (Err(e), buf);
        }
        if transmit {
            if let Err(e) = self.transmit().await {
                return (Err(e), buf);
            }
        }
        (result, buf)
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

/// A socket's end before the peer's `close_notify`: a truncation, never taken for an end.
const UNCLOSED: &str = "tls: the peer closed without close_notify";

fn eof(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, what)
}

/// A caller's buffer lent to a socket read of ciphertext: its init is left as it was (some
/// buffers only ever grow theirs), to be set once to the length of the plaintext decrypted
/// in it.
struct Ciphertext<T>(T);

// SAFETY: the pointer and length are `T`'s own, valid as `T`'s contract says; not marking
// bytes initialised is always sound.
#[allow(unsafe_code)]
unsafe impl<T: IoBufMut> IoBufMut for Ciphertext<T> {
    fn write_ptr(&mut self) -> *mut u8 {
        self.0.write_ptr()
    }

    fn bytes_total(&mut self) -> usize {
        self.0.bytes_total()
    }

    unsafe fn set_init(&mut self, _: usize) {}
}

/// `buf`'s room: every byte it may be written, initialised or not.
fn room_of<T: IoBufMut>(buf: &mut T) -> &mut [MaybeUninit<u8>] {
    let size = buf.bytes_total();
    // SAFETY: `write_ptr` is valid for `bytes_total` bytes by `IoBufMut`'s contract, for as
    // long as `buf` is borrowed; `MaybeUninit` makes no claim that they are initialised.
    #[allow(unsafe_code)]
    unsafe {
        std::slice::from_raw_parts_mut(buf.write_ptr().cast::<MaybeUninit<u8>>(), size)
    }
}

/// `buf` with its first `n` bytes marked written.
fn set_init<T: IoBufMut>(mut buf: T, n: usize) -> T {
    // SAFETY: every caller wrote `n` bytes from `write_ptr` on.
    #[allow(unsafe_code)]
    unsafe {
        buf.set_init(n)
    };
    buf
}

impl AsyncReadRent for TlsStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        self.read_plaintext(buf, true).await
    }

    async fn readv<T: IoVecBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        // SAFETY: the raw buffer is the first of `buf`'s own slices, which `buf` (kept here)
        // outlives; it is used only within this call, and never handed to the kernel (a
        // dropped read would leave the kernel writing to it).
        #[allow(unsafe_code)]
        let first = unsafe { RawBuf::new_from_iovec_mut(&mut buf) };
        let read = match first {
            Some(raw) => self.read_plaintext(raw, false).await.0,
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
