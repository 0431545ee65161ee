//! The harness's small blocking HTTP/1.1 client on `std::net::TcpStream`: requests and
//! responses, raw bytes (framing attacks), and streamed bodies read piece by piece with
//! timestamps (split from `common/mod.rs` to keep files small; re-exported there).
//! Every socket has a read timeout, so a hang fails the test instead of hanging the suite.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)]

use super::*;

/// Status, reason and headers (names lowercased) of a response.
pub type Head = (u16, String, Vec<(String, String)>);

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    /// Decoded body (chunked framing removed).
    pub body: Vec<u8>,
    pub chunked: bool,
    /// The body was completely framed (length reached, or the chunked terminator seen).
    pub complete: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> sonic_rs::Value {
        sonic_rs::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// Asserts the OpenAI error envelope and returns its `error` object fields.
    pub fn openai_error(&self) -> (String, String) {
        use sonic_rs::{JsonContainerTrait, JsonValueTrait};
        let v = self.json();
        let err = v
            .get("error")
            .unwrap_or_else(|| panic!("no error object: {}", self.text()));
        let obj = err.as_object().expect("error is an object");
        for field in ["message", "type", "param", "code"] {
            assert!(obj.get(&field).is_some(), "error.{field} missing: {}", self.text());
        }
        (
            err.get("message").and_then(|m| m.as_str()).unwrap_or("").to_owned(),
            err.get("type").and_then(|m| m.as_str()).unwrap_or("").to_owned(),
        )
    }
}

/// A blocking HTTP/1.1 client connection.
pub struct Client {
    pub stream: TcpStream,
    /// Bytes read but not yet consumed.
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Writes, tolerating a peer that already closed (framing tests).
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Builds a request (Host and Content-Length added) and writes it.
    pub fn send_request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
        let bytes = build_request(method, path, headers, body);
        self.send_raw(&bytes);
    }

    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        self.send_request(method, path, headers, body);
        self.read_response()
    }

    /// POST with JSON content type and the default client key, plus `extra` headers.
    pub fn post(&mut self, path: &str, body: &str, extra: &[(&str, &str)]) -> Response {
        let (name, value) = auth();
        let mut headers: Vec<(&str, &str)> = vec![(name, &value), ("content-type", "application/json")];
        headers.extend_from_slice(extra);
        self.request("POST", path, &headers, body.as_bytes())
    }

    pub fn get(&mut self, path: &str, extra: &[(&str, &str)]) -> Response {
        let (name, value) = auth();
        let mut headers: Vec<(&str, &str)> = vec![(name, &value)];
        headers.extend_from_slice(extra);
        self.request("GET", path, &headers, b"")
    }

    /// Reads more bytes into the buffer. Ok(0) = EOF. Panics on timeout.
    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 16 * 1024];
        match self.stream.read(&mut tmp) {
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(n)
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                panic!(
                    "read timed out; buffered so far: {:?}",
                    String::from_utf8_lossy(&self.buf)
                )
            }
            Err(e) => Err(e),
        }
    }

    /// Reads a response head. Panics if the connection closes first.
    pub fn read_head(&mut self) -> Head {
        self.try_read_head()
            .unwrap_or_else(|| panic!("connection closed before a response head"))
    }

    /// A response head, or None if the peer closed (or reset) before sending one.
    pub fn try_read_head(&mut self) -> Option<Head> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return Some(parse_head(&head));
            }
            match self.fill() {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Reads one full response (for a request that was not HEAD).
    pub fn read_response(&mut self) -> Response {
        self.try_read_response()
            .unwrap_or_else(|| panic!("connection closed before a response"))
    }

    pub fn try_read_response(&mut self) -> Option<Response> {
        let (status, reason, headers) = self.try_read_head()?;
        let mut response = Response {
            status,
            reason,
            headers,
            body: Vec::new(),
            chunked: false,
            complete: false,
        };
        if (100..200).contains(&status) {
            response.complete = true;
            return Some(response);
        }
        let te = response.header("transfer-encoding").map(str::to_ascii_lowercase);
        let cl = response
            .header("content-length")
            .map(|v| v.trim().parse::<usize>().expect("numeric CL"));
        if te.as_deref() == Some("chunked") {
            response.chunked = true;
            while let Some(piece) = self.next_chunk() {
                match piece {
                    Some(data) => response.body.extend_from_slice(&data),
                    None => {
                        response.complete = true;
                        break;
                    }
                }
            }
        } else if let Some(n) = cl {
            while self.buf.len() < n {
                match self.fill() {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let take = n.min(self.buf.len());
            response.body = self.buf.drain(..take).collect();
            response.complete = take == n;
        } else {
            // Until close.
            loop {
                match self.fill() {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            response.body = std::mem::take(&mut self.buf);
            response.complete = true;
        }
        Some(response)
    }

    /// One chunk of a chunked body: `Some(Some(data))`, `Some(None)` for the terminator
    /// (trailers consumed), `None` when the connection ended mid-body.
    pub fn next_chunk(&mut self) -> Option<Option<Vec<u8>>> {
        let line_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                break i;
            }
            match self.fill() {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        };
        let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        if size == 0 {
            // Trailers until an empty line.
            loop {
                if let Some(end) = find(&self.buf[line_end..], b"\r\n\r\n") {
                    self.buf.drain(..line_end + end + 4);
                    return Some(None);
                }
                match self.fill() {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        }
        let need = line_end + 2 + size + 2;
        while self.buf.len() < need {
            match self.fill() {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
        assert_eq!(&self.buf[need - 2..need], b"\r\n", "chunk data not followed by CRLF");
        let data = self.buf[line_end + 2..line_end + 2 + size].to_vec();
        self.buf.drain(..need);
        Some(Some(data))
    }

    /// Reads a chunked body chunk by chunk, noting when each arrived. Returns the pieces and
    /// whether the terminator arrived.
    pub fn read_chunks_timed(&mut self) -> (Vec<(Instant, Vec<u8>)>, bool) {
        let mut pieces = Vec::new();
        loop {
            match self.next_chunk() {
                Some(Some(data)) => pieces.push((Instant::now(), data)),
                Some(None) => return (pieces, true),
                None => return (pieces, false),
            }
        }
    }

    /// Sends a streaming chat request with the default client key (plus `extra` headers) and
    /// reads the whole chunked answer: status, the body as text, whether the terminator came.
    pub fn stream_chat(&mut self, body: &str, extra: &[(&str, &str)]) -> (u16, String, bool) {
        let (name, value) = auth();
        let mut headers: Vec<(&str, &str)> = vec![(name, &value), ("content-type", "application/json")];
        headers.extend_from_slice(extra);
        self.send_request("POST", "/v1/chat/completions", &headers, body.as_bytes());
        let status = self.read_head().0;
        let (pieces, terminated) = self.read_chunks_timed();
        let text = pieces
            .iter()
            .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
            .collect();
        (status, text, terminated)
    }

    /// True when the peer closes (EOF or reset) within the read timeout with no further bytes
    /// beyond those already buffered.
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        self.set_read_timeout(limit);
        let mut tmp = [0u8; 1024];
        let result = loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => break true,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break false,
                Err(_) => break true,
            }
        };
        self.set_read_timeout(READ_TIMEOUT);
        result
    }

    /// Bytes that arrived but were not consumed as part of a response.
    pub fn leftover(&self) -> &[u8] {
        &self.buf
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

pub fn build_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nhost: rotor.test\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !body.is_empty() || method == "POST" {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A test upstream on a loopback port: each accepted connection counted, then served by
/// `serve` on a thread of its own. Its address and the count of connections it accepted.
pub fn counting_upstream(
    serve: impl Fn(std::net::TcpStream) + Send + Sync + 'static,
) -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let serve = Arc::new(serve);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let serve = serve.clone();
            std::thread::spawn(move || serve(conn));
        }
    });
    (addr, accepted)
}

/// A test upstream's read of the next request on `conn`: reads into `buf` until it holds a
/// whole head and its Content-Length body, then drains them. False at EOF or a read error.
pub fn next_request<S: std::io::Read>(conn: &mut S, buf: &mut Vec<u8>) -> bool {
    let mut tmp = [0u8; 16 * 1024];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                buf.drain(..end + 4 + len);
                return true;
            }
        }
        match conn.read(&mut tmp) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

fn parse_head(head: &[u8]) -> Head {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    assert!(version.starts_with("HTTP/1."), "bad status line {status_line:?}");
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let reason = parts.next().unwrap_or("").to_owned();
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap_or_else(|| panic!("bad header line {l:?}"));
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    (status, reason, headers)
}
