//! Admin security (issue 15 item 5) over real sockets: sessions (cookie flags, expiry, logout),
//! CSRF on state-changing cookie calls, throttled failed logins, the dashboard's CSP and
//! content types, and `server.admin_listen` keeping admin off the API listener.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)]

mod common;

use common::{Conf, Harness, Response};
use rotor::config::{self, ConfigSource};
use sonic_rs::JsonValueTrait;

const ADMIN_KEY: &str = "admin-key-for-security-test-01";

fn harness(extra: &str) -> Harness {
    Harness::start(Conf {
        server: format!(
            "admin_key = \"{ADMIN_KEY}\"\nadmin_user = \"ops\"\nadmin_password = \"ops-password-1\"\n{extra}"
        ),
        ..Default::default()
    })
}

fn login(h: &Harness, body: &str) -> Response {
    h.client().request(
        "POST",
        "/admin/login",
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
}

/// (cookie header value, csrf token) of a fresh session.
fn session(h: &Harness) -> (String, String) {
    let r = login(h, r#"{"user":"ops","password":"ops-password-1"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let set = r.header("set-cookie").expect("a session cookie").to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age="] {
        assert!(set.contains(flag), "{set} lacks {flag}");
    }
    let cookie = set.split(';').next().unwrap().to_owned();
    let csrf = r.json()["csrf"].as_str().unwrap().to_owned();
    (cookie, csrf)
}

#[test]
fn cookie_sessions_need_csrf_for_changes_and_end_at_logout() {
    let h = harness("");
    let (cookie, csrf) = session(&h);
    let get = |path: &str| h.client().request("GET", path, &[("cookie", &cookie)], b"");
    assert_eq!(get("/admin/stats/overview").status, 200);
    assert_eq!(get("/admin/session").json()["csrf"].as_str(), Some(csrf.as_str()));
    // A state-changing call without, or with a wrong, CSRF token is refused.
    let post = |path: &str, token: &str| {
        h.client()
            .request("POST", path, &[("cookie", &cookie), ("x-csrf-token", token)], b"")
    };
    assert_eq!(
        h.client()
            .request("DELETE", "/admin/logs", &[("cookie", &cookie)], b"")
            .status,
        403
    );
    assert_eq!(post("/admin/reload", "not-the-token").status, 403);
    let delete = |token: &str| {
        h.client().request(
            "DELETE",
            "/admin/logs",
            &[("cookie", &cookie), ("x-csrf-token", token)],
            b"",
        )
    };
    assert_eq!(delete("").status, 403);
    assert_eq!(delete(&csrf).status, 200);
    // The bearer key needs no CSRF token (no cookie involved).
    let bearer = format!("Bearer {ADMIN_KEY}");
    assert_eq!(
        h.client()
            .request("DELETE", "/admin/logs", &[("authorization", &bearer)], b"")
            .status,
        200
    );
    // Logout clears the cookie and ends the session on the server.
    let out = post("/admin/logout", &csrf);
    assert_eq!(out.status, 200);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(get("/admin/stats/overview").status, 401);
    // A made-up session id gets nothing.
    let forged = "rotor_admin=00000000000000000000000000000000000000000000000000000000deadbeef";
    assert_eq!(
        h.client()
            .request("GET", "/admin/logs", &[("cookie", forged)], b"")
            .status,
        401
    );
}

#[test]
fn key_pool_changes_from_a_session_need_the_csrf_token() {
    let h = harness("");
    let (cookie, csrf) = session(&h);
    let call = |method: &str, path: &str, token: Option<&str>, body: &str| {
        let mut headers = vec![("cookie", cookie.as_str()), ("content-type", "application/json")];
        if let Some(t) = token {
            headers.push(("x-csrf-token", t));
        }
        h.client().request(method, path, &headers, body.as_bytes())
    };
    let add = r#"{"provider":"mock","keys":"sk-csrf-test-key-0042"}"#;
    let remove = r#"{"provider":"mock","key":"sk-csrf-test-key-0042"}"#;
    for (method, path, body) in [
        ("POST", "/admin/keys", add),
        ("POST", "/admin/keys/validate", ""),
        ("DELETE", "/admin/keys", remove),
    ] {
        assert_eq!(
            call(method, path, None, body).status,
            403,
            "{method} {path} without a token"
        );
        assert_eq!(
            call(method, path, Some("wrong"), body).status,
            403,
            "{method} {path} wrong token"
        );
    }
    assert!(
        !call("GET", "/admin/keys", None, "").text().contains("0042"),
        "nothing was added without the token"
    );
    // With the token: each call goes through; reads need no token.
    for (method, path, body) in [
        ("POST", "/admin/keys", add),
        ("POST", "/admin/keys/validate", ""),
        ("DELETE", "/admin/keys", remove),
    ] {
        let r = call(method, path, Some(&csrf), body);
        assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
    }
    assert_eq!(call("GET", "/admin/keys", None, "").status, 200);
    let export = call("GET", "/admin/keys/export", None, "");
    assert_eq!(export.status, 200);
    assert!(export.text().contains(common::POOL_KEY));
    // Without a session or key: 401 on every key call.
    for (method, path) in [
        ("GET", "/admin/keys"),
        ("GET", "/admin/keys/export"),
        ("POST", "/admin/keys"),
        ("DELETE", "/admin/keys"),
        ("POST", "/admin/keys/validate"),
    ] {
        assert_eq!(
            h.client().request(method, path, &[], b"").status,
            401,
            "{method} {path}"
        );
    }
}

#[test]
fn changing_the_admin_credentials_ends_sessions() {
    let h = harness("");
    let (cookie, _) = session(&h);
    let get = || h.client().request("GET", "/admin/logs", &[("cookie", &cookie)], b"");
    assert_eq!(get().status, 200);
    // A reload with the same credentials keeps the session.
    let same = Conf {
        server: format!("admin_key = \"{ADMIN_KEY}\"\nadmin_user = \"ops\"\nadmin_password = \"ops-password-1\""),
        ..Default::default()
    };
    let gateway = &h.running().gateway;
    gateway.install(same.parse(&h.mock().base_url())).unwrap();
    assert_eq!(get().status, 200);
    let rotated = Conf {
        server: format!("admin_key = \"{ADMIN_KEY}\"\nadmin_user = \"ops\"\nadmin_password = \"rotated-password-2\""),
        ..Default::default()
    };
    gateway.install(rotated.parse(&h.mock().base_url())).unwrap();
    let after = get();
    assert_eq!(after.status, 401);
    assert!(after.text().contains("credentials changed"), "{}", after.text());
}

#[test]
fn logins_accept_the_key_or_user_and_refuse_forms() {
    let h = harness("");
    let by_key = login(&h, &format!(r#"{{"key":"{ADMIN_KEY}"}}"#));
    assert_eq!(by_key.status, 200);
    assert!(!by_key.header("set-cookie").unwrap().contains("Secure"), "plain HTTP");
    let behind_tls = h.client().request(
        "POST",
        "/admin/login",
        &[("content-type", "application/json"), ("x-forwarded-proto", "https")],
        format!(r#"{{"key":"{ADMIN_KEY}"}}"#).as_bytes(),
    );
    assert!(behind_tls.header("set-cookie").unwrap().contains("; Secure"));
    assert_eq!(login(&h, r#"{"user":"ops","password":"wrong-password"}"#).status, 401);
    // A cross-site form post (not JSON) is refused before credentials are looked at.
    let form = h.client().request(
        "POST",
        "/admin/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        format!("key={ADMIN_KEY}").as_bytes(),
    );
    assert_eq!(form.status, 415);
    assert_eq!(login(&h, "not json").status, 400);
}

#[test]
fn failed_logins_are_throttled_and_counted() {
    let h = harness("");
    let wrong = r#"{"key":"wrong-admin-key-000000"}"#;
    let statuses: Vec<u16> = (0..6).map(|_| login(&h, wrong).status).collect();
    assert_eq!(&statuses[..4], &[401, 401, 401, 401], "{statuses:?}");
    let throttled = login(&h, &format!(r#"{{"key":"{ADMIN_KEY}"}}"#));
    assert_eq!(throttled.status, 429, "even the right key waits out the backoff");
    assert!(throttled.header("retry-after").is_some());
    let metrics = h.client().request("GET", "/metrics", &[], b"").text();
    assert!(metrics.contains("rotor_admin_logins_failed_total "), "{metrics}");
    let throttled_count = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rotor_admin_logins_throttled_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap();
    assert!(throttled_count >= 1);
}

#[test]
fn dashboard_files_carry_a_strict_csp_and_revalidate() {
    let h = harness("");
    let page = h.client().request("GET", "/admin/", &[], b"");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let js = h
        .client()
        .request("GET", "/admin/assets/vendor/uPlot.iife.min.js", &[], b"");
    assert_eq!(js.header("content-type"), Some("text/javascript; charset=utf-8"));
    let etag = js.header("etag").unwrap().to_owned();
    let again = h.client().request(
        "GET",
        "/admin/assets/vendor/uPlot.iife.min.js",
        &[("if-none-match", &etag)],
        b"",
    );
    assert_eq!(again.status, 304);
    assert_eq!(h.client().request("GET", "/admin/assets/nope.js", &[], b"").status, 404);
    assert_eq!(
        h.client().request("GET", "/admin", &[], b"").header("location"),
        Some("/admin/")
    );
    // Data needs auth even though the page itself does not.
    assert_eq!(h.client().request("GET", "/admin/status", &[], b"").status, 401);
}

#[test]
fn admin_listen_moves_admin_off_the_api_listener() {
    let h = harness("admin_listen = \"127.0.0.1:0\"");
    let admin = h.running().admin_addr.expect("an admin address");
    assert_ne!(admin, h.addr);
    let bearer = format!("Bearer {ADMIN_KEY}");
    let on_api = h
        .client()
        .request("GET", "/admin/logs", &[("authorization", &bearer)], b"");
    assert_eq!(on_api.status, 404, "admin is not on the API listener");
    assert_eq!(h.client().request("GET", "/admin/", &[], b"").status, 404);
    let mut c = common::Client::connect(admin);
    assert_eq!(
        c.request("GET", "/admin/logs", &[("authorization", &bearer)], b"")
            .status,
        200
    );
    assert_eq!(c.request("GET", "/admin/", &[], b"").status, 200);
    let (name, value) = common::auth();
    let models = c.request("GET", "/v1/models", &[(name, &value)], b"");
    assert_eq!(models.status, 404, "the API is not on the admin listener");
    // The API itself still works on its own listener.
    assert_eq!(
        h.post("/v1/chat/completions", &common::chat("gpt-4o-mini"), &[]).status,
        200
    );
}

#[test]
fn admin_settings_are_checked() {
    let bad = [
        ("admin_user = \"ops\"", "server.admin_password"),
        ("admin_password = \"long-enough-1\"", "server.admin_user"),
        (
            "admin_user = \"ops\"\nadmin_password = \"short\"",
            "server.admin_password",
        ),
        ("admin_listen = \"127.0.0.1:9999\"", "server.admin_listen"),
        (
            "admin_key = \"k-123456789\"\nadmin_listen = \"nowhere\"",
            "server.admin_listen",
        ),
        (
            "admin_key = \"k-123456789\"\nadmin_session_ttl_ms = 0",
            "server.admin_session_ttl_ms",
        ),
    ];
    for (server, path) in bad {
        let text = format!(
            "[server]\n{server}\n{}",
            common::default_body().replace("{MOCK}", "http://127.0.0.1:1/v1")
        );
        let err = config::parse_str(&text, ConfigSource::Environment).expect_err(server);
        assert!(err.to_string().contains(path), "{server}: {err}");
    }
}
