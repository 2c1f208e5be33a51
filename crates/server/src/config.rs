use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

/// A test probe that sees every media datagram the server receives and every frame the SFU
/// forwards: the way tests prove the server never handles plaintext media.
#[derive(Clone)]
pub struct MediaTap(pub Arc<TapFn>);

/// The probe's signature: it is handed each datagram or frame.
pub type TapFn = dyn Fn(&[u8]) + Send + Sync;

impl std::fmt::Debug for MediaTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MediaTap")
    }
}

/// Everything `conclave serve` needs, validated before anything starts.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// HTTP and WebSocket listen address.
    pub listen: SocketAddr,
    /// The single UDP port all media uses (0: any free port, for tests).
    pub media_port: u16,
    /// The address media is bound to.
    pub media_bind_ip: IpAddr,
    /// The address put in ICE candidates: where participants send media.
    pub public_ip: IpAddr,
    /// The base of the links the server hands out; defaults to `http://<listen>`.
    pub public_url: Option<String>,
    /// Where the SQLite database lives.
    pub data_dir: PathBuf,
    /// Tests only: a probe on the media path.
    pub media_tap: Option<MediaTap>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--public-ip {0} is unspecified: give the address participants can reach")]
    UnspecifiedPublicIp(IpAddr),
    #[error("--public-url {0:?} must start with http:// or https:// and have no trailing slash")]
    BadPublicUrl(String),
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            media_port: 10000,
            media_bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            public_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            public_url: None,
            data_dir: PathBuf::from("conclave-data"),
            media_tap: None,
        }
    }
}

impl ServerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.public_ip.is_unspecified() {
            return Err(ConfigError::UnspecifiedPublicIp(self.public_ip));
        }
        if let Some(url) = &self.public_url {
            let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
            if !scheme_ok || url.ends_with('/') {
                return Err(ConfigError::BadPublicUrl(url.clone()));
            }
        }
        Ok(())
    }

    /// The base of join links, given the address the listener actually bound.
    pub fn base_url(&self, bound: SocketAddr) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"))
    }
}
