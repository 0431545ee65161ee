//! Downstream HTTP/1.1 server: accept loop, keep-alive connections, request limits and
//! timeouts, and the `Responder` a service writes its answer through.
//! Invariant: a service sees only complete, validated requests (head and whole body within
//! limits); malformed framing is answered 4xx and the connection closed before any service runs.

mod body;
mod conn;
mod held_body;
mod respond;
mod stop;
mod unwind;

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

pub use body::BodyStats;
pub use held_body::HeldBody;
pub use respond::{error_body, Lent, Responder};
pub(crate) use respond::{send_whole, write_apart, write_staged, Staged};

pub use stop::StopSignal;

use crate::codec::head::RequestHead;

/// Limits applied while reading requests; read from the live config for every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub header_read_timeout: Duration,
    pub keepalive_timeout: Duration,
    /// The longest a whole body may take to arrive.
    pub body_read_timeout: Duration,
    /// Per worker: buffer bytes that bodies still being received may hold together.
    pub max_body_bytes_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 32 * 1024,
            max_body_bytes: 32 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
            body_read_timeout: Duration::from_secs(60),
            max_body_bytes_in_flight: 64 * 1024 * 1024,
        }
    }
}

/// A complete request: validated head and the whole body.
#[derive(Debug)]
pub struct Request {
    pub head: RequestHead,
    /// Let go of once a stream's answer starts (see `HeldBody`).
    pub body: HeldBody,
    pub peer: SocketAddr,
    /// When the first byte of the head arrived (the start of rotor's own latency).
    pub received_at: crate::health::clock::Moment,
}

/// What a worker serves: the gateway, or the built-in mock. One instance per core.
#[allow(async_fn_in_trait)] // single-threaded runtime: futures never cross threads
pub trait Service: 'static {
    fn limits(&self) -> Limits;
    /// Answers one request through `res`. Whatever happens, the service must either send a
    /// complete response or leave `res` marked broken (the connection then closes). The request
    /// is lent, not given: it stays in the connection's future, and each future of the path
    /// holds a pointer to it instead of its own ~200-byte copy, moved at every call.
    async fn call(&self, req: &Request, res: &mut Responder<'_>);
}

/// Process-wide connection accounting shared by all workers of one server.
#[derive(Debug, Default)]
pub struct ConnectionGate {
    open: AtomicUsize,
    accepted: AtomicUsize,
    refused: AtomicUsize,
    panics: AtomicUsize,
    /// Request bodies: bytes in flight and refusals.
    pub body: BodyStats,
}

impl ConnectionGate {
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
    /// Connections accepted since start.
    pub fn accepted_connections(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
    pub fn refused_connections(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }
    /// Connection tasks that panicked (each closed its own connection only).
    pub fn panics(&self) -> usize {
        self.panics.load(Ordering::Relaxed)
    }
}

/// Per-worker server state.
pub struct WorkerServer {
    pub gate: Arc<ConnectionGate>,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    in_flight: Rc<Cell<usize>>,
    /// Triggered once shutdown starts: connections finish their current request and close.
    stopping: StopSignal,
    /// Connections open on this worker.
    open_here: Rc<Cell<usize>>,
    body_budget: body::BodyBudget,
}

impl WorkerServer {
    pub fn new(gate: Arc<ConnectionGate>, max_connections: usize, shutdown_grace: Duration) -> Self {
        WorkerServer {
            body_budget: body::BodyBudget::register(&gate),
            gate,
            max_connections,
            shutdown_grace,
            in_flight: Rc::new(Cell::new(0)),
            stopping: StopSignal::default(),
            open_here: Rc::new(Cell::new(0)),
        }
    }

    /// Accepts until `stop` fires, then waits (up to the grace period) for requests in flight on
    /// this worker to finish. Idle keep-alive connections are closed at once.
    pub async fn serve<S: Service>(
        &self,
        listener: monoio::net::TcpListener,
        service: Rc<S>,
        mut stop: oneshot::Receiver<()>,
    ) {
        loop {
            monoio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => self.admit(stream, peer, &service),
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        // Out of fds or similar: back off instead of spinning.
                        crate::deadline::sleep(Duration::from_millis(10)).await;
                    }
                },
            }
        }
        drop(listener);
        // Let the driver reap the cancelled accept so the listener really closes (io_uring keeps
        // the fd alive until then; a runtime dropped before that leaks a listening socket).
        crate::deadline::sleep(Duration::from_millis(1)).await;
        // Idle connections close now; busy ones after their current response.
        self.stopping.trigger();
        let deadline = Instant::now() + self.shutdown_grace;
        while self.in_flight.get() > 0 && Instant::now() < deadline {
            crate::deadline::sleep(Duration::from_millis(5)).await;
        }
        if self.in_flight.get() > 0 {
            tracing::warn!(abandoned = self.in_flight.get(), "shutdown grace elapsed");
        }
        // Give woken connection tasks a moment to drop their sockets inside the runtime.
        let linger = Instant::now() + Duration::from_millis(100);
        while self.open_here.get() > 0 && Instant::now() < linger {
            crate::deadline::sleep(Duration::from_millis(1)).await;
        }
    }

    fn admit<S: Service>(&self, stream: monoio::net::TcpStream, peer: SocketAddr, service: &Rc<S>) {
        self.gate.accepted.fetch_add(1, Ordering::Relaxed);
        let open = self.gate.open.fetch_add(1, Ordering::Relaxed) + 1;
        let guard = OpenConnection(self.gate.clone());
        if open > self.max_connections {
            self.gate.refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            drop(guard);
            return;
        }
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let counters = conn::Counters {
            in_flight: self.in_flight.clone(),
            stopping: self.stopping.clone(),
            body_budget: self.body_budget.clone(),
        };
        let gate = self.gate.clone();
        // Counted until the task ends, so shutdown can wait for sockets to close in the runtime.
        let open_here = InFlight::enter(&self.open_here);
        monoio::spawn(async move {
            let _open_here = open_here;
            let outcome = unwind::CatchUnwind::new(conn::serve_connection(stream, peer, service, counters)).await;
            if outcome.is_err() {
                gate.panics.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%peer, "connection task panicked; closed that connection only");
            }
            drop(guard);
        });
    }
}

struct OpenConnection(Arc<ConnectionGate>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Holds a per-worker count raised (requests in flight, connections open) until dropped, even
/// when the task panics.
pub(crate) struct InFlight(Rc<Cell<usize>>);

impl InFlight {
    pub(crate) fn enter(counter: &Rc<Cell<usize>>) -> Self {
        counter.set(counter.get() + 1);
        InFlight(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}
