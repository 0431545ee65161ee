//! The compiled configuration: what the rest of rotor reads. Built once per (re)load by
//! `config::compile`, then shared read-only as `Arc<Config>`; nothing here changes after build.
//! Invariant: every value is validated and every secret resolved, so readers never re-check.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ahash::AHashMap;

use super::secret::Secret;

/// One immutable configuration generation.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub upstream: Upstream,
    pub retry: Retry,
    pub storage: Storage,
    pub routing: Routing,
    pub cache: Cache,
    /// Empty = open gateway (no client key needed; warned at start).
    pub clients: Vec<Client>,
    pub providers: Vec<Arc<Provider>>,
    pub routes: RouteTable,
    /// Where this config came from: a file path, or the `ROTOR_*` environment quick start.
    pub source: ConfigSource,
    /// `[cluster]`: shared windows, key health and key pool over Redis; `None` = alone.
    pub cluster: Option<super::cluster::Cluster>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    Environment,
    /// `--config https://…`: fetched at start and on every reload (`config::remote`).
    Remote(super::remote::Remote),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring when the kernel allows it, else the epoll driver (said once in the log).
    Auto,
    IoUring,
    Legacy,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    /// Resolved: 0 in the file becomes the number of available cores.
    pub workers: usize,
    pub pin_workers: bool,
    pub driver: Driver,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    /// Per worker; at least `max_body_bytes`.
    pub max_body_bytes_in_flight: usize,
    pub keepalive_timeout: Duration,
    pub shutdown_grace: Duration,
    /// `None` = no keepalive comments.
    pub sse_keepalive: Option<Duration>,
    /// Deepest nesting of arrays and objects accepted in request bodies and upstream answers
    /// (`codec::depth`); deeper is a 400 (request) or 502 (answer), never a parse.
    pub max_json_depth: usize,
    /// `None` = admin API off.
    pub admin_key: Option<Secret>,
    /// Dashboard name-and-password login; `None` = key login only.
    pub admin_login: Option<AdminLogin>,
    /// `None` = admin answers on the main listener.
    pub admin_listen: Option<SocketAddr>,
    pub admin_session_ttl: Duration,
    /// `None` = `/metrics` is open.
    pub metrics_key: Option<Secret>,
    pub metrics_max_series: usize,
    pub metrics_max_bytes: usize,
}

/// `server.admin_user` and `server.admin_password`.
#[derive(Debug, Clone)]
pub struct AdminLogin {
    pub user: String,
    pub password: Secret,
}

impl Server {
    /// Whether the admin API (and the dashboard) is on: an admin key or a user login is set.
    pub fn admin_enabled(&self) -> bool {
        self.admin_key.is_some() || self.admin_login.is_some()
    }
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub pool_max_idle_per_host: usize,
    pub pool_idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub stream_idle_timeout: Duration,
    /// Whole-request limit; `None` = none.
    pub request_timeout: Option<Duration>,
    pub on_client_disconnect: DisconnectPolicy,
    /// Extra PEM roots trusted beside webpki-roots.
    pub ca_file: Option<PathBuf>,
    /// Upstream job cancels running at once per worker (more are shed).
    pub max_cancels_in_flight: usize,
    pub cancel_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Retry {
    pub max_attempts: u32,
    pub backoff: Duration,
    pub cooldown: Duration,
    /// Zero = answer 429 at once when every candidate key is cooling.
    pub wait_for_key: Duration,
    /// 0 = failures never quarantine a key (401/403 still do).
    pub quarantine_after_failures: u32,
    pub quarantine: Duration,
    /// The provider circuit breaker; `None` = off.
    pub breaker: Option<Breaker>,
}

/// When a provider's failures across keys open its breaker, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Breaker {
    /// At least this many failures within `window` (also at least as many as answers, and
    /// from two keys or more when the provider has several).
    pub failures: u32,
    pub window: Duration,
    /// Open this long, then one probe request decides.
    pub open: Duration,
}

/// What happens upstream when the client leaves mid-answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectPolicy {
    /// Close the upstream connection at once (the provider stops generating).
    Cancel,
    /// Keep reading (bounded) so usage is complete, then close.
    Drain,
}

/// The response cache's settings (`[cache]`), checked by `compile`.
#[derive(Debug, Clone, Copy)]
pub struct Cache {
    pub enabled: bool,
    pub max_bytes: u64,
    pub ttl: std::time::Duration,
    pub max_entry_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Storage {
    /// `None` = in-memory only.
    pub path: Option<PathBuf>,
    /// Off = no request rows and no stats rollups.
    pub log_requests: bool,
    pub retention_days: u32,
    /// Request rows kept at most (oldest pruned first); `None` = no count limit.
    pub max_records: Option<u64>,
    /// Size the database file plus its WAL is kept under; `None` = no size limit.
    pub max_db_bytes: Option<u64>,
    /// Fraction of requests that get a row, in [0, 1]; rollups count every request.
    pub sample_rate: f64,
    pub rollup_retention_days: u32,
    /// Distinct model names the stats rollups keep (client-chosen names through wildcard
    /// routes); new names past it are counted under model `(other)`.
    pub max_stat_models: usize,
    /// How long a storage failure or dropped record keeps `/health` at `failing`.
    pub health_window: std::time::Duration,
    /// Object ids pinned to their creating key at most (oldest pruned first).
    pub max_pins: usize,
    /// Pins older than this many days are pruned.
    pub pin_retention_days: u32,
    /// The scheduling class the control thread writes the request log in.
    pub writer_class: WriterClass,
}

/// `storage.writer_class`: the control thread's request-log writes and its naps between them
/// in the kernel's `SCHED_IDLE` class while CPUs have room (`storage::idle_class`), or always
/// in the normal class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterClass {
    /// The idle class where this process may leave it again (`CAP_SYS_NICE` or an
    /// `RLIMIT_NICE` of 20), else the normal class; `/metrics` says which.
    Auto,
    /// The idle class; refused at start where the process may not leave it again.
    Idle,
    Normal,
}

#[derive(Debug, Clone)]
pub struct Routing {
    /// Used when the requested model has no route; `None` = such requests get 404.
    pub default_model: Option<String>,
    /// model -> models tried after the model's own candidates are exhausted.
    pub fallbacks: AHashMap<String, Vec<String>>,
}

/// A window limit as configured: `-1` unlimited, `0` disabled, `N` the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Unlimited,
    Disabled,
    Max(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub rpm: Limit,
    pub rpd: Limit,
    pub tpm: Limit,
}

#[derive(Debug, Clone)]
pub struct Client {
    /// Position in `Config::clients` (indexes per-generation client state such as limits).
    pub index: usize,
    pub name: String,
    pub key: Secret,
    /// Glob patterns (`*` any run, `?` one char); `["*"]` = every model.
    pub models: Vec<String>,
    /// `models` prepared for the check at every request.
    pub allowed: super::glob::ModelSet,
    pub limits: Limits,
}

impl Client {
    /// Whether this client may use `model` (a client-facing name).
    pub fn allows(&self, model: &str) -> bool {
        self.allowed.contains(model)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    OpenAi,
    Anthropic,
    Gemini,
    Vertex,
    Replicate,
    Cohere,
    Cloudflare,
    OnDemand,
}

/// How a provider serves `POST /v1/responses` (DESIGN 1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponsesMode {
    /// The upstream serves the Responses API itself: bytes pass through.
    Native,
    /// Translated to chat completions (and through the hub to other protocols).
    Translate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStrategy {
    RoundRobin,
    Random,
    LeastUsed,
    HighestBalance,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

/// A provider's `base_url`, split once so the request path never parses URLs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BaseUrl {
    pub scheme: Scheme,
    /// Host name or IP literal, as written (no brackets for IPv6); used for SNI and DNS.
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash, e.g. "/v1" or "" .
    pub path: String,
    /// Value for the `Host` header: host, plus `:port` when not the scheme's default.
    pub host_header: String,
}

/// Stable identity of an upstream key across reloads: a hash of provider name and secret, so
/// health and limit windows carry over for keys that remain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u64);

/// Where a pool key came from (listed by `GET /admin/keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// The provider's `keys` list.
    Config,
    /// The provider's `keys_file`.
    KeysFile,
    /// Added through `POST /admin/keys` (persisted in storage, kept across reloads).
    Runtime,
}

impl KeyOrigin {
    pub fn name(self) -> &'static str {
        match self {
            KeyOrigin::Config => "config",
            KeyOrigin::KeysFile => "keys_file",
            KeyOrigin::Runtime => "runtime",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Key {
    pub id: KeyId,
    pub secret: Secret,
    pub origin: KeyOrigin,
}

#[derive(Debug, Clone)]
pub struct Provider {
    /// Position in `Config::providers`.
    pub index: usize,
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: BaseUrl,
    /// From `keys` and `keys_file`, in order, duplicates removed.
    pub keys: Vec<Key>,
    pub key_strategy: KeyStrategy,
    /// >= 1.
    pub weight: u32,
    pub enabled: bool,
    pub limits: Limits,
    /// Upstream model names served as-is. Empty = this provider serves any model name
    /// (a wildcard route, tried after exact routes).
    pub models: Vec<String>,
    /// Client-facing name -> upstream name.
    pub aliases: Vec<(String, String)>,
    /// Extra headers sent upstream on every request (names lowercased).
    pub headers: Vec<(String, String)>,
    /// Background re-validation interval (`validate_interval_ms`; `None` = off).
    pub validate_interval: Option<std::time::Duration>,
    /// Runtime keys refused twice in a row on validation are deleted.
    pub remove_invalid: bool,
    /// Where balances are fetched from (`balance`, or known for the provider's host).
    pub balance: Option<BalanceSource>,
    /// How often balances are fetched (`None` = only when keys are validated).
    pub balance_interval: Option<std::time::Duration>,
    /// `kind = "vertex"`: project, region and the credentials behind its keys.
    pub vertex: Option<std::sync::Arc<super::vertex::Vertex>>,
    /// `responses`: native only where the upstream serves the Responses API.
    pub responses: ResponsesMode,
    /// on-demand sessions (`session_timeout_ms`, `max_sessions`); `None` for other kinds.
    pub sessions: Option<SessionLimits>,
    /// How an unfinished upstream job is waited for (Replicate predictions; other kinds keep
    /// the defaults and never poll).
    pub poll: Poll,
    /// Its part of every relayed answer's head (`x-rotor-provider` and the names around it),
    /// prepared once from `name`.
    pub answer_lines: crate::codec::response_head::ProviderLines,
}

/// How long an on-demand session serves follow-up turns after its last use, and how many are
/// remembered per provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    pub timeout: std::time::Duration,
    pub max: usize,
}

/// `poll_interval_ms` and `poll_max_wait_ms`: the bound on a multi-request exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poll {
    pub interval: std::time::Duration,
    pub max_wait: std::time::Duration,
    /// How long the first request asks the upstream to hold its answer (`Prefer: wait`):
    /// `max_wait`, at most 60 s and below `upstream.first_byte_timeout_ms`.
    pub prefer_wait: std::time::Duration,
}

impl Default for Poll {
    fn default() -> Self {
        Poll {
            interval: std::time::Duration::from_millis(500),
            max_wait: std::time::Duration::from_millis(300_000),
            prefer_wait: std::time::Duration::from_secs(60),
        }
    }
}

/// A balance endpoint: `GET` this path with the key, read the number at `field`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceSource {
    /// The whole upstream path, base path included.
    pub path: String,
    /// A JSON pointer; the value may be a number or a string holding one.
    pub field: String,
}

/// One way to serve a client-facing model name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Index into `Config::providers`.
    pub provider: usize,
    /// The model name sent upstream (differs from the client's name for aliases).
    pub upstream_model: String,
}

/// A route: every candidate for one client-facing model name, in provider declaration order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Dense index, so per-core balancing state can be a `Vec` indexed by route.
    pub index: usize,
    pub model: String,
    pub candidates: Vec<Candidate>,
}

/// Client-facing model name -> route. Disabled providers are left out.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    pub by_model: AHashMap<String, Arc<Route>>,
    /// Candidates of providers with an empty `models` list: serve any name not in `by_model`
    /// (`upstream_model` is empty there and means "the client's name").
    pub wildcard: Option<Arc<Route>>,
    /// Number of routes including the wildcard one (per-core state is sized by this).
    pub len: usize,
}
