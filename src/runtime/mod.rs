//! Process shape: N worker threads (one monoio runtime and one SO_REUSEPORT listener each) and
//! one control thread for everything that may block (reload, DNS, periodic jobs).
//! Invariant: workers only ever read the config through `Gateway::current`, an atomic pointer;
//! a reload prepares a whole new `Generation` (which may fail) and then swaps it in (which
//! cannot), so in-flight requests finish on the generation they started with.

pub mod control;
mod listen;
mod persist;
mod workers;

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

pub use crate::gateway::{Gateway, Generation, Shutdown};
pub use listen::bind_listeners;
pub use workers::{run_on_driver, spawn_workers, uses_io_uring, WorkerSpec};

use crate::config::Config;
use crate::server::WorkerServer;

/// A started gateway: its bound address and the threads to join.
pub struct Running {
    pub addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    workers: Vec<JoinHandle<()>>,
    control: Option<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting; in-flight requests get `shutdown_grace` to finish.
    pub fn stop(&self) {
        self.gateway.shutdown.trigger();
    }

    /// Waits for every worker and the control thread to end.
    pub fn wait(mut self) {
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        self.gateway.workers_stopped.store(true, Ordering::Release);
        if let Some(c) = self.control.take() {
            c.thread().unpark();
            let _ = c.join();
        }
    }
}

/// Binds, starts the workers and the control thread, and returns at once.
pub fn start(config: Config, signals: Option<control::Signals>) -> io::Result<Running> {
    let server = &config.server;
    let spec = WorkerSpec {
        count: server.workers.max(1),
        driver: server.driver,
        pin: server.pin_workers,
        name: "rotor-worker",
    };
    let (addr, listeners) = bind_listeners(server.listen, spec.count)?;
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let gateway = Gateway::new(config).map_err(io::Error::other)?;
    // Storage opens and windows are restored before any worker serves.
    let control = control::spawn(gateway.clone(), signals)?;
    let workers = {
        let gateway = gateway.clone();
        spawn_workers(&spec, listeners, move |index, listener| {
            let gateway = gateway.clone();
            async move { run_worker(index, listener, gateway).await }
        })
    };
    let workers = match workers {
        Ok(workers) => workers,
        Err(e) => {
            gateway.shutdown.trigger();
            gateway.workers_stopped.store(true, Ordering::Release);
            let _ = control.join();
            return Err(e);
        }
    };
    tracing::info!(
        %addr,
        workers = spec.count,
        io_uring = uses_io_uring(spec.driver),
        "rotor listening"
    );
    Ok(Running {
        addr,
        gateway,
        workers,
        control: Some(control),
    })
}

async fn run_worker(index: usize, listener: monoio::net::TcpListener, gateway: Arc<Gateway>) {
    let generation = gateway.current();
    let server_config = &generation.config.server;
    let server = WorkerServer::new(
        gateway.gate.clone(),
        server_config.max_connections,
        server_config.shutdown_grace,
    );
    let core = Rc::new(crate::proxy::Core::new(index, gateway.clone()));
    monoio::spawn(crate::proxy::Core::housekeeping(core.clone()));
    let stop = gateway.shutdown.subscribe();
    server.serve(listener, core, stop).await;
}
