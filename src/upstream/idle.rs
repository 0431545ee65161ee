//! Whether a connection holds nothing unread, so it may wait in the pool (check-in) or carry
//! the next request (check-out). An answer framed to its end with bytes still behind it means
//! the upstream and rotor disagree about message boundaries (a split request, a misbehaving
//! upstream); such a connection would hand the next client the previous client's answer.
//!
//! Invariant: check-in looks inside the TLS session without any IO (plaintext or records it
//! already holds); check-out asks the socket with one non-blocking `recv(MSG_PEEK)` (bytes,
//! FIN or an error that arrived while the connection was idle). A connection failing either
//! is closed, never reused.

use std::os::fd::{AsRawFd, RawFd};

use super::connect::{Io, Stream};

impl Io {
    /// Check-in: the TLS session holds no plaintext, no undecrypted record and no close
    /// (plain TCP has no such buffer; its socket is asked at check-out).
    pub fn nothing_buffered(&mut self) -> bool {
        match &mut self.stream {
            Stream::Plain(_) => true,
            Stream::Tls(tls) => tls.stream.nothing_buffered(),
        }
    }

    /// Check-out: nothing arrived on the socket while the connection sat in the pool.
    pub fn socket_quiet(&self) -> bool {
        let fd = match &self.stream {
            Stream::Plain(tcp) => tcp.as_raw_fd(),
            Stream::Tls(tls) => tls.fd,
        };
        peek_quiet(fd)
    }
}

/// True when a non-blocking peek finds no byte, no FIN and no error on `fd`.
#[allow(unsafe_code)]
fn peek_quiet(fd: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: `fd` belongs to a connection borrowed for this call, so it is open; `recv` writes
    // at most one byte into `byte`, which outlives the call. MSG_DONTWAIT keeps it from blocking
    // whatever the socket's mode; MSG_PEEK leaves any byte where it is. `__errno_location` is
    // this thread's errno, valid for the thread's life, read right after the failed call.
    let (n, errno) = unsafe {
        let n = libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        );
        (n, *libc::__errno_location())
    };
    // errno read directly: an `io::Error` built, mapped to its kind and dropped for it cost
    // ~36 instructions per checkout (callgrind, issue 18). EWOULDBLOCK is EAGAIN on Linux.
    n < 0 && errno == libc::EAGAIN
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    use super::peek_quiet;

    /// The check-out peek (errno read directly) tells a quiet socket from one with a byte
    /// waiting or a FIN, and leaves a waiting byte where it is.
    #[test]
    fn peek_tells_a_quiet_socket_from_one_with_bytes_or_a_fin() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let ours = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut theirs, _) = listener.accept().expect("accept");
        assert!(peek_quiet(ours.as_raw_fd()), "nothing sent: quiet");
        theirs.write_all(b"x").expect("write");
        let waited = std::time::Instant::now();
        while peek_quiet(ours.as_raw_fd()) && waited.elapsed().as_secs() < 5 {
            std::thread::yield_now();
        }
        assert!(!peek_quiet(ours.as_raw_fd()), "a byte waiting");
        assert!(!peek_quiet(ours.as_raw_fd()), "peeked, not taken");
        let listener2 = TcpListener::bind("127.0.0.1:0").expect("bind");
        let other = TcpStream::connect(listener2.local_addr().expect("addr")).expect("connect");
        let (closing, _) = listener2.accept().expect("accept");
        drop(closing);
        let waited = std::time::Instant::now();
        while peek_quiet(other.as_raw_fd()) && waited.elapsed().as_secs() < 5 {
            std::thread::yield_now();
        }
        assert!(!peek_quiet(other.as_raw_fd()), "a FIN waiting");
    }
}
