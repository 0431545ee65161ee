//! Learned limits: the provider's own rate-limit headers say when a key is spent, so rotor
//! stops choosing it before the provider answers 429. Reads OpenAI's
//! `x-ratelimit-remaining-{requests,tokens}` with `x-ratelimit-reset-{requests,tokens}` (Go-style
//! durations: `1s`, `6m0s`, `20ms`, `1h2m3.5s`) and Anthropic's
//! `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{remaining,reset}` (RFC 3339).
//! Invariant: only a remaining count of exactly 0 with a parseable reset cools a key, for at
//! most a day; the caller applies it through `KeyHealth::cool_until`, which only moves later.

use crate::codec::head::{Headers, NameLengths};
use crate::codec::time::parse_rfc3339_ms;

/// Longest cooling a header may impose (a garbage reset must not bench a key for a year).
const MAX_WAIT_MS: u64 = 86_400_000;

/// `(remaining header, reset header)` pairs with Go-style duration resets (OpenAI).
const DURATION_RESETS: [(&str, &str); 2] = [
    ("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"),
    ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
];
/// `(remaining header, reset header)` pairs with RFC 3339 resets (Anthropic).
const TIMESTAMP_RESETS: [(&str, &str); 4] = [
    (
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
    ),
    (
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
    ),
    (
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-reset",
    ),
    (
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-reset",
    ),
];

/// Every remaining count's name: without one, no reset is read.
const REMAINING: NameLengths = NameLengths::of(&[
    DURATION_RESETS[0].0,
    DURATION_RESETS[1].0,
    TIMESTAMP_RESETS[0].0,
    TIMESTAMP_RESETS[1].0,
    TIMESTAMP_RESETS[2].0,
    TIMESTAMP_RESETS[3].0,
]);

/// How long (ms from now) the key is spent according to the response headers, if it is.
/// `unix_now_ms` reads the wall clock, only for RFC 3339 resets. No allocation: it runs on every
/// upstream response.
pub fn spent_for(headers: &Headers, unix_now_ms: impl Fn() -> u64) -> Option<u64> {
    // Most answers carry no remaining count (any provider but OpenAI and Anthropic, or those
    // without the fields): the six names ruled out by their lengths in one test, where a `find`
    // of each cost ~110 instructions per answer (callgrind, issue 18).
    if !headers.may_hold_any(REMAINING) {
        return None;
    }
    // `find`: most answers carry none of these names, and their lengths alone say so.
    let value = |name: &str| {
        headers
            .find(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
    };
    let mut wait: Option<u64> = None;
    let mut note = |ms: Option<u64>| {
        if let Some(ms) = ms {
            wait = Some(wait.map_or(ms, |w| w.max(ms)).min(MAX_WAIT_MS));
        }
    };
    for (remaining, reset) in DURATION_RESETS {
        if value(remaining) == Some("0") {
            note(value(reset).and_then(parse_duration_ms));
        }
    }
    for (remaining, reset) in TIMESTAMP_RESETS {
        if value(remaining) == Some("0") {
            let at = value(reset).and_then(parse_rfc3339_ms);
            note(at.map(|at| at.saturating_sub(unix_now_ms())));
        }
    }
    wait.filter(|ms| *ms > 0)
}

/// A Go-style duration as OpenAI sends it: `1s`, `6m0s`, `20ms`, `1h2m3.5s`, `0.5s`.
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit_ms, len) = if rest.starts_with("ms") {
            (1.0, 2)
        } else if rest.starts_with('h') {
            (3_600_000.0, 1)
        } else if rest.starts_with('m') {
            (60_000.0, 1)
        } else if rest.starts_with('s') {
            (1_000.0, 1)
        } else {
            return None;
        };
        total += number * unit_ms;
        rest = &rest[len..];
    }
    Some(total.ceil() as u64)
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::codec::head::test_headers as headers;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration_ms("1s"), Some(1_000));
        assert_eq!(parse_duration_ms("6m0s"), Some(360_000));
        assert_eq!(parse_duration_ms("20ms"), Some(20));
        assert_eq!(parse_duration_ms("1h2m3.5s"), Some(3_723_500));
        assert_eq!(parse_duration_ms("0.5s"), Some(500));
        assert_eq!(parse_duration_ms(""), None);
        assert_eq!(parse_duration_ms("5"), None);
        assert_eq!(parse_duration_ms("5x"), None);
    }

    #[test]
    fn openai_headers_spent_only_at_zero() {
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "6m0s"),
        ]);
        assert_eq!(spent_for(&h, || 0), Some(360_000));
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "3"),
            ("x-ratelimit-reset-requests", "6m0s"),
        ]);
        assert_eq!(spent_for(&h, || 0), None);
        // The later reset wins when both are spent.
        let h = headers(&[
            ("X-RateLimit-Remaining-Requests", "0"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "20ms"),
        ]);
        assert_eq!(spent_for(&h, || 0), Some(1_000));
    }

    #[test]
    fn anthropic_headers_use_wall_clock_resets() {
        let now = parse_rfc3339_ms("2024-05-01T12:00:00Z").unwrap_or(0);
        let h = headers(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2024-05-01T12:00:30Z"),
            ("anthropic-ratelimit-tokens-remaining", "5000"),
            ("anthropic-ratelimit-tokens-reset", "2024-05-01T12:05:00Z"),
        ]);
        assert_eq!(spent_for(&h, || now), Some(30_000));
        let h = headers(&[("anthropic-ratelimit-requests-remaining", "0")]);
        assert_eq!(spent_for(&h, || now), None);
    }

    /// Each remaining count is read where it comes alone (its name's length is in the one
    /// test that rules them all out), in a parsed head and in any case; a head with none of
    /// the names is ruled out before any is looked up.
    #[test]
    fn every_remaining_count_passes_the_one_test() {
        use crate::codec::head::HeadLimits;
        use crate::codec::response::parse_response_head;
        let spent = |fields: &str| {
            let raw = format!("HTTP/1.1 429 Too Many Requests\r\n{fields}content-length: 0\r\n\r\n");
            let mut buf = bytes::BytesMut::from(raw.as_str());
            let head = parse_response_head(&mut buf, &HeadLimits::default(), false)
                .unwrap()
                .unwrap();
            let held = head.headers.may_hold_any(REMAINING);
            (held, spent_for(&head.headers, || 0))
        };
        for (remaining, reset) in DURATION_RESETS {
            assert_eq!(
                spent(&format!("{remaining}: 0\r\n{reset}: 2s\r\n")),
                (true, Some(2_000))
            );
            let upper = remaining.to_ascii_uppercase();
            assert_eq!(spent(&format!("{upper}: 0\r\n{reset}: 3s\r\n")), (true, Some(3_000)));
        }
        for (remaining, reset) in TIMESTAMP_RESETS {
            let fields = format!("{remaining}: 0\r\n{reset}: 1970-01-01T00:00:04Z\r\n");
            assert_eq!(spent(&fields), (true, Some(4_000)));
        }
        assert_eq!(spent(""), (false, None));
        assert_eq!(
            spent("content-type: application/json\r\nx-ratelimit-limit-requests: 9\r\n"),
            (false, None)
        );
    }
}
