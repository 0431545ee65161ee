//! Access tokens for keys that are credentials rather than secrets (Vertex AI's `google_oauth`
//! and `service_account`): one `TokenCell` per credential, kept across reloads by key id.
//! The control thread mints and refreshes them (`refresh_due` every tick, ahead of expiry;
//! `mint_now` when a worker asks after a 401 or finds none); workers only read the current
//! token, a lock-free `ArcSwap` load.
//! Invariant: minting happens on the control thread only (it blocks on the token endpoint);
//! the client secret, refresh token and private key go nowhere but the grant's `token_url`,
//! and no error, log line or metric carries them or an access token (keys show masked).

mod http;
mod mint;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use arc_swap::{ArcSwap, ArcSwapOption};

use crate::config::vertex::Grant;
use crate::config::{Config, KeyId, Secret};

/// A token is refreshed this long before it expires, at most (a quarter of its lifetime for
/// short-lived ones).
const REFRESH_AHEAD: Duration = Duration::from_secs(300);
/// After a failed mint, the next try waits this long, doubling per failure up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Minting starts no new grant after this much of one control-thread tick.
const TICK_BUDGET: Duration = Duration::from_secs(2);

/// One minted access token.
pub struct Token {
    pub access: Secret,
    pub expires_at: Instant,
    minted_at: Instant,
    /// Distinguishes tokens: a worker that saw this one refused asks for a newer one.
    pub serial: u64,
}

impl Token {
    pub fn usable(&self, now: Instant) -> bool {
        now < self.expires_at
    }

    /// Due for refresh: inside the refresh margin before expiry.
    fn due(&self, now: Instant) -> bool {
        let lifetime = self.expires_at.saturating_duration_since(self.minted_at);
        let ahead = REFRESH_AHEAD.min(lifetime / 4);
        now + ahead >= self.expires_at
    }
}

/// One credential's current token and minting state.
pub struct TokenCell {
    grant: ArcSwap<Grant>,
    current: ArcSwapOption<Token>,
    /// Failed mints in a row (for the backoff); 0 after a success.
    failures: AtomicU32,
    /// Monotonic ms (`since`) before which a failed credential is not tried again.
    retry_at: AtomicU64,
    last_error: parking_lot::Mutex<Option<String>>,
    since: Instant,
}

impl TokenCell {
    fn new(grant: Arc<Grant>) -> Self {
        TokenCell {
            grant: ArcSwap::new(grant),
            current: ArcSwapOption::empty(),
            failures: AtomicU32::new(0),
            retry_at: AtomicU64::new(0),
            last_error: parking_lot::Mutex::new(None),
            since: Instant::now(),
        }
    }

    /// The current token (lock-free), if any.
    pub fn token(&self) -> Option<Arc<Token>> {
        self.current.load_full()
    }

    pub fn key(&self) -> KeyId {
        self.grant.load().key
    }

    fn backing_off(&self, now: Instant) -> bool {
        (now.saturating_duration_since(self.since).as_millis() as u64) < self.retry_at.load(Ordering::Relaxed)
    }
}

/// Every credential's cell, by key id; generations take their tables from it.
#[derive(Default)]
pub struct TokenRegistry {
    cells: parking_lot::Mutex<AHashMap<KeyId, Arc<TokenCell>>>,
    serial: AtomicU64,
    /// Grants answered with a token, and grants that failed (for `/metrics`).
    minted: AtomicU64,
    failed: AtomicU64,
}

/// `[provider][key]`: the token cell of a key that is a credential, `None` for a plain secret.
#[derive(Default)]
pub struct TokenTable {
    keys: Vec<Vec<Option<Arc<TokenCell>>>>,
}

impl TokenTable {
    pub fn get(&self, provider: usize, key: usize) -> Option<&Arc<TokenCell>> {
        self.keys.get(provider)?.get(key)?.as_ref()
    }
}

impl TokenRegistry {
    /// The cells of `config`'s enabled credentials: kept (with their token) for keys that stay,
    /// new ones for new keys; cells of keys no longer configured are dropped.
    pub fn table_for(&self, config: &Config) -> TokenTable {
        let mut known = self.cells.lock();
        let mut next = AHashMap::with_capacity(known.len());
        let keys = config
            .providers
            .iter()
            .map(|provider| {
                let grants = provider.vertex.as_ref().filter(|_| provider.enabled).map(|v| &v.grants);
                provider
                    .keys
                    .iter()
                    .map(|key| {
                        let grant = grants?.iter().find(|g| g.key == key.id)?;
                        let cell = known
                            .remove(&key.id)
                            .or_else(|| next.get(&key.id).cloned())
                            .unwrap_or_else(|| Arc::new(TokenCell::new(grant.clone())));
                        // Same key id, perhaps another token_url: the newest grant mints.
                        cell.grant.store(grant.clone());
                        next.insert(key.id, cell.clone());
                        Some(cell)
                    })
                    .collect()
            })
            .collect();
        *known = next;
        TokenTable { keys }
    }

    /// `rotor_token_grants_total{outcome}` and `rotor_token_credentials{state}` (credentials
    /// with a usable token, and without one), appended to `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let now = Instant::now();
        let cells = self.cells();
        let usable = cells
            .iter()
            .filter(|c| c.token().is_some_and(|t| t.usable(now)))
            .count();
        let name = "rotor_token_grants_total";
        let _ = writeln!(
            out,
            "# HELP {name} Access-token grants (Vertex credentials), by outcome.\n# TYPE {name} counter\n{name}{{outcome=\"ok\"}} {}\n{name}{{outcome=\"failed\"}} {}",
            self.minted.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed)
        );
        let name = "rotor_token_credentials";
        let _ = writeln!(
            out,
            "# HELP {name} Credential keys with a usable access token now, and without one.\n# TYPE {name} gauge\n{name}{{state=\"usable\"}} {usable}\n{name}{{state=\"missing\"}} {}",
            cells.len() - usable
        );
    }

    /// Whether any credential is configured (no TLS roots are loaded for minting otherwise).
    pub fn any(&self) -> bool {
        !self.cells.lock().is_empty()
    }

    fn cells(&self) -> Vec<Arc<TokenCell>> {
        self.cells.lock().values().cloned().collect()
    }

    /// Control thread, every tick: mints for cells with no token or one inside its refresh
    /// margin, unless a recent failure says wait. Blocks on the token endpoints.
    pub fn refresh_due(&self, tls: &Tls) {
        let now = Instant::now();
        for cell in self.cells() {
            // The rest wait for the next tick, so admin commands are not held up for long.
            if now.elapsed() >= TICK_BUDGET {
                break;
            }
            let due = cell.token().is_none_or(|t| t.due(now));
            if due && !cell.backing_off(now) {
                let _ = self.mint(&cell, tls);
            }
        }
    }

    /// Control thread, on a worker's request: a token newer than `refused` (the serial a 401
    /// came back for), minting one unless a usable newer one exists or the credential failed
    /// within its backoff (then that failure).
    pub fn mint_now(&self, key: KeyId, refused: Option<u64>, tls: &Tls) -> Result<(), String> {
        let Some(cell) = self.cells.lock().get(&key).cloned() else {
            return Err("the credential is no longer configured".to_owned());
        };
        let now = Instant::now();
        if let Some(token) = cell.token() {
            if token.usable(now) && Some(token.serial) != refused {
                return Ok(());
            }
            if Some(token.serial) == refused {
                // Refused upstream: never sent again, even if no new one can be minted.
                cell.current.store(None);
            }
        }
        if cell.backing_off(now) {
            let last = cell.last_error.lock().clone();
            return Err(last.unwrap_or_else(|| "the last token request failed".to_owned()));
        }
        self.mint(&cell, tls)
    }

    fn mint(&self, cell: &TokenCell, tls: &Tls) -> Result<(), String> {
        let grant = cell.grant.load_full();
        let started = Instant::now();
        match mint::mint(&grant, tls) {
            Ok((access, lifetime)) => {
                let serial = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
                cell.current.store(Some(Arc::new(Token {
                    access,
                    expires_at: started + lifetime,
                    minted_at: started,
                    serial,
                })));
                self.minted.fetch_add(1, Ordering::Relaxed);
                cell.failures.store(0, Ordering::Relaxed);
                cell.retry_at.store(0, Ordering::Relaxed);
                *cell.last_error.lock() = None;
                tracing::debug!(key = %grant.masked, expires_in_s = lifetime.as_secs(), "access token minted");
                Ok(())
            }
            Err(why) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let failures = cell.failures.fetch_add(1, Ordering::Relaxed).min(6);
                let wait = (FIRST_BACKOFF * 2u32.pow(failures)).min(MAX_BACKOFF);
                let at = started.saturating_duration_since(cell.since) + wait;
                cell.retry_at.store(at.as_millis() as u64, Ordering::Relaxed);
                // The client may see the message: the token URL stays in the log.
                let message = format!("cannot get an access token: {why}");
                let url = &grant.token_url.raw;
                tracing::warn!(key = %grant.masked, token_url = %url, retry_in_ms = wait.as_millis() as u64, "{message}");
                *cell.last_error.lock() = Some(message.clone());
                Err(message)
            }
        }
    }
}

/// The TLS client config the control thread mints with (webpki roots plus `upstream.ca_file`),
/// rebuilt when `ca_file` changes.
#[derive(Default)]
pub struct Tls {
    built: Option<(Option<std::path::PathBuf>, Arc<rustls::ClientConfig>)>,
}

impl Tls {
    /// Up to date for `config`; `None` when the roots cannot be loaded (minting then fails).
    pub fn update(&mut self, config: &Config) {
        let ca = config.upstream.ca_file.clone();
        if self.built.as_ref().is_some_and(|(c, _)| *c == ca) {
            return;
        }
        match crate::upstream::tls::client_config(ca.as_deref()) {
            Ok(tls) => self.built = Some((ca, tls)),
            Err(e) => tracing::warn!("token minting has no TLS roots: {e}"),
        }
    }

    fn config(&self) -> Option<&Arc<rustls::ClientConfig>> {
        self.built.as_ref().map(|(_, c)| c)
    }
}
