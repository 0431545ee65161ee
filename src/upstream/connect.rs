//! Opening upstream connections: pre-resolved address, TCP_NODELAY, optional TLS with SNI.
//! Invariant: no blocking call (DNS comes from `dns::Resolver`), and every step is bounded by
//! the connect timeout.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls_pki_types::ServerName;

use super::dns::Resolver;
use super::error::{UpstreamError, UpstreamErrorKind};
use super::tls_stream::TlsStream;
use super::PoolKey;
use crate::config::Scheme;

/// An upstream connection: its plain or TLS stream, and the read buffer its exchanges read
/// into, kept here while the connection idles in its pool (an exchange holds it meanwhile).
pub struct Io {
    pub(super) stream: Stream,
    /// Empty (no allocation) until the connection's first exchange; see `Exchange::new`.
    pub(super) buf: BytesMut,
}

/// A plain or TLS upstream stream.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<Tls>),
}

impl Io {
    /// A connection over `stream`, without a read buffer yet.
    pub(super) fn new(stream: Stream) -> Io {
        Io {
            stream,
            buf: BytesMut::new(),
        }
    }
}

/// A TLS session over a TCP stream, and that stream's descriptor so the socket can be peeked
/// while the session owns it.
pub struct Tls {
    pub(super) stream: TlsStream,
    /// Valid as long as `stream` lives (it owns the socket).
    pub(super) fd: RawFd,
}

pub async fn connect(
    key: &PoolKey,
    resolver: &Resolver,
    tls: &Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<Io, UpstreamError> {
    let addrs = resolver.lookup(&key.host, key.port).ok_or_else(|| {
        UpstreamError::new(
            UpstreamErrorKind::Dns,
            format!("{} is not resolved yet (retry shortly)", key.host),
        )
    })?;
    let work = async {
        let tcp = connect_any(&addrs).await?;
        let _ = tcp.set_nodelay(true);
        match key.scheme {
            Scheme::Http => Ok(Io::new(Stream::Plain(tcp))),
            Scheme::Https => {
                let name = ServerName::try_from(key.host.to_string())
                    .map_err(|e| UpstreamError::new(UpstreamErrorKind::Tls, format!("{}: {e}", key.host)))?;
                let fd = tcp.as_raw_fd();
                let tls_error = |e: &dyn std::fmt::Display| {
                    UpstreamError::new(UpstreamErrorKind::Tls, format!("{}: {e}", key.host))
                };
                let session =
                    rustls::client::UnbufferedClientConnection::new(tls.clone(), name).map_err(|e| tls_error(&e))?;
                let stream = TlsStream::connect(tcp, session).await.map_err(|e| tls_error(&e))?;
                Ok(Io::new(Stream::Tls(Box::new(Tls { stream, fd }))))
            }
        }
    };
    match crate::net::within(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(UpstreamError::new(
            UpstreamErrorKind::ConnectTimeout,
            format!(
                "connecting to {}:{} took over {} ms",
                key.host,
                key.port,
                timeout.as_millis()
            ),
        )),
    }
}

async fn connect_any(addrs: &[SocketAddr]) -> Result<TcpStream, UpstreamError> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_addr(*addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(format!("{addr}: {e}")),
        }
    }
    Err(UpstreamError::new(
        UpstreamErrorKind::Connect,
        last.unwrap_or_else(|| "no address".to_owned()),
    ))
}

pin_project_lite::pin_project! {
    /// The read or write future of whichever stream an [`Io`] holds, polled in place. Its
    /// `async fn` wrappers were one more state machine per upstream read and write: a resume on
    /// every poll and the stream's future moved into them (chat 19,940 -> 19,600, stream
    /// 28,646 -> 28,154 instructions per request without them; callgrind, issue 18). Not
    /// `futures_util::future::Either`, which does the same: in its place the gate measured chat
    /// 19,700 and stream 28,468 against 19,584 and 28,260 with this one (2026-12-05).
    #[project = EitherProj]
    pub enum Either<P, T> {
        Plain { #[pin] op: P },
        Tls { #[pin] op: T },
    }
}

impl<P: Future, T: Future<Output = P::Output>> Future for Either<P, T> {
    type Output = P::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<P::Output> {
        match self.project() {
            EitherProj::Plain { op } => op.poll(cx),
            EitherProj::Tls { op } => op.poll(cx),
        }
    }
}

impl AsyncReadRent for Io {
    /// Not an `async fn`: the stream's own read future is returned in an [`Either`], not
    /// awaited inside one more state machine.
    fn read<T: monoio::buf::IoBufMut>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        match &mut self.stream {
            Stream::Plain(s) => Either::Plain { op: s.read(buf) },
            // Boxed: a TLS read's future is ~500 bytes and would sit inline in every request's
            // future (plain upstreams included); one allocation is nothing next to the crypto.
            Stream::Tls(s) => Either::Tls {
                op: Box::pin(s.stream.read(buf)),
            },
        }
    }

    async fn readv<T: monoio::buf::IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match &mut self.stream {
            Stream::Plain(s) => s.readv(buf).await,
            Stream::Tls(s) => s.stream.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for Io {
    /// Not an `async fn`, like `read`.
    fn write<T: monoio::buf::IoBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        match &mut self.stream {
            Stream::Plain(s) => Either::Plain { op: s.write(buf) },
            Stream::Tls(s) => Either::Tls {
                op: s.stream.write(buf),
            },
        }
    }

    async fn writev<T: monoio::buf::IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match &mut self.stream {
            Stream::Plain(s) => s.writev(buf).await,
            Stream::Tls(s) => s.stream.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match &mut self.stream {
            Stream::Plain(s) => s.flush().await,
            Stream::Tls(s) => s.stream.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match &mut self.stream {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Tls(s) => s.stream.shutdown().await,
        }
    }
}
