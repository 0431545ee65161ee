//! Decision this supports: how many concurrent slow streams one rotor (2 cores here) carries
//! without delaying events, and what an idle keep-alive connection costs in memory, i.e.
//! `server.max_connections` and the memory to provision. Budgets (issue 7): 10,000 concurrent
//! streams of 20 chunks 50 ms apart with added inter-chunk p99 < 5 ms and none stalled; RSS
//! < 100 MB with 10,000 idle keep-alive connections.
//!
//! Not a criterion bench: a load client on one monoio thread, driven by `benches/load.sh`.
//!
//!   cargo bench --bench streams -- streams ADDR[,ADDR...] N [CHUNKS INTERVAL_MS [PROMPT_BYTES [RAMP_MS]]]
//!   cargo bench --bench streams -- idle ADDR[,ADDR...] N HOLD_S
//!
//! Connection i goes to the (i mod k)-th of the k addresses: a file-descriptor limit is per
//! process, so `benches/load.sh` spreads 10,000 streams (20,000 sockets in the gateway) over
//! two rotor processes where the hard limit is 20,000.
//!
//! `streams`: opens N connections, then sends one streamed chat request on each, starts spread
//! evenly over one interval (so the upstream's timers do not all fire together) or over RAMP_MS
//! when longer (streams then arrive as a steady flow, not a burst), and times
//! every SSE event. The gaps between the first CHUNKS+1 events of each stream are nominally
//! INTERVAL_MS (the mock sends the role event at once, then a content event after each sleep);
//! `added` = gap - interval. A stream *stalls* when a gap exceeds interval + 250 ms, or it
//! does not complete. Prints one `RESULT key=value ...` line. PROMPT_BYTES (0) pads the user
//! message to about that many bytes, as a real conversation's context would be.
//! `idle`: opens N connections, makes one small request on each (so every one is a live HTTP
//! keep-alive connection), prints `READY`, holds them HOLD_S seconds, closes them.

// A load client, not a worker: blocking the main thread at the end is fine.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, clippy::disallowed_methods)]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

const STALL: Duration = Duration::from_millis(250);

fn request(body: &str, extra: &str) -> Vec<u8> {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer bench-client-key\r\n\
         Content-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn connect(addr: SocketAddr) -> Option<TcpStream> {
    for _ in 0..50 {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Some(s);
            }
            Err(_) => monoio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    None
}

/// Opens `n` connections, spread round-robin over `addrs`, at most 512 connecting at once.
async fn connect_all(addrs: &[SocketAddr], n: usize) -> Vec<Option<TcpStream>> {
    let conns: Rc<RefCell<Vec<Option<TcpStream>>>> = Rc::new(RefCell::new((0..n).map(|_| None).collect()));
    let next = Rc::new(std::cell::Cell::new(0usize));
    let mut tasks = Vec::new();
    for _ in 0..512.min(n) {
        let (conns, next, addrs) = (conns.clone(), next.clone(), addrs.to_vec());
        tasks.push(monoio::spawn(async move {
            loop {
                let i = next.get();
                if i >= n {
                    return;
                }
                next.set(i + 1);
                let s = connect(addrs[i % addrs.len()]).await;
                conns.borrow_mut()[i] = s;
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    conns.take()
}

struct StreamResult {
    complete: bool,
    /// Gap minus the interval, in µs, for each nominal gap seen.
    added_us: Vec<i64>,
    start: Instant,
    end: Instant,
}

async fn one_stream(
    mut s: TcpStream,
    delay: Duration,
    req: Vec<u8>,
    chunks: usize,
    interval: Duration,
) -> StreamResult {
    monoio::time::sleep(delay).await;
    let start = Instant::now();
    let mut out = StreamResult {
        complete: false,
        added_us: Vec::with_capacity(chunks),
        start,
        end: start,
    };
    let (r, _) = s.write_all(req).await;
    if r.is_err() {
        return out;
    }
    let mut seen: Vec<u8> = Vec::with_capacity(8 * 1024);
    let mut events = 0usize;
    let mut last: Option<Instant> = None;
    let mut buf = vec![0u8; 16 * 1024];
    let finder = memchr::memmem::Finder::new(b"data: ");
    loop {
        let (r, b) = s.read(buf).await;
        buf = b;
        let n = match r {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let now = Instant::now();
        let scan_from = seen.len().saturating_sub(5);
        seen.extend_from_slice(&buf[..n]);
        let new_events = finder.find_iter(&seen[scan_from..]).count();
        for _ in 0..new_events {
            if events <= chunks {
                if let Some(prev) = last {
                    let gap = now.duration_since(prev);
                    out.added_us.push(gap.as_micros() as i64 - interval.as_micros() as i64);
                }
                last = Some(now);
            }
            events += 1;
        }
        if seen.ends_with(b"0\r\n\r\n") {
            out.complete = seen.starts_with(b"HTTP/1.1 200") && events > chunks;
            break;
        }
    }
    out.end = Instant::now();
    out
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// How `run_streams` shapes each stream's request and spreads their starts.
struct StreamPlan {
    chunks: usize,
    interval: Duration,
    prompt_bytes: usize,
    ramp: Duration,
}

async fn run_streams(addrs: &[SocketAddr], n: usize, plan: StreamPlan) {
    let StreamPlan {
        chunks,
        interval,
        prompt_bytes,
        ramp,
    } = plan;
    let t0 = Instant::now();
    let conns = connect_all(addrs, n).await;
    let connected = conns.iter().filter(|c| c.is_some()).count();
    let connect_ms = t0.elapsed().as_millis();
    let padding = "lorem ipsum ".repeat(prompt_bytes / 12);
    let body = format!(
        r#"{{"model":"gpt-4o-mini","stream":true,"messages":[{{"role":"user","content":"{padding}Say hello."}}]}}"#
    );
    let extra = format!(
        "x-mock-chunks: {chunks}\r\nx-mock-interval-ms: {}\r\n",
        interval.as_millis()
    );
    let req = request(&body, &extra);
    let mut tasks = Vec::with_capacity(n);
    for (i, c) in conns.into_iter().enumerate() {
        let Some(c) = c else { continue };
        let delay = interval.max(ramp).mul_f64(i as f64 / n as f64);
        tasks.push(monoio::spawn(one_stream(c, delay, req.clone(), chunks, interval)));
    }
    let mut results = Vec::with_capacity(n);
    for t in tasks {
        results.push(t.await);
    }
    let complete = results.iter().filter(|r| r.complete).count();
    let stall_us = STALL.as_micros() as i64;
    let clean = results
        .iter()
        .filter(|r| r.complete && r.added_us.iter().all(|&a| a <= stall_us))
        .count();
    let mut added: Vec<i64> = results.iter().flat_map(|r| r.added_us.iter().copied()).collect();
    added.sort_unstable();
    // Peak number of streams open at once.
    let mut edges: Vec<(Instant, i32)> = results.iter().flat_map(|r| [(r.start, 1), (r.end, -1)]).collect();
    edges.sort();
    let (mut open, mut peak) = (0i32, 0i32);
    for (_, d) in edges {
        open += d;
        peak = peak.max(open);
    }
    println!(
        "RESULT n={n} connected={connected} connect_ms={connect_ms} complete={complete} no_stall={clean} peak_open={peak} \
         gaps={} added_p50_ms={:.2} added_p99_ms={:.2} added_max_ms={:.2} wall_ms={}",
        added.len(),
        percentile(&added, 0.50) as f64 / 1000.0,
        percentile(&added, 0.99) as f64 / 1000.0,
        added.last().copied().unwrap_or(0) as f64 / 1000.0,
        t0.elapsed().as_millis()
    );
}

async fn run_idle(addrs: &[SocketAddr], n: usize, hold: Duration) {
    let conns = connect_all(addrs, n).await;
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let req = request(body, "");
    let conns = Rc::new(RefCell::new(conns));
    let next = Rc::new(std::cell::Cell::new(0usize));
    let ok = Rc::new(std::cell::Cell::new(0usize));
    let mut tasks = Vec::new();
    // Requests 256 at a time: rotor keeps a bounded upstream pool, so a burst of 10,000
    // simultaneous requests would only measure upstream connection churn.
    for _ in 0..256.min(n) {
        let (conns, next, ok, req) = (conns.clone(), next.clone(), ok.clone(), req.clone());
        tasks.push(monoio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            loop {
                let i = next.get();
                if i >= n {
                    return;
                }
                next.set(i + 1);
                let Some(mut s) = conns.borrow_mut()[i].take() else {
                    continue;
                };
                let (r, _) = s.write_all(req.clone()).await;
                if r.is_err() {
                    continue;
                }
                let (r, b) = s.read(buf).await;
                buf = b;
                if matches!(r, Ok(n) if n > 0) && buf.starts_with(b"HTTP/1.1 200") {
                    ok.set(ok.get() + 1);
                    conns.borrow_mut()[i] = Some(s);
                }
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    let open = conns.borrow().iter().filter(|c| c.is_some()).count();
    println!("READY n={n} answered={} open={open}", ok.get());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    monoio::time::sleep(hold).await;
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let usage =
        "usage: streams ADDR[,ADDR...] N [CHUNKS INTERVAL_MS [PROMPT_BYTES [RAMP_MS]]] | idle ADDR[,ADDR...] N HOLD_S";
    if args.len() < 3 {
        // `cargo bench` with no arguments runs every bench target: nothing to do here.
        eprintln!("{usage}");
        return;
    }
    let addrs: Vec<SocketAddr> = args[1].split(',').map(|a| a.parse().expect("ADDR")).collect();
    let n: usize = args[2].parse().expect("N");
    let num = |i: usize, d: u64| args.get(i).map_or(d, |s| s.parse().expect("number"));
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(32768)
        .enable_timer()
        .build()
        .expect("runtime");
    match args[0].as_str() {
        "streams" => {
            let plan = StreamPlan {
                chunks: num(3, 20) as usize,
                interval: Duration::from_millis(num(4, 50)),
                prompt_bytes: num(5, 0) as usize,
                ramp: Duration::from_millis(num(6, 0)),
            };
            rt.block_on(run_streams(&addrs, n, plan))
        }
        "idle" => rt.block_on(run_idle(&addrs, n, Duration::from_secs(num(3, 10)))),
        _ => panic!("{usage}"),
    }
}
