//! The process-wide shared state every layer reads: the live config `Generation` (swapped
//! whole on reload), the `Gateway` that holds it with the registries that outlive
//! generations, the command queue to the control thread and the shutdown flag. A leaf below
//! `runtime`, `proxy`, `admin` and `usage`, so none of them imports another through it.
//! Invariant: workers only ever read the config through `Gateway::current`, an atomic pointer;
//! a reload prepares a whole new `Generation` (which may fail) and then swaps it in (which
//! cannot), so in-flight requests finish on the generation they started with.

pub mod commands;
mod shutdown;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

pub use shutdown::Shutdown;

use crate::config::{self, Config, ConfigSource};
use crate::health::{HealthRegistry, KeyHealthTable};
use crate::limits::{LimitRegistry, LimitTable};
use crate::server::ConnectionGate;
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
    /// Access-token cells of keys that are credentials (Vertex), `[provider][key]`.
    pub tokens: crate::tokens::TokenTable,
    /// The constant parts of upstream request heads (host, configured headers, key lines).
    pub heads: crate::providers::prepared::PreparedHeads,
}

/// Process-wide shared state (`Send + Sync`); each worker builds its own `Core` from it.
pub struct Gateway {
    current: ArcSwap<Generation>,
    /// The id of the generation in `current`, stored after it: a worker that keeps its own
    /// copy of the generation compares this one load instead of loading `current`.
    live_id: AtomicU64,
    /// Held while `current` and `live_id` are stored, so two swaps on different threads (an
    /// admin reload beside a key change) cannot leave `live_id` naming the generation `current`
    /// no longer holds: a core whose copy had that id would keep serving it.
    swapping: parking_lot::Mutex<()>,
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
    /// Access tokens of credential keys, minted by the control thread, kept across reloads.
    pub tokens: Arc<crate::tokens::TokenRegistry>,
    /// on-demand sessions of every provider, shared by all workers (kept across reloads).
    pub sessions: crate::providers::ondemand::SessionRegistry,
    /// The response cache (`[cache]`), shared by all workers, kept across reloads.
    pub cache: crate::cache::Cache,
    /// Account-scoped object ids pinned to the key that created them (kept across reloads,
    /// persisted by the control thread).
    pub pins: crate::pins::Pins,
    /// The last loaded config before the pool was merged in, and its file's fingerprint: what
    /// a key-pool change rebuilds from (control thread only).
    base: parking_lot::Mutex<(Config, u64)>,
    /// `[cluster]` on (fixed at start): what workers and status pages read of the cluster.
    pub cluster: Option<Arc<crate::cluster::Shared>>,
    /// Set by an admin key-pool change: the cluster thread shares the pool.
    pub cluster_pool_changed: AtomicBool,
}

impl Gateway {
    /// Prepares generation 1: TLS roots loaded, every upstream host resolved.
    pub fn new(config: Config) -> Result<Arc<Self>, String> {
        let resolver = Arc::new(Resolver::default());
        let health = HealthRegistry::default();
        let limits = LimitRegistry::default();
        let cluster = config
            .cluster
            .as_ref()
            .map(|c| Arc::new(crate::cluster::Shared::new(c)));
        if let Some(shared) = &cluster {
            limits.share(shared.clone());
        }
        let base = (config.clone(), crate::keys::fingerprint(&config.source));
        let tokens = Arc::new(crate::tokens::TokenRegistry::default());
        let first = prepare(1, config, &resolver, &health, &limits, &tokens)?;
        let metrics = crate::metrics::Registry::default();
        metrics.set_max_series(first.config.server.metrics_max_series);
        let rollups = crate::usage::rollup::RollupRegistry::default();
        rollups.set_max_models(first.config.storage.max_stat_models);
        Ok(Arc::new(Gateway {
            current: ArcSwap::from_pointee(first),
            live_id: AtomicU64::new(1),
            swapping: parking_lot::Mutex::new(()),
            next_id: AtomicU64::new(2),
            resolver,
            health,
            metrics,
            records: crate::usage::record::RecordQueue::default(),
            rollups,
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
            tokens,
            sessions: Default::default(),
            cache: Default::default(),
            pins: Default::default(),
            base: parking_lot::Mutex::new(base),
            cluster,
            cluster_pool_changed: AtomicBool::new(false),
        }))
    }

    /// The live generation (an atomic pointer load; hold the `Arc` for a whole request).
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// The id of the live generation: when it differs from a kept copy's, `current` has
    /// another generation (one atomic load; `current` itself costs an `arc_swap` load).
    pub fn live_id(&self) -> u64 {
        self.live_id.load(Ordering::Acquire)
    }

    /// Reads the current generation without taking a reference on it (no write to its shared
    /// count), for per-request reads that keep nothing.
    pub fn peek<R>(&self, read: impl FnOnce(&Generation) -> R) -> R {
        read(&self.current.load())
    }

    /// Records the `server.admin_listen` address bound at start (once).
    pub fn set_admin_addr(&self, addr: SocketAddr) {
        let _ = self.admin_addr.set(addr);
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
            ConfigSource::Remote(remote) => config::load_remote(remote).map_err(|e| e.to_string())?,
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
        let shape = |c: &Config| {
            c.cluster
                .as_ref()
                .map(|c| (c.redis_url.clone(), c.key_prefix.clone(), c.on_redis_down))
        };
        if shape(&config) != shape(&self.current().config) {
            // The cluster thread and the windows' lease cells are set up once, at start.
            tracing::warn!("[cluster] changed; it takes effect on restart");
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
        let generation = prepare(id, config, &self.resolver, &self.health, &self.limits, &self.tokens)?;
        self.metrics.set_max_series(generation.config.server.metrics_max_series);
        self.rollups.set_max_models(generation.config.storage.max_stat_models);
        let _swapping = self.swapping.lock();
        self.current.store(Arc::new(generation));
        self.live_id.store(id, Ordering::Release);
        Ok(id)
    }
}

fn prepare(
    id: u64,
    config: Config,
    resolver: &Arc<Resolver>,
    health: &HealthRegistry,
    limits: &LimitRegistry,
    tokens: &crate::tokens::TokenRegistry,
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
    let connector = Connector::new(
        resolver.clone(),
        tls_config,
        tls_id,
        config.providers.iter().map(|p| &p.base_url),
    );
    let key_health = health.table_for(&config);
    let limits = limits.table_for(&config);
    let tokens = tokens.table_for(&config);
    let heads = crate::providers::prepared::PreparedHeads::for_config(&config);
    Ok(Generation {
        id,
        heads,
        config: Arc::new(config),
        connector,
        key_health,
        limits,
        tokens,
    })
}

pub(crate) fn upstream_hosts(config: &Config) -> Vec<(String, u16)> {
    config
        .providers
        .iter()
        .map(|p| (p.base_url.host.clone(), p.base_url.port))
        .collect()
}
