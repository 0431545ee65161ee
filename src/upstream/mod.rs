//! The upstream client: pre-resolved DNS, TCP + rustls connections, a per-core keep-alive pool
//! and one-exchange-at-a-time HTTP/1.1 on rotor's codec.
//! Invariant: a connection is in exactly one place: the pool, or one `Exchange`; it enters the
//! pool only in `Exchange::release` (a clean message boundary, the TLS session agreeing; an
//! exchange dropped unreleased closes it) and leaves it only when its socket is quiet (`idle`).

mod client;
mod connect;
pub mod dns;
mod error;
mod idle;
mod pool;
pub mod tls;
mod tls_session;
mod tls_stream;
#[cfg(test)]
mod tls_stream_tests;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

pub use client::{send_pooled, Exchange, Trip, COALESCE_BODY_BYTES};
pub use connect::Io;
pub use error::{UpstreamError, UpstreamErrorKind};
pub use pool::Pool;

use crate::config::{BaseUrl, Scheme};
use crate::net::ReadTimer;

/// Which connections are interchangeable: same scheme, host, port and TLS trust settings.
/// Built once per provider and generation (`Connector::pool_key`), so a request neither
/// allocates its host nor hashes it: the hash is taken at construction and is all the pool's
/// map hashes; equality compares the host by address first (the pool's key and the request's
/// are clones of one `Arc` while a generation serves). Both cost ~420 instructions per chat
/// request with the host allocated, hashed and compared at every checkout and release
/// (callgrind, issue 18).
#[derive(Debug, Clone, Eq)]
pub struct PoolKey {
    pub scheme: Scheme,
    pub host: Arc<str>,
    pub port: u16,
    /// Identity of the TLS client config (changes when `ca_file` changes).
    pub tls: u64,
    /// Of the four fields above, taken once by `new`.
    hash: u64,
}

impl PoolKey {
    pub fn new(scheme: Scheme, host: Arc<str>, port: u16, tls: u64) -> Self {
        let hash = ahash::RandomState::with_seeds(5, 7, 11, 13).hash_one((scheme, &*host, port, tls));
        PoolKey {
            scheme,
            host,
            port,
            tls,
            hash,
        }
    }

    pub fn for_base(base: &BaseUrl, tls: u64) -> Self {
        PoolKey::new(base.scheme, Arc::from(base.host.as_str()), base.port, tls)
    }
}

impl PartialEq for PoolKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
            && self.scheme == other.scheme
            && self.port == other.port
            && self.tls == other.tls
            && (Arc::ptr_eq(&self.host, &other.host) || self.host == other.host)
    }
}

impl std::hash::Hash for PoolKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Shared, `Send` inputs every core needs to open connections.
pub struct Connector {
    pub resolver: Arc<dns::Resolver>,
    pub tls: Arc<rustls::ClientConfig>,
    pub tls_id: u64,
    /// Each provider's pool key, by provider index (built with the generation).
    pool_keys: Vec<PoolKey>,
}

impl Connector {
    /// `providers`: every provider's base URL, by provider index.
    pub fn new<'a>(
        resolver: Arc<dns::Resolver>,
        tls: Arc<rustls::ClientConfig>,
        tls_id: u64,
        providers: impl Iterator<Item = &'a BaseUrl>,
    ) -> Self {
        let pool_keys = providers.map(|base| PoolKey::for_base(base, tls_id)).collect();
        Connector {
            resolver,
            tls,
            tls_id,
            pool_keys,
        }
    }

    /// The pool key of provider `index` with base URL `base` (built anew only for a provider
    /// this generation does not know, which the request path never asks for).
    pub fn pool_key(&self, index: usize, base: &BaseUrl) -> std::borrow::Cow<'_, PoolKey> {
        match self.pool_keys.get(index) {
            Some(key) => std::borrow::Cow::Borrowed(key),
            None => std::borrow::Cow::Owned(PoolKey::for_base(base, self.tls_id)),
        }
    }
}

/// A pooled connection if one is idle, else a new one. `reused` tells the caller whether a
/// failure before the first response byte may be a stale connection.
pub async fn checkout(
    pool: &Rc<Pool>,
    connector: &Connector,
    key: &PoolKey,
    connect_timeout: Duration,
) -> Result<Exchange, UpstreamError> {
    match pooled(pool, key) {
        Some(exchange) => Ok(exchange),
        None => connect_fresh(pool, connector, key, connect_timeout).await,
    }
}

/// An exchange on an idle pooled connection for `key`, if there is one: `checkout` without a
/// future. The request path calls it first and awaits `connect_fresh` only when it finds none:
/// the `checkout` future it awaited was built, polled and dropped on every request even though
/// a pool hit never waits.
pub fn pooled(pool: &Rc<Pool>, key: &PoolKey) -> Option<Exchange> {
    let (io, timer, shelf) = pool.take(key)?;
    Some(Exchange::new(io, timer, true, Rc::downgrade(pool), shelf))
}

/// Opens a fresh connection, bypassing the pool's idle ones (the retry after a stale pooled
/// one); it returns to `pool` when released clean.
pub async fn connect_fresh(
    pool: &Rc<Pool>,
    connector: &Connector,
    key: &PoolKey,
    connect_timeout: Duration,
) -> Result<Exchange, UpstreamError> {
    // Boxed: the connect future (TCP + TLS handshake, ~3 KB) is on the rare path; inline it
    // would grow every request's future, which is moved and held on every request.
    let io = Box::pin(connect::connect(
        key,
        &connector.resolver,
        &connector.tls,
        connect_timeout,
    ))
    .await?;
    Ok(Exchange::new(
        Box::new(io),
        ReadTimer::new(),
        false,
        Rc::downgrade(pool),
        pool.shelf(key),
    ))
}
