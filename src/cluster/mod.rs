//! Many instances, one gateway (DESIGN 1.4): `[cluster] redis_url` shares limit windows, key
//! health and the runtime key pool between rotor instances through Redis.
//! Where it sits: workers only read and write atomics (`lease::LeaseCell` in each window, the
//! `Shared` mode); one `rotor-cluster` thread (`thread`) owns the Redis connection and does
//! the Redis calls of admission: lease draws and returns (`leases`), key health and key-pool
//! events and the instance heartbeat (`sync`). A second thread, `rotor-cluster-data` (`data`),
//! on its own connection, carries the fleet's data: the shared response cache
//! (`remote_cache`) and the published stats rollups (`fleet`). A slow Redis therefore delays
//! only those threads, never a request beyond `cluster.lease_wait_ms` (or
//! `cluster.cache_wait_ms` for a shared-cache lookup), and never the control thread.
//! Invariant: the sum of slots all instances admit in any window never passes its limit while
//! Redis answers (leases are drawn by one atomic script against the shared rolling buckets);
//! while it does not, each instance admits at most limit / live instances (`on_redis_down =
//! "local"`) or refuses (`"refuse"`), and says so in `/health` and `/metrics`.

mod data;
mod fleet;
pub mod lease;
mod leases;
mod redis_conn;
pub mod remote_cache;
mod sync;
mod thread;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use futures_channel::oneshot;
use parking_lot::Mutex;

use crate::gateway::commands::{Command, Reply};
use remote_cache::RemoteCache;

pub use thread::spawn;

use crate::config::cluster::{Cluster, OnRedisDown};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Redis answers: windows are shared through leases.
    Shared,
    /// Redis is down: local windows of limit / live instances.
    Local,
    /// Redis is down and `on_redis_down = "refuse"`.
    Refuse,
}

/// Counters for `/metrics` (`rotor_cluster_*`).
#[derive(Debug, Default)]
pub struct Counters {
    pub lease_draws: AtomicU64,
    pub lease_denied: AtomicU64,
    pub slots_leased: AtomicU64,
    pub slots_returned: AtomicU64,
    /// Slots handed back too late to find their lease's generation (dropped: under-admission).
    pub returns_lost: AtomicU64,
    pub redis_calls: AtomicU64,
    pub redis_errors: AtomicU64,
    pub reconnects: AtomicU64,
    /// Admissions of shared windows decided without Redis (local share or refused).
    pub decisions_without_redis: AtomicU64,
    /// Milliseconds spent without Redis so far (finished outages).
    pub fallback_ms: AtomicU64,
    /// Health changes published to / applied from other instances.
    pub events_published: AtomicU64,
    pub events_applied: AtomicU64,
    /// Key-pool changes received from other instances.
    pub pool_syncs: AtomicU64,
    /// Stats cells published to the fleet, and label sets folded into `(other)` there.
    pub stats_cells_published: AtomicU64,
    pub stats_cells_folded: AtomicU64,
    /// Requests whose cells the registry could not keep for the fleet (copied from it).
    pub stats_shed: AtomicU64,
    /// Failed calls of the data thread (shared cache, stats).
    pub data_errors: AtomicU64,
}

/// Cluster-scope stats queries waiting for the data thread (more are answered 503).
const FLEET_QUERIES: usize = 16;
/// The longest an admin request waits for a cluster-scope answer.
const FLEET_WAIT: Duration = Duration::from_secs(10);

/// One live instance as its heartbeat says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    /// Unix ms its heartbeat expires.
    pub expires_unix_ms: u64,
}

/// The state workers and status pages read; written by the cluster thread.
#[derive(Debug)]
pub struct Shared {
    pub instance_id: String,
    on_down: OnRedisDown,
    mode: AtomicU8,
    /// Live instances in the last heartbeat view (at least 1: this one).
    live: AtomicU64,
    /// Set when a worker asked for a lease since the cluster thread last looked.
    wanted: AtomicBool,
    /// Set when a window owes Redis units (no wake: the next pass flushes them).
    debts: AtomicBool,
    thread: OnceLock<Thread>,
    pub counters: Counters,
    /// Health-clock ms the current outage began (0 = Redis answers).
    pub down_since: AtomicU64,
    pub instances: Mutex<Vec<Instance>>,
    /// The last Redis error, for `/health` (never holds a secret: the URL has no password).
    pub last_error: Mutex<String>,
    /// The data thread (`data`), woken by lookups and queries.
    data_thread: OnceLock<Thread>,
    /// The shared response cache's queues and counters.
    pub remote_cache: RemoteCache,
    fleet_queries: ArrayQueue<(Command, oneshot::Sender<Reply>)>,
}

impl Shared {
    pub fn new(cluster: &Cluster) -> Self {
        Shared {
            instance_id: cluster.instance_id.clone(),
            on_down: cluster.on_redis_down,
            // Until the first connection answers, behave as without Redis.
            mode: AtomicU8::new(Self::down_mode(cluster.on_redis_down) as u8),
            live: AtomicU64::new(1),
            wanted: AtomicBool::new(false),
            debts: AtomicBool::new(false),
            thread: OnceLock::new(),
            counters: Counters::default(),
            down_since: AtomicU64::new(crate::health::now_ms().max(1)),
            instances: Mutex::new(Vec::new()),
            last_error: Mutex::new("not connected yet".into()),
            data_thread: OnceLock::new(),
            remote_cache: RemoteCache::new(),
            fleet_queries: ArrayQueue::new(FLEET_QUERIES),
        }
    }

    /// A `Shared` in the shared mode without a cluster thread (benches and tests).
    #[doc(hidden)]
    pub fn for_test(instance_id: &str) -> Self {
        let shared = Shared {
            instance_id: instance_id.to_owned(),
            on_down: OnRedisDown::Local,
            mode: AtomicU8::new(Mode::Local as u8),
            live: AtomicU64::new(1),
            wanted: AtomicBool::new(false),
            debts: AtomicBool::new(false),
            thread: OnceLock::new(),
            counters: Counters::default(),
            down_since: AtomicU64::new(0),
            instances: Mutex::new(Vec::new()),
            last_error: Mutex::new(String::new()),
            data_thread: OnceLock::new(),
            remote_cache: RemoteCache::new(),
            fleet_queries: ArrayQueue::new(FLEET_QUERIES),
        };
        shared.set_up();
        shared
    }

    fn down_mode(on_down: OnRedisDown) -> Mode {
        match on_down {
            OnRedisDown::Local => Mode::Local,
            OnRedisDown::Refuse => Mode::Refuse,
        }
    }

    pub fn mode(&self) -> Mode {
        match self.mode.load(Ordering::Acquire) {
            0 => Mode::Shared,
            1 => Mode::Local,
            _ => Mode::Refuse,
        }
    }

    pub(crate) fn set_up(&self) {
        let since = self.down_since.swap(0, Ordering::AcqRel);
        if since != 0 {
            let ms = crate::health::now_ms().saturating_sub(since);
            self.counters.fallback_ms.fetch_add(ms, Ordering::Relaxed);
        }
        self.mode.store(Mode::Shared as u8, Ordering::Release);
    }

    pub(crate) fn set_down(&self, error: String) {
        let _ =
            self.down_since
                .compare_exchange(0, crate::health::now_ms().max(1), Ordering::AcqRel, Ordering::Acquire);
        *self.last_error.lock() = error;
        self.mode.store(Self::down_mode(self.on_down) as u8, Ordering::Release);
    }

    /// Live instances (at least 1).
    pub fn live(&self) -> u64 {
        self.live.load(Ordering::Relaxed).max(1)
    }

    pub(crate) fn set_live(&self, n: u64) {
        self.live.store(n.max(1), Ordering::Relaxed);
    }

    /// A worker needs a lease: wake the cluster thread once until it has looked.
    pub fn wake(&self) {
        if !self.wanted.swap(true, Ordering::AcqRel) {
            if let Some(thread) = self.thread.get() {
                thread.unpark();
            }
        }
    }

    fn wake_data(&self) {
        if let Some(thread) = self.data_thread.get() {
            thread.unpark();
        }
    }

    /// A local cache miss asks the fleet's cache (worker side, at most `wait`).
    pub async fn cache_lookup(&self, digest: [u8; 32], wait: Duration) -> remote_cache::Found {
        if self.mode() != Mode::Shared {
            self.remote_cache.count(remote_cache::Outcome::Error, 1);
            return None;
        }
        self.remote_cache.lookup(digest, wait, || self.wake_data()).await
    }

    /// Offers a freshly stored answer to the fleet's cache (worker side, never waits).
    pub fn cache_offer(&self, digest: [u8; 32], answer: &crate::cache::Answer, ttl_ms: u64, max_entry_bytes: u64) {
        self.remote_cache.offer(digest, answer, ttl_ms, max_entry_bytes);
        self.wake_data();
    }

    /// A cluster-scope stats query (`Command::Stats` or `Command::Overview`), answered by the
    /// data thread from the fleet's rollups in Redis.
    pub async fn fleet_query(&self, command: Command) -> Reply {
        let (tx, rx) = oneshot::channel();
        if self.fleet_queries.push((command, tx)).is_err() {
            return Err((503, "too many cluster-scope stats queries at once; retry".to_owned()));
        }
        self.wake_data();
        match crate::net::within(FLEET_WAIT, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err((503, "the cluster data thread is not running".to_owned())),
            Err(_) => Err((504, "the fleet's stats did not arrive in time".to_owned())),
        }
    }

    pub(crate) fn note_debt(&self) {
        if !self.debts.load(Ordering::Relaxed) {
            self.debts.store(true, Ordering::Release);
        }
    }

    pub(crate) fn take_debts(&self) -> bool {
        self.debts.swap(false, Ordering::AcqRel)
    }

    pub(crate) fn take_wanted(&self) -> bool {
        self.wanted.swap(false, Ordering::AcqRel)
    }

    /// Milliseconds without Redis, finished outages plus the current one.
    pub fn fallback_ms(&self) -> u64 {
        let since = self.down_since.load(Ordering::Acquire);
        let current = if since == 0 {
            0
        } else {
            crate::health::now_ms().saturating_sub(since)
        };
        self.counters.fallback_ms.load(Ordering::Relaxed) + current
    }

    /// `/health` and `/v1/status`: the cluster state.
    pub fn status(&self) -> Status {
        let mode = self.mode();
        Status {
            instance: self.instance_id.clone(),
            redis: if mode == Mode::Shared { "up" } else { "down" },
            state: match mode {
                Mode::Shared => "shared",
                Mode::Local => "fallback_local",
                Mode::Refuse => "refusing",
            },
            live_instances: self.live(),
            instances: self.instances.lock().iter().map(|i| i.id.clone()).collect(),
            fallback_ms: self.fallback_ms(),
            error: (mode != Mode::Shared).then(|| self.last_error.lock().clone()),
        }
    }
}

/// The cluster as `/health` and `/v1/status` show it.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    pub instance: String,
    /// `up` | `down`.
    pub redis: &'static str,
    /// `shared` (limits shared through Redis) | `fallback_local` (limit / live instances) |
    /// `refusing` (limited requests get 503).
    pub state: &'static str,
    pub live_instances: u64,
    /// Instances whose heartbeat is live (as of the last beat while Redis answered).
    pub instances: Vec<String>,
    /// Milliseconds spent without Redis since start.
    pub fallback_ms: u64,
    pub error: Option<String>,
}

/// Whether two pools hold the same keys (the Redis copy against ours).
pub fn same_pool(a: &crate::keys::PoolState, b: &crate::keys::PoolState) -> bool {
    sync::encode_pool(a) == sync::encode_pool(b)
}
