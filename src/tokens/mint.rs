//! The two Google token grants (provider-formats 3.9): `refresh_token` with the OAuth client,
//! and `jwt-bearer` with an RS256-signed assertion from a service account. Control thread only.
//! Invariant: the form body (which holds the secrets) is built here and handed only to the
//! POST to the grant's own `token_url`; errors carry the endpoint's status and its `error` /
//! `error_description` fields, never the body sent.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sonic_rs::JsonValueTrait;

use super::http::post_form;
use super::Tls;
use crate::config::vertex::{Grant, GrantSource, SigningKey, CLOUD_PLATFORM_SCOPE};
use crate::config::Secret;

/// The longest a token request may take (connect, send, answer).
const TIMEOUT: Duration = Duration::from_secs(10);
/// `expires_in` when the endpoint leaves it out (Google's tokens last an hour).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// Largest token answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// A new access token and how long it lasts.
pub(super) fn mint(grant: &Grant, tls: &Tls) -> Result<(Secret, Duration), String> {
    let form = match &grant.source {
        GrantSource::RefreshToken {
            client_id,
            client_secret,
            refresh_token,
        } => form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "refresh_token")
            .append_pair("client_id", client_id)
            .append_pair("client_secret", client_secret.expose())
            .append_pair("refresh_token", refresh_token.expose())
            .finish(),
        GrantSource::ServiceAccount { client_email, key } => {
            let assertion = assertion(client_email, &grant.token_url.raw, key, unix_now())?;
            form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
                .append_pair("assertion", &assertion)
                .finish()
        }
    };
    let tls = if grant.token_url.base.scheme == crate::config::Scheme::Https {
        Some(tls.config().ok_or("no TLS roots to reach the token endpoint")?)
    } else {
        None
    };
    let (status, body) = post_form(&grant.token_url, form.as_bytes(), tls, TIMEOUT, MAX_ANSWER)?;
    answer(status, &body)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The signed JWT of the service-account grant: `iss` the account, `aud` the token URL,
/// one hour of validity, the cloud-platform scope.
pub(crate) fn assertion(email: &str, audience: &str, key: &SigningKey, now: u64) -> Result<String, String> {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        iss: &'a str,
        scope: &'a str,
        aud: &'a str,
        iat: u64,
        exp: u64,
    }
    let claims = Claims {
        iss: email,
        scope: CLOUD_PLATFORM_SCOPE,
        aud: audience,
        iat: now,
        exp: now + 3600,
    };
    let claims = sonic_rs::to_vec(&claims).map_err(|e| format!("cannot encode the JWT claims: {e}"))?;
    let mut jwt = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    jwt.push('.');
    jwt.push_str(&URL_SAFE_NO_PAD.encode(claims));
    let mut signature = vec![0; key.0.public().modulus_len()];
    key.0
        .sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            jwt.as_bytes(),
            &mut signature,
        )
        .map_err(|_| "cannot sign the JWT with the service-account key".to_owned())?;
    jwt.push('.');
    jwt.push_str(&URL_SAFE_NO_PAD.encode(signature));
    Ok(jwt)
}

/// The token endpoint's answer: `access_token` and `expires_in`, or why not. An answer nested
/// deeper than any worker-safe `server.max_json_depth` is not read (sonic-rs recurses per level
/// while it skips to a field).
fn answer(status: u16, body: &[u8]) -> Result<(Secret, Duration), String> {
    if crate::codec::check_depth(body, crate::codec::depth::MAX_DEPTH_CEILING).is_err() {
        return Err(format!(
            "the token endpoint answered {status} with JSON nested too deeply"
        ));
    }
    let field = |name: &str| -> Option<String> {
        sonic_rs::get(body, [name])
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
    };
    if !(200..300).contains(&status) {
        let error = field("error").unwrap_or_default();
        let description = field("error_description").unwrap_or_default();
        let mut why = format!("the token endpoint answered {status}");
        for part in [error, description].iter().filter(|p| !p.is_empty()) {
            why.push_str(": ");
            why.extend(part.chars().filter(|c| !c.is_control()).take(200));
        }
        return Err(why);
    }
    let token = field("access_token")
        .filter(|t| !t.is_empty() && !t.bytes().any(|b| b.is_ascii_control() || b == b' '))
        .ok_or_else(|| format!("the token endpoint answered {status} without a usable access_token"))?;
    let lifetime = sonic_rs::get(body, ["expires_in"])
        .ok()
        .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
        .map_or(DEFAULT_LIFETIME, Duration::from_secs);
    Ok((Secret::new(token), lifetime.max(Duration::from_secs(1))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_become_tokens_or_errors_without_secrets() {
        let (token, life) = answer(
            200,
            br#"{"access_token":"ya29.x","expires_in":120,"token_type":"Bearer"}"#,
        )
        .unwrap();
        assert_eq!((token.expose(), life), ("ya29.x", Duration::from_secs(120)));
        let (_, life) = answer(200, br#"{"access_token":"ya29.x"}"#).unwrap();
        assert_eq!(life, DEFAULT_LIFETIME);
        let e = answer(400, br#"{"error":"invalid_grant","error_description":"Bad Request"}"#).unwrap_err();
        assert!(e.contains("400") && e.contains("invalid_grant"), "{e}");
        assert!(answer(200, br#"{"access_token":"a b"}"#).is_err());
        assert!(answer(200, b"not json").is_err());
        // 30,000 levels before the token: refused unread, not a stack overflow.
        let deep = format!(
            r#"{{"x":{}{},"access_token":"ya29.x"}}"#,
            "[".repeat(30_000),
            "]".repeat(30_000)
        );
        let e = answer(200, deep.as_bytes()).unwrap_err();
        assert!(e.contains("nested too deeply"), "{e}");
    }
}
