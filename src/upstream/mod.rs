//! The upstream client: pre-resolved DNS, TCP + rustls connections, a per-core keep-alive pool
//! and one-exchange-at-a-time HTTP/1.1 on rotor's codec.
//! Invariant: a connection is in exactly one place: the pool, or one `Exchange`; it enters the
//! pool only when a released `Exchange` drops (the checks in `Exchange::drop`) and leaves it only
//! when its socket is quiet (`idle`).

mod client;
mod connect;
pub mod dns;
mod error;
mod idle;
mod pool;
pub mod tls;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

pub use client::{Exchange, COALESCE_BODY_BYTES};
pub use connect::Io;
pub use error::{UpstreamError, UpstreamErrorKind};
pub use pool::Pool;

use crate::config::{BaseUrl, Scheme};
use crate::net::ReadTimer;

/// Which connections are interchangeable: same scheme, host, port and TLS trust settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub scheme: Scheme,
    pub host: Arc<str>,
    pub port: u16,
    /// Identity of the TLS client config (changes when `ca_file` changes).
    pub tls: u64,
}

impl PoolKey {
    pub fn for_base(base: &BaseUrl, tls: u64) -> Self {
        PoolKey {
            scheme: base.scheme,
            host: Arc::from(base.host.as_str()),
            port: base.port,
            tls,
        }
    }
}

/// Shared, `Send` inputs every core needs to open connections.
pub struct Connector {
    pub resolver: Arc<dns::Resolver>,
    pub tls: monoio_rustls::TlsConnector,
    pub tls_id: u64,
}

/// A pooled connection if one is idle, else a new one. `reused` tells the caller whether a
/// failure before the first response byte may be a stale connection.
pub async fn checkout(
    pool: &Rc<Pool>,
    connector: &Connector,
    key: &PoolKey,
    connect_timeout: Duration,
) -> Result<Exchange, UpstreamError> {
    if let Some((io, timer)) = pool.take(key) {
        return Ok(Exchange::new(io, timer, true, Rc::downgrade(pool), key.clone()));
    }
    connect_fresh(pool, connector, key, connect_timeout).await
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
        key.clone(),
    ))
}
