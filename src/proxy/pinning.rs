//! Account-scoped objects on the request path: `owner` finds the provider and key a request's
//! object ids were created with (the plan is then that provider only, the key that key only),
//! and `PinTap` pins the ids a create's 2xx JSON answer carries to the key that made it.
//! Invariant: a request naming a pinned object reaches only its creating key, or gets a 404 in
//! the API's envelope when that key is no longer configured; the pin table lock is never held
//! across an await.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::error::{ErrorKind, ProxyError, Side};
use crate::codec::head::Method;
use crate::config::{Config, KeyId, Provider, Route};
use crate::gateway::Gateway;
use crate::pins::{created_ids, creates_objects, referenced_ids, Pin};
use crate::providers::transform::{Emit, ResponseTransform};
use crate::server::Request;
use crate::storage::windows::unix_now_ms;
use crate::usage::Usage;

/// A create's answer is read for ids up to this size (larger bodies pass untouched).
const MAX_TAPPED_BYTES: usize = 256 * 1024;

/// The provider and key an object of the request was created with.
#[derive(Debug, Clone, Copy)]
pub(super) struct Owner {
    pub(super) provider: usize,
    pub(super) key: usize,
}

/// The owner of the first pinned id the request names; a 404 when that key (or its provider)
/// is no longer configured.
pub(super) fn owner(gateway: &Gateway, config: &Config, req: &Request) -> Result<Option<Owner>, ProxyError> {
    for id in referenced_ids(req.head.path(), &req.body.bytes()) {
        let Some(pin) = gateway.pins.get(&id) else {
            continue;
        };
        let provider = config.providers.iter().find(|p| *p.name == *pin.provider && p.enabled);
        let found = provider.and_then(|p| Some((p.index, p.keys.iter().position(|k| k.id == pin.key)?)));
        return match found {
            Some((provider, key)) => Ok(Some(Owner { provider, key })),
            None => {
                let message = format!(
                    "the object '{id}' was created with a key of provider '{}' that is no longer configured; no other key can see it",
                    pin.provider
                );
                Err(ProxyError::new(ErrorKind::NotFound, Side::Downstream, message).with_code("object_key_gone"))
            }
        };
    }
    Ok(None)
}

/// A route with a candidate on the owner's provider: the request's own route when it has one,
/// else any route (model-less requests go where the object lives).
pub(super) fn route_of<'c>(
    config: &'c Config,
    route: &'c Route,
    owner: Owner,
) -> Result<(&'c Route, usize), ProxyError> {
    let on = |r: &'c Route| Some((r, r.candidates.iter().position(|c| c.provider == owner.provider)?));
    on(route)
        .or_else(|| config.routes.by_model.values().find_map(|r| on(r)))
        .or_else(|| config.routes.wildcard.as_deref().and_then(on))
        .ok_or_else(|| {
            let message = "the object's provider no longer serves any route";
            ProxyError::new(ErrorKind::NotFound, Side::Downstream, message).with_code("object_key_gone")
        })
}

/// Whether the answer to this request may carry ids to pin (a POST under a collection).
pub(super) fn records(req: &Request) -> bool {
    req.head.method == Method::Post && creates_objects(req.head.path())
}

/// Wraps the transform of a 2xx answer so its ids are pinned to `provider`'s key `key`.
pub(super) fn tap(
    inner: Box<dyn ResponseTransform>,
    gateway: &Arc<Gateway>,
    provider: &Provider,
    key: KeyId,
    max_pins: usize,
) -> Box<dyn ResponseTransform> {
    Box::new(PinTap {
        inner,
        gateway: gateway.clone(),
        provider: Arc::from(provider.name.as_str()),
        key,
        max_pins,
        seen: BytesMut::new(),
        overflow: false,
    })
}

struct PinTap {
    inner: Box<dyn ResponseTransform>,
    gateway: Arc<Gateway>,
    provider: Arc<str>,
    key: KeyId,
    max_pins: usize,
    /// A streamed (chunked) answer so far, while under `MAX_TAPPED_BYTES`.
    seen: BytesMut,
    overflow: bool,
}

impl PinTap {
    fn pin(&self, body: &[u8]) {
        let created_ms = unix_now_ms();
        for id in created_ids(body) {
            let pin = Pin {
                provider: self.provider.clone(),
                key: self.key,
                created_ms,
            };
            self.gateway.pins.insert(&id, pin, self.max_pins);
        }
    }
}

impl ResponseTransform for PinTap {
    fn content_type(&self) -> Option<&'static [u8]> {
        self.inner.content_type()
    }

    fn full(&mut self, status: u16, body: Bytes) -> Bytes {
        if (200..300).contains(&status) && body.len() <= MAX_TAPPED_BYTES {
            self.pin(&body);
        }
        self.inner.full(status, body)
    }

    fn status(&self, upstream: u16) -> u16 {
        self.inner.status(upstream)
    }

    fn piece(&mut self, piece: Bytes) -> Emit {
        if !self.overflow && self.seen.len() + piece.len() <= MAX_TAPPED_BYTES {
            self.seen.extend_from_slice(&piece);
        } else {
            self.overflow = true;
            self.seen = BytesMut::new();
        }
        self.inner.piece(piece)
    }

    fn end(&mut self) -> Emit {
        if !self.seen.is_empty() {
            let seen = std::mem::take(&mut self.seen);
            self.pin(&seen);
        }
        self.inner.end()
    }

    fn fail(&mut self, message: &str) -> Emit {
        self.seen = BytesMut::new();
        self.inner.fail(message)
    }

    fn usage(&self) -> Usage {
        self.inner.usage()
    }
}
