//! The dashboard's files, compiled into the binary (`include_str!`): the page, its styles and
//! scripts, and the vendored chart library. No CDN, so it works offline.
//! Invariant: every dashboard answer carries the strict Content-Security-Policy below (no
//! inline script or style, nothing from another origin, no framing) and `nosniff`; the files
//! hold no data, which only comes from authenticated admin calls.

/// The CSP of every admin answer. `style-src 'self'` still lets scripts set element styles
/// through the CSSOM, which is all the chart library does.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Headers every admin answer carries, beside its content type.
pub const SECURITY_HEADERS: [(&str, &[u8]); 4] = [
    ("content-security-policy", CSP.as_bytes()),
    ("x-content-type-options", b"nosniff"),
    ("referrer-policy", b"no-referrer"),
    ("x-frame-options", b"DENY"),
];

/// One embedded file.
pub struct Asset {
    pub body: &'static str,
    pub content_type: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// `/admin/` itself.
pub const INDEX: Asset = Asset {
    body: include_str!("assets/index.html"),
    content_type: HTML,
};

/// Files under `/admin/assets/`, by name.
const FILES: &[(&str, Asset)] = &[
    ("app.css", asset(include_str!("assets/app.css"), CSS)),
    ("api.js", asset(include_str!("assets/api.js"), JS)),
    ("app.js", asset(include_str!("assets/app.js"), JS)),
    ("ui.js", asset(include_str!("assets/ui.js"), JS)),
    ("overview.js", asset(include_str!("assets/overview.js"), JS)),
    ("keys.js", asset(include_str!("assets/keys.js"), JS)),
    ("logs.js", asset(include_str!("assets/logs.js"), JS)),
    ("status.js", asset(include_str!("assets/status.js"), JS)),
    (
        "vendor/uPlot.iife.min.js",
        asset(include_str!("assets/vendor/uPlot.iife.min.js"), JS),
    ),
    (
        "vendor/uPlot.min.css",
        asset(include_str!("assets/vendor/uPlot.min.css"), CSS),
    ),
];

const fn asset(body: &'static str, content_type: &'static str) -> Asset {
    Asset { body, content_type }
}

/// The file at `/admin/assets/{name}`.
pub fn find(name: &str) -> Option<&'static Asset> {
    FILES.iter().find(|(n, _)| *n == name).map(|(_, a)| a)
}

/// A strong validator for the file: the same bytes give the same tag, across restarts.
pub fn etag(asset: &Asset) -> String {
    // FNV-1a, 64 bits: stable, and collisions only cost a stale cache on a changed file.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in asset.body.as_bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{hash:016x}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_the_page_loads_is_served() {
        for line in INDEX.body.lines() {
            for (attr, close) in [("src=\"assets/", '"'), ("href=\"assets/", '"')] {
                if let Some(start) = line.find(attr) {
                    let rest = &line[start + attr.len()..];
                    let name = rest.split(close).next().unwrap_or_default();
                    assert!(find(name).is_some(), "index.html refers to missing asset {name}");
                }
            }
        }
        assert!(!INDEX.body.contains("<script>"), "no inline script (CSP)");
        assert!(!INDEX.body.contains("style="), "no inline style (CSP)");
    }
}
