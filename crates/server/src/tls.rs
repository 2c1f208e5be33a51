//! HTTPS and WSS through rustls, and the warning when a reachable server speaks plain HTTP.

use std::net::SocketAddr;

use axum_server::tls_rustls::RustlsConfig;
use tracing::warn;

use crate::config::{ConfigError, TlsFiles};

/// Reads and checks the certificate chain and key, so that a bad file stops `conclave serve`
/// at start with a reason rather than failing every handshake later.
pub async fn load(files: &TlsFiles) -> Result<RustlsConfig, ConfigError> {
    let read = |what: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| ConfigError::Tls {
            what,
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    };
    let cert = read("certificate", &files.cert)?;
    let key = read("key", &files.key)?;
    RustlsConfig::from_pem(cert, key)
        .await
        .map_err(|e| ConfigError::Tls {
            what: "certificate and key",
            path: format!("{} and {}", files.cert.display(), files.key.display()),
            reason: e.to_string(),
        })
}

/// Plain HTTP is fine on loopback (a TLS proxy in front, or a test); anywhere else, say
/// loudly what it exposes.
pub fn warn_if_plaintext(listen: SocketAddr, tls: bool) {
    if tls || listen.ip().is_loopback() {
        return;
    }
    warn!("!!! Conclave is serving PLAIN HTTP on {listen}, which is reachable from the network.");
    warn!("!!! Media and chat stay end-to-end encrypted, but meeting passcodes, host secrets,");
    warn!("!!! invitation tokens and login cookies travel IN CLEAR and can be stolen on the way.");
    warn!("!!! Serve HTTPS with --tls-cert and --tls-key (CONCLAVE_TLS_CERT / CONCLAVE_TLS_KEY),");
    warn!("!!! or listen on 127.0.0.1 behind a TLS-terminating reverse proxy.");
}
