//! Phase `finish`: what the earlier phases learned about a request (the `Trace`) becomes
//! metrics on this core's shard and, when logging is on, (sampled) a request record on the
//! queue; a request that gets no record there counts in this core's stats rollup shard (the
//! writer counts the queued ones).
//! Invariant: runs exactly once per request, after the response (or the error) went out, and
//! never blocks.

use std::sync::Arc;

use super::{Core, RequestContext};
use crate::health::clock::Moment;
use crate::metrics::health::RelayFailure;
use crate::metrics::Observation;
use crate::usage::record::{Label, RecordText, RequestRecord, Texts, MAX_FIELD_BYTES};
use crate::usage::rollup::Sample;
use crate::usage::Usage;

/// Filled in by the phases as the request goes; read by `finish`.
#[derive(Debug, Default)]
pub struct Trace {
    pub endpoint: &'static str,
    /// Index in the generation's `clients` (names are looked up at `finish`: no copies per
    /// request).
    pub client: Option<usize>,
    /// `model` had no route and `routing.default_model` served it instead.
    pub defaulted: bool,
    /// Index in the generation's `providers`.
    pub provider: Option<usize>,
    /// The model asked of the provider when it differs from `model` (an alias), else empty.
    pub upstream_model: String,
    /// The key of the delivering (or last) attempt: (provider index, key index).
    pub key: Option<(usize, usize)>,
    /// The metrics outcome of the attempt that delivered the answer (`ok`, or `error` when the
    /// last one's failure went to the client), counted by `finish` with the request.
    pub delivered: Option<&'static str>,
    pub attempts: u32,
    pub stream: bool,
    pub usage: Usage,
    pub bytes_in: u64,
    /// rotor's own time before the first upstream send, in ns (integers: no `Duration`
    /// arithmetic per request).
    pub before_upstream_ns: Option<u64>,
    /// rotor's own time between the chosen upstream answer and the client's response head, ns.
    pub after_upstream_ns: Option<u64>,
    /// When the response head went to the client.
    pub first_byte_at: Option<Moment>,
    /// When the response was complete, read by the relay as the answer ended; `None` (an error
    /// answer, a cache hit) = `finish` reads the clock.
    pub ended_at: Option<Moment>,
    /// Error kind when the request failed (e.g. `upstream_timeout`), else empty.
    pub error: &'static str,
    /// How the answer failed after its status went out (a cut, an idle upstream, a client that
    /// left); recorded as the `error` in its place.
    pub relay_failure: Option<RelayFailure>,
    /// The response cache's answer to this request (`hit`, `miss`, `bypass`); `None` = not
    /// looked up. A hit is recorded with provider `cache`.
    pub cache: Option<&'static str>,
}

impl Trace {
    /// rotor's own added time in ns, when the request reached an upstream.
    pub fn overhead_ns(&self) -> Option<u64> {
        Some(self.before_upstream_ns? + self.after_upstream_ns.unwrap_or_default())
    }
}

/// Longest model name a request record keeps. Names come from clients (wildcard routes serve
/// any name), and the in-memory log and the record queue hold many records.
const MAX_RECORD_MODEL_BYTES: usize = 256;

fn capped(model: &str) -> std::borrow::Cow<'_, str> {
    crate::metrics::cap(model, MAX_RECORD_MODEL_BYTES)
}

/// Nanoseconds as the seconds metrics observe.
fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

pub(super) fn finish(core: &Core, ctx: &RequestContext, status: u16, bytes_out: u64) {
    let trace = ctx.trace.borrow();
    let ended_at = trace.ended_at.unwrap_or_else(Moment::now);
    let elapsed_ns = ended_at.nanos_since(ctx.received_at);
    let overhead_ns = trace.overhead_ns();
    let usage = trace.usage;
    let config = &ctx.generation.config;
    let provider = match trace.cache {
        Some("hit") => "cache",
        _ => trace
            .provider
            .and_then(|i| config.providers.get(i))
            .map_or("", |p| p.name.as_str()),
    };
    let error = trace.relay_failure.map_or(trace.error, RelayFailure::name);
    if let Some(failure) = trace.relay_failure {
        let health = trace
            .provider
            .and_then(|i| ctx.generation.key_health.provider_health(i));
        if let Some(health) = health {
            health.counters.relay_failure(failure);
        }
    }
    // Only a name that routed labels metrics: a defaulted request counts under the default
    // model, not under whatever unknown name the client sent.
    let asked = ctx.model.get().map_or("", crate::codec::ModelName::as_str);
    let model = match &config.routing.default_model {
        Some(default) if trace.defaulted => default.as_str(),
        _ => asked,
    };
    core.metrics.lock().observe(&Observation {
        endpoint: trace.endpoint,
        model,
        provider,
        status,
        duration_s: seconds(elapsed_ns),
        overhead_s: overhead_ns.map(seconds),
        tokens: [
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_tokens,
            usage.reasoning_tokens,
        ],
        attempt: trace.delivered,
    });
    let storage = &config.storage;
    if !storage.log_requests || matches!(trace.endpoint, "health" | "metrics" | "status" | "models" | "admin") {
        return;
    }
    let ts_ms = ctx.received_at.unix_ms();
    let client = trace
        .client
        .and_then(|i| config.clients.get(i))
        .map_or("", |c| c.name.as_str());
    let key = trace
        .key
        .and_then(|(p, k)| ctx.generation.key_health.get(p, k))
        .map_or("", |h| h.masked.as_str());
    let latency_ms = elapsed_ns / 1_000_000;
    let overhead_us = overhead_ns.map_or(0, |ns| ns / 1_000);
    // Every request counts in the stats, whether or not it gets a row: here when it gets none,
    // else by the writer as it drains the record (`usage::record_rollup`).
    let sample = Sample {
        ts_ms,
        model: asked,
        provider,
        key,
        client,
        status,
        latency_ms,
        overhead_us,
        usage,
    };
    // A row for this request? (`max_records = 0` keeps none; `sample_rate` thins them.)
    if storage.max_records == Some(0) || (storage.sample_rate < 1.0 && fastrand::f64() >= storage.sample_rate) {
        core.rollups.lock().add(&sample);
        return;
    }
    queue_record(core, ctx, &trace, &sample, error, bytes_out, ended_at);
}

/// Queues the request's record; the writer counts it in the stats as it drains it, unless it
/// is counted here (a label had to be cut to fit the record, or the queue is full).
fn queue_record(
    core: &Core,
    ctx: &RequestContext,
    trace: &Trace,
    sample: &Sample<'_>,
    error: &'static str,
    bytes_out: u64,
    ended_at: Moment,
) {
    let in_rollups = !labels_fit(sample);
    if in_rollups {
        core.rollups.lock().add(sample);
    }
    let text = Texts::with_label(
        // Request ids are ASCII (checked when read, or generated as hex).
        &ctx.request_id,
        label_of(core, ctx, trace, sample, error),
    );
    let record = RequestRecord {
        ts_ms: sample.ts_ms,
        text,
        status: sample.status,
        attempts: trace.attempts,
        stream: trace.stream,
        latency_ms: sample.latency_ms,
        ttfb_ms: trace
            .first_byte_at
            .map_or(0, |t| t.nanos_since(ctx.received_at) / 1_000_000),
        overhead_us: sample.overhead_us,
        usage: sample.usage,
        bytes_in: trace.bytes_in,
        bytes_out,
        in_rollups,
    };
    if !core.gateway.records.push_to(&core.log_lane, ended_at, record) && !in_rollups {
        core.rollups.lock().add(sample);
    }
}

/// What a record's label is made of: the generation's indices for the configured names, the
/// static names, and the model names a client chose. Two requests with equal ones have equal
/// labels (a generation's names never change).
pub(super) struct LabelMemo {
    generation: u64,
    client: Option<usize>,
    provider: Option<usize>,
    cached: bool,
    key: Option<(usize, usize)>,
    endpoint: &'static str,
    error: &'static str,
    model: String,
    upstream_model: String,
    label: Arc<Label>,
}

impl LabelMemo {
    /// `model` is the name the client asked for (`Sample::model`).
    fn holds(&self, generation: u64, trace: &Trace, model: &str, error: &str) -> bool {
        self.key == trace.key
            && self.generation == generation
            && self.client == trace.client
            && self.provider == trace.provider
            && self.cached == (trace.cache == Some("hit"))
            && same_name(self.endpoint, trace.endpoint)
            && same_name(self.error, error)
            && same_name(&self.model, model)
            && same_name(&self.upstream_model, &trace.upstream_model)
    }
}

/// `a` and `b` are the same text. `==` on `str` calls the C library's `memcmp` whatever the
/// length, even none: the four compares of a remembered label took about 2 % of a worker's
/// time under `perf` (chat, 64 connections, log on), more than the rest of `finish`. Names of
/// up to 16 bytes, almost all of these, are compared as two overlapping words, and the empty
/// ones (the usual error and upstream model) by their length alone.
fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    if a.len() > 16 {
        return a == b;
    }
    match (
        a.first_chunk::<8>(),
        a.last_chunk::<8>(),
        b.first_chunk::<8>(),
        b.last_chunk::<8>(),
    ) {
        (Some(a_first), Some(a_last), Some(b_first), Some(b_last)) => a_first == b_first && a_last == b_last,
        _ => a.iter().zip(b).all(|(x, y)| x == y),
    }
}

/// Labels a core remembers: a route's keys take turns, so its requests' labels are a few.
pub(super) const LABELS_KEPT: usize = 8;

/// The record label of this request: one of this core's last ones when it is made of the same
/// (most requests: no name is copied), else a new one, remembered in place of the oldest.
fn label_of(core: &Core, ctx: &RequestContext, trace: &Trace, sample: &Sample<'_>, error: &'static str) -> Arc<Label> {
    let mut kept = core.last_labels.borrow_mut();
    if let Some(memo) = kept
        .labels
        .iter()
        .find(|m| m.holds(ctx.generation.id, trace, sample.model, error))
    {
        return memo.label.clone();
    }
    let (model, upstream_model) = (capped(sample.model), capped(&trace.upstream_model));
    let label = Arc::new(Label::new(&RecordText {
        request_id: "",
        client: sample.client,
        endpoint: trace.endpoint,
        model: &model,
        provider: sample.provider,
        upstream_model: &upstream_model,
        key: sample.key,
        error,
    }));
    let memo = LabelMemo {
        generation: ctx.generation.id,
        client: trace.client,
        provider: trace.provider,
        cached: trace.cache == Some("hit"),
        key: trace.key,
        endpoint: trace.endpoint,
        error,
        model: sample.model.to_owned(),
        upstream_model: trace.upstream_model.clone(),
        label: label.clone(),
    };
    let KeptLabels { labels, next } = &mut *kept;
    if labels.len() < LABELS_KEPT {
        labels.push(memo);
    } else if let Some(slot) = labels.get_mut(*next) {
        *slot = memo;
    }
    *next = (*next + 1) % LABELS_KEPT;
    label
}

/// A core's last record labels (`label_of`): at most `LABELS_KEPT`, `next` replaced next.
#[derive(Default)]
pub(super) struct KeptLabels {
    labels: Vec<LabelMemo>,
    next: usize,
}

/// The stats labels of `sample` are kept whole in a request record (else the record's would
/// name another model, or cut a configured name).
fn labels_fit(sample: &Sample<'_>) -> bool {
    sample.model.len() <= MAX_RECORD_MODEL_BYTES
        && [sample.client, sample.provider, sample.key]
            .iter()
            .all(|name| name.len() <= MAX_FIELD_BYTES)
}

#[cfg(test)]
mod tests {
    use super::same_name;

    /// The word compare answers as `==` for every length to past the word path (0-40 bytes),
    /// equal texts and texts differing in any one byte, and texts of one length apart.
    #[test]
    fn same_name_answers_as_str_equality() {
        for len in 0..=40usize {
            let text: String = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            assert!(same_name(&text, &text.clone()), "equal, {len} bytes");
            for at in 0..len {
                let mut other = text.clone().into_bytes();
                other[at] = b'-';
                let other = String::from_utf8(other).expect("ascii");
                assert!(!same_name(&text, &other), "byte {at} of {len} differs");
                assert!(!same_name(&other, &text), "byte {at} of {len} differs, swapped");
            }
            let longer = format!("{text}z");
            assert!(
                !same_name(&text, &longer) && !same_name(&longer, &text),
                "{len} against {}",
                len + 1
            );
        }
    }
}
