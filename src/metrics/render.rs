//! The Prometheus text exposition: every worker's shard summed at scrape time, plus the gauges
//! owned elsewhere (`Extra`). Invariant: label values are escaped as the text format requires,
//! and series appear in a stable (sorted) order so two scrapes of the same counts are equal.

use std::fmt::Write;

use super::bound::Family;
use super::{Extra, Registry, Shard};

impl Registry {
    /// The Prometheus text exposition of every shard summed, plus `extra`.
    pub fn render(&self, extra: &Extra<'_>) -> String {
        let mut total = Shard::new(self.budget.clone());
        for shard in self.shards.lock().iter() {
            total.merge(&shard.lock());
        }
        let mut out = String::with_capacity(4096);
        family(
            &mut out,
            "rotor_requests_total",
            "counter",
            "Requests answered, by endpoint, model, provider and status.",
        );
        for (labels, n) in sorted(&total.requests) {
            series(
                &mut out,
                "rotor_requests_total",
                &["endpoint", "model", "provider", "status"],
                labels,
                *n,
            );
        }
        family(
            &mut out,
            "rotor_tokens_total",
            "counter",
            "Tokens reported by upstreams, by model, provider and kind.",
        );
        for (labels, t) in sorted(&total.tokens) {
            for (kind, n) in ["prompt", "completion", "cached", "reasoning"].iter().zip(t) {
                let values = [labels[0].as_str(), labels[1].as_str(), kind];
                series_str(
                    &mut out,
                    "rotor_tokens_total",
                    &["model", "provider", "kind"],
                    &values,
                    *n,
                );
            }
        }
        family(
            &mut out,
            "rotor_upstream_attempts_total",
            "counter",
            "Upstream attempts, by provider and outcome.",
        );
        for (labels, n) in sorted(&total.attempts) {
            series(
                &mut out,
                "rotor_upstream_attempts_total",
                &["provider", "outcome"],
                labels,
                *n,
            );
        }
        family(
            &mut out,
            "rotor_limit_rejections_total",
            "counter",
            "Requests refused by a rate limit, by scope.",
        );
        for (labels, n) in sorted(&total.limit_rejections) {
            series(&mut out, "rotor_limit_rejections_total", &["scope"], labels, *n);
        }
        family(
            &mut out,
            "rotor_upstream_cancels_total",
            "counter",
            "Upstream jobs (Replicate predictions) canceled because no client waits for them, by provider and outcome (ok, failed, shed: too many cancels in flight).",
        );
        for (labels, n) in sorted(&total.cancels) {
            series(
                &mut out,
                "rotor_upstream_cancels_total",
                &["provider", "outcome"],
                labels,
                *n,
            );
        }
        family(
            &mut out,
            "rotor_request_duration_seconds",
            "histogram",
            "Total request latency as the client saw it.",
        );
        total.duration.render("rotor_request_duration_seconds", &mut out);
        family(
            &mut out,
            "rotor_overhead_seconds",
            "histogram",
            "Time rotor itself added (excludes waiting on the upstream).",
        );
        total.overhead.render("rotor_overhead_seconds", &mut out);
        family(
            &mut out,
            "rotor_key_state",
            "gauge",
            "1 for the state each upstream key is in (keys masked).",
        );
        for (provider, key, state) in &extra.key_states {
            series_str(
                &mut out,
                "rotor_key_state",
                &["provider", "key", "state"],
                &[provider, key, state],
                1,
            );
        }
        family(
            &mut out,
            "rotor_log_dropped_total",
            "counter",
            "Request records dropped (queue full or storage failing).",
        );
        let _ = writeln!(out, "rotor_log_dropped_total {}", extra.log_dropped);
        family(
            &mut out,
            "rotor_open_connections",
            "gauge",
            "Client connections open now.",
        );
        let _ = writeln!(out, "rotor_open_connections {}", extra.open_connections);
        family(
            &mut out,
            "rotor_metrics_series_dropped_total",
            "counter",
            "Observations without a series of their own (over server.metrics_max_series: counted under model=\"(other)\").",
        );
        let _ = writeln!(out, "rotor_metrics_series_dropped_total {}", total.series_dropped);
        out
    }
}

fn sorted<V>(map: &Family<V>) -> Vec<(&Vec<String>, &V)> {
    let mut rows: Vec<_> = map.values().map(|(l, v)| (l, v)).collect();
    rows.sort_by(|a, b| a.0.cmp(b.0));
    rows
}

pub(super) fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn series(out: &mut String, name: &str, keys: &[&str], values: &[String], n: u64) {
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    series_str(out, name, keys, &values, n);
}

pub(super) fn series_str(out: &mut String, name: &str, keys: &[&str], values: &[&str], n: u64) {
    out.push_str(name);
    out.push('{');
    for (i, (k, v)) in keys.iter().zip(values).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    let _ = writeln!(out, "}} {n}");
}
