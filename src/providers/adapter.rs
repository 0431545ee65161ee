//! The seam between the request path and a wire protocol: everything `proxy/` needs to know
//! about a provider's protocol it asks an `Adapter` for (the key's auth headers, the request
//! plan, the response transform or usage tap, the retry wait an error body names, the probe
//! request). Invariant: only this module and the protocol modules under `providers/` look at a
//! provider's kind, so `proxy/` never branches on it and a new protocol is one more arm here.

use crate::codec::Field;
use bytes::{BufMut, Bytes, BytesMut};

use super::follow::FollowUp;
use super::transform::ResponseTransform;
use super::{Front, PrepareError, Prepared, Translation};
use crate::codec::encode::{put_request_header as put_header, put_target, UnsafeHead};
use crate::codec::head::RequestHead;
use crate::config::{Poll, Provider, ProviderKind, ResponsesMode};
use crate::usage::anthropic::AnthropicUsageTap;
use crate::usage::gemini::GeminiUsageTap;
use crate::usage::openai::{Mode, OpenAiUsageTap};
use crate::usage::responses::ResponsesUsageTap;

/// What `Adapter::transform` hands the relay: the OpenAI usage tap (the common answer, relayed
/// on its own protocol) inline, any other transform boxed. Boxing the tap too cost an
/// allocation, a copy and a free per request (~130 instructions, callgrind, issue 18).
pub enum Transform {
    OpenAi(OpenAiUsageTap),
    Boxed(Box<dyn ResponseTransform>),
}

impl Transform {
    pub fn as_dyn(&mut self) -> &mut dyn ResponseTransform {
        match self {
            Transform::OpenAi(tap) => tap,
            Transform::Boxed(transform) => transform.as_mut(),
        }
    }

    /// Boxed, to be wrapped by another transform (`proxy::pinning::tap`).
    pub fn boxed(self) -> Box<dyn ResponseTransform> {
        match self {
            Transform::OpenAi(tap) => Box::new(tap),
            Transform::Boxed(transform) => transform,
        }
    }
}

/// The protocol adapter of one provider, chosen by its configured kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adapter {
    kind: ProviderKind,
    /// Whether the upstream serves `/v1/responses` itself (`responses = "native"`).
    responses: ResponsesMode,
    /// The bound on multi-request exchanges (Replicate's polling).
    poll: Poll,
}

impl Adapter {
    pub fn of(provider: &Provider) -> Adapter {
        Adapter {
            kind: provider.kind,
            responses: provider.responses,
            poll: provider.poll,
        }
    }

    /// Plans one attempt (see `providers::prepare`): upstream path and body, and the
    /// translation the answer needs. `same` builds the same-protocol body (the model splice).
    pub fn prepare(
        self,
        client: super::ClientPath<'_>,
        body: &Bytes,
        upstream_model: &str,
        client_model: &str,
        max_depth: usize,
        same: impl FnOnce() -> Bytes,
    ) -> Result<Prepared, PrepareError> {
        // The Responses API's paths: bytes untouched to an upstream that serves it; a stored
        // response (`/v1/responses/{id}...`) exists only there.
        let client_path = client.path;
        match super::responses::native(client_path, self.responses) {
            Some(true) => {
                return Ok(Prepared {
                    body: same(),
                    path: client_path.get(3..).unwrap_or("").to_owned().into(),
                    translation: None,
                    dialog: None,
                    header: None,
                })
            }
            Some(false) => {
                return Err(PrepareError::Unavailable(
                    "stored responses are not available through a translated provider: it serves the Responses API by translating to its own protocol (responses = \"translate\") and keeps no stored responses, so GET, DELETE and input_items of /v1/responses/{id} work only through a provider with responses = \"native\"".to_owned(),
                ))
            }
            None => {}
        }
        super::prepare(
            client,
            self.kind,
            self.poll,
            body,
            upstream_model,
            client_model,
            max_depth,
            same,
        )
    }

    /// The upstream path of a request at `front` that this provider serves on the client's
    /// own protocol as it is (a chat request to an OpenAI-protocol provider, a Messages
    /// request to an Anthropic one): `prepare` plans exactly `Prepared::relayed` with this path
    /// for it (a test holds the two equal), so the request path skips its dispatch. `None` for
    /// every other front door and protocol: ask `prepare`.
    pub fn relayed_path(self, front: Front) -> Option<&'static str> {
        match (front, super::Protocol::of_provider(self.kind)?) {
            (Front::Chat, super::Protocol::OpenAi) => Some("/chat/completions"),
            (Front::Messages, super::Protocol::Anthropic) => Some("/messages"),
            _ => None,
        }
    }

    /// Writes the key in the provider's way. `client` is the client's request head when one is
    /// relayed: a client's own `anthropic-version` is kept, otherwise rotor names one.
    pub fn put_auth(self, out: &mut BytesMut, key: &str, client: Option<&RequestHead>) -> Result<(), UnsafeHead> {
        self.put_key(out, key)?;
        self.put_version(out, client);
        Ok(())
    }

    /// The key's own header line: the part of `put_auth` that depends on the key alone, so
    /// `providers::prepared` writes it once per key.
    pub fn put_key(self, out: &mut BytesMut, key: &str) -> Result<(), UnsafeHead> {
        match self.kind {
            ProviderKind::Anthropic => put_header(out, b"x-api-key", key.as_bytes()),
            ProviderKind::Gemini => put_header(out, b"x-goog-api-key", key.as_bytes()),
            ProviderKind::OnDemand => put_header(out, b"apikey", key.as_bytes()),
            _ => put_bearer(out, key),
        }
    }

    /// The rest of `put_auth`, per request: Anthropic's `anthropic-version` unless the client
    /// named its own.
    pub fn put_version(self, out: &mut BytesMut, client: Option<&RequestHead>) {
        if self.kind == ProviderKind::Anthropic
            && client.is_none_or(|head| head.field(Field::AnthropicVersion).is_none())
        {
            out.put_slice(b"anthropic-version: 2023-06-01\r\n");
        }
    }

    /// The wait a provider asks for in a 429 body (Gemini's `RetryInfo`); headers are read by
    /// `proxy::classify`.
    pub fn retry_delay(self, body: &[u8], max_depth: usize) -> Option<std::time::Duration> {
        match self.kind {
            ProviderKind::Gemini | ProviderKind::Vertex => super::gemini::retry_delay(body, max_depth),
            _ => None,
        }
    }

    /// What the answer passes through on its way to the client: the translation's transform,
    /// or on the same protocol a usage tap that leaves the bytes untouched. `max_depth`
    /// (`server.max_json_depth`) bounds what the taps parse.
    pub fn transform(
        self,
        translation: Option<&Translation>,
        front: Front,
        usage_mode: Mode,
        status: u16,
        max_depth: usize,
    ) -> Transform {
        Transform::Boxed(match translation {
            Some(translation) => translation.transform(status),
            // Anthropic to Anthropic: bytes untouched, usage read on the way.
            None if front == Front::Messages => Box::new(AnthropicUsageTap::new(max_depth)),
            // A native Responses upstream: bytes untouched, usage read on the way.
            None if front == Front::Responses => Box::new(ResponsesUsageTap::new(max_depth)),
            // Gemini to Gemini (the Gemini front door): the same, with `usageMetadata`.
            None if front == Front::Gemini => Box::new(GeminiUsageTap::new(max_depth)),
            None => return Transform::OpenAi(OpenAiUsageTap::new(usage_mode, max_depth)),
        })
    }

    /// Whether a translated answer of this kind takes more requests (`follow_up`); asked on
    /// every attempt, so it builds nothing.
    pub fn has_follow_up(self) -> bool {
        matches!(self.kind, ProviderKind::Replicate)
    }

    /// The follow-up of a translated answer that takes more requests (a Replicate
    /// prediction: poll it or read its stream); `None` = the first answer is the answer.
    pub fn follow_up(self, translation: Option<&Translation>) -> Option<Box<dyn FollowUp>> {
        let translation = translation.filter(|_| self.has_follow_up())?;
        match self.kind {
            ProviderKind::Replicate => Some(Box::new(super::replicate::PredictionFollow::new(
                translation.stream,
                self.poll,
                translation.max_depth,
            ))),
            _ => None,
        }
    }

    /// Whether the key may go to a URL the upstream named (a prediction's `urls.get` and
    /// `urls.stream`): the base URL's own host, or over https a host of the provider's own
    /// domains (Replicate streams from `*.replicate.net`). Anything else would hand the key
    /// to whoever controls the answer.
    pub fn trusts(self, provider: &Provider, target: &crate::config::BaseUrl) -> bool {
        if target.host == provider.base_url.host {
            return target.scheme == provider.base_url.scheme || target.scheme == crate::config::Scheme::Https;
        }
        let domains: &[&str] = match self.kind {
            ProviderKind::Replicate => &["replicate.com", "replicate.net"],
            _ => &[],
        };
        let host = target.host.as_str();
        target.scheme == crate::config::Scheme::Https
            && domains
                .iter()
                .any(|d| host == *d || host.strip_suffix(d).is_some_and(|rest| rest.ends_with('.')))
    }

    /// The cheap authenticated `GET` that says whether a key works (quarantine probes, key
    /// validation): `<base>/models` where the provider serves it. Replicate's `/account`
    /// answers for the token itself; Cohere lists models under v1 only; Workers AI's
    /// OpenAI-compatible API has no model list, its native model search does.
    pub fn probe_path(self, provider: &Provider) -> String {
        let base = provider.base_url.path.as_str();
        match self.kind {
            ProviderKind::Replicate => format!("{base}/account"),
            // on-demand serves no model list; its session list answers for the key.
            ProviderKind::OnDemand => format!("{base}/sessions?externalUserId=rotor"),
            ProviderKind::Cohere => match base.strip_suffix("/v2") {
                Some(root) => format!("{root}/v1/models"),
                None => format!("{base}/models"),
            },
            ProviderKind::Cloudflare => match base.strip_suffix("/v1") {
                Some(ai) => format!("{ai}/models/search"),
                None => format!("{base}/models"),
            },
            _ => format!("{base}/models"),
        }
    }

    /// `GET <path>` with the key in the provider's way: the probe of a quarantined key
    /// (`<base>/models`), key validation and balance reads. `None` when a piece would break
    /// the head (the writers refuse CR, LF and NUL).
    pub fn get_head(self, provider: &Provider, key: &str, path: &str) -> Option<BytesMut> {
        self.get_head_at(provider, &provider.base_url.host_header, key, path, None)
    }

    /// `get_head` for a URL the upstream named (`host` may differ from the base URL's), with
    /// an `accept` header when one is given.
    pub fn get_head_at(
        self,
        provider: &Provider,
        host: &str,
        key: &str,
        path: &str,
        accept: Option<&str>,
    ) -> Option<BytesMut> {
        self.bodiless_head(b"GET ", provider, host, key, path, accept)
    }

    /// An authenticated `POST path` without a body (Replicate's `urls.cancel`), on `host`.
    pub fn post_empty_at(self, provider: &Provider, host: &str, key: &str, path: &str) -> Option<BytesMut> {
        self.bodiless_head(b"POST ", provider, host, key, path, Some("application/json"))
    }

    fn bodiless_head(
        self,
        method: &[u8],
        provider: &Provider,
        host: &str,
        key: &str,
        path: &str,
        accept: Option<&str>,
    ) -> Option<BytesMut> {
        let mut out = BytesMut::with_capacity(256);
        out.put_slice(method);
        put_target(&mut out, path.as_bytes()).ok()?;
        out.put_slice(b" HTTP/1.1\r\n");
        put_header(&mut out, b"host", host.as_bytes()).ok()?;
        if let Some(accept) = accept {
            put_header(&mut out, b"accept", accept.as_bytes()).ok()?;
        }
        if method == b"POST " {
            out.put_slice(b"content-length: 0\r\n");
        }
        self.put_auth(&mut out, key, None).ok()?;
        for (name, value) in &provider.headers {
            put_header(&mut out, name.as_bytes(), value.as_bytes()).ok()?;
        }
        out.put_slice(b"\r\n");
        Some(out)
    }
}

/// `authorization: Bearer <key>`, checked like every other header.
pub fn put_bearer(out: &mut BytesMut, key: &str) -> Result<(), UnsafeHead> {
    if crate::codec::encode::holds_any(key.as_bytes(), true) {
        return Err(UnsafeHead("header value"));
    }
    out.put_slice(b"authorization: Bearer ");
    out.put_slice(key.as_bytes());
    out.put_slice(b"\r\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_base_url, parse_str, ConfigSource};

    fn provider(kind: &str, base: &str) -> std::sync::Arc<Provider> {
        let text = format!("[[providers]]\nname = \"p\"\nkind = \"{kind}\"\nbase_url = \"{base}\"\nkeys = [\"k\"]\n");
        let config = parse_str(&text, ConfigSource::Environment).unwrap();
        config.providers[0].clone()
    }

    #[test]
    fn the_key_follows_only_to_the_providers_own_hosts() {
        let p = provider("replicate", "https://api.replicate.com/v1");
        let a = Adapter::of(&p);
        let trusts = |url: &str| a.trusts(&p, &parse_base_url(url).unwrap());
        assert!(trusts("https://api.replicate.com"));
        assert!(trusts("https://stream-b.svc.rno2.c.replicate.net"));
        assert!(trusts("https://replicate.com"));
        assert!(
            !trusts("http://stream.replicate.net"),
            "never in clear text to another host"
        );
        assert!(!trusts("http://api.replicate.com"), "no downgrade");
        assert!(!trusts("https://evilreplicate.net"));
        assert!(!trusts("https://replicate.net.evil.com"));
        assert!(!trusts("https://example.com"));
        // Another kind trusts its base host only.
        let o = provider("openai", "http://127.0.0.1:9/v1");
        let b = Adapter::of(&o);
        assert!(b.trusts(&o, &parse_base_url("http://127.0.0.1:10").unwrap()));
        assert!(!b.trusts(&o, &parse_base_url("https://stream.replicate.net").unwrap()));
    }

    /// Where `relayed_path` answers, `prepare` plans exactly `Prepared::relayed` with that path
    /// (the request path skips `prepare` for it); every kind, both response modes, every door.
    #[test]
    fn relayed_paths_are_what_prepare_plans() {
        use crate::config::{ProviderKind as K, ResponsesMode as R};
        let body = Bytes::from_static(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        let doors = [
            "/v1/chat/completions",
            "/v1/messages",
            "/v1/responses",
            "/v1/completions",
            "/v1/embeddings",
        ];
        let kinds = [
            K::OpenAi,
            K::Anthropic,
            K::Gemini,
            K::Vertex,
            K::Replicate,
            K::Cohere,
            K::Cloudflare,
            K::OnDemand,
        ];
        let mut relayed = 0;
        for kind in kinds {
            for responses in [R::Native, R::Translate] {
                let adapter = Adapter {
                    kind,
                    responses,
                    poll: Poll::default(),
                };
                for door in doors {
                    let client = super::super::ClientPath::of(door);
                    let Some(path) = adapter.relayed_path(client.front) else {
                        continue;
                    };
                    relayed += 1;
                    let spliced = Bytes::from_static(b"{}");
                    let planned = adapter.prepare(client, &body, "u", "m", 64, || spliced.clone());
                    let planned = match planned {
                        Ok(planned) => planned,
                        Err(e) => panic!("{kind:?} {door}: {e:?}"),
                    };
                    assert_eq!((&planned.body, &planned.path[..]), (&spliced, path), "{kind:?} {door}");
                    assert!(matches!(planned.path, std::borrow::Cow::Borrowed(_)));
                    let bare = planned.translation.is_none() && planned.dialog.is_none() && planned.header.is_none();
                    assert!(bare, "{kind:?} {door}");
                }
            }
        }
        // Chat to OpenAI and Cloudflare, Messages to Anthropic, in both modes.
        assert_eq!(relayed, 6);
    }

    #[test]
    fn probes_use_an_endpoint_each_provider_serves() {
        let path = |kind: &str, base: &str| {
            let p = provider(kind, base);
            Adapter::of(&p).probe_path(&p)
        };
        assert_eq!(path("openai", "https://api.openai.com/v1"), "/v1/models");
        assert_eq!(path("replicate", "https://api.replicate.com/v1"), "/v1/account");
        assert_eq!(path("cohere", "https://api.cohere.com/v2"), "/v1/models");
        assert_eq!(path("cohere", "http://127.0.0.1:9/proxy"), "/proxy/models");
        let cf = "[[providers]]\nname = \"p\"\nkind = \"cloudflare\"\naccount_id = \"a1\"\nkeys = [\"k\"]\n";
        let c = parse_str(cf, ConfigSource::Environment).unwrap();
        let p = &c.providers[0];
        assert_eq!(Adapter::of(p).probe_path(p), "/client/v4/accounts/a1/ai/models/search");
    }
}
