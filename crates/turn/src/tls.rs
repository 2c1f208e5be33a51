//! The relay's TLS certificate: the operator's files, or a self-signed one made at start,
//! whose SHA-256 fingerprint is printed so bots (and operators) can pin it. Browsers need a
//! certificate they trust: Chromium checks TURN TLS certificates.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {reason}")]
    Read {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(String),
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(String),
}

/// A TLS server configuration and the fingerprint of its leaf certificate.
#[derive(Clone)]
pub struct RelayTls {
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate (DER), lowercase hex with colons.
    pub fingerprint: String,
    /// True when the certificate was generated here.
    pub self_signed: bool,
}

impl RelayTls {
    /// From PEM files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read_error = |what: &'static str, path: &Path| {
            let path = path.display().to_string();
            move |e: rustls::pki_types::pem::Error| TlsError::Read {
                what,
                path,
                reason: e.to_string(),
            }
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(read_error("certificate", cert))?
            .collect::<Result<_, _>>()
            .map_err(read_error("certificate", cert))?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(read_error("key", key))?;
        Self::from_chain(chain, key, false)
    }

    /// A certificate for `names` made now (the fallback when no files are configured).
    pub fn self_signed(names: Vec<String>) -> Result<Self, TlsError> {
        let certified = rcgen::generate_simple_self_signed(names)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let chain = vec![certified.cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        Self::from_chain(chain, key, true)
    }

    fn from_chain(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        self_signed: bool,
    ) -> Result<Self, TlsError> {
        let fingerprint = chain
            .first()
            .map(|leaf| fingerprint(leaf))
            .unwrap_or_default();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(RelayTls {
            config: Arc::new(config),
            fingerprint,
            self_signed,
        })
    }
}

/// `ab:cd:...`, as browsers and openssl print certificate fingerprints.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
