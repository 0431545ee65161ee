//! Failure classification and its consequences, in one place: what an upstream answer or
//! error means for the request (deliver it, try elsewhere, or try the same key again later in
//! the request) and for the key and provider (fine, cooling, failing, rejected; a key fault or a
//! provider fault). `settle` applies a verdict to the shared health state.
//! Invariants: only answers that say nothing about the client's request (429, 5xx, 408, 529,
//! 401/403, transport errors) are retried; the client's own mistakes (400, 404, 413, 422 ...)
//! are delivered unchanged, because another key would answer the same. A key is quarantined
//! only for its own faults: 401/403, or a run of failures while other keys of its provider
//! answered; failures across several keys at once are the provider's, open its breaker and
//! quarantine no key; the last usable key of a provider is never quarantined for failures.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::codec::head::{find_header, Headers};
use crate::config::{Breaker, Retry};
use crate::health::{KeyHealth, ProviderHealth, Strike, Tally};
use crate::upstream::{UpstreamError, UpstreamErrorKind};

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
    /// The provider refused the key (401/403, the status): quarantine it.
    Reject(u16),
    /// Something failed that may be the key's or the provider's: count it.
    Failure,
}

/// An upstream response head. `default_cooldown` applies to a 429 without a usable hint.
/// Inlined into `attempt::judge::classify`, its one caller, with the usual 2xx tested first:
/// built apart, the call and its match ladder cost ~35 instructions an answer (callgrind).
#[inline]
pub fn classify_status(status: u16, headers: &Headers, default_cooldown: Duration) -> Verdict {
    match status {
        200..=299 => Verdict::Deliver { key_ok: true },
        401 | 403 => Verdict::Retry(Penalty::Reject(status)),
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

/// Whether the same key may be tried again later in the request (after the other candidates):
/// a transient failure (5xx, 408) may not repeat; a rejection or a 429 will.
pub fn may_repeat(verdict: Verdict) -> bool {
    matches!(verdict, Verdict::Retry(Penalty::Failure))
}

/// `may_repeat` for a transport failure: a refused or broken connection may not repeat; a
/// timeout already cost its full wait and the same key is likely as slow again.
pub fn error_may_repeat(error: &UpstreamError) -> bool {
    !matches!(
        error.kind,
        UpstreamErrorKind::ConnectTimeout | UpstreamErrorKind::FirstByteTimeout | UpstreamErrorKind::IdleTimeout
    )
}

/// Without a breaker, failures are still tallied over this window to tell provider faults
/// from key faults.
const DEFAULT_TALLY_WINDOW_MS: u64 = 2_000;

/// One attempt on one key, as `settle` sees it.
pub struct Subject<'a> {
    /// The provider's name, for logs.
    pub provider: &'a str,
    pub provider_health: &'a ProviderHealth,
    /// Every key of the provider (the last usable one is never quarantined for failures).
    pub keys: &'a [Arc<KeyHealth>],
    pub key: usize,
    /// Health-clock ms when the attempt was sent: older than a key's or breaker's last change
    /// means it says nothing about their state now.
    pub started: u64,
}

/// Applies what `verdict` means to the key and its provider. Returns the moment the key is
/// usable again when it now cools. A delivered answer (nearly every attempt) is settled inline
/// in the caller; only a retried one enters `settle_retry`'s frame.
#[inline]
pub fn settle(subject: &Subject<'_>, verdict: Verdict, retry: &Retry, now: u64) -> Option<u64> {
    match verdict {
        Verdict::Deliver { key_ok } => {
            let health = subject.keys.get(subject.key)?;
            if key_ok {
                health.record_success();
            }
            answered(subject, now, tally_window(retry));
            None
        }
        Verdict::Retry(penalty) => settle_retry(subject, penalty, retry, now),
    }
}

/// The window failures are tallied over: the breaker's, else `DEFAULT_TALLY_WINDOW_MS`.
fn tally_window(retry: &Retry) -> u64 {
    retry
        .breaker
        .map_or(DEFAULT_TALLY_WINDOW_MS, |b| b.window.as_millis() as u64)
}

/// `settle` for an answer or failure that is retried elsewhere.
fn settle_retry(subject: &Subject<'_>, penalty: Penalty, retry: &Retry, now: u64) -> Option<u64> {
    let health = subject.keys.get(subject.key)?;
    let window = tally_window(retry);
    match penalty {
        Penalty::Cool(wait) => {
            let until = now.saturating_add(wait.as_millis() as u64);
            health.cool_until(until, now);
            answered(subject, now, window);
            Some(until)
        }
        Penalty::Reject(status) => {
            answered(subject, now, window);
            // Two requests rejected at once quarantine the key once (not for twice as long).
            let quarantined = subject.provider_health.serialized(|| {
                (!health.is_quarantined()).then(|| health.quarantine(now, retry.quarantine.as_millis() as u64))
            });
            if let Some(wait) = quarantined {
                subject.provider_health.counters.quarantines.fetch_add(1, Relaxed);
                tracing::warn!(
                    provider = %subject.provider,
                    key = %health.masked,
                    status,
                    probe_in_ms = wait,
                    "key quarantined: the upstream rejected it"
                );
            }
            None
        }
        Penalty::Failure => {
            failed(subject, health, retry, window, now);
            None
        }
    }
}

/// The provider answered: the breaker closes when this was its probe (or any attempt sent
/// after it opened).
fn answered(subject: &Subject<'_>, now: u64, window: u64) {
    let provider = subject.provider_health;
    provider.note_answer(now, window);
    if provider.open_until().is_some() && subject.started >= provider.changed_at() && provider.close(now) {
        tracing::info!(provider = %subject.provider, "provider answers again: circuit breaker closed");
    }
}

/// A failure that may be the key's or the provider's.
fn failed(subject: &Subject<'_>, health: &KeyHealth, retry: &Retry, window: u64, now: u64) {
    let provider = subject.provider_health;
    // Sent before the breaker last opened or closed: it belongs to a provider episode that is
    // over, and says nothing about the key.
    if subject.started < provider.changed_at() {
        health.excuse();
        return;
    }
    if let Some(open_until) = provider.open_until() {
        // While the breaker is open only its half-open probe is sent: that failed, so reopen.
        if let (true, Some(breaker)) = (now >= open_until, retry.breaker) {
            provider.open(now, now.saturating_add(breaker.open.as_millis() as u64));
            tracing::info!(provider = %subject.provider, "probe request failed: circuit breaker stays open");
        }
        health.excuse();
        return;
    }
    let tally = provider.note_failure(now, window, subject.key);
    if let Some(breaker) = retry.breaker.filter(|b| trips(&tally, b, subject.keys.len())) {
        if provider.open(now, now.saturating_add(breaker.open.as_millis() as u64)) {
            // The failures were the provider's: no key carries them.
            subject.keys.iter().for_each(|k| k.forgive());
            tracing::warn!(
                provider = %subject.provider,
                failures = tally.failures,
                answers = tally.answers,
                keys = tally.keys,
                open_ms = breaker.open.as_millis() as u64,
                "provider failing across keys: circuit breaker open"
            );
        }
        health.excuse();
        return;
    }
    if provider_fault(&tally) {
        health.excuse();
        return;
    }
    let Strike::Counted { in_a_row, since } = health.strike(now, subject.started) else {
        return;
    };
    let threshold = retry.quarantine_after_failures;
    // A key fault needs evidence that the provider works: another key answered meanwhile.
    if threshold == 0 || in_a_row < threshold || provider.last_answer() <= since {
        return;
    }
    let quarantined = provider.serialized(|| {
        let others_usable = subject
            .keys
            .iter()
            .enumerate()
            .any(|(i, k)| i != subject.key && !k.is_quarantined());
        (others_usable && !health.is_quarantined()).then(|| health.quarantine(now, retry.quarantine.as_millis() as u64))
    });
    match quarantined {
        Some(wait) => {
            provider.counters.quarantines.fetch_add(1, Relaxed);
            tracing::warn!(
                provider = %subject.provider,
                key = %health.masked,
                failures_in_a_row = in_a_row,
                probe_in_ms = wait,
                "key quarantined: it kept failing while other keys answered"
            );
        }
        None => tracing::debug!(
            provider = %subject.provider,
            key = %health.masked,
            "key keeps failing but is the provider's last usable key: not quarantined"
        ),
    }
}

/// Failures across several keys that outnumber the answers: the provider is failing, not
/// one key.
fn provider_fault(tally: &Tally) -> bool {
    tally.keys >= 2 && tally.failures >= tally.answers
}

/// Whether a provider's recent failures open its breaker: enough of them, at least as many as
/// answers, and from two keys or more when it has several.
fn trips(tally: &Tally, breaker: &Breaker, keys: usize) -> bool {
    tally.failures >= breaker.failures && tally.failures >= tally.answers && tally.keys as usize >= keys.clamp(1, 2)
}

/// How long the provider asks us to wait: `retry-after-ms` (OpenAI, fractional ms), else
/// `retry-after` in seconds or as an HTTP date.
pub fn retry_after(headers: &Headers, now: SystemTime) -> Option<Duration> {
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

    #[test]
    fn statuses_map_to_verdicts() {
        let none = headers(&[]);
        let cd = Duration::from_secs(60);
        assert_eq!(classify_status(200, &none, cd), Verdict::Deliver { key_ok: true });
        for s in [400, 404, 413, 422] {
            assert_eq!(classify_status(s, &none, cd), Verdict::Deliver { key_ok: true }, "{s}");
        }
        for s in [401, 403] {
            assert_eq!(classify_status(s, &none, cd), Verdict::Retry(Penalty::Reject(s)), "{s}");
        }
        for s in [408, 500, 502, 503, 504, 529] {
            assert_eq!(classify_status(s, &none, cd), Verdict::Retry(Penalty::Failure), "{s}");
        }
        assert_eq!(classify_status(429, &none, cd), Verdict::Retry(Penalty::Cool(cd)));
    }

    /// Every status a head can carry maps as the rules say, the 2xx arm (first, for the usual
    /// answer) included: only 2xx and 3xx show the key works, 1xx and odd codes do not.
    #[test]
    fn every_status_maps_by_the_rules() {
        let none = headers(&[]);
        let cd = Duration::from_secs(60);
        for s in 0..=999u16 {
            let expected = match s {
                401 | 403 => Verdict::Retry(Penalty::Reject(s)),
                429 => Verdict::Retry(Penalty::Cool(cd)),
                408 | 500..=599 => Verdict::Retry(Penalty::Failure),
                200..=499 => Verdict::Deliver { key_ok: true },
                _ => Verdict::Deliver { key_ok: false },
            };
            assert_eq!(classify_status(s, &none, cd), expected, "{s}");
        }
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
        let owned = Headers::from_pairs(&[("retry-after", date)]);
        assert_eq!(retry_after(&owned, now), Some(Duration::from_secs(30)));
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(
            classify_status(429, &headers(&[("retry-after", "2")]), Duration::from_secs(60)),
            Verdict::Retry(Penalty::Cool(Duration::from_secs(2)))
        );
    }
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod settle_tests;
