//! Listening sockets: one SO_REUSEPORT socket per worker, all bound to the same address.
//! Invariant: the port is checked free first, because SO_REUSEPORT would otherwise let a second
//! rotor silently share it (monoio-notes 2.1).

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `count` listeners on `addr`. A port of 0 is resolved once, so every worker shares the
/// same ephemeral port (tests bind to port 0).
pub fn bind_listeners(addr: SocketAddr, count: usize) -> io::Result<(SocketAddr, Vec<TcpListener>)> {
    let first = bind_one(addr, false).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on {addr}: {e} (is another process using it?)"),
        )
    })?;
    let bound = first.local_addr()?;
    // The exclusive probe must go before the shared sockets bind (a socket without SO_REUSEPORT
    // blocks them); the gap between the two is a few microseconds.
    drop(first);
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        listeners.push(bind_one(bound, true)?);
    }
    Ok((bound, listeners))
}

fn bind_one(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}
