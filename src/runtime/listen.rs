//! Listening sockets: one SO_REUSEPORT socket per worker, all bound to the same address.
//! Invariant: a port given by number is checked free first, because SO_REUSEPORT would
//! otherwise let a second rotor silently share it (monoio-notes 2.1); port 0 is the kernel's
//! pick of a free one, held from the moment it is picked.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// How long a port that is still held may take to come free before start-up gives up. A rotor
/// killed with SIGKILL on the io_uring driver keeps its listening sockets for a few
/// milliseconds after it has been reaped: each one is still referenced by the accept that
/// was pending in the dead process's ring until the kernel tears the ring down in the
/// background (5-13 ms measured; a restart lost that race about 1 time in 4). The epoll
/// driver holds no such reference. A live process that owns the port is still reported,
/// only this much later.
const PORT_RELEASE_WAIT: Duration = Duration::from_secs(2);
const PORT_RETRY_EVERY: Duration = Duration::from_millis(5);

/// Binds `count` listeners on `addr`. A port of 0 is resolved once, so every worker shares the
/// same ephemeral port (tests bind to port 0). Runs on the starting thread, before any worker.
pub fn bind_listeners(addr: SocketAddr, count: usize) -> io::Result<(SocketAddr, Vec<TcpListener>)> {
    let mut listeners = Vec::with_capacity(count.max(1));
    let bound = if addr.port() == 0 {
        // No probe: the kernel gives an ephemeral bind a port no socket holds, and never one
        // in another SO_REUSEPORT group, so the first shared socket takes it at once. A probe
        // closed and the port bound again left a gap in which a connection opened elsewhere
        // could take the port as its own (a test's mock failed to start so in a `.ci/run`).
        let first = bind_one(addr, true).map_err(|e| cannot_listen(addr, e))?;
        let bound = first.local_addr()?;
        listeners.push(first);
        bound
    } else {
        let probe = bind_exclusive(addr).map_err(|e| cannot_listen(addr, e))?;
        let bound = probe.local_addr()?;
        // The exclusive probe must go before the shared sockets bind (a socket without
        // SO_REUSEPORT blocks them); the gap between the two is a few microseconds, and no
        // other process binds a port by number in it unless it was told to.
        drop(probe);
        bound
    };
    while listeners.len() < count.max(1) {
        listeners.push(bind_one(bound, true)?);
    }
    Ok((bound, listeners))
}

fn cannot_listen(addr: SocketAddr, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("cannot listen on {addr}: {e} (is another process using it?)"),
    )
}

/// The exclusive probe, retried while the address is in use for up to `PORT_RELEASE_WAIT`.
fn bind_exclusive(addr: SocketAddr) -> io::Result<TcpListener> {
    let started = Instant::now();
    loop {
        match bind_one(addr, false) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && started.elapsed() < PORT_RELEASE_WAIT => {
                // Start-up only, on the thread that starts the server: no worker runs yet.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(PORT_RETRY_EVERY);
            }
            Err(e) => return Err(e),
            Ok(listener) => {
                if started.elapsed() >= PORT_RETRY_EVERY {
                    let waited_ms = started.elapsed().as_millis();
                    tracing::info!(%addr, waited_ms, "the port was still held (a previous process exiting); bound once it came free");
                }
                return Ok(listener);
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::bind_listeners;
    use std::io::ErrorKind;
    use std::net::SocketAddr;

    /// Port 0 gives every listener one fresh port, bound at once; that port, asked for by
    /// number while rotor holds it, is refused (the exclusive probe), with the address named.
    #[test]
    fn port_zero_is_shared_by_every_listener_and_a_held_port_is_refused() {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let (bound, listeners) = bind_listeners(any, 3).expect("binds");
        assert_ne!(bound.port(), 0);
        assert_eq!(listeners.len(), 3);
        for l in &listeners {
            assert_eq!(l.local_addr().expect("local"), bound);
        }
        let held = bind_listeners(bound, 1).expect_err("the port is held");
        assert_eq!(held.kind(), ErrorKind::AddrInUse);
        assert!(held.to_string().contains(&bound.to_string()), "{held}");
        drop(listeners);
        let (again, _listeners) = bind_listeners(bound, 2).expect("free again");
        assert_eq!(again, bound);
    }
}
