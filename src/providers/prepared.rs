//! The constant parts of upstream request heads, written and checked once per generation (at
//! start, on every reload and whenever a runtime key is added or removed, since each of those
//! builds a new generation), so a request appends them whole instead of writing and checking
//! them again: the `host` line, the provider's configured headers, and each key's auth line.
//! Invariant: a prepared part holds exactly the bytes the checked writers (`codec::encode`,
//! `Adapter::put_key`) write for the same provider and key; a part they refuse is not prepared
//! (the request then takes the checked path and is refused there, as before). A key that is a
//! credential (Vertex) gets no prepared line: its access token changes, so it is written per
//! request from the current token. Key secrets inside never print (`Debug` shows lengths only).

use bytes::BytesMut;

use super::Adapter;
use crate::codec::encode::put_request_header;
use crate::config::{Config, Provider};

/// `[provider]`: the prepared head parts of every provider of one generation's config.
#[derive(Default)]
pub struct PreparedHeads {
    providers: Vec<Option<ProviderHead>>,
}

/// One provider's prepared parts.
pub struct ProviderHead {
    /// `host: <host>\r\n`.
    pub host: Box<[u8]>,
    /// The provider's configured headers, each `name: value\r\n`, in order.
    pub fixed: Box<[u8]>,
    /// `[key]`: the key's auth line (`Adapter::put_key`); `None` for a credential or a secret
    /// the writer refuses.
    keys: Vec<Option<Box<[u8]>>>,
}

impl ProviderHead {
    fn of(provider: &Provider) -> Option<ProviderHead> {
        let mut host = BytesMut::new();
        put_request_header(&mut host, b"host", provider.base_url.host_header.as_bytes()).ok()?;
        let mut fixed = BytesMut::new();
        for (name, value) in &provider.headers {
            put_request_header(&mut fixed, name.as_bytes(), value.as_bytes()).ok()?;
        }
        let adapter = Adapter::of(provider);
        let keys = provider
            .keys
            .iter()
            .map(|key| {
                if provider.vertex.is_some() {
                    return None;
                }
                let mut line = BytesMut::new();
                adapter.put_key(&mut line, key.secret.expose()).ok()?;
                Some(Box::from(&line[..]))
            })
            .collect();
        Some(ProviderHead {
            host: Box::from(&host[..]),
            fixed: Box::from(&fixed[..]),
            keys,
        })
    }

    /// The auth line of the provider's key at `key`, if prepared.
    pub fn key_line(&self, key: usize) -> Option<&[u8]> {
        self.keys.get(key)?.as_deref()
    }
}

impl PreparedHeads {
    pub fn for_config(config: &Config) -> PreparedHeads {
        PreparedHeads {
            providers: config.providers.iter().map(|p| ProviderHead::of(p)).collect(),
        }
    }

    /// The prepared parts of the provider at `index` (`Provider::index`), if any.
    pub fn get(&self, index: usize) -> Option<&ProviderHead> {
        self.providers.get(index)?.as_ref()
    }
}

impl std::fmt::Debug for ProviderHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prepared = self.keys.iter().filter(|k| k.is_some()).count();
        write!(
            f,
            "ProviderHead({} bytes fixed, {prepared} key lines)",
            self.host.len() + self.fixed.len()
        )
    }
}
