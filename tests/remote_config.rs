//! Remote config (issue 16 item 6) over real sockets: `--config http(s)://…` fetched at start
//! and on every reload; a reload that cannot fetch (error status, hang past the timeout) or
//! fetches a bad file is refused with the reason and keeps the running config; the URL's query
//! never shows; TLS with a generated CA (`ROTOR_CONFIG_CA_FILE`), refused without it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use parking_lot::Mutex;
use rotor::config::{self, Remote};
use rotor::mock::MockServer;
use rotor::runtime;
use sonic_rs::JsonValueTrait;

const ADMIN: &str = "admin-remote-config-01";
const SECRET_QUERY: &str = "sig=s3cret-signature";

/// What the config server answers next.
#[derive(Clone)]
enum Serve {
    Ok(String),
    Chunked(String),
    Status(u16),
    /// Accepts, reads the request, never answers.
    Hang,
}

/// A one-file HTTP server (TLS when given a server config) with the answer set at run time;
/// it records each request head.
struct ConfigServer {
    addr: SocketAddr,
    serve: Arc<Mutex<Serve>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl ConfigServer {
    fn start(serve: Serve, tls: Option<Arc<rustls::ServerConfig>>) -> ConfigServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let serve = Arc::new(Mutex::new(serve));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (serve.clone(), requests.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (s, r, tls) = (s.clone(), r.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    None => answer(conn, &s, &r),
                    Some(config) => {
                        let session = rustls::ServerConnection::new(config).unwrap();
                        answer(rustls::StreamOwned::new(session, conn), &s, &r)
                    }
                });
            }
        });
        ConfigServer { addr, serve, requests }
    }

    fn set(&self, serve: Serve) {
        *self.serve.lock() = serve;
    }
}

fn answer<S: Read + Write>(mut stream: S, serve: &Mutex<Serve>, requests: &Mutex<Vec<String>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    requests.lock().push(String::from_utf8_lossy(&head).into_owned());
    let serve = serve.lock().clone();
    let out = match serve {
        Serve::Ok(body) => format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()),
        Serve::Chunked(body) => {
            let (a, b) = body.split_at(body.len() / 2);
            format!(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                a.len(),
                b.len()
            )
        }
        Serve::Status(code) => format!("HTTP/1.1 {code} Nope\r\ncontent-length: 4\r\n\r\nnope"),
        Serve::Hang => {
            std::thread::sleep(Duration::from_secs(10));
            return;
        }
    };
    let _ = stream.write_all(out.as_bytes());
    let _ = stream.flush();
}

fn remote(url: String, ca_file: Option<&std::path::Path>) -> Remote {
    Remote {
        url,
        ca_file: ca_file.map(std::path::Path::to_path_buf),
        timeout: Duration::from_millis(1500),
        token: Some("cfg-bearer-token-1".into()),
        digest: 0,
    }
}

fn conf(extra_alias: bool) -> Conf {
    let aliases = if extra_alias {
        r#"aliases = { "gpt-3.5" = "gpt-4o-mini", "remote-alias" = "gpt-4o-mini" }"#
    } else {
        r#"aliases = { "gpt-3.5" = "gpt-4o-mini" }"#
    };
    Conf {
        server: format!("admin_key = \"{ADMIN}\""),
        ..Conf::with_body(&default_body().replace(r#"aliases = { "gpt-3.5" = "gpt-4o-mini" }"#, aliases))
    }
}

fn start(mock: MockServer, remote: &Remote) -> Harness {
    let config = config::load_remote(remote).unwrap_or_else(|e| panic!("{e}"));
    let running = runtime::start(config, None).unwrap();
    let addr = running.addr;
    Harness {
        mock: Some(mock),
        running: Some(running),
        addr,
    }
}

fn reload(h: &Harness) -> Response {
    let auth = format!("Bearer {ADMIN}");
    h.client()
        .request("POST", "/admin/reload", &[("authorization", &auth)], b"")
}

fn chat_status(h: &Harness, model: &str) -> u16 {
    h.post("/v1/chat/completions", &chat(model), &[]).status
}

#[test]
fn a_remote_config_is_fetched_at_start_and_on_every_reload_and_a_failure_keeps_the_old_one() {
    let mock = start_mock();
    let server = ConfigServer::start(Serve::Ok(conf(false).render(&mock.base_url())), None);
    let url = format!("http://127.0.0.1:{}/cfg/rotor.toml?{SECRET_QUERY}", server.addr.port());
    let shown = format!("http://127.0.0.1:{}/cfg/rotor.toml?…", server.addr.port());
    let remote = remote(url, None);

    // Start: fetched, with the token, the query kept on the wire and hidden in messages.
    let h = start(mock, &remote);
    assert_eq!(chat_status(&h, "gpt-3.5"), 200);
    assert_eq!(chat_status(&h, "remote-alias"), 404);
    let first = server.requests.lock()[0].clone();
    assert!(
        first.starts_with(&format!("GET /cfg/rotor.toml?{SECRET_QUERY} HTTP/1.1")),
        "{first}"
    );
    assert!(first.contains("authorization: Bearer cfg-bearer-token-1"), "{first}");
    let table = h.running().gateway.current().config.route_table_text();
    assert!(table.contains(&format!("source: {shown}")), "{table}");
    assert!(!table.contains("s3cret"));

    // Reload success: the new file (chunked this time) serves the new alias.
    server.set(Serve::Chunked(conf(true).render(&h.mock().base_url())));
    let r = reload(&h);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(server.requests.lock().len(), 2, "fetched again on reload");
    assert_eq!(chat_status(&h, "remote-alias"), 200);

    // Reload failures: an error status, a bad file, a server that never answers. Each is
    // refused with why, names the URL without its query, and the running config stays.
    let refused = |why: &str| {
        let started = Instant::now();
        let r = reload(&h);
        assert_eq!(r.status, 400, "{}", r.text());
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains(why), "{message}");
        assert!(message.contains(&shown), "{message}");
        assert!(
            !message.contains("s3cret") && !message.contains("cfg-bearer"),
            "{message}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "bounded by the timeout");
        assert_eq!(chat_status(&h, "remote-alias"), 200, "the running config stays");
        message
    };
    server.set(Serve::Status(503));
    refused("answered 503");
    server.set(Serve::Ok("[server\nlisten = ".into()));
    refused("(in the config fetched from");
    server.set(Serve::Ok(
        conf(true)
            .render(&h.mock().base_url())
            .replace("kind = \"openai\"", "kind = \"nope\""),
    ));
    refused("providers[0].kind");
    server.set(Serve::Hang);
    refused("timed out");

    // The server is fine again: the next reload takes it.
    server.set(Serve::Ok(conf(false).render(&h.mock().base_url())));
    assert_eq!(reload(&h).status, 200);
    assert_eq!(chat_status(&h, "remote-alias"), 404);
}

#[test]
fn a_remote_config_that_cannot_be_fetched_at_start_is_an_error() {
    let server = ConfigServer::start(Serve::Status(404), None);
    let url = format!("http://127.0.0.1:{}/rotor.toml?{SECRET_QUERY}", server.addr.port());
    let e = config::load_remote(&remote(url, None)).unwrap_err().to_string();
    assert!(e.contains("cannot fetch") && e.contains("answered 404"), "{e}");
    assert!(!e.contains("s3cret"), "{e}");
    // Nothing listening.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let e = config::load_remote(&remote(format!("http://127.0.0.1:{port}/x"), None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot connect"), "{e}");
    // Bad environment settings are named.
    let e = Remote::from_env("https://cfg.example.com/rotor.toml", |name| {
        (name == "ROTOR_CONFIG_TIMEOUT_MS").then(|| "soon".to_owned())
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("ROTOR_CONFIG_TIMEOUT_MS"), "{e}");
    assert!(Remote::from_env("https://user:pw@cfg.example.com/x", |_| None).is_err());
}

#[test]
fn a_remote_config_over_tls_is_checked_against_the_given_ca() {
    let (tls, ca) = common::tls::server_config();
    let mock = start_mock();
    let server = ConfigServer::start(Serve::Ok(conf(false).render(&mock.base_url())), Some(tls));
    let url = format!("https://localhost:{}/rotor.toml", server.addr.port());
    // Without the CA the certificate is refused.
    let e = config::load_remote(&remote(url.clone(), None)).unwrap_err().to_string();
    assert!(e.contains("certificate") || e.contains("UnknownIssuer"), "{e}");
    let h = start(mock, &remote(url, Some(ca.path())));
    assert_eq!(chat_status(&h, "gpt-3.5"), 200);
    server.set(Serve::Chunked(conf(true).render(&h.mock().base_url())));
    assert_eq!(reload(&h).status, 200);
    assert_eq!(chat_status(&h, "remote-alias"), 200);
}

#[test]
fn a_config_key_disabled_at_runtime_stays_disabled_until_the_fetched_file_changes() {
    let mock = start_mock();
    let text = conf(false).render(&mock.base_url());
    let server = ConfigServer::start(Serve::Ok(text.clone()), None);
    let h = start(
        mock,
        &remote(format!("http://127.0.0.1:{}/rotor.toml", server.addr.port()), None),
    );
    let auth = format!("Bearer {ADMIN}");
    let admin = |method: &str, path: &str, body: &str| {
        h.client().request(
            method,
            path,
            &[("authorization", &auth), ("content-type", "application/json")],
            body.as_bytes(),
        )
    };
    let disable = format!(r#"{{"provider":"mock","key":"{POOL_KEY}"}}"#);
    assert_eq!(admin("DELETE", "/admin/keys", &disable).status, 200);
    let state = || {
        admin("GET", "/admin/keys", "").json()["data"][0]["state"]
            .as_str()
            .map(str::to_owned)
    };
    assert_eq!(state().as_deref(), Some("disabled"));
    // The same file fetched again: still disabled.
    assert_eq!(reload(&h).status, 200);
    assert_eq!(state().as_deref(), Some("disabled"));
    // A changed file: the config key serves again.
    server.set(Serve::Ok(format!("{text}\n# edited\n")));
    assert_eq!(reload(&h).status, 200);
    assert_eq!(state().as_deref(), Some("active"));
    assert_eq!(chat_status(&h, "gpt-3.5"), 200);
}
