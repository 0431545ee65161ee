//! Remote config (DESIGN 1.1, 1.3): `--config https://…` (or `ROTOR_CONFIG`) is fetched with
//! one HTTP/1.1 GET at start and on every reload, on the control thread (it blocks, bounded by
//! `timeout` and `MAX_BYTES`). TLS is rustls with webpki-roots plus `ROTOR_CONFIG_CA_FILE`.
//! Invariant: a failed fetch or a bad body is an error naming the URL and why, and never
//! replaces a running config (the caller keeps it); the URL's query and user info (where a
//! token may hide) and `ROTOR_CONFIG_TOKEN` never appear in a message.

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::ConfigError;
use crate::codec::chunked::{Chunk, ChunkedDecoder, ChunkedLimits};

/// The largest config body accepted.
pub const MAX_BYTES: usize = 4 << 20;
/// The default for `ROTOR_CONFIG_TIMEOUT_MS`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Redirects followed (an `https` URL is never redirected to `http`).
const MAX_REDIRECTS: usize = 5;

/// Where a remote config comes from and how to fetch it.
#[derive(Clone, PartialEq, Eq)]
pub struct Remote {
    /// `http://` or `https://` URL, as given.
    pub url: String,
    /// Extra PEM roots beside webpki-roots (`ROTOR_CONFIG_CA_FILE`).
    pub ca_file: Option<PathBuf>,
    /// For the whole fetch: connect, TLS, request and body (`ROTOR_CONFIG_TIMEOUT_MS`).
    pub timeout: Duration,
    /// Sent as `Authorization: Bearer <token>` (`ROTOR_CONFIG_TOKEN`).
    pub token: Option<String>,
    /// A fixed hash of the body last fetched: what "the file changed" means for config keys
    /// disabled through `/admin/keys`.
    pub digest: u64,
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Remote({})", redact(&self.url))
    }
}

/// Whether `--config`/`ROTOR_CONFIG` names a URL rather than a file.
pub fn is_url(raw: &str) -> bool {
    let lower = raw.get(..8).unwrap_or(raw).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

impl Remote {
    /// A remote source for `url`, its settings from `ROTOR_CONFIG_CA_FILE`,
    /// `ROTOR_CONFIG_TIMEOUT_MS` and `ROTOR_CONFIG_TOKEN` as `env` gives them.
    pub fn from_env(url: &str, env: impl Fn(&str) -> Option<String>) -> Result<Remote, ConfigError> {
        let var = |name: &str| env(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        Target::parse(url).map_err(|e| ConfigError(format!("config: {}: {e}", redact(url))))?;
        let timeout = match var("ROTOR_CONFIG_TIMEOUT_MS") {
            None => DEFAULT_TIMEOUT,
            Some(v) => match v.parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    return Err(ConfigError::at(
                        "ROTOR_CONFIG_TIMEOUT_MS",
                        format!("{v:?} is not a positive number of milliseconds"),
                    ))
                }
            },
        };
        Ok(Remote {
            url: url.to_owned(),
            ca_file: var("ROTOR_CONFIG_CA_FILE").map(PathBuf::from),
            timeout,
            token: var("ROTOR_CONFIG_TOKEN"),
            digest: 0,
        })
    }

    /// The URL without user info and query, for messages.
    pub fn display(&self) -> String {
        redact(&self.url)
    }

    /// Fetches the body (UTF-8 text). Blocking: control thread or start-up only.
    pub fn fetch(&self) -> Result<String, ConfigError> {
        let fail = |why: String| ConfigError(format!("config: cannot fetch {}: {why}", redact(&self.url)));
        let deadline = Instant::now() + self.timeout;
        let tls = match Target::parse(&self.url).map_err(&fail)?.tls {
            true => Some(
                crate::upstream::tls::client_config(self.ca_file.as_deref())
                    .map_err(|e| fail(e.replace("upstream.ca_file", "ROTOR_CONFIG_CA_FILE")))?,
            ),
            false => None,
        };
        let mut url = self.url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let target = Target::parse(&url).map_err(&fail)?;
            let answer = get(&target, tls.as_ref(), self.token.as_deref(), deadline).map_err(&fail)?;
            match answer {
                Answer::Body(body) => {
                    return String::from_utf8(body).map_err(|_| fail("the body is not UTF-8 text".into()))
                }
                Answer::Redirect(location) => {
                    let next = target.join(&location);
                    if target.tls && !next.to_ascii_lowercase().starts_with("https://") {
                        return Err(fail("refusing a redirect from https to http".into()));
                    }
                    url = next;
                }
            }
        }
        Err(fail(format!("more than {MAX_REDIRECTS} redirects")))
    }
}

/// The body of a raw answer to the config GET as read so far (`closed` = the peer has
/// closed): `Ok(None)` = read on. Pure, for the fuzz target; `fetch` uses the same framing.
pub fn answer_body(raw: &[u8], closed: bool) -> Result<Option<Vec<u8>>, String> {
    let answer = if closed {
        Some(finish_at_eof(raw)?)
    } else {
        complete(raw)?
    };
    match answer {
        None => Ok(None),
        Some(Answer::Body(body)) => Ok(Some(body)),
        Some(Answer::Redirect(location)) => Err(format!("redirect to {location}")),
    }
}

/// `scheme://host[:port]/path` with the user info and query left out.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let (path, query) = path.split_once('?').map_or((path, false), |(p, _)| (p, true));
    format!("{scheme}://{host}{path}{}", if query { "?…" } else { "" })
}

struct Target {
    tls: bool,
    host: String,
    port: u16,
    /// `Host` header value.
    authority: String,
    /// Path and query.
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let (scheme, rest) = url.split_once("://").ok_or("not an http:// or https:// URL")?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            _ => return Err("not an http:// or https:// URL".into()),
        };
        let rest = rest.split('#').next().unwrap_or(rest);
        let (authority, path) = rest.find(['/', '?']).map_or((rest, "/"), |i| rest.split_at(i));
        if authority.contains('@') {
            return Err("user info in the URL is not supported; set ROTOR_CONFIG_TOKEN for a bearer token".into());
        }
        let default = if tls { 443 } else { 80 };
        let port_of = |p: &str| p.parse::<u16>().map_err(|_| format!("bad port {p:?}"));
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((h, "")) => (h, default),
                Some((h, after)) => (h, port_of(after.strip_prefix(':').unwrap_or(after))?),
                None => return Err("bad IPv6 host (no closing ])".into()),
            },
            None => match authority.rsplit_once(':') {
                Some((h, p)) => (h, port_of(p)?),
                None => (authority, default),
            },
        };
        if host.is_empty() {
            return Err("no host in the URL".into());
        }
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Ok(Target {
            tls,
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            path,
        })
    }

    /// A `Location` value made absolute against this target.
    fn join(&self, location: &str) -> String {
        if is_url(location) {
            return location.to_owned();
        }
        let scheme = if self.tls { "https" } else { "http" };
        if location.starts_with('/') {
            format!("{scheme}://{}{location}", self.authority)
        } else {
            let dir = self.path.split('?').next().unwrap_or("/");
            let dir = &dir[..dir.rfind('/').map_or(0, |i| i + 1)];
            format!("{scheme}://{}{dir}{location}", self.authority)
        }
    }
}

#[derive(Debug)]
enum Answer {
    Body(Vec<u8>),
    Redirect(String),
}

/// One GET with `Connection: close`, everything before `deadline`.
fn get(
    target: &Target,
    tls: Option<&Arc<rustls::ClientConfig>>,
    token: Option<&str>,
    deadline: Instant,
) -> Result<Answer, String> {
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| "timed out".to_owned())
    };
    let tcp = connect(target, left()?)?;
    let mut request = format!(
        "GET {} HTTP/1.1\r\nhost: {}\r\nuser-agent: rotor/{}\r\naccept: */*\r\nconnection: close\r\n",
        target.path,
        target.authority,
        env!("CARGO_PKG_VERSION")
    );
    if let Some(token) = token {
        request.push_str(&format!("authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    let mut stream: Box<dyn ReadWrite> = match tls {
        None => Box::new(tcp.try_clone().map_err(|e| e.to_string())?),
        Some(config) => {
            let name = rustls_pki_types::ServerName::try_from(target.host.clone())
                .map_err(|_| format!("{:?} is not a valid TLS server name", target.host))?;
            let conn = rustls::ClientConnection::new(config.clone(), name).map_err(|e| format!("tls: {e}"))?;
            Box::new(rustls::StreamOwned::new(
                conn,
                tcp.try_clone().map_err(|e| e.to_string())?,
            ))
        }
    };
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "timed out".to_owned(),
        _ => e.to_string(),
    };
    tcp.set_write_timeout(Some(left()?)).map_err(io)?;
    stream.write_all(request.as_bytes()).map_err(io)?;
    stream.flush().map_err(io)?;
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some(answer) = complete(&raw)? {
            return Ok(answer);
        }
        tcp.set_read_timeout(Some(left()?)).map_err(io)?;
        match stream.read(&mut buf) {
            Ok(0) => return finish_at_eof(&raw),
            Ok(n) => raw.extend_from_slice(buf.get(..n).unwrap_or_default()),
            // A peer that closes without TLS close_notify: the framing decides.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return finish_at_eof(&raw),
            Err(e) => return Err(io(e)),
        }
        if raw.len() > MAX_BYTES + 64 * 1024 {
            return Err(format!("the config is larger than {MAX_BYTES} bytes"));
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[allow(clippy::disallowed_methods)] // control thread or start-up: blocking DNS is allowed here
fn connect(target: &Target, timeout: Duration) -> Result<TcpStream, String> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", target.host))?
        .collect();
    let mut last = format!("{} has no address", target.host);
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    Err(last)
}

/// The answer once `raw` holds a whole response (`None` = read on).
fn complete(raw: &[u8]) -> Result<Option<Answer>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(raw).map_err(|e| format!("bad HTTP answer: {e}"))? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = response.code.unwrap_or(0);
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    if matches!(status, 301 | 302 | 303 | 307 | 308) {
        return match header("location") {
            Some(location) => Ok(Some(Answer::Redirect(location))),
            None => Err(format!("answered {status} without a Location")),
        };
    }
    if status != 200 {
        return Err(format!("answered {status} (expected 200)"));
    }
    let body = raw.get(head_len..).unwrap_or_default();
    let chunked = header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return dechunk(body);
    }
    match header("content-length") {
        Some(v) => {
            let len: usize = v.parse().map_err(|_| format!("bad Content-Length {v:?}"))?;
            if len > MAX_BYTES {
                return Err(format!("the config is larger than {MAX_BYTES} bytes"));
            }
            Ok((body.len() >= len).then(|| Answer::Body(body.get(..len).unwrap_or_default().to_vec())))
        }
        None => Ok(None), // read until close
    }
}

/// The whole body of a chunked answer once its last chunk is in (`None` = read on).
fn dechunk(body: &[u8]) -> Result<Option<Answer>, String> {
    let mut decoder = ChunkedDecoder::new(ChunkedLimits::default());
    let mut buf = BytesMut::from(body);
    let mut out = Vec::new();
    loop {
        match decoder.decode(&mut buf).map_err(|e| e.to_string())? {
            Some(Chunk::Data(data)) => out.extend_from_slice(&data),
            Some(Chunk::Done) => return Ok(Some(Answer::Body(out))),
            None => return Ok(None),
        }
    }
}

/// The peer closed: a body read until close is whole; any other framing was cut.
fn finish_at_eof(raw: &[u8]) -> Result<Answer, String> {
    if let Some(answer) = complete(raw)? {
        return Ok(answer);
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(raw) {
        Ok(httparse::Status::Complete(n)) => {
            let framed = response.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("content-length") || h.name.eq_ignore_ascii_case("transfer-encoding")
            });
            if framed {
                Err("the connection closed before the whole config arrived".into())
            } else {
                Ok(Answer::Body(raw.get(n..).unwrap_or_default().to_vec()))
            }
        }
        _ => Err("the connection closed before an HTTP answer".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted_and_parsed() {
        assert_eq!(
            redact("https://u:p@cfg.example.com/a/rotor.toml?token=s3cret"),
            "https://cfg.example.com/a/rotor.toml?…"
        );
        assert_eq!(redact("http://127.0.0.1:9/x"), "http://127.0.0.1:9/x");
        let t = Target::parse("https://cfg.example.com/a/b.toml?x=1").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.path.as_str()),
            (true, "cfg.example.com", 443, "/a/b.toml?x=1")
        );
        let t = Target::parse("http://[::1]:8080").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("::1", 8080, "/"));
        assert!(Target::parse("ftp://x/y").is_err());
        assert!(Target::parse("https://user:pw@x/y").is_err());
        assert_eq!(t.join("/other"), "http://[::1]:8080/other");
        let t = Target::parse("https://h/dir/a.toml").unwrap();
        assert_eq!(t.join("b.toml"), "https://h/dir/b.toml");
        assert!(is_url("HTTPS://h/x") && !is_url("config/rotor.toml"));
    }

    #[test]
    fn answers_are_framed_by_length_chunks_or_close() {
        let body = |a: Option<Answer>| match a {
            Some(Answer::Body(b)) => String::from_utf8(b).unwrap(),
            _ => panic!("no body"),
        };
        assert_eq!(
            body(complete(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc").unwrap()),
            "abc"
        );
        assert!(complete(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nabc")
            .unwrap()
            .is_none());
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n";
        assert_eq!(body(complete(chunked).unwrap()), "abc");
        assert!(
            matches!(finish_at_eof(b"HTTP/1.1 200 OK\r\n\r\nuntil close"), Ok(Answer::Body(b)) if b == b"until close")
        );
        assert!(finish_at_eof(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nabc").is_err());
        assert!(complete(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            .unwrap_err()
            .contains("404"));
        assert!(
            matches!(complete(b"HTTP/1.1 302 Found\r\nlocation: /b\r\n\r\n"), Ok(Some(Answer::Redirect(l))) if l == "/b")
        );
    }
}
