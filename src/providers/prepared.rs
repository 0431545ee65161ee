//! The constant parts of upstream request heads, written and checked once per generation (at
//! start, on every reload and whenever a runtime key is added or removed, since each of those
//! builds a new generation), so a request appends them whole instead of writing and checking
//! them again: the `host` line, the provider's configured headers, each key's auth line, and
//! for the path most requests take (`post_path`) each key's whole start of the head.
//! Invariant: a prepared part holds exactly the bytes the checked writers (`codec::encode`,
//! `Adapter::put_key`) write for the same provider and key; a part they refuse is not prepared
//! (the request then takes the checked path and is refused there, as before). A key that is a
//! credential (Vertex) gets no prepared line: its access token changes, so it is written per
//! request from the current token. Key secrets inside never print (`Debug` shows lengths only).

use bytes::{BufMut, BytesMut};

use super::{Adapter, Protocol};
use crate::codec::encode::{put_request_header, put_target};
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
    /// The upstream path of the provider protocol's chat endpoint (what passthrough and
    /// translated chat requests both post to), when it is one fixed path.
    pub post_path: Option<&'static str>,
    /// `[key]`: `POST <base path><post_path> HTTP/1.1`, the host line and the key's auth line,
    /// as one piece: one copy per request instead of seven checked pieces (with `Fill` and
    /// `put_request_field`, `upstream_request_head` went from 1,218 to 704 instructions per
    /// chat request, callgrind); `None` where `keys` is, or without a `post_path`.
    posts: Vec<Option<Box<[u8]>>>,
}

/// `post_path` for a provider (`providers::prepare` builds these paths for chat requests).
fn post_path(provider: &Provider) -> Option<&'static str> {
    if provider.vertex.is_some() {
        return None;
    }
    match Protocol::of_provider(provider.kind)? {
        Protocol::OpenAi => Some("/chat/completions"),
        Protocol::Anthropic => Some("/messages"),
        Protocol::Cohere => Some("/chat"),
        _ => None,
    }
}

/// The start of a POST head to `path` for one key: request line, then `host` and `auth`.
fn post_start(provider: &Provider, path: &str, host: &[u8], auth: &[u8]) -> Option<Box<[u8]>> {
    let mut out = BytesMut::new();
    put_target(&mut out, b"POST").ok()?;
    out.put_u8(b' ');
    put_target(&mut out, provider.base_url.path.as_bytes()).ok()?;
    put_target(&mut out, path.as_bytes()).ok()?;
    out.put_slice(b" HTTP/1.1\r\n");
    out.put_slice(host);
    out.put_slice(auth);
    Some(Box::from(&out[..]))
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
        let keys: Vec<Option<Box<[u8]>>> = provider
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
        let post_path = post_path(provider);
        let posts = keys
            .iter()
            .map(|line: &Option<Box<[u8]>>| post_start(provider, post_path?, &host, line.as_deref()?))
            .collect();
        Some(ProviderHead {
            host: Box::from(&host[..]),
            fixed: Box::from(&fixed[..]),
            keys,
            post_path,
            posts,
        })
    }

    /// The auth line of the provider's key at `key`, if prepared.
    pub fn key_line(&self, key: usize) -> Option<&[u8]> {
        self.keys.get(key)?.as_deref()
    }

    /// The start of a POST head to `post_path` with the key at `key`, if prepared.
    pub fn post_line(&self, key: usize) -> Option<&[u8]> {
        self.posts.get(key)?.as_deref()
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
