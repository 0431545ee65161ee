//! The dashboard in a real browser (headless Chromium through chromedriver, WebDriver over
//! HTTP): sign in (a wrong key first), the overview chart drawn from real traffic, the Keys page
//! (add and validate a key when the build has runtime key management, else its clear notice),
//! log filters, paging and detail, the Status page, sign-out. Every page is saved as a PNG in
//! `target/dashboard-screenshots/`. Fails, never skips, without chromium and chromedriver.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)]

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::path::PathBuf;

use common::{chat, Conf, Harness, CLIENT_KEY};
use sonic_rs::JsonValueTrait;
use webdriver::{json_str, Browser};

const ADMIN_KEY: &str = "admin-key-for-dashboard-test-01";

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots")
}

fn traffic(h: &Harness) {
    for model in ["gpt-4o-mini", "gpt-4o-mini", "gpt-3.5", "gpt-4o-mini"] {
        assert_eq!(h.post("/v1/chat/completions", &chat(model), &[]).status, 200);
    }
    let embed = r#"{"model":"text-embedding-3-small","input":"hello"}"#;
    assert_eq!(h.post("/v1/embeddings", embed, &[]).status, 200);
}

fn admin_get(h: &Harness, path: &str) -> common::Response {
    let auth = format!("Bearer {ADMIN_KEY}");
    h.client().request("GET", path, &[("authorization", &auth)], b"")
}

#[test]
fn dashboard_in_a_real_browser() {
    let h = Harness::start(Conf {
        server: format!("admin_key = \"{ADMIN_KEY}\"\nadmin_user = \"ops\"\nadmin_password = \"ops-password-1\""),
        ..Default::default()
    });
    traffic(&h);
    let base = format!("http://{}/admin/", h.addr);
    let shots = screenshots();
    let browser = Browser::start();

    // Sign-in page; a wrong key is refused with a message.
    browser.goto(&base);
    browser.wait_until("the login form", "return !document.getElementById('login').hidden");
    browser.screenshot(&shots, "1-login");
    browser.type_into("#login-key", "not-the-admin-key");
    browser.click("#login-submit");
    browser.wait_until(
        "the login error",
        "return document.getElementById('login-error').innerText.includes('wrong')",
    );
    browser.type_into("#login-key", ADMIN_KEY);
    browser.click("#login-submit");
    browser.wait_until("the app", "return !document.getElementById('app').hidden");
    // Nothing script-readable holds the key or the session.
    let leaked = browser.script(&format!(
        "return document.cookie + JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + \
         document.getElementById('login-key').value + document.body.innerHTML.includes({})",
        json_str(ADMIN_KEY)
    ));
    assert_eq!(
        leaked.as_str(),
        Some("{}{}false"),
        "the admin key or cookie is readable by scripts"
    );

    // Overview: tiles count the traffic, the chart is drawn with one series per model.
    browser.wait_until(
        "the requests tile",
        "const t = document.querySelector('#tile-requests .value'); return !!t && t.innerText === '5'",
    );
    browser.wait_until(
        "the chart",
        "return !!document.querySelector('#overview-chart canvas') && \
         document.querySelectorAll('#overview-chart .u-legend .u-series').length >= 3",
    );
    let legend = browser.text("#overview-chart .u-legend");
    assert!(
        legend.contains("gpt-4o-mini") && legend.contains("text-embedding-3-small"),
        "{legend}"
    );
    browser.screenshot(&shots, "2-overview");
    // Split by provider: one series.
    browser.script(
        "const s = document.getElementById('f-group_by'); s.value = 'provider'; \
         s.dispatchEvent(new Event('change', {bubbles: true})); return true",
    );
    browser.wait_until(
        "the provider split",
        "return document.querySelector('#overview-chart .u-legend')?.textContent.includes('mock') && \
         document.querySelectorAll('#overview-chart .u-legend .u-series').length === 2",
    );

    keys_page(&h, &browser, &shots);
    logs_page(&browser, &shots);

    // Status: the provider and its key, live.
    browser.click("nav a[data-page=status]");
    browser.wait_until(
        "the status page",
        "return document.getElementById('status-providers')?.textContent.includes('mock') && \
         document.getElementById('status-providers').innerText.includes('active')",
    );
    assert!(
        browser.text("#status-providers").contains("…0001"),
        "masked pool key shown"
    );
    assert!(
        !browser.text("#status-providers").contains(common::POOL_KEY),
        "pool key never shown whole"
    );
    browser.screenshot(&shots, "5-status");

    // The CSP never had to block anything the dashboard does.
    let console = browser.console();
    let blocked: Vec<_> = console
        .iter()
        .filter(|m| m.contains("Content Security Policy") || m.contains("Uncaught"))
        .collect();
    assert!(blocked.is_empty(), "browser console: {blocked:?}");

    // Sign out: the cookie session no longer works.
    browser.click("#logout");
    browser.wait_until(
        "the login form again",
        "return !document.getElementById('login').hidden",
    );
    browser.screenshot(&shots, "6-logged-out");
    let after = browser.script(
        "const x = new XMLHttpRequest(); x.open('GET', '/admin/stats/overview', false); x.send(); return x.status",
    );
    assert_eq!(after.as_u64(), Some(401), "the session ended with the logout");
    for name in ["1-login", "2-overview", "3-keys", "4-logs", "5-status", "6-logged-out"] {
        assert!(shots.join(format!("{name}.png")).is_file(), "{name}.png saved");
    }
    let _ = CLIENT_KEY;
}

/// With `/admin/keys` (runtime key pool): add a key, validate, see its state change. Without
/// it: the page says key management is not available and still lists the configured pool.
fn keys_page(h: &Harness, browser: &Browser, shots: &std::path::Path) {
    let has_keys_api = admin_get(h, "/admin/keys").status != 404;
    browser.click("nav a[data-page=keys]");
    if !has_keys_api {
        browser.wait_until(
            "the key-management notice",
            "return document.getElementById('keys-unavailable')?.innerText.includes('not available in this build')",
        );
        browser.wait_until(
            "the read-only pool",
            "return document.getElementById('keys-table')?.innerText.includes('…0001')",
        );
        browser.screenshot(shots, "3-keys");
        return;
    }
    browser.wait_until("the key table", "return !!document.querySelector('#keys-table table')");
    browser.type_into("#add-provider", "mock");
    browser.type_into("#add-keys", "sk-dash-added-fail401-beef");
    browser.click("#add-submit");
    browser.wait_until(
        "the added key",
        "return document.getElementById('keys-table').innerText.includes('beef')",
    );
    let state_of_added =
        "const row = [...document.querySelectorAll('#keys-table tr')].find(r => r.innerText.includes('beef')); \
         return row ? row.querySelector('.pill').innerText : ''";
    let before = browser.script(state_of_added).as_str().unwrap_or("").to_owned();
    browser.click("#validate-all");
    browser.wait_for("the added key's state to change after validation", || {
        let now = browser.script(state_of_added).as_str().unwrap_or("").to_owned();
        (!now.is_empty() && now != before).then_some(now)
    });
    browser.screenshot(shots, "3-keys");
}

/// Filters narrow the list, a row opens its detail.
fn logs_page(browser: &Browser, shots: &std::path::Path) {
    browser.click("nav a[data-page=logs]");
    browser.wait_until(
        "five log rows",
        "return document.getElementById('logs-summary')?.innerText === '1–5 of 5'",
    );
    browser.type_into("#f-model", "text-embedding-3-small");
    browser.click("#logs-apply");
    browser.wait_until(
        "the filtered logs",
        "return document.getElementById('logs-summary').innerText === '1–1 of 1'",
    );
    browser.click("#logs-table tbody tr.clickable");
    browser.wait_until(
        "the request detail",
        "return document.getElementById('logs-detail').innerText.includes('text-embedding-3-small')",
    );
    browser.script("window.scrollTo(0, 0); return true");
    browser.screenshot(shots, "4-logs");
}
