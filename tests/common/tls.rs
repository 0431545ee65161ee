//! A TLS upstream for the tests: a throwaway CA, a leaf certificate for `localhost` signed by
//! it, and a blocking rustls terminator that forwards plaintext to the mock provider.
//!
//! The terminator runs one thread per connection that alternates between the two directions
//! with short read timeouts (rustls keeps partial records buffered, so a timed-out read loses
//! nothing).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct TlsUpstream {
    pub addr: SocketAddr,
    /// The CA certificate in PEM, written to a temp file for `upstream.ca_file`.
    pub ca_file: tempfile::NamedTempFile,
}

impl TlsUpstream {
    /// `https://localhost:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("https://localhost:{}/v1", self.addr.port())
    }

    pub fn ca_path(&self) -> String {
        self.ca_file.path().display().to_string()
    }
}

/// Starts a TLS terminator in front of `backend` (the mock's plaintext address).
pub fn start(backend: SocketAddr) -> TlsUpstream {
    let (config, ca_file) = server_config();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::Builder::new()
        .name("tls-upstream".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let config = config.clone();
                std::thread::spawn(move || {
                    let _ = relay(conn, backend, config);
                });
            }
        })
        .unwrap();
    TlsUpstream { addr, ca_file }
}

/// A server config for `localhost` signed by a throwaway CA, and that CA in PEM in a temp file
/// (for `upstream.ca_file`): for tests that script their own TLS upstream.
pub fn server_config() -> (Arc<rustls::ServerConfig>, tempfile::NamedTempFile) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "rotor test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    leaf_params.is_ca = IsCa::NoCa;
    leaf_params.distinguished_name.push(DnType::CommonName, "localhost");
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();

    let mut ca_file = tempfile::NamedTempFile::new().unwrap();
    ca_file.write_all(ca.pem().as_bytes()).unwrap();
    ca_file.flush().unwrap();

    let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    (Arc::new(config), ca_file)
}

fn would_block(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

fn relay(client: TcpStream, backend: SocketAddr, config: Arc<rustls::ServerConfig>) -> io::Result<()> {
    let tick = Some(Duration::from_millis(3));
    client.set_read_timeout(tick)?;
    client.set_nodelay(true)?;
    let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, client);
    let mut plain = TcpStream::connect(backend)?;
    plain.set_read_timeout(tick)?;
    plain.set_nodelay(true)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                plain.write_all(&buf[..n])?;
            }
            Err(e) if would_block(&e) => {}
            Err(e) => return Err(e),
        }
        match plain.read(&mut buf) {
            Ok(0) => {
                tls.conn.send_close_notify();
                let _ = tls.flush();
                return Ok(());
            }
            Ok(n) => {
                tls.write_all(&buf[..n])?;
                tls.flush()?;
            }
            Err(e) if would_block(&e) => {}
            Err(e) => return Err(e),
        }
    }
}
