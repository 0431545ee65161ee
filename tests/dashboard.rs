//! The dashboard in a real browser (headless Chromium through chromedriver, WebDriver over
//! HTTP): sign in (a wrong key first), the overview chart drawn from real traffic, the Keys page
//! on the real `/admin/keys` API (paste keys, validate one so the mock's 401 turns it invalid,
//! validate all for a mock balance, export as a download, remove),
//! log filters, paging and detail, the Status page, sign-out. Every page is saved as a PNG in
//! `target/dashboard-screenshots/`. Fails, never skips, without chromium and chromedriver.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)]

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::path::PathBuf;

use common::{chat, default_body, Conf, Harness, CLIENT_KEY};
use rotor::mock::KeyFault;
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

#[test]
fn dashboard_in_a_real_browser() {
    let balance = "aliases = { \"gpt-3.5\" = \"gpt-4o-mini\" }\nbalance = { path = \"/user/info\", field = \"/data/totalBalance\" }";
    let h = Harness::start(Conf {
        server: format!("admin_key = \"{ADMIN_KEY}\"\nadmin_user = \"ops\"\nadmin_password = \"ops-password-1\""),
        ..Conf::with_body(&default_body().replace("aliases = { \"gpt-3.5\" = \"gpt-4o-mini\" }", balance))
    });
    traffic(&h);
    let base = format!("http://{}/admin/", h.addr);
    let shots = screenshots();
    let downloads = tempfile::tempdir().unwrap();
    let browser = Browser::start_with(Some(downloads.path()));

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

    keys_page(&h, &browser, &shots, downloads.path());
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
    for name in [
        "1-login",
        "2-overview",
        "3-keys",
        "3b-keys-remove",
        "4-logs",
        "5-status",
        "6-logged-out",
    ] {
        assert!(shots.join(format!("{name}.png")).is_file(), "{name}.png saved");
    }
    let _ = CLIENT_KEY;
}

const ADDED: &str = "sk-dash-added-fail-beef";
const RICH: &str = "sk-dash-added-rich-cafe";

/// The state (`data-state`) of the Keys table row whose masked key ends in `tail` ("" = none).
fn row_state(browser: &Browser, tail: &str) -> String {
    let script = format!(
        "const row = [...document.querySelectorAll('#keys-table tbody tr')].find(r => r.innerText.includes({})); \
         return row ? row.querySelector('.pill').innerText : ''",
        json_str(tail)
    );
    browser.script(&script).as_str().unwrap_or("").to_owned()
}

/// Clicks the `action` button of the row whose masked key ends in `tail`.
fn row_click(browser: &Browser, tail: &str, action: &str) {
    let script = format!(
        "const row = [...document.querySelectorAll('#keys-table tbody tr')].find(r => r.innerText.includes({})); \
         const b = row && row.querySelector('button[data-action={action}]'); if (b) b.click(); return !!b",
        json_str(tail)
    );
    browser.wait_until(&format!("the {action} button of …{tail}"), &script);
}

/// The Keys page on the real `/admin/keys` API: paste two keys, validate one (the mock refuses
/// it: its row turns `invalid` with the 401 as its last error) and all (the other shows its
/// mock balance), export (a real download holding both keys whole), remove one.
fn keys_page(h: &Harness, browser: &Browser, shots: &std::path::Path, downloads: &std::path::Path) {
    browser.click("nav a[data-page=keys]");
    browser.wait_until(
        "the key table",
        "return document.getElementById('keys-table')?.innerText.includes('…0001')",
    );
    assert!(
        browser.find("#keys-unavailable").is_none(),
        "no 'not available' fallback"
    );
    browser.type_into("#add-keys", &format!("{ADDED}\n{RICH}, {ADDED}"));
    browser.click("#add-submit");
    browser.wait_until(
        "the add answer",
        "return document.getElementById('keys-message').innerText.includes('Added 2 key(s) to mock. 1 duplicate(s) ignored')",
    );
    browser.wait_until(
        "both added keys listed",
        "const t = document.getElementById('keys-table').innerText; return t.includes('…beef') && t.includes('…cafe')",
    );
    assert_eq!(row_state(browser, "beef"), "active");
    assert!(browser.text("#keys-table").contains("runtime"));

    // The mock now refuses the first key and holds a balance for the second.
    h.mock().faults.set(
        ADDED,
        KeyFault {
            status: Some(401),
            latency_ms: 700,
            ..Default::default()
        },
    );
    h.mock().faults.set(
        RICH,
        KeyFault {
            balance: Some(42.5),
            ..Default::default()
        },
    );
    row_click(browser, "beef", "validate");
    browser.wait_for("…beef to read validating… while its check runs", || {
        (row_state(browser, "beef") == "validating…").then_some(())
    });
    browser.wait_for("…beef to turn invalid after its validation", || {
        (row_state(browser, "beef") == "invalid").then_some(())
    });
    assert_eq!(row_state(browser, "cafe"), "active", "only the one key was validated");
    browser.wait_until(
        "the validation summary",
        "return document.getElementById('keys-message').innerText.includes('Validated 1 key(s): 0 valid, 1 refused')",
    );
    browser.click("#validate-all");
    browser.wait_until(
        "the summary of validating all keys",
        "return document.getElementById('keys-message').innerText.includes('Validated 3 key(s): 2 valid, 1 refused')",
    );
    browser.wait_until(
        "the balance of …cafe",
        "const row = [...document.querySelectorAll('#keys-table tbody tr')].find(r => r.innerText.includes('…cafe')); \
         return !!row && row.innerText.includes('42.5')",
    );
    let table = browser.text("#keys-table");
    assert!(table.contains("GET /models answered 401"), "{table}");
    assert!(!table.contains(ADDED) && !table.contains(RICH), "keys are shown masked");
    browser.script("window.scrollTo(0, 0); return true");
    browser.screenshot(shots, "3-keys");

    // Export: a real download with every key in full.
    browser.click("#export");
    let exported = browser.wait_for("the exported file", || {
        let file = std::fs::read_dir(downloads)
            .ok()?
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().ends_with(".json"))?;
        let text = std::fs::read_to_string(file.path()).ok()?;
        text.contains(RICH).then_some(text)
    });
    assert!(
        exported.contains(ADDED) && exported.contains(common::POOL_KEY),
        "{exported}"
    );

    // Remove asks first, then the row is gone; the pool serves with the remaining keys.
    row_click(browser, "beef", "remove");
    browser.wait_until(
        "the remove confirmation",
        "return document.getElementById('keys-table').innerText.includes('Remove …beef?')",
    );
    browser.screenshot(shots, "3b-keys-remove");
    row_click(browser, "beef", "confirm");
    browser.wait_until(
        "…beef removed",
        "return document.getElementById('keys-message').innerText.includes('Removed …beef') && \
         !document.getElementById('keys-table').innerText.includes('…beef')",
    );
    assert_eq!(row_state(browser, "cafe"), "active");
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
