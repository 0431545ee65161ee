//! Vertex AI providers (`kind = "vertex"`): `project`, `region`, `token_url` and the
//! credentials (`google_oauth`, `service_account`) that mint access tokens, compiled into
//! `Vertex` and one pool `Key` per credential.
//!
//! Invariant: a compiled Vertex provider has a project and region that are safe in a URL path,
//! at least one credential when enabled, and every service-account key already parsed (a bad
//! key is refused by `rotor check`, not found at the first request). A credential's pool key is
//! a descriptor (`oauth:<client_id>:<hash>`, `sa:<client_email>:<hash>`), never the client
//! secret, refresh token or private key: those leave rotor only for `token_url`. The settings
//! are refused on every other kind.

use std::fmt;
use std::sync::Arc;

use super::file::{OneOrMany, ProviderConfig};
use super::model::{BaseUrl, Key, KeyId, KeyOrigin, ProviderKind};
use super::secret::{Resolver, Secret};
use super::{url, ConfigError};

/// Google's token endpoint (refresh-token and JWT-bearer grants).
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// The scope Vertex AI needs.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The Vertex settings of one provider.
#[derive(Debug, Clone)]
pub struct Vertex {
    pub project: String,
    pub region: String,
    /// One per credential, in the order of the provider's keys.
    pub grants: Vec<Arc<Grant>>,
}

/// How one credential gets access tokens.
#[derive(Debug)]
pub struct Grant {
    /// The pool key this credential is.
    pub key: KeyId,
    /// Masked descriptor, for logs.
    pub masked: String,
    pub token_url: TokenUrl,
    pub source: GrantSource,
}

#[derive(Debug)]
pub enum GrantSource {
    /// OAuth user credentials: `grant_type=refresh_token`.
    RefreshToken {
        client_id: String,
        client_secret: Secret,
        refresh_token: Secret,
    },
    /// A service account: a JWT signed RS256 with its key, `grant_type=jwt-bearer`.
    ServiceAccount { client_email: String, key: SigningKey },
}

/// A service account's RSA key, parsed once. Never printed.
pub struct SigningKey(pub ring::signature::RsaKeyPair);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(…)")
    }
}

/// `token_url` split for a plain HTTP/1.1 POST: where to connect, and the target (path and
/// query; the mock reads knobs from the query).
#[derive(Debug, Clone)]
pub struct TokenUrl {
    pub base: BaseUrl,
    pub target: String,
    /// As configured, for messages (it holds no secret).
    pub raw: String,
}

/// The Vertex parts of provider `i`: `None` for other kinds (which must not set them).
pub(super) fn compile(
    i: usize,
    p: &ProviderConfig,
    kind: ProviderKind,
    r: &Resolver<'_>,
) -> Result<Option<(Vertex, Vec<Key>, BaseUrl)>, ConfigError> {
    let at = |k: &str| format!("providers[{i}].{k}");
    if kind != ProviderKind::Vertex {
        let set = [
            ("project", !p.project.is_empty()),
            ("region", !p.region.is_empty()),
            ("token_url", !p.token_url.is_empty()),
            ("google_oauth", p.google_oauth.is_some()),
            ("service_account", p.service_account.is_some()),
        ];
        if let Some((name, _)) = set.iter().find(|(_, on)| *on) {
            return Err(ConfigError::at(
                &at(name),
                "is a Vertex AI setting; this provider's kind is not \"vertex\"",
            ));
        }
        return Ok(None);
    }
    if !p.keys.is_empty() || !p.keys_file.is_empty() {
        let which = if p.keys.is_empty() { "keys_file" } else { "keys" };
        let what =
            "a Vertex provider has no keys: its `google_oauth` or `service_account` credentials mint access tokens";
        return Err(ConfigError::at(&at(which), what));
    }
    let project = segment(
        &p.project,
        &at("project"),
        "the Google Cloud project id, e.g. \"my-project\"",
    )?;
    let region = segment(
        &p.region,
        &at("region"),
        "a location such as \"us-east5\" or \"global\"",
    )?;
    let base_url = base_url(&p.base_url, &project, &region).map_err(|e| ConfigError::at(&at("base_url"), e))?;
    let configured_url = match p.token_url.as_str() {
        "" => None,
        raw => Some(token_url(raw).map_err(|e| ConfigError::at(&at("token_url"), e))?),
    };
    let mut grants = oauth_grants(p, &at("google_oauth"), configured_url.as_ref(), r)?;
    grants.extend(account_grants(p, &at("service_account"), configured_url.as_ref(), r)?);
    if p.enabled && grants.is_empty() {
        let what = format!(
            "Vertex provider {:?} has no credentials: set `google_oauth = {{ client_id, client_secret, refresh_token }}` or `service_account = \"file:key.json\"`",
            p.name
        );
        return Err(ConfigError::at(&at("google_oauth"), what));
    }
    let mut keys: Vec<Key> = Vec::with_capacity(grants.len());
    let mut out = Vec::with_capacity(grants.len());
    for (descriptor, token_url, source) in grants {
        let secret = Secret::new(descriptor);
        let id = KeyId::of(&p.name, secret.expose());
        if keys.iter().any(|k| k.id == id) {
            continue;
        }
        out.push(Arc::new(Grant {
            key: id,
            masked: secret.masked(),
            token_url,
            source,
        }));
        keys.push(Key {
            id,
            secret,
            origin: KeyOrigin::Config,
        });
    }
    Ok(Some((
        Vertex {
            project,
            region,
            grants: out,
        },
        keys,
        base_url,
    )))
}

/// A grant before it has its key id: descriptor, token URL, source.
type Pending = (String, TokenUrl, GrantSource);

/// The entries of a one-or-many setting with their key paths (`path` or `path[j]`).
fn entries<'a, T>(value: &'a Option<OneOrMany<T>>, path: &str) -> Vec<(String, &'a T)> {
    match value {
        None => Vec::new(),
        Some(OneOrMany::One(one)) => vec![(path.to_owned(), one)],
        Some(OneOrMany::Many(many)) => many
            .iter()
            .enumerate()
            .map(|(j, v)| (format!("{path}[{j}]"), v))
            .collect(),
    }
}

/// `google_oauth`: refresh-token grants. The descriptor holds a hash of the refresh token, so
/// a new token for the same client is a new key.
fn oauth_grants(
    p: &ProviderConfig,
    path: &str,
    configured_url: Option<&TokenUrl>,
    r: &Resolver<'_>,
) -> Result<Vec<Pending>, ConfigError> {
    let mut out = Vec::new();
    for (here, o) in entries(&p.google_oauth, path) {
        if o.client_id.trim().is_empty() || o.client_id.bytes().any(|b| b.is_ascii_control()) {
            return Err(ConfigError::at(
                &format!("{here}.client_id"),
                "must be a non-empty client id",
            ));
        }
        let client_secret = r.secret(&o.client_secret, &format!("{here}.client_secret"))?;
        let refresh_token = r.secret(&o.refresh_token, &format!("{here}.refresh_token"))?;
        let hash = KeyId::of(&o.client_id, refresh_token.expose()).0;
        let descriptor = format!("oauth:{}:{hash:016x}", o.client_id);
        let url = match configured_url {
            Some(url) => url.clone(),
            None => token_url(GOOGLE_TOKEN_URL).map_err(|e| ConfigError::at(&here, e))?,
        };
        let source = GrantSource::RefreshToken {
            client_id: o.client_id.clone(),
            client_secret,
            refresh_token,
        };
        out.push((descriptor, url, source));
    }
    Ok(out)
}

/// `service_account`: JWT-bearer grants, each key parsed now so `rotor check` refuses a bad one.
fn account_grants(
    p: &ProviderConfig,
    path: &str,
    configured_url: Option<&TokenUrl>,
    r: &Resolver<'_>,
) -> Result<Vec<Pending>, ConfigError> {
    let mut out = Vec::new();
    for (here, raw) in entries(&p.service_account, path) {
        let json = r.document(raw, &here)?;
        let (client_email, key, own_url) = service_account(json.expose()).map_err(|e| ConfigError::at(&here, e))?;
        let hash = KeyId::of(&client_email, json.expose()).0;
        let descriptor = format!("sa:{client_email}:{hash:016x}");
        let url = match (configured_url, own_url) {
            (Some(url), _) => url.clone(),
            (None, Some(own)) => token_url(&own).map_err(|e| ConfigError::at(&format!("{here} (token_uri)"), e))?,
            (None, None) => token_url(GOOGLE_TOKEN_URL).map_err(|e| ConfigError::at(&here, e))?,
        };
        out.push((descriptor, url, GrantSource::ServiceAccount { client_email, key }));
    }
    Ok(out)
}

/// A project id or region: letters, digits, `-`, `_`, `.` (it goes into every request path).
fn segment(raw: &str, path: &str, what: &str) -> Result<String, ConfigError> {
    let ok = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !ok {
        let why = if raw.is_empty() {
            format!("is required: {what}")
        } else {
            format!("{raw:?} is not {what}")
        };
        return Err(ConfigError::at(path, why));
    }
    Ok(raw.to_owned())
}

/// `base_url` (default: the region's host, `/v1`: `{region}-aiplatform.googleapis.com`,
/// `aiplatform.googleapis.com` for `global`, `aiplatform.{us|eu}.rep.googleapis.com`) with `/projects/{p}/locations/{r}` appended,
/// so adapters and probes add only `/publishers/...` or `/models`.
fn base_url(raw: &str, project: &str, region: &str) -> Result<BaseUrl, String> {
    let default;
    let raw = if raw.is_empty() {
        default = if region == "global" {
            "https://aiplatform.googleapis.com/v1".to_owned()
        } else if region == "us" || region == "eu" {
            // The multi-region endpoints (provider-formats 3.7).
            format!("https://aiplatform.{region}.rep.googleapis.com/v1")
        } else {
            format!("https://{region}-aiplatform.googleapis.com/v1")
        };
        &default
    } else {
        raw
    };
    let mut base = url::parse_base_url(raw)?;
    base.path = format!("{}/projects/{project}/locations/{region}", base.path);
    Ok(base)
}

/// `token_url`: an http(s) URL whose query, unlike a base URL's, is kept.
pub(crate) fn token_url(raw: &str) -> Result<TokenUrl, String> {
    let (without, query) = match raw.split_once('?') {
        Some((u, q)) => (u, Some(q)),
        None => (raw, None),
    };
    if query.is_some_and(|q| q.bytes().any(|b| b <= b' ' || b == b'#' || b == 0x7f)) {
        return Err(format!("{raw:?}: the query contains spaces, controls or a fragment"));
    }
    let base = url::parse_base_url(without)?;
    let mut target = if base.path.is_empty() {
        "/".to_owned()
    } else {
        base.path.clone()
    };
    if let Some(q) = query {
        target.push('?');
        target.push_str(q);
    }
    Ok(TokenUrl {
        base,
        target,
        raw: raw.to_owned(),
    })
}

/// A service-account JSON key: its `client_email`, parsed RSA key and own `token_uri`.
fn service_account(json: &str) -> Result<(String, SigningKey, Option<String>), String> {
    use sonic_rs::JsonValueTrait;
    let value: sonic_rs::Value = sonic_rs::from_str(json)
        .map_err(|_| "is not a service-account JSON key (the JSON does not parse)".to_owned())?;
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    if let Some(kind) = field("type").filter(|t| t != "service_account") {
        return Err(format!(
            "is a {kind:?} credential, not a service-account key (type \"service_account\")"
        ));
    }
    let client_email = field("client_email")
        .filter(|e| !e.is_empty() && !e.bytes().any(|b| b.is_ascii_control()))
        .ok_or("the service-account key has no `client_email`")?;
    let pem = field("private_key").ok_or("the service-account key has no `private_key`")?;
    let key = signing_key(&pem)?;
    Ok((client_email, key, field("token_uri").filter(|u| !u.is_empty())))
}

/// A PEM PKCS#8 RSA private key (what Google's key files hold).
pub fn signing_key(pem: &str) -> Result<SigningKey, String> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| "the service-account `private_key` is not a PEM \"PRIVATE KEY\" (PKCS#8)".to_owned())?;
    let pair = ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
        .map_err(|e| format!("the service-account `private_key` is not a usable RSA key ({e})"))?;
    Ok(SigningKey(pair))
}
