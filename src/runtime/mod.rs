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
    /// The `server.admin_listen` address, when admin has its own.
    pub admin_addr: Option<SocketAddr>,
    pub gateway: Arc<Gateway>,
    workers: Vec<JoinHandle<()>>,
    control: Option<JoinHandle<()>>,
    cluster: Option<JoinHandle<()>>,
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
        if let Some(c) = self.cluster.take() {
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
    let admin = match server.admin_listen {
        Some(admin_addr) => Some(bind_listeners(admin_addr, spec.count)?),
        None => None,
    };
    let admin_addr = admin.as_ref().map(|(a, _)| *a);
    // Worker `i` takes admin listener `i` from here.
    let admin_listeners: Arc<parking_lot::Mutex<Vec<Option<std::net::TcpListener>>>> = Arc::new(
        parking_lot::Mutex::new(admin.map_or_else(Vec::new, |(_, l)| l.into_iter().map(Some).collect())),
    );
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let mut config = config;
    if let Some(cluster) = config.cluster.as_mut().filter(|c| c.instance_id.ends_with(":0")) {
        // Port 0 in the config: the default instance id takes the port really bound.
        let host = cluster.instance_id.trim_end_matches(":0").to_owned();
        cluster.instance_id = format!("{host}:{}", addr.port());
    }
    let gateway = Gateway::new(config).map_err(io::Error::other)?;
    if let Some(a) = admin_addr {
        gateway.set_admin_addr(a);
    }
    // Storage opens and windows are restored before any worker serves.
    let control = control::spawn(gateway.clone(), signals)?;
    let cluster = crate::cluster::spawn(gateway.clone())?;
    let workers = {
        let gateway = gateway.clone();
        spawn_workers(&spec, listeners, move |index, listener| {
            let gateway = gateway.clone();
            let admin = admin_listeners.lock().get_mut(index).and_then(Option::take);
            async move { run_worker(index, listener, admin, gateway).await }
        })
    };
    let workers = match workers {
        Ok(workers) => workers,
        Err(e) => {
            gateway.shutdown.trigger();
            gateway.workers_stopped.store(true, Ordering::Release);
            let _ = control.join();
            if let Some(c) = cluster {
                let _ = c.join();
            }
            return Err(e);
        }
    };
    tracing::info!(
        %addr,
        workers = spec.count,
        io_uring = uses_io_uring(spec.driver),
        "rotor listening"
    );
    if let Some(admin_addr) = admin_addr {
        tracing::info!(%admin_addr, "admin API and dashboard listening (only there)");
    }
    Ok(Running {
        addr,
        admin_addr,
        gateway,
        workers,
        control: Some(control),
        cluster,
    })
}

async fn run_worker(
    index: usize,
    listener: monoio::net::TcpListener,
    admin: Option<std::net::TcpListener>,
    gateway: Arc<Gateway>,
) {
    let generation = gateway.current();
    let server_config = &generation.config.server;
    let server = WorkerServer::new(
        gateway.gate.clone(),
        server_config.max_connections,
        server_config.shutdown_grace,
    );
    let core = Rc::new(crate::proxy::Core::new(index, gateway.clone()));
    monoio::spawn(crate::proxy::Core::housekeeping(core.clone()));
    let admin_door = admin.map(|l| (l, Rc::new(crate::proxy::AdminDoor(core.clone()))));
    let stop = gateway.shutdown.subscribe();
    match admin_door {
        None => server.serve(listener, core, stop).await,
        Some((admin, door)) => {
            // Its own server state: the admin door drains on shutdown like the API one.
            let admin_server = WorkerServer::new(
                gateway.gate.clone(),
                server_config.max_connections,
                server_config.shutdown_grace,
            );
            let admin_stop = gateway.shutdown.subscribe();
            match monoio::net::TcpListener::from_std(admin) {
                Ok(admin) => {
                    let admin_serve = admin_server.serve(admin, door, admin_stop);
                    futures_util::future::join(server.serve(listener, core, stop), admin_serve).await;
                }
                Err(e) => {
                    tracing::error!(worker = index, "cannot adopt the admin listener: {e}");
                    server.serve(listener, core, stop).await;
                }
            }
        }
    }
}
