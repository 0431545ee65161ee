//! `TlsStream`: a rustls client session over an upstream TCP stream, read and written through
//! buffers that live only as long as one socket operation.
//! Invariant: between operations the connection holds no buffer of its own beyond rustls's
//! session state. Ciphertext a read takes from the socket is handed to rustls before the read
//! returns; what rustls encrypts is on the socket before a write returns; a read takes from
//! the socket only once rustls holds no plaintext.
//!
//! Written here rather than taken from monoio-rustls (0.4), which does the same with two
//! 16 KiB buffers per connection, kept for the connection's life and without a setting for
//! their size: a long request fills its write buffer, a long answer its read buffer, and
//! both stay resident while the connection streams or idles in the pool (an open stream over
//! TLS held 33.7 KB with no prompt and 58.7 KB with 64 KB prompts, against 15.3 and 17.5 KB
//! over plain TCP; with this stream 27.1 and 36.4 KB; `benches/memory.sh`, release, issue 18).
//! Here a read takes a buffer the size the caller offers (a stream's lean 2 KiB, an
//! exchange's 8 KiB), and a write one the size of its records.

use std::io::{self, BufRead};

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut, RawBuf};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::ClientConnection;

/// Ciphertext taken from the socket in one read: what the caller offers for plaintext, within
/// these bounds (the upper one is a TLS record's most, so a read's plaintext always fits
/// rustls's own limit for plaintext it holds).
const MIN_READ_BYTES: usize = 1024;
const MAX_READ_BYTES: usize = 16 * 1024;
/// Plaintext taken in one write: at most a TLS record's worth, so a long request is encrypted
/// and sent a record at a time (the caller's `write_all` comes back for the rest) instead of
/// all at once into buffers as large as itself.
const MAX_WRITE_BYTES: usize = 16 * 1024;
/// What rustls adds to a write's plaintext: record headers and tags (two records at most for
/// `MAX_WRITE_BYTES`), so the records' buffer is sized once.
const RECORD_OVERHEAD_BYTES: usize = 64;

pub struct TlsStream {
    tcp: TcpStream,
    session: ClientConnection,
}

impl TlsStream {
    /// Runs the handshake of `session` over `tcp` (bounded by the caller's connect timeout).
    pub async fn connect(tcp: TcpStream, session: ClientConnection) -> io::Result<TlsStream> {
        let mut stream = TlsStream { tcp, session };
        loop {
            stream.send_records(0).await?;
            if !stream.session.is_handshaking() {
                return Ok(stream);
            }
            if stream.receive_records(MAX_READ_BYTES).await? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof"));
            }
        }
    }

    /// Check-in (see `idle`): the session holds no plaintext, no close and no error, found
    /// without any IO. A byte of plaintext is not taken: the connection is closed then anyway.
    pub fn nothing_buffered(&mut self) -> bool {
        if self.session.process_new_packets().is_err() {
            return false;
        }
        matches!(self.session.reader().fill_buf(), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// One socket read of up to `size` bytes, all of it handed to rustls and processed.
    /// `Ok(0)` is the socket's end (rustls then reports a clean or unclean close).
    async fn receive_records(&mut self, size: usize) -> io::Result<usize> {
        let (read, ciphertext) = self.tcp.read(Vec::with_capacity(size)).await;
        let n = read?;
        let mut rest = &ciphertext[..];
        // At least once: an empty read tells rustls the socket ended. rustls takes nothing more
        // once the peer has closed; what follows its close is dropped.
        loop {
            let taken = self.session.read_tls(&mut rest)?;
            if let Err(e) = self.session.process_new_packets() {
                // The alert rustls queued for the peer, on a best-effort basis.
                let _ = self.send_records(0).await;
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if rest.is_empty() || taken == 0 {
                break;
            }
        }
        if n == 0 && self.session.is_handshaking() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof"));
        }
        Ok(n)
    }

    /// Writes every record rustls has ready to the socket; `plaintext` is how much the caller
    /// just gave rustls (the buffer's first size).
    async fn send_records(&mut self, plaintext: usize) -> io::Result<()> {
        let mut size = plaintext + RECORD_OVERHEAD_BYTES;
        while self.session.wants_write() {
            let mut records = Vec::with_capacity(std::mem::take(&mut size));
            self.session.write_tls(&mut records)?;
            let (written, _) = self.tcp.write_all(records).await;
            written?;
        }
        Ok(())
    }
}

impl AsyncReadRent for TlsStream {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        let room = buf.bytes_total();
        if room == 0 {
            return (Ok(0), buf);
        }
        loop {
            let copied = match self.session.reader().into_first_chunk() {
                Ok(plaintext) => {
                    let n = plaintext.len().min(room);
                    // SAFETY: `write_ptr` is valid for `bytes_total` (= `room`) bytes by
                    // `IoBufMut`'s contract, and `n <= room`; rustls's plaintext is its own
                    // memory, so the two do not overlap. `set_init(n)` then covers exactly the
                    // bytes written.
                    #[allow(unsafe_code)]
                    unsafe {
                        std::ptr::copy_nonoverlapping(plaintext.as_ptr(), buf.write_ptr(), n);
                        buf.set_init(n);
                    }
                    n
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => usize::MAX,
                Err(e) => return (Err(e), buf),
            };
            if copied != usize::MAX {
                // An empty chunk is the peer's clean close: `Ok(0)`.
                self.session.reader().consume(copied);
                return (Ok(copied), buf);
            }
            let size = room.clamp(MIN_READ_BYTES, MAX_READ_BYTES);
            if let Err(e) = self.receive_records(size).await {
                return (Err(e), buf);
            }
        }
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
        // rustls takes what its limit on unsent data allows (the caller's `write_all` loops).
        let taken = match io::Write::write(&mut self.session.writer(), plaintext) {
            Ok(n) => n,
            Err(e) => return (Err(e), buf),
        };
        match self.send_records(taken).await {
            Ok(()) => (Ok(taken), buf),
            Err(e) => (Err(e), buf),
        }
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
        self.send_records(0).await?;
        self.tcp.flush().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.session.send_close_notify();
        self.send_records(0).await?;
        self.tcp.shutdown().await
    }
}
