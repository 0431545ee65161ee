//! Process shape: N worker threads (one monoio runtime and one SO_REUSEPORT listener each) and
//! one control thread for everything that may block (reload, DNS, periodic jobs).
//! Invariant: workers only ever read the config through `Gateway::current`, an atomic pointer;
//! a reload prepares a whole new `Generation` (which may fail) and then swaps it in (which
//! cannot), so in-flight requests finish on the generation they started with.

pub mod commands;
pub mod control;
mod listen;
mod persist;
mod shutdown;
mod workers;

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use arc_swap::ArcSwap;

pub use listen::bind_listeners;
pub use shutdown::Shutdown;
pub use workers::{run_on_driver, spawn_workers, uses_io_uring, WorkerSpec};

use crate::config::{self, Config, ConfigSource};
use crate::health::{HealthRegistry, KeyHealthTable};
use crate::limits::{LimitRegistry, LimitTable};
use crate::server::{ConnectionGate, WorkerServer};
use crate::upstream::{dns::Resolver, tls, Connector};

/// One configuration generation with everything derived from it.
pub struct Generation {
    pub id: u64,
    pub config: Arc<Config>,
    pub connector: Connector,
    /// Health of every key, `[provider][key]`, shared with other generations that keep the key.
    pub key_health: KeyHealthTable,
    /// Window limits of every key and client, sharing windows with other generations.
    pub limits: LimitTable,
}

/// Process-wide shared state (`Send + Sync`); each worker builds its own `Core` from it.
pub struct Gateway {
    current: ArcSwap<Generation>,
    next_id: AtomicU64,
    pub resolver: Arc<Resolver>,
    pub health: HealthRegistry,
    pub metrics: crate::metrics::Registry,
    /// Request records on their way to storage.
    pub records: crate::usage::record::RecordQueue,
    /// Per-core stats rollups, collected by the control thread.
    pub rollups: crate::usage::rollup::RollupRegistry,
    pub storage_status: crate::storage::health::StorageHealth,
    /// Work for the control thread (reload, storage queries), queued by workers.
    pub commands: commands::Commands,
    pub limits: LimitRegistry,
    /// Set once every worker thread has ended (final writes and snapshots wait for it).
    pub workers_stopped: AtomicBool,
    pub shutdown: Shutdown,
    pub gate: Arc<ConnectionGate>,
    pub started: Instant,
    /// Dashboard sessions and the failed-login throttle.
    pub admin: crate::admin::AdminState,
    /// The `server.admin_listen` address bound at start; set = admin answers only there.
    admin_addr: std::sync::OnceLock<SocketAddr>,
    /// Runtime keys and disabled config keys, merged into every generation.
    pub keys: crate::keys::KeyPool,
    /// The last loaded config before the pool was merged in, and its file's fingerprint: what
    /// a key-pool change rebuilds from (control thread only).
    base: parking_lot::Mutex<(Config, u64)>,
}

impl Gateway {
    /// Prepares generation 1: TLS roots loaded, every upstream host resolved.
    pub fn new(config: Config) -> Result<Arc<Self>, String> {
        let resolver = Arc::new(Resolver::default());
        let health = HealthRegistry::default();
        let limits = LimitRegistry::default();
        let base = (config.clone(), crate::keys::fingerprint(&config.source));
        let first = prepare(1, config, &resolver, &health, &limits)?;
        let metrics = crate::metrics::Registry::default();
        metrics.set_max_series(first.config.server.metrics_max_series);
        Ok(Arc::new(Gateway {
            current: ArcSwap::from_pointee(first),
            next_id: AtomicU64::new(2),
            resolver,
            health,
            metrics,
            records: crate::usage::record::RecordQueue::default(),
            rollups: crate::usage::rollup::RollupRegistry::default(),
            storage_status: crate::storage::health::StorageHealth::default(),
            commands: commands::Commands::default(),
            limits,
            workers_stopped: AtomicBool::new(false),
            shutdown: Shutdown::default(),
            gate: Arc::new(ConnectionGate::default()),
            started: Instant::now(),
            admin: crate::admin::AdminState::default(),
            admin_addr: std::sync::OnceLock::new(),
            keys: crate::keys::KeyPool::default(),
            base: parking_lot::Mutex::new(base),
        }))
    }

    /// The live generation (an atomic pointer load; hold the `Arc` for a whole request).
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Reads the current generation without taking a reference on it (no write to its shared
    /// count), for per-request reads that keep nothing.
    pub fn peek<R>(&self, read: impl FnOnce(&Generation) -> R) -> R {
        read(&self.current.load())
    }

    /// Whether admin has its own listener (`server.admin_listen`), so the API one refuses it.
    pub fn admin_apart(&self) -> bool {
        self.admin_addr.get().is_some()
    }

    /// Loads the config again from where it came from; on success it serves new requests.
    /// On failure the running generation stays and the error says why.
    pub fn reload(&self) -> Result<u64, String> {
        let source = self.current().config.source.clone();
        let config = match &source {
            ConfigSource::File(path) => config::load(path).map_err(|e| e.to_string())?,
            ConfigSource::Environment => config::from_env()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "ROTOR_UPSTREAM_URL is no longer set".to_owned())?,
        };
        self.install(config)
    }

    /// Prepares and swaps in `config`, with the key pool merged in, as the next generation.
    pub fn install(&self, config: Config) -> Result<u64, String> {
        let fingerprint = crate::keys::fingerprint(&config.source);
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        let bound = self.admin_addr.get().copied();
        if config.server.admin_listen != bound {
            // Listeners are bound once, at start.
            tracing::warn!(
                "server.admin_listen changed; it takes effect on restart (admin stays on {})",
                bound.map_or_else(|| "the main listener".to_owned(), |a| a.to_string())
            );
        }
        let id = self.swap_in(config.clone(), fingerprint)?;
        *self.base.lock() = (config, fingerprint);
        Ok(id)
    }

    /// Builds the next generation from the last loaded config and the key pool as it is now
    /// (after an admin key change); keys that stay keep their windows and health.
    pub fn rebuild(&self) -> Result<u64, String> {
        let (config, fingerprint) = self.base.lock().clone();
        self.swap_in(config, fingerprint)
    }

    /// The last loaded config, before the key pool was merged in.
    pub fn base_config(&self) -> (Config, u64) {
        self.base.lock().clone()
    }

    fn swap_in(&self, mut config: Config, fingerprint: u64) -> Result<u64, String> {
        self.keys.apply(&mut config, fingerprint);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let generation = prepare(id, config, &self.resolver, &self.health, &self.limits)?;
        self.metrics.set_max_series(generation.config.server.metrics_max_series);
        self.current.store(Arc::new(generation));
        Ok(id)
    }
}

fn prepare(
    id: u64,
    config: Config,
    resolver: &Arc<Resolver>,
    health: &HealthRegistry,
    limits: &LimitRegistry,
) -> Result<Generation, String> {
    let tls_config = tls::client_config(config.upstream.ca_file.as_deref())?;
    let tls_id = config
        .upstream
        .ca_file
        .as_ref()
        .map_or(0, |p| ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(p) | 1);
    let failures = resolver.refresh(upstream_hosts(&config));
    for failure in failures {
        tracing::warn!("cannot resolve upstream {failure}; will retry");
    }
    let connector = Connector {
        resolver: resolver.clone(),
        tls: monoio_rustls::TlsConnector::from(tls_config),
        tls_id,
    };
    let key_health = health.table_for(&config);
    let limits = limits.table_for(&config);
    Ok(Generation {
        id,
        config: Arc::new(config),
        connector,
        key_health,
        limits,
    })
}

pub(crate) fn upstream_hosts(config: &Config) -> Vec<(String, u16)> {
    config
        .providers
        .iter()
        .map(|p| (p.base_url.host.clone(), p.base_url.port))
        .collect()
}

/// A started gateway: its bound address and the threads to join.
pub struct Running {
    pub addr: SocketAddr,
    /// The `server.admin_listen` address, when admin has its own.
    pub admin_addr: Option<SocketAddr>,
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
    let gateway = Gateway::new(config).map_err(io::Error::other)?;
    if let Some(a) = admin_addr {
        let _ = gateway.admin_addr.set(a);
    }
    // Storage opens and windows are restored before any worker serves.
    let control = control::spawn(gateway.clone(), signals)?;
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
