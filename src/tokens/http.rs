//! A blocking HTTP/1.1 POST for the control thread's token requests (std sockets, rustls for
//! https): one request per connection (`Connection: close`), bounded in time and size.
//! Invariant: never used on a worker (it resolves and connects with blocking calls).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::vertex::TokenUrl;

/// `POST url` with a form body; the status and the (de-chunked) body.
pub(super) fn post_form(
    url: &TokenUrl,
    form: &[u8],
    tls: Option<&Arc<rustls::ClientConfig>>,
    timeout: Duration,
    max: usize,
) -> Result<(u16, Vec<u8>), String> {
    let deadline = Instant::now() + timeout;
    let tcp = connect(&url.base.host, url.base.port, timeout)?;
    tcp.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut head = format!(
        "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/x-www-form-urlencoded\r\naccept: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        url.target,
        url.base.host_header,
        form.len()
    )
    .into_bytes();
    head.extend_from_slice(form);
    let raw = match tls {
        None => exchange(tcp, &head, deadline, max)?,
        Some(config) => {
            let name = rustls_pki_types::ServerName::try_from(url.base.host.clone())
                .map_err(|_| format!("{:?} is not a TLS server name", url.base.host))?;
            let conn = rustls::ClientConnection::new(config.clone(), name).map_err(|e| format!("tls: {e}"))?;
            exchange(rustls::StreamOwned::new(conn, tcp), &head, deadline, max)?
        }
    };
    parse(&raw)
}

#[allow(clippy::disallowed_methods)] // control thread only: it may block on DNS
fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut last = format!("{host} has no addresses");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    Err(last)
}

/// Writes the request, reads the answer to the connection's end (or `max` bytes).
fn exchange(mut stream: impl Read + Write, request: &[u8], deadline: Instant, max: usize) -> Result<Vec<u8>, String> {
    stream.write_all(request).map_err(|e| format!("cannot send: {e}"))?;
    stream.flush().map_err(|e| format!("cannot send: {e}"))?;
    let mut out = Vec::with_capacity(4096);
    let mut buf = [0u8; 8192];
    loop {
        if Instant::now() >= deadline {
            return Err("timed out".to_owned());
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > max {
                    return Err("the answer is too large".to_owned());
                }
            }
            // A TLS peer that closes without close_notify: what arrived is the answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("no answer: {e}")),
        }
    }
    Ok(out)
}

/// Status and body of a whole HTTP/1.1 answer (length-delimited, chunked or to close).
fn parse(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let end = match response.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err("the answer's head is malformed or cut".to_owned()),
    };
    let status = response.code.unwrap_or(0);
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let rest = raw.get(end..).unwrap_or_default();
    if header("transfer-encoding").is_some_and(|v| v.ends_with("chunked")) {
        return dechunk(rest).map(|body| (status, body));
    }
    let body = match header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(n) => rest.get(..n).ok_or("the answer's body is cut")?.to_vec(),
        None => rest.to_vec(),
    };
    Ok((status, body))
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").ok_or("a chunk is cut")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim().to_owned();
        let size = usize::from_str_radix(&size_text, 16).map_err(|_| "a chunk size is malformed".to_owned())?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(rest.get(..size).ok_or("a chunk is cut")?);
        rest = rest.get(size + 2..).ok_or("a chunk is cut")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_of_every_framing_parse() {
        let whole = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhiXX";
        assert_eq!(parse(whole).unwrap(), (200, b"hi".to_vec()));
        let chunked = b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1;x=y\r\nc\r\n0\r\n\r\n";
        assert_eq!(parse(chunked).unwrap(), (400, b"abc".to_vec()));
        let closed = b"HTTP/1.1 200 OK\r\n\r\nall of it";
        assert_eq!(parse(closed).unwrap(), (200, b"all of it".to_vec()));
        assert!(parse(b"HTTP/1.1 200").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nhi").is_err());
    }
}
