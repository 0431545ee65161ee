//! Health and relay-outcome metrics per provider: quarantines, restores, breaker openings and
//! state, and answers that failed after the upstream answered (cut, idle, client gone).
//! These events are rare by design, so their counters are plain shared atomics kept with the
//! provider's health (written per event, never per healthy request).
//! Invariant: every label value comes from the config (provider names) or a fixed set
//! (states, reasons), so the series stay bounded.

use std::sync::atomic::{AtomicU64, Ordering};

use super::render::{family, series_str};

/// How a relayed answer ended when it did not end cleanly. The HTTP status (usually 200) had
/// already gone to the client; this says what happened after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayFailure {
    /// The upstream closed, reset or broke the framing of its answer midway.
    UpstreamCut,
    /// The upstream went silent longer than `upstream.stream_idle_timeout_ms`.
    StreamIdleTimeout,
    /// The client went away (a write failed or the connection closed).
    ClientAbort,
    /// `upstream.request_timeout_ms` ended the answer.
    RequestTimeout,
}

impl RelayFailure {
    const ALL: [RelayFailure; 4] = [
        RelayFailure::UpstreamCut,
        RelayFailure::StreamIdleTimeout,
        RelayFailure::ClientAbort,
        RelayFailure::RequestTimeout,
    ];

    /// The name in request records (`error`) and in the `reason` label.
    pub fn name(self) -> &'static str {
        match self {
            RelayFailure::UpstreamCut => "upstream_cut",
            RelayFailure::StreamIdleTimeout => "stream_idle_timeout",
            RelayFailure::ClientAbort => "client_abort",
            RelayFailure::RequestTimeout => "request_timeout",
        }
    }
}

/// One provider's event counters (they survive reloads with the provider's name).
#[derive(Debug, Default)]
pub struct HealthCounters {
    pub quarantines: AtomicU64,
    pub restores: AtomicU64,
    pub breaker_opens: AtomicU64,
    relay_failures: [AtomicU64; 4],
}

impl HealthCounters {
    pub fn relay_failure(&self, failure: RelayFailure) {
        self.relay_failures[failure as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn relay_failures(&self, failure: RelayFailure) -> u64 {
        self.relay_failures[failure as usize].load(Ordering::Relaxed)
    }
}

/// One provider as these metrics see it at scrape time.
pub struct ProviderSample<'a> {
    pub provider: &'a str,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    pub counters: &'a HealthCounters,
}

/// Appends the health families to a Prometheus text exposition.
pub fn render(out: &mut String, samples: &[ProviderSample<'_>]) {
    let counter = |out: &mut String, name: &str, help: &str, read: &dyn Fn(&HealthCounters) -> u64| {
        family(out, name, "counter", help);
        for s in samples {
            series_str(out, name, &["provider"], &[s.provider], read(s.counters));
        }
    };
    counter(
        out,
        "rotor_key_quarantines_total",
        "Keys taken out of rotation (401/403, or their own repeated failures), by provider.",
        &|c| c.quarantines.load(Ordering::Relaxed),
    );
    counter(
        out,
        "rotor_key_restores_total",
        "Quarantined keys put back after a successful probe, by provider.",
        &|c| c.restores.load(Ordering::Relaxed),
    );
    counter(
        out,
        "rotor_breaker_opens_total",
        "Provider circuit breaker openings (failures across several keys at once).",
        &|c| c.breaker_opens.load(Ordering::Relaxed),
    );
    family(
        out,
        "rotor_breaker_state",
        "gauge",
        "1 for the state each provider's circuit breaker is in (closed, open, half_open).",
    );
    for s in samples {
        series_str(
            out,
            "rotor_breaker_state",
            &["provider", "state"],
            &[s.provider, s.breaker],
            1,
        );
    }
    family(
        out,
        "rotor_relay_failures_total",
        "counter",
        "Answers that failed after the upstream answered (status already sent), by provider and reason.",
    );
    for s in samples {
        for failure in RelayFailure::ALL {
            series_str(
                out,
                "rotor_relay_failures_total",
                &["provider", "reason"],
                &[s.provider, failure.name()],
                s.counters.relay_failures(failure),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_families_render_per_provider() {
        let counters = HealthCounters::default();
        counters.quarantines.fetch_add(2, Ordering::Relaxed);
        counters.relay_failure(RelayFailure::ClientAbort);
        let mut out = String::new();
        render(
            &mut out,
            &[ProviderSample {
                provider: "p",
                breaker: "open",
                counters: &counters,
            }],
        );
        assert!(out.contains(r#"rotor_key_quarantines_total{provider="p"} 2"#), "{out}");
        assert!(out.contains(r#"rotor_key_restores_total{provider="p"} 0"#), "{out}");
        assert!(
            out.contains(r#"rotor_breaker_state{provider="p",state="open"} 1"#),
            "{out}"
        );
        assert!(out.contains(r#"rotor_relay_failures_total{provider="p",reason="client_abort"} 1"#));
        assert!(out.contains(r#"rotor_relay_failures_total{provider="p",reason="upstream_cut"} 0"#));
    }
}
