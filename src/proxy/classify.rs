//! Failure classification, in one place: what an upstream answer or error means for the
//! request (deliver it, or try elsewhere) and for the key (fine, cooling, failing, rejected).
//! Invariant: only answers that say nothing about the client's request (429, 5xx, 408, 529,
//! 401/403, transport errors) are retried; the client's own mistakes (400, 404, 413, 422 ...)
//! are delivered unchanged, because another key would answer the same.

use std::time::{Duration, SystemTime};

use crate::codec::head::{find_header, Header};
use crate::upstream::UpstreamError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send this answer to the client. `key_ok`: the answer shows the key works.
    Deliver { key_ok: bool },
    /// Try another key or provider; this is what the key gets.
    Retry(Penalty),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Penalty {
    /// Rate limited: cool for this long.
    Cool(Duration),
    /// The provider refused the key (401/403): quarantine it.
    Reject,
    /// Something failed that may be the key's or the provider's: count it.
    Failure,
}

/// An upstream response head. `default_cooldown` applies to a 429 without a usable hint.
pub fn classify_status(status: u16, headers: &[Header], default_cooldown: Duration) -> Verdict {
    match status {
        401 | 403 => Verdict::Retry(Penalty::Reject),
        429 => Verdict::Retry(Penalty::Cool(
            retry_after(headers, SystemTime::now()).unwrap_or(default_cooldown),
        )),
        408 | 500..=599 => Verdict::Retry(Penalty::Failure),
        400..=499 => Verdict::Deliver { key_ok: true },
        _ => Verdict::Deliver {
            key_ok: (200..400).contains(&status),
        },
    }
}

/// A transport failure before any answer (connect, TLS, timeout before the first byte, a
/// broken head): always worth another try elsewhere.
pub fn classify_error(_error: &UpstreamError) -> Verdict {
    Verdict::Retry(Penalty::Failure)
}

/// How long the provider asks us to wait: `retry-after-ms` (OpenAI, fractional ms), else
/// `retry-after` in seconds or as an HTTP date.
pub fn retry_after(headers: &[Header], now: SystemTime) -> Option<Duration> {
    if let Some(ms) = find_header(headers, "retry-after-ms")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_micros((ms * 1000.0) as u64));
    }
    let value = find_header(headers, "retry-after")
        .and_then(|v| std::str::from_utf8(v).ok())?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = value.parse::<f64>() {
        if seconds.is_finite() && seconds >= 0.0 {
            return Some(Duration::from_millis((seconds * 1000.0) as u64));
        }
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::head::test_headers as headers;
    use bytes::Bytes;

    #[test]
    fn statuses_map_to_verdicts() {
        let none = headers(&[]);
        let cd = Duration::from_secs(60);
        assert_eq!(classify_status(200, &none, cd), Verdict::Deliver { key_ok: true });
        for s in [400, 404, 413, 422] {
            assert_eq!(classify_status(s, &none, cd), Verdict::Deliver { key_ok: true }, "{s}");
        }
        for s in [401, 403] {
            assert_eq!(classify_status(s, &none, cd), Verdict::Retry(Penalty::Reject), "{s}");
        }
        for s in [408, 500, 502, 503, 504, 529] {
            assert_eq!(classify_status(s, &none, cd), Verdict::Retry(Penalty::Failure), "{s}");
        }
        assert_eq!(classify_status(429, &none, cd), Verdict::Retry(Penalty::Cool(cd)));
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            retry_after(&headers(&[("Retry-After", "7")]), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after-ms", "1500.5")]), now),
            Some(Duration::from_micros(1_500_500))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        let owned = vec![Header {
            name: Bytes::from_static(b"retry-after"),
            value: Bytes::from(date),
        }];
        assert_eq!(retry_after(&owned, now), Some(Duration::from_secs(30)));
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(
            classify_status(429, &headers(&[("retry-after", "2")]), Duration::from_secs(60)),
            Verdict::Retry(Penalty::Cool(Duration::from_secs(2)))
        );
    }
}
