//! `rediss://` to a Redis whose certificate a private CA signed (issue 17 item 1): a real
//! `redis-server` with TLS only (`--port 0 --tls-port`), certificates made by the test. With
//! `cluster.tls_ca_file` (and a client certificate, which this Redis demands) rotor shares
//! through it; without the CA, or without the client certificate, it cannot and says so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{chat, closed_port, eventually, pool_body, start_mock, Conf, Harness, POOL_KEY};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use sonic_rs::JsonValueTrait;

const ADMIN: &str = "admin-secret-tls-0001";

struct TlsRedis {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsRedis {
    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// A CA, a server certificate for localhost signed by it, a client certificate signed by it,
/// and a redis-server speaking only TLS and demanding a client certificate.
fn start_tls_redis() -> TlsRedis {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "rotor redis test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).unwrap();
    for (name, sans) in [
        ("server", vec!["localhost".to_owned(), "127.0.0.1".to_owned()]),
        ("client", vec!["rotor".to_owned()]),
    ] {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        write(dir.path(), &format!("{name}.pem"), &cert.pem());
        write(dir.path(), &format!("{name}.key"), &key.serialize_pem());
    }
    write(dir.path(), "ca.pem", &ca.pem());
    let addr = closed_port();
    let path = |n: &str| dir.path().join(n).display().to_string();
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &addr.port().to_string(),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            &path("server.pem"),
            "--tls-key-file",
            &path("server.key"),
            "--tls-ca-cert-file",
            &path("ca.pem"),
            "--tls-auth-clients",
            "yes",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"));
    assert!(
        eventually(Duration::from_secs(10), || TcpStream::connect(addr).is_ok()),
        "redis-server (TLS) did not listen on {addr}"
    );
    TlsRedis { child, addr, dir }
}

fn gateway(redis: &TlsRedis, mock_url: &str, tls: &str) -> Harness {
    let conf = Conf {
        workers: 1,
        server: format!("admin_key = \"{ADMIN}\""),
        ..Conf::with_body(&format!(
            "{}\n[cluster]\nredis_url = \"rediss://localhost:{}\"\nredis_timeout_ms = 1000\nheartbeat_ms = 200\n{tls}\n",
            pool_body(&[POOL_KEY]),
            redis.addr.port()
        ))
    };
    Harness::gateway_only(conf, mock_url)
}

fn cluster(h: &Harness) -> sonic_rs::Value {
    h.client().get("/health", &[]).json()["cluster"].clone()
}

#[test]
fn rediss_with_a_private_ca_and_a_client_certificate_shares_through_tls() {
    let redis = start_tls_redis();
    let mock = start_mock();
    let files = format!(
        "tls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
        redis.file("ca.pem").display(),
        redis.file("client.pem").display(),
        redis.file("client.key").display()
    );
    let g = gateway(&redis, &mock.base_url(), &files);
    assert!(
        eventually(Duration::from_secs(5), || cluster(&g)["redis"].as_str() == Some("up")),
        "{:?}",
        cluster(&g)
    );
    assert_eq!(g.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status, 200);
    let fleet = || {
        let r = g.client().request(
            "GET",
            "/admin/stats/overview?scope=cluster",
            &[("authorization", &format!("Bearer {ADMIN}"))],
            b"",
        );
        r.json()["requests"].as_u64()
    };
    assert!(
        eventually(Duration::from_secs(5), || fleet() == Some(1)),
        "the fleet's stats went through TLS: {:?}",
        fleet()
    );

    // Without the private CA the server is not trusted; without the client certificate this
    // Redis refuses the handshake. Either way the instance says Redis is down.
    let no_ca = format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
        redis.file("client.pem").display(),
        redis.file("client.key").display()
    );
    let no_client = format!("tls_ca_file = \"{}\"", redis.file("ca.pem").display());
    for tls in [no_ca, no_client] {
        let g = gateway(&redis, &mock.base_url(), &tls);
        let state = cluster(&g);
        assert_eq!(state["redis"].as_str(), Some("down"), "{tls}: {state:?}");
        assert!(state["error"].as_str().is_some_and(|e| !e.is_empty()), "{state:?}");
        assert_eq!(
            g.post("/v1/chat/completions", &chat("gpt-4o-mini"), &[]).status,
            200,
            "still proxying"
        );
    }
}
