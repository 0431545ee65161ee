//! Decision this supports: how many `workers` a deployment needs. One request through rotor
//! (client -> rotor -> mock on loopback, keep-alive both sides) is timed next to the same
//! request sent to the mock directly; the difference is rotor's own cost per request, and
//! 1 s / that cost is the request rate one rotor worker (one core) can add. Budget: rotor adds
//! under 25 µs per non-streamed request (≥ 40 k req/s per core) and under 60 µs per streamed
//! request of 5 events. Everything runs in this process on 2 shared cores (gateway with one
//! worker, mock with one worker, this blocking client), so read the *difference*, not the
//! absolute numbers; `benches/load.sh` measures under concurrency with separate processes.

// Bench code: a failed setup is a failed bench.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rotor::config::{parse_str, ConfigSource};
use rotor::mock::{self, MockOptions};
use rotor::runtime;

const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in five words."}],"temperature":0.2}"#;
const STREAM_BODY: &str =
    r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hello in five words."}]}"#;

/// A keep-alive client that sends one request and reads the whole response (content-length
/// or chunked), reusing its buffer.
struct Client {
    stream: TcpStream,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl Client {
    fn new(addr: SocketAddr, body: &str) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer bench-client-key\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        Client {
            stream,
            request,
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    fn call(&mut self) -> usize {
        self.stream.write_all(&self.request).expect("write");
        self.buf.clear();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "server closed");
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(len) = complete_len(&self.buf) {
                assert!(
                    self.buf.starts_with(b"HTTP/1.1 200"),
                    "{}",
                    String::from_utf8_lossy(&self.buf)
                );
                assert_eq!(len, self.buf.len(), "pipelined bytes");
                return len;
            }
        }
    }
}

/// Length of the complete response at the front of `buf`, if it is complete.
fn complete_len(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?.to_ascii_lowercase();
    if let Some(line) = head.lines().find(|l| l.starts_with("content-length:")) {
        let n: usize = line["content-length:".len()..].trim().parse().ok()?;
        return (buf.len() >= head_end + n).then_some(head_end + n);
    }
    buf.ends_with(b"0\r\n\r\n").then_some(buf.len())
}

fn bench_e2e(c: &mut Criterion) {
    let mock = mock::start(MockOptions {
        workers: 1,
        record_limit: 0,
        ..Default::default()
    })
    .expect("mock starts");
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1
[storage]
path = ""
[[clients]]
name = "bench"
key = "bench-client-key"
[[providers]]
name = "mock"
kind = "openai"
base_url = "{}"
keys = ["sk-bench-key-1", "sk-bench-key-2"]
models = ["gpt-4o-mini"]
"#,
        mock.base_url()
    );
    let config = parse_str(&config, ConfigSource::Environment).expect("config");
    let gateway = runtime::start(config, None).expect("rotor starts");

    let mut group = c.benchmark_group("e2e_c1");
    group.throughput(Throughput::Elements(1));
    for (label, body) in [("chat", BODY), ("stream5", STREAM_BODY)] {
        for (target, addr) in [("direct", mock.addr), ("rotor", gateway.addr)] {
            let mut client = Client::new(addr, body);
            client.call();
            group.bench_function(format!("{label}/{target}"), |b| b.iter(|| client.call()));
        }
    }
    group.finish();
    gateway.stop();
    gateway.wait();
    mock.stop();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = bench_e2e
}
criterion_main!(benches);
