//! Decision this supports: rotor reads every request body strictly, in one full-validation pass
//! (`sonic_rs::to_object_iter`, duplicate `model`/`stream` rejected, trailing bytes checked)
//! instead of the cheaper but lenient `get_many`, because the lenient read lets one body route
//! one way and bill another (DESIGN 2.1a). That is only affordable if the strict pass is cheap
//! next to an upstream round trip: issue 7 aims at < 300 ns for a 4 KB body. This bench
//! measures it (model first and model last, 256 B / 1 KB / 4 KB / 64 KB) and the model splice
//! at 4 KB. The request-head parse that precedes it is in `benches/codec.rs`.
//!
//! Group `inspect_alternatives` (4 KB, model first) prices strictness against what else could
//! do the job: the lenient `get_many` (reads up to the fields and stops; accepts trailing
//! garbage and keeps the first duplicate), a full DOM parse, a serde `IgnoredAny` validation
//! pass, and `str::from_utf8` alone (a floor: touching every byte once and validating UTF-8,
//! which any strict check must do).
//!
//! Group `usage_of` prices the other JSON read on every non-streamed answer: its `usage`, on a
//! short and a 4 KB answer.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rotor::codec::{inspect_body, splice_model};
use rotor::usage::openai::usage_of;

/// An OpenAI chat body of about `size` bytes: a system prompt, alternating turns, and the
/// usual scalar options; `model` either first or last.
fn chat_body(size: usize, model_first: bool) -> Vec<u8> {
    let mut messages = String::from(
        r#"[{"role":"system","content":"You are a helpful assistant. Answer briefly and cite sources when you can."}"#,
    );
    let turn = r#",{"role":"user","content":"Can you explain how a thread-per-core runtime differs from a work-stealing one, with an example?"},{"role":"assistant","content":"In a thread-per-core runtime each core runs its own event loop and tasks never move.\nExample: \"monoio\" pins connections to a core."}"#;
    while messages.len() + turn.len() + 120 < size {
        messages.push_str(turn);
    }
    messages.push(']');
    let opts = r#""temperature":0.7,"max_tokens":512,"stream":true,"stream_options":{"include_usage":true}"#;
    let model = r#""model":"gpt-4o-mini""#;
    let body = if model_first {
        format!(r#"{{{model},"messages":{messages},{opts}}}"#)
    } else {
        format!(r#"{{"messages":{messages},{opts},{model}}}"#)
    };
    body.into_bytes()
}

fn bench_inspect(c: &mut Criterion) {
    let mut group = c.benchmark_group("inspect_body");
    for size in [256, 1024, 4096, 65536] {
        for (label, first) in [("model_first", true), ("model_last", false)] {
            let body = chat_body(size, first);
            group.throughput(Throughput::Bytes(body.len() as u64));
            group.bench_with_input(BenchmarkId::new(label, size), &body, |b, body| {
                b.iter(|| inspect_body(black_box(body)))
            });
        }
    }
    group.finish();

    let body = chat_body(4096, true);
    let span = inspect_body(&body).ok().and_then(|i| i.model_span).unwrap_or(0..0);
    c.bench_function("splice_model/4096", |b| {
        b.iter(|| splice_model(black_box(&body), span.clone(), black_box("openai/gpt-4o-mini")))
    });

    let body = chat_body(4096, true);
    let mut alt = c.benchmark_group("inspect_alternatives");
    alt.throughput(Throughput::Bytes(body.len() as u64));
    alt.bench_function("strict_object_iter", |b| b.iter(|| inspect_body(black_box(&body))));
    let tree = {
        let mut t = sonic_rs::PointerTree::new();
        t.add_path(["model"].iter());
        t.add_path(["stream"].iter());
        t
    };
    alt.bench_function("lenient_get_many", |b| {
        b.iter(|| sonic_rs::get_many(black_box(&body[..]), &tree).map(|v| v.len()))
    });
    alt.bench_function("dom_value", |b| {
        b.iter(|| sonic_rs::from_slice::<sonic_rs::Value>(black_box(&body)).is_ok())
    });
    alt.bench_function("serde_ignored_any", |b| {
        b.iter(|| sonic_rs::from_slice::<serde::de::IgnoredAny>(black_box(&body)).is_ok())
    });
    alt.bench_function("utf8_floor", |b| {
        b.iter(|| std::str::from_utf8(black_box(&body)).is_ok())
    });
    alt.finish();

    let mut usage = c.benchmark_group("usage_of");
    for size in [0, 4096] {
        let answer = chat_answer(size);
        assert!(usage_of(&answer).is_some(), "the bench answer must carry usage");
        usage.throughput(Throughput::Bytes(answer.len() as u64));
        usage.bench_with_input(BenchmarkId::from_parameter(answer.len()), &answer, |b, a| {
            b.iter(|| usage_of(black_box(a)))
        });
    }
    usage.finish();
}

/// A non-streamed chat answer whose content is about `content` bytes, usage last (as OpenAI
/// sends it).
fn chat_answer(content: usize) -> Vec<u8> {
    let mut text = String::from(r#"Hello there, \"friend\"!"#);
    while text.len() < content {
        text.push_str(r#" A thread-per-core runtime keeps each connection on one core.\n"#);
    }
    format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{{"index":0,"message":{{"role":"assistant","content":"{text}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,"prompt_tokens_details":{{"cached_tokens":0}}}}}}"#
    )
    .into_bytes()
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = bench_inspect
}
criterion_main!(benches);
