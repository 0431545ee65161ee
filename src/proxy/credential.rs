//! What phase `send` authenticates with: a key's secret, or for a key that is a credential
//! (Vertex `google_oauth` / `service_account`) its current access token. A credential with no
//! usable token asks the control thread to mint one and waits (without blocking the core); a
//! 401 answered to a minted token forces one refresh and one resend on the same key, which
//! does not count as another attempt (like a stale pooled connection's resend).
//! Invariant: workers never mint; they read the token cell (lock-free) or await the control
//! thread's reply, bounded by `MINT_WAIT`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use super::forward::Target;
use super::headers::Auth;
use super::send::{answer_kept, discard, send};
use super::{Core, RequestContext};
use crate::codec::response::ResponseHead;
use crate::config::{Key, Provider};
use crate::gateway::commands::Command;
use crate::gateway::Generation;
use crate::server::Request;
use crate::tokens::Token;
use crate::upstream::{Exchange, UpstreamError, UpstreamErrorKind};

/// The longest a request waits for the control thread to mint a token.
const MINT_WAIT: Duration = Duration::from_secs(30);

/// The credential sent for one key: its secret (with the auth line the generation prepared for
/// it), or a minted token (held, not copied; its line is written per request).
enum Credential<'a> {
    Secret(Auth<'a>),
    Token(Arc<Token>),
}

impl Credential<'_> {
    fn auth(&self) -> Auth<'_> {
        match self {
            Credential::Secret(auth) => *auth,
            Credential::Token(token) => Auth {
                key: token.access.expose(),
                line: None,
                post: None,
            },
        }
    }
}

/// The key's credential as it is now, without minting: its secret, its current token, or ""
/// for a credential that has none yet (probes then fail like a refused key).
pub(super) fn current<'g>(generation: &'g Generation, provider: &'g Provider, key: usize) -> Cow<'g, str> {
    match generation.tokens.get(provider.index, key) {
        None => Cow::Borrowed(provider.keys.get(key).map_or("", |k| k.secret.expose())),
        Some(cell) => Cow::Owned(cell.token().map(|t| t.access.expose().to_owned()).unwrap_or_default()),
    }
}

/// `current` for a key named by itself (key validation and balances walk keys, not indexes).
pub(super) fn current_of<'g>(generation: &'g Generation, provider: &'g Provider, key: &'g Key) -> Cow<'g, str> {
    match provider.keys.iter().position(|k| k.id == key.id) {
        Some(index) => current(generation, provider, index),
        None => Cow::Borrowed(key.secret.expose()),
    }
}

/// The auth of a key that is a plain secret (no token cell): the common case, sent by
/// `send` directly. `None` for a credential key, which goes through `send_authenticated`.
pub(super) fn plain_secret<'g>(generation: &'g Generation, provider: &'g Provider, key: usize) -> Option<Auth<'g>> {
    if generation.tokens.get(provider.index, key).is_some() {
        return None;
    }
    Some(secret_auth(generation, provider, key))
}

/// A plain secret key's auth, with its prepared lines when the generation has them.
fn secret_auth<'g>(generation: &'g Generation, provider: &'g Provider, key: usize) -> Auth<'g> {
    let prepared = generation.heads.get(provider.index);
    Auth {
        key: provider.keys.get(key).map_or("", |k| k.secret.expose()),
        line: prepared.and_then(|h| h.key_line(key)),
        post: prepared.and_then(|h| h.post_line(key)),
    }
}

/// The credential to send: a secret as is; a usable token newer than `refused`, minted on the
/// control thread first when there is none.
async fn credential<'g>(
    core: &Core,
    ctx: &'g RequestContext,
    provider: &'g Provider,
    key: usize,
    refused: Option<u64>,
) -> Result<Credential<'g>, UpstreamError> {
    let Some(cell) = ctx.generation.tokens.get(provider.index, key) else {
        return Ok(Credential::Secret(secret_auth(&ctx.generation, provider, key)));
    };
    let fresh = |now| cell.token().filter(|t| t.usable(now) && Some(t.serial) != refused);
    let token = match fresh(std::time::Instant::now()) {
        Some(token) => token,
        None => {
            // Boxed: the timer inside is large and this is the rare path.
            Box::pin(mint(core, cell.key(), refused))
                .await
                .map_err(|why| UpstreamError::new(UpstreamErrorKind::Connect, why))?;
            fresh(std::time::Instant::now())
                .ok_or_else(|| UpstreamError::new(UpstreamErrorKind::Connect, "no access token was minted"))?
        }
    };
    Ok(Credential::Token(token))
}

/// Asks the control thread for a token newer than `refused` and waits for it (bounded).
async fn mint(core: &Core, key: crate::config::KeyId, refused: Option<u64>) -> Result<(), String> {
    let command = Command::MintToken { key, refused };
    crate::net::within(MINT_WAIT, core.gateway.commands.call(command))
        .await
        .unwrap_or_else(|_| Err((504, "the token request timed out".to_owned())))
        .map(|_| ())
        .map_err(|(_, why)| why)
}

/// Phase `send` with the key's credential; a 401 to a minted token is answered by one
/// refresh and one resend. When the refresh fails, the 401 stands (the key is refused).
pub(super) async fn send_authenticated(
    core: &Core,
    ctx: &RequestContext,
    req: &Request,
    target: &Target<'_>,
    key: usize,
) -> Result<(Exchange, ResponseHead), UpstreamError> {
    let provider = target.provider;
    let mut refused = None;
    loop {
        let credential = credential(core, ctx, provider, key, refused).await?;
        // A buffer of its own: the rare credential path is not lent the answer's.
        let mut landed = None;
        let land = |exchange, head| landed = Some((exchange, head));
        send(core, ctx, req, target, credential.auth(), &mut BytesMut::new(), land).await?;
        let (exchange, head) = answer_kept(landed)?;
        let (Credential::Token(token), Some(cell)) = (&credential, ctx.generation.tokens.get(provider.index, key))
        else {
            return Ok((exchange, head));
        };
        let serial = token.serial;
        if head.status != 401 || refused.is_some() {
            return Ok((exchange, head));
        }
        tracing::debug!(provider = %provider.name, "401 to an access token: refreshing it and sending again");
        if let Err(why) = Box::pin(mint(core, cell.key(), Some(serial))).await {
            tracing::debug!(provider = %provider.name, "the refresh after a 401 failed: {why}");
            return Ok((exchange, head));
        }
        Box::pin(discard(ctx, exchange, &head)).await;
        refused = Some(serial);
    }
}
