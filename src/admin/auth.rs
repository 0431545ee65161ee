//! Who may call the admin API: the admin key as a bearer token, or a dashboard session cookie
//! (from `POST /admin/login` with the admin key or `admin_user` + `admin_password`).
//! Invariants: secrets are compared in constant time; a cookie session's state-changing calls
//! carry its CSRF token; the cookie is HttpOnly and SameSite=Strict, so no script ever holds
//! the admin key or the session id; failed logins make their source wait (`sessions`).

use std::net::IpAddr;

use serde::Deserialize;

use super::sessions::AdminState;
use super::{error, json, AdminAnswer};
use crate::codec::head::{Method, RequestHead};
use crate::config::Server;

/// The session cookie's name.
pub const COOKIE: &str = "rotor_admin";
/// The header a cookie session's state-changing calls carry the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// An authenticated admin caller.
pub enum Caller {
    /// `Authorization: Bearer <admin_key>` (scripts, curl): no cookie, so no CSRF risk.
    Key,
    /// A dashboard session, by its cookie id.
    Session { id: String, csrf: String },
}

/// Authenticates one admin call, or answers 401/403.
pub fn check(state: &AdminState, server: &Server, head: &RequestHead) -> Result<Caller, AdminAnswer> {
    if let Some(presented) = bearer(head) {
        return match &server.admin_key {
            Some(key) if key.ct_eq(presented) => Ok(Caller::Key),
            _ => Err(error(401, "admin API: wrong admin key")),
        };
    }
    let Some(id) = cookie(head) else {
        return Err(error(
            401,
            "admin API: log in at /admin/ or send Authorization: Bearer <admin_key>",
        ));
    };
    let Some(session) = state.find(id) else {
        return Err(error(401, "admin API: the session has expired or ended; log in again"));
    };
    if session.credentials != credentials_digest(server) {
        state.close(id);
        return Err(error(401, "admin API: the admin credentials changed; log in again"));
    }
    let safe = matches!(head.method, Method::Get | Method::Head);
    if !safe {
        let token = head.header(CSRF_HEADER).unwrap_or_default();
        if !ct_eq(session.csrf.as_bytes(), token) {
            return Err(error(403, "admin API: missing or wrong x-csrf-token for this session"));
        }
    }
    Ok(Caller::Session {
        id: id.to_owned(),
        csrf: session.csrf,
    })
}

#[derive(Deserialize)]
struct Login {
    key: Option<String>,
    user: Option<String>,
    password: Option<String>,
}

/// `POST /admin/login` with `{"key":..}` or `{"user":..,"password":..}`: sets the session
/// cookie and answers `{"csrf":..,"expires_in_s":..}`.
pub fn login(state: &AdminState, server: &Server, head: &RequestHead, body: &[u8], source: IpAddr) -> AdminAnswer {
    // JSON only: a cross-site form cannot send it without a CORS preflight, which rotor refuses.
    let is_json = head
        .header("content-type")
        .is_some_and(|v| v.len() >= 16 && v[..16].eq_ignore_ascii_case(b"application/json"));
    if !is_json {
        return error(415, "admin login: send JSON (content-type: application/json)");
    }
    if let Some(wait) = state.wait_for(source) {
        let secs = wait.as_secs().max(1);
        let mut answer = error(
            429,
            &format!("admin login: too many failed attempts; retry in {secs} s"),
        );
        answer.headers.push(("retry-after", secs.to_string()));
        return answer;
    }
    let Ok(login) = sonic_rs::from_slice::<Login>(body) else {
        return error(
            400,
            "admin login: body must be {\"key\":..} or {\"user\":..,\"password\":..}",
        );
    };
    if !credentials_match(server, &login) {
        state.failed(source);
        tracing::warn!(%source, "admin login failed");
        return error(401, "admin login: wrong admin key, user or password");
    }
    state.succeeded(source);
    let ttl = server.admin_session_ttl;
    let Some((id, session)) = state.open(ttl, credentials_digest(server)) else {
        return error(500, "admin login: no system randomness for a session id");
    };
    let mut answer = json(
        200,
        &SessionInfo {
            csrf: &session.csrf,
            expires_in_s: ttl.as_secs(),
        },
    );
    // Behind a TLS-terminating proxy that says so, the cookie is never sent over plain HTTP.
    let https = head
        .header("x-forwarded-proto")
        .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{COOKIE}={id}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}{}",
        ttl.as_secs(),
        if https { "; Secure" } else { "" }
    );
    answer.headers.push(("set-cookie", cookie));
    answer
}

/// Every configured credential is compared (no early exit), each in constant time.
fn credentials_match(server: &Server, login: &Login) -> bool {
    let by_key = match (&server.admin_key, &login.key) {
        (Some(key), Some(given)) => key.ct_eq(given.as_bytes()),
        _ => false,
    };
    let by_password = match (&server.admin_login, &login.user, &login.password) {
        (Some(want), Some(user), Some(password)) => {
            let user_ok = ct_eq(want.user.as_bytes(), user.as_bytes().trim_ascii());
            let password_ok = want.password.ct_eq(password.as_bytes());
            user_ok & password_ok
        }
        _ => false,
    };
    by_key | by_password
}

/// A digest of every admin credential (FNV-1a; kept in memory only), so changing the admin key,
/// user or password by a reload ends every session opened with the old ones.
fn credentials_digest(server: &Server) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let parts = [
        server.admin_key.as_ref().map_or("", |k| k.expose()),
        server.admin_login.as_ref().map_or("", |l| l.user.as_str()),
        server.admin_login.as_ref().map_or("", |l| l.password.expose()),
    ];
    for part in parts {
        for &b in part.as_bytes().iter().chain(&[0xff]) {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

#[derive(serde::Serialize)]
struct SessionInfo<'a> {
    csrf: &'a str,
    expires_in_s: u64,
}

/// `GET /admin/session`: the caller's CSRF token, so a reloaded page can go on without a new
/// login (the cookie is sent by the browser; scripts never see it).
pub fn session_info(caller: &Caller, state: &AdminState) -> AdminAnswer {
    match caller {
        Caller::Key => error(400, "admin API: /admin/session is for dashboard sessions"),
        Caller::Session { id, csrf } => {
            let left = state.find(id).map_or(0, |s| {
                s.expires.saturating_duration_since(std::time::Instant::now()).as_secs()
            });
            json(
                200,
                &SessionInfo {
                    csrf,
                    expires_in_s: left,
                },
            )
        }
    }
}

/// `POST /admin/logout`: ends the session and clears the cookie.
pub fn logout(caller: &Caller, state: &AdminState) -> AdminAnswer {
    if let Caller::Session { id, .. } = caller {
        state.close(id);
    }
    let mut answer = json(200, &Ended { logged_out: true });
    let clear = format!("{COOKIE}=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0");
    answer.headers.push(("set-cookie", clear));
    answer
}

#[derive(serde::Serialize)]
struct Ended {
    logged_out: bool,
}

fn bearer(head: &RequestHead) -> Option<&[u8]> {
    let value = head.header("authorization")?.trim_ascii();
    let prefix = value.get(..7)?;
    prefix
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| value.get(7..).unwrap_or_default().trim_ascii())
}

/// The session id from the `Cookie` header(s).
fn cookie(head: &RequestHead) -> Option<&str> {
    head.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(b"cookie"))
        .flat_map(|h| h.value.split(|&b| b == b';'))
        .filter_map(|pair| std::str::from_utf8(pair.trim_ascii()).ok())
        .find_map(|pair| pair.strip_prefix(COOKIE)?.strip_prefix('='))
        .filter(|id| !id.is_empty())
}

/// Equality whose time depends only on the lengths.
fn ct_eq(want: &[u8], given: &[u8]) -> bool {
    let mut diff = (want.len() ^ given.len()) as u64;
    for (i, &b) in given.iter().enumerate() {
        diff |= u64::from(want.get(i).copied().unwrap_or(0) ^ b);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::head::{parse_request_head, HeadLimits};

    fn head(headers: &[(&'static str, &'static str)]) -> RequestHead {
        let mut raw = String::from("GET /admin/logs HTTP/1.1\r\nHost: rotor\r\n");
        for (name, value) in headers {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        raw.push_str("\r\n");
        let mut buf = bytes::BytesMut::from(raw.as_bytes());
        parse_request_head(&mut buf, &HeadLimits::default()).unwrap().unwrap()
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = head(&[("cookie", "a=1; rotor_admin=abc; b=2")]);
        assert_eq!(cookie(&h), Some("abc"));
        let split = head(&[("cookie", "a=1"), ("Cookie", "rotor_admin=xyz")]);
        assert_eq!(cookie(&split), Some("xyz"));
        assert_eq!(cookie(&head(&[("cookie", "rotor_admin_other=1; rotor_admin=")])), None);
        assert_eq!(cookie(&head(&[])), None);
    }

    #[test]
    fn constant_time_equality_is_equality() {
        assert!(ct_eq(b"secret", b"secret"));
        assert!(!ct_eq(b"secret", b"secreT"));
        assert!(!ct_eq(b"secret", b"secret2"));
        assert!(!ct_eq(b"secret", b"secre"));
        assert!(!ct_eq(b"secret", b""));
    }
}
