//! TLS client configuration for upstreams: rustls with webpki-roots plus the optional
//! `upstream.ca_file`. Built once per config generation (never per request) and shared.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let mut added = 0;
        for cert in
            CertificateDer::pem_file_iter(path).map_err(|e| format!("upstream.ca_file {}: {e}", path.display()))?
        {
            let cert = cert.map_err(|e| format!("upstream.ca_file {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("upstream.ca_file {}: {e}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("upstream.ca_file {}: no certificates found", path.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // rotor speaks HTTP/1.1 upstream; advertising h2 would invite a protocol we do not parse.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
