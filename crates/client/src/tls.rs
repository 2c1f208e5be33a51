//! TLS for a participant's HTTPS and WSS connections: rustls with the system's roots (and
//! `SSL_CERT_FILE`, as rustls-native-certs reads it), on the same aws-lc-rs provider as the
//! server, so a client never depends on which provider another crate installed.

use std::sync::{Arc, OnceLock};

/// The client configuration every HTTPS and WSS connection of this process uses.
pub fn client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            // A certificate the store cannot parse is one nobody could be verified by.
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = match rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
            {
                Ok(builder) => builder.with_root_certificates(roots).with_no_client_auth(),
                // The provider is this crate's own and supports the default versions.
                Err(e) => unreachable!("aws-lc-rs lacks TLS 1.2/1.3: {e}"),
            };
            Arc::new(config)
        })
        .clone()
}

/// An HTTP client that speaks HTTPS with [`client_config`].
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls((*client_config()).clone())
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// The connector for `wss:` with [`client_config`].
pub fn websocket_connector() -> tokio_tungstenite::Connector {
    tokio_tungstenite::Connector::Rustls(client_config())
}
