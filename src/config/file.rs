//! The config file as written: serde structs mirroring DESIGN 1.2 key for key, with defaults.
//!
//! Invariant: every struct denies unknown keys, so a typo (`modelz`) is an error naming its
//! path, never a silently ignored setting. Nothing here is validated beyond its type; that is
//! `compile.rs`, which turns these into the `model.rs` types.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file. Every section may be left out.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub retry: RetryConfig,
    pub storage: StorageConfig,
    pub routing: RoutingConfig,
    pub cache: CacheConfig,
    /// No `[[clients]]` = open gateway.
    pub clients: Vec<ClientConfig>,
    pub providers: Vec<ProviderConfig>,
    /// Absent = this instance runs alone.
    pub cluster: Option<super::cluster::ClusterConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: String,
    /// 0 = one worker per available core.
    pub workers: usize,
    pub pin_workers: bool,
    /// `auto` | `io_uring` | `legacy`.
    pub driver: String,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub header_read_timeout_ms: u64,
    /// The longest a whole request body may take to arrive.
    pub body_read_timeout_ms: u64,
    /// Per worker: buffer bytes that request bodies still being received may hold together.
    pub max_body_bytes_in_flight: usize,
    pub keepalive_timeout_ms: u64,
    pub shutdown_grace_ms: u64,
    /// SSE comment sent during upstream silences longer than this; 0 = never.
    pub sse_keepalive_ms: u64,
    /// Deepest nesting of arrays and objects accepted in any JSON rotor parses.
    pub max_json_depth: usize,
    /// Absent (or "") = admin API off.
    pub admin_key: Option<String>,
    /// Dashboard login by name and password (both or neither); the password is a secret.
    pub admin_user: Option<String>,
    pub admin_password: Option<String>,
    /// "" = admin on the main listener; else admin and the dashboard answer only here.
    pub admin_listen: String,
    /// Lifetime of a dashboard session cookie.
    pub admin_session_ttl_ms: u64,
    /// Absent (or "") = `/metrics` open; else it needs `Authorization: Bearer <metrics_key>`.
    pub metrics_key: Option<String>,
    /// Labelled series whose model label a client chose, over every family and core.
    pub metrics_max_series: usize,
    /// Largest `/metrics` body; series beyond it are left out of that scrape (and counted).
    pub metrics_max_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            workers: 0,
            pin_workers: false,
            driver: "auto".into(),
            max_connections: 65536,
            max_header_bytes: 32768,
            max_body_bytes: 33_554_432,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 60_000,
            max_body_bytes_in_flight: 67_108_864,
            keepalive_timeout_ms: 75_000,
            shutdown_grace_ms: 30_000,
            sse_keepalive_ms: 15_000,
            max_json_depth: crate::codec::depth::DEFAULT_MAX_DEPTH,
            admin_key: None,
            admin_user: None,
            admin_password: None,
            admin_listen: String::new(),
            admin_session_ttl_ms: 28_800_000,
            metrics_key: None,
            metrics_max_series: 4096,
            metrics_max_bytes: 8_388_608,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Per worker.
    pub pool_max_idle_per_host: usize,
    pub pool_idle_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub first_byte_timeout_ms: u64,
    pub stream_idle_timeout_ms: u64,
    /// Whole-request limit, streams included; 0 = none.
    pub request_timeout_ms: u64,
    /// `cancel` (close the upstream at once) | `drain` (keep reading, bounded, for usage).
    pub on_client_disconnect: String,
    /// "" = webpki-roots only.
    pub ca_file: String,
    /// Upstream job cancels (Replicate) running at once per worker; more are shed (counted).
    pub max_cancels_in_flight: usize,
    /// The longest one cancel may take, connect to answer.
    pub cancel_timeout_ms: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            pool_max_idle_per_host: 128,
            pool_idle_timeout_ms: 90_000,
            connect_timeout_ms: 5_000,
            first_byte_timeout_ms: 120_000,
            stream_idle_timeout_ms: 120_000,
            request_timeout_ms: 0,
            on_client_disconnect: "cancel".into(),
            ca_file: String::new(),
            max_cancels_in_flight: 256,
            cancel_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    pub max_attempts: u32,
    pub backoff_ms: u64,
    pub cooldown_ms: u64,
    /// When every candidate key is cooling, wait up to this long for the soonest; 0 = answer 429.
    pub wait_for_key_ms: u64,
    /// Consecutive failures (5xx, timeouts, connect errors) that quarantine a key, when
    /// other keys of its provider answer meanwhile; 0 = never for failures.
    pub quarantine_after_failures: u32,
    /// First quarantine length; doubles on each repeat, up to an hour.
    pub quarantine_ms: u64,
    /// Failures across a provider's keys within `breaker_window_ms` that open its breaker;
    /// 0 = no breaker.
    pub breaker_failures: u32,
    pub breaker_window_ms: u64,
    /// How long an open breaker refuses traffic before one probe request goes through.
    pub breaker_open_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            backoff_ms: 50,
            cooldown_ms: 60_000,
            wait_for_key_ms: 0,
            quarantine_after_failures: 5,
            quarantine_ms: 30_000,
            breaker_failures: 5,
            breaker_window_ms: 2_000,
            breaker_open_ms: 1_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// "" = in-memory only.
    pub path: String,
    pub log_requests: bool,
    pub retention_days: u32,
    /// Request rows kept; -1 = no count limit. Absent: 100,000 in memory, -1 on disk.
    pub max_records: Option<i64>,
    /// The database (and its WAL) kept under this; -1 = no size limit.
    pub max_db_bytes: i64,
    /// Fraction of requests that get a row (rollups always count every request).
    pub sample_rate: f64,
    /// Days the per-minute/hour stats rollups are kept.
    pub rollup_retention_days: u32,
    /// Distinct model names the stats rollups keep; new names past it count as `(other)`.
    pub max_stat_models: u64,
    /// `/health` reports storage failing while a failure or drop is this recent.
    pub health_window_ms: u64,
    /// Account-scoped object ids (files, batches, ...) pinned to their creating key; past it
    /// the oldest pin is pruned.
    pub max_pins: u64,
    /// Days a pin is kept after the object was created.
    pub pin_retention_days: u32,
    /// The scheduling class of the request log's writes: "auto" | "idle" | "normal".
    pub writer_class: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: "data/rotor.db".into(),
            log_requests: true,
            retention_days: 30,
            max_records: None,
            max_db_bytes: 1 << 30,
            sample_rate: 1.0,
            rollup_retention_days: 400,
            max_stat_models: 10_000,
            health_window_ms: 30_000,
            max_pins: 100_000,
            pin_retention_days: 30,
            writer_class: "auto".into(),
        }
    }
}

/// `[cache]`: the response cache (DESIGN 1.3), off by default.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    pub enabled: bool,
    /// All entries together (request and answer bytes), kept under this by LRU eviction.
    pub max_bytes: u64,
    pub ttl_ms: u64,
    /// Answers larger than this are not stored.
    pub max_entry_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: false,
            max_bytes: 256 << 20,
            ttl_ms: 300_000,
            max_entry_bytes: 1 << 20,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// "" = none.
    pub default_model: String,
    /// model -> models tried after its own candidates.
    pub fallbacks: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub name: String,
    pub key: String,
    /// Absent = `["*"]`.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default = "unlimited")]
    pub rpm: i64,
    #[serde(default = "unlimited")]
    pub rpd: i64,
    #[serde(default = "unlimited")]
    pub tpm: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    /// One of the eight wire protocols; checked in `compile.rs` so the message lists them.
    pub kind: String,
    /// "" = the kind's default (`config::provider::default_base_url`; Vertex builds its own).
    #[serde(default)]
    pub base_url: String,
    #[serde(default)]
    pub keys: Vec<String>,
    /// "" = none.
    #[serde(default)]
    pub keys_file: String,
    #[serde(default = "round_robin")]
    pub key_strategy: String,
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "unlimited")]
    pub rpm: i64,
    #[serde(default = "unlimited")]
    pub rpd: i64,
    #[serde(default = "unlimited")]
    pub tpm: i64,
    /// Empty = serves any model (wildcard route).
    #[serde(default)]
    pub models: Vec<String>,
    /// Client-facing name -> upstream name. A `BTreeMap` so the compiled order is stable.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Background re-validation of every key; 0 = off.
    #[serde(default)]
    pub validate_interval_ms: u64,
    /// Delete runtime keys that fail validation twice in a row.
    #[serde(default)]
    pub remove_invalid: bool,
    /// Where the key's balance is published, for providers rotor does not know.
    #[serde(default)]
    pub balance: Option<BalanceConfig>,
    #[serde(default = "five_minutes")]
    pub balance_interval_ms: u64,
    /// Vertex AI: the Google Cloud project and region (location) in every request URL.
    #[serde(default)]
    pub project: String,
    #[serde(default)]
    pub region: String,
    /// Vertex AI: where access tokens are minted; "" = Google's (or the service account's own).
    #[serde(default)]
    pub token_url: String,
    /// Vertex AI: OAuth user credentials (refresh-token grant), one or a list; each is one key.
    #[serde(default)]
    pub google_oauth: Option<OneOrMany<GoogleOAuthConfig>>,
    /// Vertex AI: service-account JSON keys (secret references), one or a list; each is one key.
    #[serde(default)]
    pub service_account: Option<OneOrMany<String>>,
    /// `/v1/responses`: "native" (passed through) or "translate" (to chat completions);
    /// "" = native for api.openai.com only.
    #[serde(default)]
    pub responses: String,
    /// `kind = "ondemand"` only: how long an on-demand session serves follow-up turns after
    /// its last use (absent = 30 min).
    #[serde(default)]
    pub session_timeout_ms: Option<u64>,
    /// `kind = "ondemand"` only: live sessions remembered for this provider; past it the
    /// oldest is forgotten (absent = 10000).
    #[serde(default)]
    pub max_sessions: Option<u64>,
    /// `kind = "cloudflare"` only: the account in Workers AI's URL.
    #[serde(default)]
    pub account_id: Option<String>,
    /// `kind = "replicate"` only: pause between polls of an unfinished prediction.
    #[serde(default)]
    pub poll_interval_ms: Option<u64>,
    /// `kind = "replicate"` only: longest wait for a prediction to finish (`Prefer: wait` included).
    #[serde(default)]
    pub poll_max_wait_ms: Option<u64>,
}

/// A value or a list of them (`google_oauth = { ... }` or `google_oauth = [{ ... }, { ... }]`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

/// One OAuth user credential, as pro-api and gcloud's `application_default_credentials.json`
/// hold it. `client_secret` and `refresh_token` are secrets (`env:`/`file:` forms work).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleOAuthConfig {
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalanceConfig {
    /// Appended to the provider's base URL path, e.g. "/user/info".
    pub path: String,
    /// JSON pointer to the balance in the answer, e.g. "/data/totalBalance".
    pub field: String,
}

fn five_minutes() -> u64 {
    300_000
}

fn unlimited() -> i64 {
    -1
}
fn round_robin() -> String {
    "round-robin".into()
}
fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}
