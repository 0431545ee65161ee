//! Decision this supports: rotor owns its HTTP/1.1 codec (httparse heads, its own chunked
//! decoder and response writer) instead of monoio-http's, and relays a stream one upstream
//! chunk at a time with one downstream write per event (no coalescing, so no added latency).
//! That is only right if the codec costs nothing next to the syscalls: budgets per request
//! under 1 µs for the downstream head parse, the upstream request head build, the upstream
//! response head parse and the downstream response head encode together, and under 50 ns per
//! SSE event for decode-chunk + re-frame (issue 7).
//!
//! There is no SSE *splitter* on this branch (the protocol work adds one); the per-event cost
//! here is what the relay does today: `ChunkedDecoder::decode` on the upstream buffer, then
//! `write_chunk` into the downstream buffer, which is cleared after each write as the
//! `Responder` does. Add the splitter's scan to this group when it lands.

// Bench code: a failed setup is a failed bench.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rotor::codec::response_head::{write_head, ProviderLines, Relayed};
use rotor::codec::HeadFields;
use rotor::codec::{
    parse_request_head, parse_response_head, write_chunk, BodyFraming, Chunk, ChunkedDecoder, ChunkedLimits, HeadLimits,
};
use rotor::config::{parse_str, ConfigSource};
use rotor::providers::prepared::PreparedHeads;
use rotor::proxy::headers::{upstream_request_head, Auth};

const REQUEST_HEAD: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\n\
Host: rotor.internal:8080\r\n\
User-Agent: OpenAI/Python 1.51.0\r\n\
Accept: application/json\r\n\
Accept-Encoding: gzip, deflate\r\n\
Content-Type: application/json\r\n\
Content-Length: 4096\r\n\
Authorization: Bearer rk-0123456789abcdef0123456789abcdef\r\n\
X-Request-Id: 6f1c2a4e-9d3b-4c55-8a77-1e2f3a4b5c6d\r\n\
X-Stainless-Lang: python\r\n\
Connection: keep-alive\r\n\r\n";

/// What api.openai.com sends in front of a streamed chat completion (abridged values).
const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Tue, 01 Oct 2024 12:00:00 GMT\r\n\
Content-Type: text/event-stream; charset=utf-8\r\n\
Transfer-Encoding: chunked\r\n\
Connection: keep-alive\r\n\
access-control-expose-headers: X-Request-ID\r\n\
openai-organization: user-abc123\r\n\
openai-processing-ms: 182\r\n\
openai-version: 2020-10-01\r\n\
x-ratelimit-limit-requests: 10000\r\n\
x-ratelimit-remaining-requests: 9999\r\n\
x-request-id: req_0123456789abcdef0123456789abcdef\r\n\
cf-cache-status: DYNAMIC\r\n\
Server: cloudflare\r\n\r\n";

/// The chat path's two heads as `benches/profile.sh` sends and gets them (wrk's four fields, the
/// mock's two), each followed by its body's first bytes as they arrive with it: the heads the
/// callgrind gate counts, read by `quick`'s 64-byte classes (issue 18).
const CHAT_REQUEST_HEAD: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\n\
Host: 127.0.0.1:19101\r\n\
Content-Type: application/json\r\n\
Authorization: Bearer bench-client-key\r\n\
Content-Length: 164\r\n\r\n\
{\"model\":\"gpt-4o-mini\",\"stream\":false,\"messages\":[{\"role\":\"system\",\"content\":\"You are terse.\"}";
const CHAT_RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
content-type: application/json\r\n\
content-length: 277\r\n\r\n\
{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":\"gpt-4o-mini\"";

/// One OpenAI delta event, about 130 bytes, as the mock and the real API send it.
const EVENT: &[u8] = b"data: {\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok7 \"},\"finish_reason\":null}]}\n\n";
const EVENTS: usize = 20;

const PROVIDER: &str = r#"
[[providers]]
name = "openai"
kind = "openai"
base_url = "https://api.openai.com/v1"
keys = ["sk-proj-0123456789abcdef0123456789abcdef0123456789abcdef"]
models = ["gpt-4o-mini"]
"#;

fn bench_heads(c: &mut Criterion) {
    let limits = HeadLimits::default();
    let response_limits = HeadLimits {
        max_head_bytes: 64 * 1024,
        max_headers: 128,
    };
    let config = parse_str(PROVIDER, ConfigSource::Environment).expect("bench config parses");
    let provider = &config.providers[0];
    let key = provider.keys[0].secret.expose();
    let heads = PreparedHeads::for_config(&config);
    let prepared = heads.get(0);
    let auth = Auth {
        key,
        line: prepared.and_then(|p| p.key_line(0)),
        post: prepared.and_then(|p| p.post_line(0)),
    };
    let mut buf = BytesMut::from(REQUEST_HEAD);
    let head = parse_request_head(&mut buf, &limits)
        .ok()
        .flatten()
        .expect("head parses");
    let mut buf = BytesMut::from(RESPONSE_HEAD);
    let upstream = parse_response_head(&mut buf, &response_limits, false)
        .ok()
        .flatten()
        .expect("parses");

    let mut group = c.benchmark_group("head");
    group.bench_function("parse_request/10_headers", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(black_box(REQUEST_HEAD));
            parse_request_head(&mut buf, &limits)
        })
    });
    group.bench_function("parse_request/chat_4_headers", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(black_box(CHAT_REQUEST_HEAD));
            parse_request_head(&mut buf, &limits)
        })
    });
    group.bench_function("parse_response/chat_2_headers", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(black_box(CHAT_RESPONSE_HEAD));
            parse_response_head(&mut buf, &response_limits, false)
        })
    });
    // Into a buffer kept across requests, as the answer's lent buffer is (no allocation).
    let mut lent = BytesMut::with_capacity(8 * 1024);
    group.bench_function("build_upstream_request", |b| {
        b.iter(|| {
            lent.clear();
            upstream_request_head(
                &mut lent,
                black_box(&head),
                provider,
                prepared,
                auth,
                "/chat/completions",
                4096,
                None,
            )
        })
    });
    group.bench_function("parse_response/14_headers", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(black_box(RESPONSE_HEAD));
            parse_response_head(&mut buf, &response_limits, false)
        })
    });
    let mut out = BytesMut::with_capacity(8 * 1024);
    let provider = ProviderLines::new(b"openai");
    group.bench_function("encode_response", |b| {
        b.iter(|| {
            // The relay's fields: the upstream's read from its head, then rotor's own.
            let relayed = Relayed {
                request_id: b"6f1c2a4e-9d3b-4c55",
                provider: &provider,
                attempts: b"1",
                overhead_us: Some(b"17"),
            };
            let fields = HeadFields {
                checked: &[],
                returned: Some(black_box(&upstream).returned(true)),
                own: &[],
                relayed: Some(relayed),
            };
            out.clear();
            write_head(&mut out, 200, fields, Some(BodyFraming::Chunked), true, 0);
            out.len()
        })
    });
    group.finish();
}

fn bench_events(c: &mut Criterion) {
    // The upstream's body: 20 events, one chunk each, then the terminator.
    let mut wire = BytesMut::new();
    for _ in 0..EVENTS {
        write_chunk(&mut wire, EVENT);
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    let wire = wire.freeze();
    let mut out = BytesMut::with_capacity(8 * 1024);
    let mut group = c.benchmark_group("sse_relay");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("decode_and_reframe_per_event", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&wire[..]);
            let mut decoder = ChunkedDecoder::new(ChunkedLimits {
                max_line_bytes: 4096,
                max_trailer_bytes: 16 * 1024,
            });
            let mut sent = 0;
            while let Ok(Some(Chunk::Data(data))) = decoder.decode(&mut buf) {
                write_chunk(&mut out, &data);
                sent += out.len();
                out.clear(); // the Responder's write hands the buffer back cleared
            }
            sent
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = bench_heads, bench_events
}
criterion_main!(benches);
