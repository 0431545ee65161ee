//! Phase `follow`, between `classify` and `relay`, for protocols whose answer takes more than
//! one upstream request (a Replicate prediction: created, polled at `urls.get` until finished,
//! or read from `urls.stream`). The adapter's `FollowUp` decides each next step; this module
//! makes the requests: `GET` with the attempt's own key (upstream state belongs to the key that
//! created it), on the same per-core pool and connector, only to hosts the adapter trusts.
//! Invariant: the exchange is bounded: polls pause `poll_interval_ms`, and no step starts past
//! `poll_max_wait_ms` after the first answer (then the attempt fails as an upstream timeout);
//! every follow-up body read is bounded by `FOLLOW_BODY_LIMIT`. A job left behind unfinished
//! (the wait ran out, the exchange failed, the client left between polls) is canceled
//! (`cancel::spawn`), so it does not run on, and bill, upstream.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::forward::Target;
use super::{Core, RequestContext};
use crate::codec::response::ResponseHead;
use crate::config::{BaseUrl, Provider};
use crate::gateway::Generation;
use crate::providers::follow::{FollowUp, Step};
use crate::providers::Adapter;
use crate::server::Responder;
use crate::upstream::{self, Exchange, Pool, PoolKey, UpstreamError, UpstreamErrorKind};

/// Largest prediction (or other follow-up answer) read whole.
const FOLLOW_BODY_LIMIT: usize = 8 * 1024 * 1024;
/// A host named only by an answer may not be resolved yet: the control thread resolves missed
/// names about once a second, so wait up to this long for it.
const DNS_WAIT: Duration = Duration::from_secs(3);

/// The answer to relay once the exchange is complete.
pub(super) struct Followed {
    pub exchange: Exchange,
    pub head: ResponseHead,
    /// The answer's body when the follow-up already read it (a finished prediction).
    pub body: Option<Bytes>,
    /// Where the finished job's record is (for a stream's usage at its end).
    pub record_url: Option<String>,
    /// Where the job is canceled while it may still run (see `FollowUp::cancel_url`).
    pub cancel_url: Option<String>,
    /// The answer came from a follow-up request, not the first one: phase `classify` has not
    /// judged it yet.
    pub followed: bool,
}

/// Why phase `follow` ended without an answer to relay.
pub(super) enum Unfollowed {
    /// The attempt failed (the next key may be tried).
    Upstream(UpstreamError),
    /// The client left while the job was polled: nobody wants the answer.
    ClientGone,
}

impl Followed {
    /// The first exchange's own answer, with no follow-up.
    #[inline]
    pub fn unfollowed(exchange: Exchange, head: ResponseHead) -> Followed {
        Followed {
            exchange,
            head,
            body: None,
            record_url: None,
            cancel_url: None,
            followed: false,
        }
    }
}

impl From<UpstreamError> for Unfollowed {
    fn from(e: UpstreamError) -> Self {
        Unfollowed::Upstream(e)
    }
}

/// GETs with the attempt's key, for follow-ups and a transform's fetch at the end.
pub(super) struct Fetcher<'a> {
    pub core: &'a Core,
    pub ctx: &'a RequestContext,
    pub provider: &'a Provider,
    pub adapter: Adapter,
    pub key: &'a str,
}

/// Phase `follow`: walks the adapter's follow-up from the first answer to the one the client
/// gets. Without a follow-up (every protocol but Replicate) the first answer is that one.
pub(super) async fn follow(
    fetcher: &Fetcher<'_>,
    target: &Target<'_>,
    client: &Responder<'_>,
    exchange: Exchange,
    head: ResponseHead,
) -> Result<Followed, Unfollowed> {
    let Some(mut plan) = target.adapter.follow_up(target.translation.as_ref()) else {
        return Ok(Followed::unfollowed(exchange, head));
    };
    let walked = walk(fetcher, plan.as_mut(), client, exchange, head).await;
    if walked.is_err() {
        // Whatever stopped the walk, the job may still run upstream.
        if let Some(url) = plan.cancel_url() {
            super::cancel::spawn(fetcher, url);
        }
    }
    walked
}

async fn walk(
    fetcher: &Fetcher<'_>,
    plan: &mut dyn FollowUp,
    client: &Responder<'_>,
    mut exchange: Exchange,
    mut head: ResponseHead,
) -> Result<Followed, Unfollowed> {
    let deadline = Instant::now() + plan.max_wait();
    let idle = fetcher.ctx.generation.config.upstream.stream_idle_timeout;
    let mut followed = false;
    let done = |plan: &dyn FollowUp, exchange, head, body, followed| Followed {
        exchange,
        head,
        body,
        record_url: plan.record_url().map(str::to_owned),
        cancel_url: plan.cancel_url().map(str::to_owned),
        followed,
    };
    loop {
        if !plan.reads(head.status) {
            return Ok(done(plan, exchange, head, None, followed));
        }
        let body = exchange.read_to_end(idle, FOLLOW_BODY_LIMIT).await?;
        match plan.next(head.status, &body) {
            Step::Deliver { status } => {
                head.status = status;
                return Ok(done(plan, exchange, head, Some(body), followed));
            }
            Step::Fail(message) => return Err(UpstreamError::new(UpstreamErrorKind::Protocol, message).into()),
            Step::Get { url, after, accept } => {
                if Instant::now() + after >= deadline {
                    let message = format!(
                        "the upstream job did not finish within poll_max_wait_ms ({} ms)",
                        plan.max_wait().as_millis()
                    );
                    return Err(UpstreamError::new(UpstreamErrorKind::FirstByteTimeout, message).into());
                }
                // The finished answer's connection goes back to the pool while we wait.
                exchange.release();
                if !after.is_zero() {
                    crate::deadline::sleep(after).await;
                }
                // Only a poll waits long enough for a client to give up; a stream's client is
                // watched by the relay.
                if client.peer_closed() {
                    return Err(Unfollowed::ClientGone);
                }
                (exchange, head) = fetcher.get(&url, accept).await?;
                followed = true;
            }
        }
    }
}

impl Fetcher<'_> {
    /// `GET url` with the attempt's key: the exchange and its response head. A URL on a host
    /// the adapter does not trust is refused before anything is sent.
    pub(super) async fn get(&self, url: &str, accept: &str) -> Result<(Exchange, ResponseHead), UpstreamError> {
        self.via().request(url, Some(accept)).await
    }

    /// The parts a request to a URL the upstream named needs (owned copies of them outlive the
    /// request in a cancel, `cancel::spawn`).
    pub(super) fn via(&self) -> Via<'_> {
        Via {
            pool: &self.core.pool,
            generation: &self.ctx.generation,
            provider: self.provider,
            adapter: self.adapter,
            key: self.key,
        }
    }

    /// `GET url` read whole: the body of a success, `None` otherwise (a transform's fetch at
    /// the end of a stream: usage is nice to have, never worth failing the answer for).
    pub(super) async fn read(&self, url: &str) -> Option<Bytes> {
        let (mut exchange, head) = self.get(url, "application/json").await.ok()?;
        if !(200..300).contains(&head.status) {
            return None;
        }
        let idle = self.ctx.generation.config.upstream.stream_idle_timeout;
        let body = exchange.read_to_end(idle, FOLLOW_BODY_LIMIT).await.ok()?;
        exchange.release();
        Some(body)
    }
}

/// What a request to a URL the upstream named is made with: the core's pool, the generation's
/// connector and timeouts, the attempt's provider and key.
pub(super) struct Via<'a> {
    pub pool: &'a Rc<Pool>,
    pub generation: &'a Generation,
    pub provider: &'a Provider,
    pub adapter: Adapter,
    pub key: &'a str,
}

impl Via<'_> {
    /// `GET url` (`accept` given) or a bodiless `POST url` (`accept` `None`): the exchange and
    /// its response head. A URL on a host the adapter does not trust is refused before
    /// anything is sent.
    pub(super) async fn request(
        &self,
        url: &str,
        accept: Option<&str>,
    ) -> Result<(Exchange, ResponseHead), UpstreamError> {
        let refuse = |why: String| UpstreamError::new(UpstreamErrorKind::Protocol, why);
        let (base, path) = split_url(url).map_err(refuse)?;
        if !self.adapter.trusts(self.provider, &base) {
            return Err(refuse(format!(
                "the upstream named {}://{} to follow, outside provider '{}''s own hosts; the key is not sent there",
                scheme_name(&base),
                base.host_header,
                self.provider.name
            )));
        }
        let host = &base.host_header;
        let head = match accept {
            Some(accept) => self
                .adapter
                .get_head_at(self.provider, host, self.key, &path, Some(accept)),
            None => self.adapter.post_empty_at(self.provider, host, self.key, &path),
        }
        .ok_or_else(|| UpstreamError::new(UpstreamErrorKind::Encode, "the follow-up URL cannot be sent"))?;
        let upstream_config = &self.generation.config.upstream;
        let connector = &self.generation.connector;
        let pool_key = PoolKey::for_base(&base, connector.tls_id);
        let mut exchange = self.checkout(&pool_key).await?;
        loop {
            let timeout = upstream_config.first_byte_timeout;
            match exchange
                .round_trip(&mut head.clone(), &Bytes::new(), timeout, false)
                .await
            {
                Ok(head) => return Ok((exchange, head)),
                // A stale pooled connection: once more on a fresh one (as `send` does).
                Err(e) if exchange.reused && e.before_response() => {
                    exchange =
                        upstream::connect_fresh(self.pool, connector, &pool_key, upstream_config.connect_timeout)
                            .await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A pooled or new connection; a host not resolved yet is waited for (bounded).
    async fn checkout(&self, pool_key: &PoolKey) -> Result<Exchange, UpstreamError> {
        let connector = &self.generation.connector;
        let timeout = self.generation.config.upstream.connect_timeout;
        let waited = Instant::now();
        loop {
            match upstream::checkout(self.pool, connector, pool_key, timeout).await {
                Err(e) if e.kind == UpstreamErrorKind::Dns && waited.elapsed() < DNS_WAIT => {
                    crate::deadline::sleep(Duration::from_millis(100)).await;
                }
                result => return result,
            }
        }
    }
}

fn scheme_name(base: &BaseUrl) -> &'static str {
    match base.scheme {
        crate::config::Scheme::Http => "http",
        crate::config::Scheme::Https => "https",
    }
}

/// An absolute `http(s)://host[:port]/path?query` -> (its origin as a `BaseUrl`, path + query).
/// A fragment is dropped; user info and control characters are refused.
fn split_url(url: &str) -> Result<(BaseUrl, String), String> {
    let url = url.split('#').next().unwrap_or("");
    let after_scheme = url
        .find("://")
        .map(|i| i + 3)
        .ok_or_else(|| format!("{url:?} is not an absolute URL"))?;
    let rest = url.get(after_scheme..).unwrap_or("");
    let end = rest.find(['/', '?']).map_or(url.len(), |i| after_scheme + i);
    let (origin, path) = url.split_at(end);
    let base = crate::config::parse_base_url(origin)?;
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!("{url:?} has spaces or control characters"));
    }
    let path = match path {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    };
    Ok((base, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_origin_and_target() {
        let (base, path) = split_url("https://api.replicate.com/v1/predictions/p1").unwrap();
        assert_eq!(
            (base.host.as_str(), base.port, path.as_str()),
            ("api.replicate.com", 443, "/v1/predictions/p1")
        );
        let (base, path) = split_url("http://127.0.0.1:9/v1/streams/x?a=1#frag").unwrap();
        assert_eq!(
            (base.host_header.as_str(), path.as_str()),
            ("127.0.0.1:9", "/v1/streams/x?a=1")
        );
        let (_, path) = split_url("https://h?x").unwrap();
        assert_eq!(path, "/?x");
        for bad in [
            "/relative",
            "ftp://h/x",
            "https://user@h/x",
            "https://h/a b",
            "https://h/a\r\nx: y",
        ] {
            assert!(split_url(bad).is_err(), "{bad}");
        }
    }
}
