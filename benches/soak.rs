//! Decision this supports: whether rotor stays correct under a bad upstream for minutes (issue
//! 12's chaos soak): every answer well formed, none hung, every request counted once in
//! `/metrics` and the request log, and failures no more frequent than the faults force.
//!
//! Not a criterion bench: a paced load client with blocking sockets on plain threads, driven by
//! `benches/soak.sh` against `rotor mock --chaos ...`.
//!
//!   cargo bench --bench soak -- ADDR RATE SECONDS [STREAM_PCT] [CONNS]
//!
//! CONNS threads (32) each keep one keep-alive connection and send chat requests on a shared
//! schedule of RATE requests/s; STREAM_PCT (30) percent of them stream. Each answer is judged:
//! `ok` (200, valid JSON with content and usage, or a stream that ends with `[DONE]`), `error`
//! (a status other than 200 with an error envelope; 429/503 must carry Retry-After), `cut`
//! (a 200 stream that ends with an error event, or closes mid-answer, after an upstream cut), `malformed` (anything else), `hang` (no complete answer within 30 s). Prints one
//! `RESULT key=value ...` line; the script compares it with `/metrics` and `/admin/logs`.

// A load client, not a worker: blocking sockets and sleeps are the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HANG: Duration = Duration::from_secs(30);
/// Malformed answers printed so far (the first few are shown whole, to stderr).
static MALFORMED_SHOWN: AtomicU64 = AtomicU64::new(0);
/// Error answers printed so far (the first few, to stderr).
static ERRORS_SHOWN: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Ok,
    Error(u16),
    Cut,
    Malformed,
    Hang,
}

fn request(stream: bool) -> Vec<u8> {
    let body = format!(
        r#"{{"model":"gpt-4o-mini","stream":{stream},"messages":[{{"role":"user","content":"Say hello in five words."}}]}}"#
    );
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer bench-client-key\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The status and lowercased headers of one response head.
fn read_head(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<(u16, BTreeMap<String, String>)>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut headers = BTreeMap::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            return Ok(Some((status, headers)));
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
        }
    }
}

/// The whole body by its framing; `None` when the connection closed before the end.
fn read_body(
    reader: &mut BufReader<TcpStream>,
    headers: &BTreeMap<String, String>,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    if let Some(len) = headers.get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        return Ok(reader.read_exact(&mut body).ok().map(|_| body));
    }
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let Ok(size) = usize::from_str_radix(line.trim_end().split(';').next().unwrap_or(""), 16) else {
            return Ok(Some(b"\0bad chunk size".to_vec()));
        };
        let mut chunk = vec![0; size + 2];
        if reader.read_exact(&mut chunk).is_err() {
            return Ok(None);
        }
        if size == 0 {
            return Ok(Some(body));
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

fn judge_json(body: &[u8]) -> Outcome {
    let Ok(value) = sonic_rs::from_slice::<sonic_rs::Value>(body) else {
        return Outcome::Malformed;
    };
    use sonic_rs::JsonValueTrait;
    let content = value
        .pointer(&sonic_rs::pointer!["choices", 0, "message", "content"])
        .and_then(|v| v.as_str());
    let usage = value
        .pointer(&sonic_rs::pointer!["usage", "total_tokens"])
        .and_then(|v| v.as_u64());
    if content.is_some_and(|c| !c.is_empty()) && usage.is_some() {
        Outcome::Ok
    } else {
        Outcome::Malformed
    }
}

/// A complete stream: every `data:` line is JSON or `[DONE]`, and `[DONE]` comes last; a
/// stream whose last event is an error object was cut upstream and said so.
fn judge_stream(body: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(body);
    let mut done = false;
    for line in text.lines().filter(|l| l.starts_with("data:")) {
        let data = line["data:".len()..].trim();
        if done {
            return Outcome::Malformed;
        }
        if data == "[DONE]" {
            done = true;
        } else if sonic_rs::from_str::<sonic_rs::Value>(data).is_err() {
            return Outcome::Malformed;
        }
    }
    let last_is_error = text
        .lines()
        .rev()
        .find(|l| l.starts_with("data:"))
        .is_some_and(|l| l.contains(r#"{"error":"#));
    match (done, last_is_error) {
        (true, _) => Outcome::Ok,
        // An upstream cut mid-stream, told to the client as a final error event.
        (false, true) => Outcome::Cut,
        (false, false) => Outcome::Malformed,
    }
}

fn judge_error(status: u16, headers: &BTreeMap<String, String>, body: &[u8]) -> Outcome {
    let envelope = sonic_rs::from_slice::<sonic_rs::Value>(body)
        .ok()
        .is_some_and(|v| sonic_rs::JsonValueTrait::pointer(&v, &sonic_rs::pointer!["error", "message"]).is_some());
    let retry_after_needed = matches!(status, 429 | 503);
    if !envelope || (retry_after_needed && !headers.contains_key("retry-after")) {
        return Outcome::Malformed;
    }
    Outcome::Error(status)
}

/// One exchange on `conn` (reconnecting when needed); the outcome and whether to keep the socket.
fn exchange(addr: SocketAddr, conn: &mut Option<BufReader<TcpStream>>, stream: bool) -> (Outcome, bool) {
    if conn.is_none() {
        let Ok(socket) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
            return (Outcome::Hang, false);
        };
        let _ = socket.set_nodelay(true);
        let _ = socket.set_read_timeout(Some(HANG));
        *conn = Some(BufReader::new(socket));
    }
    let reader = conn.as_mut().unwrap();
    if reader.get_mut().write_all(&request(stream)).is_err() {
        return (Outcome::Cut, false);
    }
    let head = match read_head(reader) {
        Ok(Some(head)) => head,
        Ok(None) => {
            eprintln!("malformed answer: the connection closed before a response head (stream {stream})");
            return (Outcome::Malformed, false);
        }
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            return (Outcome::Hang, false)
        }
        Err(_) => return (Outcome::Malformed, false),
    };
    let (status, headers) = head;
    let body = match read_body(reader, &headers) {
        Ok(Some(body)) => body,
        Ok(None) => {
            return (
                if status == 200 {
                    Outcome::Cut
                } else {
                    Outcome::Malformed
                },
                false,
            )
        }
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            return (Outcome::Hang, false)
        }
        Err(_) => {
            return (
                if status == 200 {
                    Outcome::Cut
                } else {
                    Outcome::Malformed
                },
                false,
            )
        }
    };
    let keep = !headers
        .get("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let outcome = match (status, stream) {
        (200, false) => judge_json(&body),
        (200, true) => judge_stream(&body),
        _ => judge_error(status, &headers, &body),
    };
    if let Outcome::Error(status) = outcome {
        if status != 502 && ERRORS_SHOWN.fetch_add(1, Ordering::Relaxed) < 3 {
            eprintln!(
                "error answer: status {status}, body {:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    if outcome == Outcome::Malformed && MALFORMED_SHOWN.fetch_add(1, Ordering::Relaxed) < 5 {
        let shown = String::from_utf8_lossy(&body[body.len().saturating_sub(300)..]).into_owned();
        eprintln!("malformed answer: status {status}, stream {stream}, headers {headers:?}, body ends {shown:?}");
    }
    (outcome, keep)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let [addr, rate, seconds, rest @ ..] = args.as_slice() else {
        panic!("usage: soak ADDR RATE SECONDS [STREAM_PCT] [CONNS]");
    };
    let addr: SocketAddr = addr.parse().expect("ADDR is host:port");
    let rate: f64 = rate.parse().expect("RATE is requests per second");
    let duration = Duration::from_secs(seconds.parse().expect("SECONDS is a number"));
    let stream_pct: u32 = rest.first().map_or(30, |s| s.parse().expect("STREAM_PCT"));
    let conns: usize = rest.get(1).map_or(32, |s| s.parse().expect("CONNS"));

    let start = Instant::now();
    let ticket = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let ticket = ticket.clone();
            std::thread::spawn(move || {
                let mut seen: BTreeMap<(Outcome, bool), u64> = BTreeMap::new();
                let mut conn = None;
                loop {
                    // The next slot on the shared schedule; a late thread sends at once.
                    let n = ticket.fetch_add(1, Ordering::Relaxed);
                    let due = Duration::from_secs_f64(n as f64 / rate);
                    if due >= duration {
                        return seen;
                    }
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    let stream = fastrand::u32(0..100) < stream_pct;
                    let (outcome, keep) = exchange(addr, &mut conn, stream);
                    *seen.entry((outcome, stream)).or_default() += 1;
                    if !keep {
                        conn = None;
                    }
                }
            })
        })
        .collect();
    let mut total: BTreeMap<(Outcome, bool), u64> = BTreeMap::new();
    for t in threads {
        for (k, v) in t.join().expect("client thread") {
            *total.entry(k).or_default() += v;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let count = |f: &dyn Fn(Outcome, bool) -> bool| -> u64 {
        total.iter().filter(|((o, s), _)| f(*o, *s)).map(|(_, n)| n).sum()
    };
    let sent = count(&|_, _| true);
    let ok = count(&|o, _| o == Outcome::Ok);
    let failed = sent - ok;
    let mut line = format!(
        "RESULT sent={sent} rate={:.0} ok={ok} streams={} failed={failed} failed_pct={:.2} cut={} malformed={} hang={}",
        sent as f64 / elapsed,
        count(&|_, s| s),
        100.0 * failed as f64 / sent.max(1) as f64,
        count(&|o, _| o == Outcome::Cut),
        count(&|o, _| o == Outcome::Malformed),
        count(&|o, _| o == Outcome::Hang),
    );
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    for ((o, _), n) in &total {
        if let Outcome::Error(status) = o {
            *statuses.entry(*status).or_default() += n;
        }
    }
    for (status, n) in statuses {
        line.push_str(&format!(" status_{status}={n}"));
    }
    println!("{line}");
}
