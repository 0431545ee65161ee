//! Vertex AI for the mock: the token endpoint (`POST /token`, both Google grants) and the
//! Bearer check in front of `/v1/projects/{p}/locations/{r}/publishers/...`, whose answers are
//! the Anthropic and Gemini mocks' own (with every fault knob).
//!
//! Token endpoint: `grant_type=refresh_token` (needs `client_id`, `client_secret`,
//! `refresh_token`; a refresh token containing `revoked` gets `invalid_grant`) or
//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` (an RS256 JWT with `iss`, `scope`,
//! `aud`, `iat`, `exp`; its signature is checked when a public key was registered with
//! `VertexMock::trust_key`). Tokens are `ya29.mock-<client id or email>-<n>`, so the key-marker
//! faults (`fail429` in a client id) reach the Vertex answers. Query knobs on the token URL:
//! `expires_in=N` (seconds, default 3600) and `reject=1`; `VertexMock::reject` and
//! `VertexMock::revoke_all` do the same at run time.
//! Invariant: at most `MAX_TOKENS` issued tokens are remembered (the oldest is forgotten).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use parking_lot::Mutex;
use sonic_rs::JsonValueTrait;

use crate::server::Request;

const MAX_TOKENS: usize = 10_000;

/// The mock's token state, shared by its workers.
#[derive(Default)]
pub struct VertexMock {
    tokens: Mutex<VecDeque<(String, Instant)>>,
    issued: AtomicU64,
    refresh_grants: AtomicU64,
    jwt_grants: AtomicU64,
    rejecting: AtomicBool,
    /// RSAPublicKey DER of service accounts whose JWT signatures are checked.
    trusted: Mutex<Vec<Vec<u8>>>,
}

impl VertexMock {
    /// Refuse (true) or serve (false) every grant from now on.
    pub fn reject(&self, on: bool) {
        self.rejecting.store(on, Ordering::Relaxed);
    }

    /// Forget every issued token: the next Vertex request with one gets 401.
    pub fn revoke_all(&self) {
        self.tokens.lock().clear();
    }

    /// Check JWT signatures against this RSA public key (PKCS#1 `RSAPublicKey` DER).
    pub fn trust_key(&self, public_der: &[u8]) {
        self.trusted.lock().push(public_der.to_vec());
    }

    /// Grants served: (refresh-token, JWT bearer).
    pub fn grants(&self) -> (u64, u64) {
        (
            self.refresh_grants.load(Ordering::Relaxed),
            self.jwt_grants.load(Ordering::Relaxed),
        )
    }

    /// The answer of the token endpoint or of a failed Vertex check; `None` = answer normally.
    pub(super) fn intercept(&self, req: &Request) -> Option<(u16, String)> {
        let path = req.head.path();
        if path == "/token" {
            return Some(self.grant(req));
        }
        if !path.contains("/projects/") || !path.contains("/locations/") {
            return None;
        }
        let bearer = req
            .head
            .header("authorization")
            .and_then(|v| v.strip_prefix(b"Bearer "))
            .and_then(|v| std::str::from_utf8(v).ok())
            .unwrap_or("");
        if !self.valid(bearer) {
            let body = r#"{"error":{"code":401,"message":"Request had invalid authentication credentials. Expected OAuth 2 access token.","status":"UNAUTHENTICATED"}}"#;
            return Some((401, body.to_owned()));
        }
        if path.contains("/publishers/anthropic/") {
            let body = req.body.bytes();
            let version = sonic_rs::get(&*body, ["anthropic_version"]).ok();
            let has_model = sonic_rs::get(&*body, ["model"]).is_ok();
            if version.as_ref().and_then(|v| v.as_str()) != Some("vertex-2023-10-16") || has_model {
                let body = r#"{"type":"error","error":{"type":"invalid_request_error","message":"Vertex wants anthropic_version \"vertex-2023-10-16\" and no model in the body"}}"#;
                return Some((400, body.to_owned()));
            }
        }
        None
    }

    fn valid(&self, token: &str) -> bool {
        let now = Instant::now();
        self.tokens.lock().iter().any(|(t, until)| t == token && now < *until)
    }

    fn grant(&self, req: &Request) -> (u16, String) {
        let query = req.head.query().unwrap_or("");
        let knob = |name: &str| {
            form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let form = |name: &str| {
            form_urlencoded::parse(&req.body.bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        if self.rejecting.load(Ordering::Relaxed) || knob("reject").as_deref() == Some("1") {
            return refuse("invalid_grant", "the mock was told to reject grants");
        }
        let subject = match form("grant_type").as_deref() {
            Some("refresh_token") => {
                let (Some(id), Some(secret), Some(refresh)) =
                    (form("client_id"), form("client_secret"), form("refresh_token"))
                else {
                    return refuse(
                        "invalid_request",
                        "client_id, client_secret and refresh_token are required",
                    );
                };
                if id.is_empty() || secret.is_empty() || refresh.is_empty() || refresh.contains("revoked") {
                    return refuse("invalid_grant", "Token has been expired or revoked.");
                }
                self.refresh_grants.fetch_add(1, Ordering::Relaxed);
                id
            }
            Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => {
                match self.check_jwt(&form("assertion").unwrap_or_default()) {
                    Ok(email) => {
                        self.jwt_grants.fetch_add(1, Ordering::Relaxed);
                        email
                    }
                    Err(why) => return refuse("invalid_grant", why),
                }
            }
            _ => return refuse("unsupported_grant_type", "Invalid grant_type"),
        };
        let expires_in = knob("expires_in").and_then(|v| v.parse::<u64>().ok()).unwrap_or(3600);
        let n = self.issued.fetch_add(1, Ordering::Relaxed) + 1;
        let token = format!("ya29.mock-{subject}-{n}");
        {
            let mut tokens = self.tokens.lock();
            if tokens.len() >= MAX_TOKENS {
                tokens.pop_front();
            }
            tokens.push_back((token.clone(), Instant::now() + Duration::from_secs(expires_in)));
        }
        let body = format!(
            r#"{{"access_token":{},"expires_in":{expires_in},"token_type":"Bearer","scope":"https://www.googleapis.com/auth/cloud-platform"}}"#,
            sonic_rs::to_string(&token).unwrap_or_default()
        );
        (200, body)
    }

    /// The `iss` of a well-formed RS256 JWT grant (signature checked against trusted keys).
    fn check_jwt(&self, jwt: &str) -> Result<String, &'static str> {
        let mut parts = jwt.split('.');
        let (Some(head), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("the assertion is not a JWT");
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| "the assertion is not base64url")
        };
        let (head_json, claims_json, signature_bytes) = (decode(head)?, decode(claims)?, decode(signature)?);
        if sonic_rs::get(head_json.as_slice(), ["alg"])
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .as_deref()
            != Some("RS256")
        {
            return Err("the JWT is not RS256");
        }
        let text = |name: &str| {
            sonic_rs::get(claims_json.as_slice(), [name])
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
        };
        let number = |name: &str| {
            sonic_rs::get(claims_json.as_slice(), [name])
                .ok()
                .and_then(|v| v.as_u64())
        };
        let iss = text("iss").filter(|s| !s.is_empty()).ok_or("the JWT has no iss")?;
        if !text("scope").is_some_and(|s| s.contains("cloud-platform")) || text("aud").is_none() {
            return Err("the JWT lacks the cloud-platform scope or an aud");
        }
        match (number("iat"), number("exp")) {
            (Some(iat), Some(exp)) if exp > iat && exp - iat <= 3600 => {}
            _ => return Err("the JWT's iat/exp are missing or span more than an hour"),
        }
        let trusted = self.trusted.lock();
        if !trusted.is_empty() {
            let signed = &jwt.as_bytes()[..head.len() + 1 + claims.len()];
            let ok = trusted.iter().any(|key| {
                ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, key)
                    .verify(signed, &signature_bytes)
                    .is_ok()
            });
            if !ok {
                return Err("Invalid JWT Signature.");
            }
        }
        Ok(iss)
    }
}

fn refuse(error: &str, description: &str) -> (u16, String) {
    let body = format!(
        r#"{{"error":{},"error_description":{}}}"#,
        sonic_rs::to_string(error).unwrap_or_default(),
        sonic_rs::to_string(description).unwrap_or_default()
    );
    (400, body)
}
